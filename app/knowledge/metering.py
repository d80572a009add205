"""Paid embedding calls on the usage ledger: one row per call, in the transaction it served.

The rows are the tenant's spend, not a conversation's tokens: they name the tenant, user and
customer but never a thread or message, so a thread's ledger rows, its total and its assistant
messages' tokens stay equal even when a reply's rag_search made the call.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.driver import Db, tenant_driver
from app.knowledge.embedders import Embedder, EmbeddingUsage, embed_with_usage
from app.knowledge.search import (
    EMBED_IN_SEARCH,
    CustomerScope,
    Embedding,
    SearchHit,
    embed_query,
    search_knowledge,
)
from app.llm.base import Usage
from app.usage.ledger import CallAttribution, LedgerEntry, Recorded, record_call
from app.usage.pricing import PriceBook, default_price_book


class EmbeddingMeter:
    """The embedder for one search or ingestion, keeping the usage of each paid call it makes.

    Made per operation and never shared, so concurrent operations cannot mix their usage; the
    embedder underneath keeps none.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.name, self.model, self.dims = embedder.name, embedder.model, embedder.dims
        self.calls: list[EmbeddingUsage] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """The embedder's vectors; a paid call's usage is kept for `record`."""
        vectors, usage = await embed_with_usage(self.embedder, texts)
        if usage is not None:
            self.calls.append(usage)
        return vectors

    async def warm(self) -> None:
        """The embedder's warm-up."""
        await self.embedder.warm()

    def describe(self) -> dict[str, Any]:
        """The embedder's description."""
        return self.embedder.describe()

    async def record(
        self,
        db: Db,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID | None,
        customer_id: uuid.UUID | None,
        prices: PriceBook | None = None,
    ) -> list[Recorded]:
        """Write a ledger row for each call made so far (none for local embedders)."""
        who = CallAttribution(
            tenant_id=tenant_id, user_id=user_id, customer_id=customer_id, execution_id=None,
            workflow_key=None, step_id=None, branch_type=None, thread_id=None, message_id=None,
            call_kind="embedding")
        written = []
        for call in self.calls:
            entry = LedgerEntry(
                who, provider=call.provider, model=call.model,
                usage=Usage(call.input_tokens, 0, source=call.source), status="ok",
                latency_ms=call.latency_ms, ttft_ms=None)
            written.append(await record_call(db, prices or default_price_book(), entry))
        self.calls.clear()
        return written


def price_book(services: Any) -> PriceBook:
    """The app's price book (`state.prices`), else the shipped one."""
    prices = getattr(services, "prices", None)
    return prices if isinstance(prices, PriceBook) else default_price_book()


async def metered_search(
    db: Db,
    embedder: Embedder,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    query: str,
    k: int,
    customer: CustomerScope,
    prices: PriceBook | None = None,
    meter: EmbeddingMeter | None = None,
    query_vector: list[float] | Embedding | None = EMBED_IN_SEARCH,
) -> list[SearchHit]:
    """`search_knowledge`, with its query's embedding call on the ledger in `db`'s transaction
    (`meter`'s calls, when the caller embedded the query through it beforehand)."""
    meter = meter or EmbeddingMeter(embedder)
    hits = await search_knowledge(db, meter, tenant_id=tenant_id, query=query, k=k,
                                  customer=customer, query_vector=query_vector)
    # Written last: the ledger row takes the tenant's chain lock until the transaction ends.
    await meter.record(db, tenant_id=tenant_id, user_id=user_id,
                       customer_id=customer if isinstance(customer, uuid.UUID) else None,
                       prices=prices)
    return hits


async def search_in_tenant(
    engine: AsyncEngine,
    embedder: Embedder,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    query: str,
    k: int,
    customer: CustomerScope,
    prices: PriceBook | None = None,
) -> list[SearchHit]:
    """`metered_search` in a tenant transaction of its own, the query embedded first: a paid
    embedding is a network call, which should not hold one of the pool's connections."""
    meter = EmbeddingMeter(embedder)
    vector = await embed_query(meter, query)
    async with tenant_driver(engine, tenant_id, user_id) as db:
        return await metered_search(db, embedder, tenant_id=tenant_id, user_id=user_id,
                                    query=query, k=k, customer=customer, prices=prices,
                                    meter=meter, query_vector=vector)
