"""Paid embedding calls are on the usage ledger: one tenant-level row per call, never a thread's.

The real openai SDK talks to the fake server, which reports each input's word count as its
prompt tokens; rows are read back as the owner and through the usage API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text

from app.auth.tokens import TokenCodec
from app.db.driver import tenant_driver
from app.knowledge.embedders import (
    LexicalEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    embed_with_usage,
)
from app.knowledge.embedders import local_embedder_available as has_local
from app.knowledge.metering import metered_search
from app.knowledge.search import ALL_CUSTOMERS
from app.knowledge.service import EMBED_BATCH, ingest_document
from app.llm.errors import ProviderError
from app.usage.chain import verify_chains
from app.usage.pricing import default_price_book
from tests.fakes import ErrorReply
from tests.integration.conftest import assert_token_invariants, thread_rows
from tests.live import read_stream
from tools import rag_search
from tools.base import ToolContext, ToolRegistry

MODEL = "text-embedding-3-small"
LEDGER = (
    "SELECT tenant_id, user_id, customer_id, thread_id, message_id, call_kind, provider, model,"
    " input_tokens, output_tokens, cached_tokens, usage_source, status, latency_ms, cost_usd,"
    " price_version FROM usage_ledger WHERE tenant_id = :t AND chain_seq > :after"
    " ORDER BY chain_seq")


@dataclass
class Tenant:
    """A scratch tenant: its users by role, one customer and a way to speak as them."""

    id: uuid.UUID
    users: dict[str, uuid.UUID]
    emails: dict[str, str]
    customer: uuid.UUID


@pytest.fixture(scope="module")
async def tenants(owner_engine) -> AsyncIterator[dict[str, Tenant]]:
    """Two tenants of their own, so that no other test's rows are in their ledgers."""
    made = {}
    for name in ("payer", "bystander"):
        key = uuid.uuid4().hex[:8]
        async with owner_engine.begin() as conn:
            tenant = (await conn.execute(text(
                "INSERT INTO tenants (slug, name) VALUES (:s, :s) RETURNING id"),
                {"s": f"emb-{name}-{key}"})).scalar_one()
            customer = (await conn.execute(text(
                "INSERT INTO customers (tenant_id, external_key, name, renewal_date)"
                " VALUES (:t, 'cust', 'Embed Co', '2027-01-01') RETURNING id"),
                {"t": tenant})).scalar_one()
            users, emails = {}, {}
            for role in ("csm", "analyst", "admin"):
                emails[role] = f"{role}-{name}-{key}@embed.example"
                users[role] = (await conn.execute(text(
                    "INSERT INTO users (tenant_id, email, name, role) VALUES (:t, :e, :e, :r)"
                    " RETURNING id"), {"t": tenant, "e": emails[role], "r": role})).scalar_one()
        made[name] = Tenant(tenant, users, emails, customer)
    yield made
    # Other modules count documents across tenants; the ledger rows stay (append-only).
    async with owner_engine.begin() as conn:
        await conn.execute(text("DELETE FROM knowledge_documents WHERE tenant_id = ANY(:t)"),
                           {"t": [t.id for t in made.values()]})


@pytest.fixture
def headers(settings):
    codec = TokenCodec(settings)

    def make(tenant: Tenant, role: str) -> dict[str, str]:
        token = codec.encode(user_id=tenant.users[role], tenant_id=tenant.id, role=role,
                             email=tenant.emails[role])
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
async def openai_embedder(fake_openai):
    fake, base = fake_openai
    fake.embedding_errors.clear()
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=base, read_timeout=5, max_retries=0)
    yield embedder
    fake.embedding_errors.clear()
    await embedder.aclose()


@pytest.fixture
def app_embedder(live_app, monkeypatch):
    """Set the live app's embedder for one test (its state is shared by the whole run)."""

    def use(embedder: Any) -> None:
        monkeypatch.setattr(live_app[0].state, "embedder", embedder)

    return use


async def head(owner_engine, tenant_id: uuid.UUID) -> int:
    async with owner_engine.connect() as conn:
        return (await conn.execute(text(
            "SELECT COALESCE(max(chain_seq), 0) FROM usage_ledger WHERE tenant_id = :t"),
            {"t": tenant_id})).scalar_one()


async def rows_since(owner_engine, tenant_id: uuid.UUID, after: int) -> list[Any]:
    async with owner_engine.connect() as conn:
        return list((await conn.execute(text(LEDGER), {"t": tenant_id, "after": after})).all())


def reported_tokens(requests: list[dict[str, Any]]) -> int:
    """What the fake reported for these requests (its prompt_tokens: words per input)."""
    total = 0
    for body in requests:
        inputs = body["input"]
        total += sum(len(str(t).split()) for t in ([inputs] if isinstance(inputs, str)
                                                   else inputs))
    return total


def price(tokens: int) -> Decimal:
    return default_price_book().cost(MODEL, datetime.now(UTC), tokens, 0, 0)[0]


async def run_rag_search(engine, embedder, tenant: Tenant, query: str, **context: Any):
    registry = ToolRegistry()
    registry.register(rag_search.TOOL)
    services = SimpleNamespace(engine=engine, embedder=embedder)
    return await registry.execute("rag_search", {"query": query, "k": 3}, ToolContext(
        tenant_id=tenant.id, user_id=tenant.users["csm"], customer_id=tenant.customer,
        services=services, **context))


# --- the embedder --------------------------------------------------------------------------------


async def test_the_openai_embedder_returns_each_calls_own_usage_summed_over_its_batches(
        fake_openai, openai_embedder):
    fake = fake_openai[0]
    long = [f"renewal note number {i}" for i in range(300)]  # 4 words each, in 2 requests
    short = ["escalation"]
    sent = len(fake.embedding_requests)
    (vectors, usage), (_, alone) = await asyncio.gather(
        openai_embedder.embed_with_usage(long), openai_embedder.embed_with_usage(short))
    assert len(fake.embedding_requests) - sent == 3
    assert (usage.provider, usage.model, usage.input_tokens, usage.source) == (
        "openai", MODEL, 1200, "provider")
    assert alone.input_tokens == 1 and usage.latency_ms >= 0
    assert await openai_embedder.embed(long[:3]) == vectors[:3]
    # A free embedder has no usage to give.
    assert (await embed_with_usage(LexicalEmbedder(), short))[1] is None


# --- rag_search ----------------------------------------------------------------------------------


async def test_a_rag_search_writes_one_embedding_row_for_the_tenant_and_none_for_the_thread(
        app_engine, owner_engine, fake_openai, openai_embedder, tenants):
    payer = tenants["payer"]
    before, sent = await head(owner_engine, payer.id), len(fake_openai[0].embedding_requests)
    outcome = await run_rag_search(app_engine, openai_embedder, payer,
                                   "who approves a twelve percent discount", thread_id=uuid.uuid4())
    assert outcome.success, outcome.error
    requests = fake_openai[0].embedding_requests[sent:]
    (row,) = await rows_since(owner_engine, payer.id, before)
    assert len(requests) == 1 and reported_tokens(requests) == 6
    assert (row.call_kind, row.provider, row.model, row.status, row.usage_source) == (
        "embedding", "openai", MODEL, "ok", "provider")
    assert (row.tenant_id, row.user_id, row.customer_id) == (
        payer.id, payer.users["csm"], payer.customer)
    assert (row.thread_id, row.message_id) == (None, None)
    assert (row.input_tokens, row.output_tokens, row.cached_tokens) == (6, 0, 0)
    assert row.cost_usd == price(6) > 0 and row.price_version is not None
    assert row.latency_ms is not None and row.latency_ms >= 0


async def test_a_reply_whose_rag_search_pays_for_an_embedding_keeps_its_thread_totals_equal(
        http, auth, new_thread, owner_engine, users, openai_embedder, app_embedder, demo):
    app_embedder(openai_embedder)
    thread = await new_thread("local", tools=["rag_search"])
    before = await head(owner_engine, demo)
    response, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                         headers=auth(),
                                         json={"content": "Who should be in a war room?"})
    assert response.status_code == 200
    stored = await thread_rows(owner_engine, thread)
    assert_token_invariants(stored)
    (call,) = stored["calls"]
    assert call.success and call.tool_name == "rag_search"
    new = await rows_since(owner_engine, demo, before)
    embedding = [r for r in new if r.call_kind == "embedding"]
    assert len(embedding) == 1 and embedding[0].thread_id is None
    assert embedding[0].input_tokens == len(call.tool_input["query"].split())
    assert embedding[0].user_id == users["csm@demo.example"].id
    # The thread's rows are its replies' calls only.
    assert all(r.call_kind == "chat" for r in new if r.thread_id is not None)
    usage = [e.part for e in events if e.part and e.part["type"] == "data-usage"]
    assert usage[-1]["data"]["providerCalls"] == len(stored["ledger"])


# --- ingestion -----------------------------------------------------------------------------------


async def test_ingesting_a_document_writes_rows_summing_to_the_reported_tokens(
        owner_engine, fake_openai, openai_embedder, tenants):
    payer = tenants["payer"]
    # Over 64 chunks: the ingestion embeds 64 at a time, one row per call.
    content = "\n\n".join(f"Clause {i}. " + "The renewal uplift is capped at four percent. " * 25
                          for i in range(40))
    before, sent = await head(owner_engine, payer.id), len(fake_openai[0].embedding_requests)
    async with owner_engine.begin() as conn:  # as seeding and the CLI ingest: no user
        result = await ingest_document(conn, openai_embedder, tenant_id=payer.id,
                                       customer_id=payer.customer, title="Caps",
                                       source="embed-test://caps.md", content=content)
    requests = fake_openai[0].embedding_requests[sent:]
    rows = await rows_since(owner_engine, payer.id, before)
    calls = -(-result.chunks // EMBED_BATCH)
    assert result.created and calls >= 2 and len(requests) == calls
    assert len(rows) == calls and {r.call_kind for r in rows} == {"embedding"}
    assert sum(r.input_tokens for r in rows) == reported_tokens(requests)
    assert {(r.user_id, r.customer_id, r.thread_id) for r in rows} == {
        (None, payer.customer, None)}
    assert sum(r.cost_usd for r in rows) > 0
    async with owner_engine.connect() as conn:
        (chain,) = await verify_chains(conn, payer.id)
    assert chain.ok, chain.broken and chain.broken.reason


async def test_the_documents_api_attributes_its_embedding_row_to_the_admin(
        http, headers, owner_engine, fake_openai, openai_embedder, app_embedder, tenants):
    payer = tenants["payer"]
    app_embedder(openai_embedder)
    before, sent = await head(owner_engine, payer.id), len(fake_openai[0].embedding_requests)
    response = await http.post("/api/knowledge/documents", headers=headers(payer, "admin"),
                               json={"title": "Terms", "source": "embed-test://terms.md",
                                     "content": "Kestrel renews each April at list price."})
    assert response.status_code == 201, response.text
    (row,) = await rows_since(owner_engine, payer.id, before)
    assert (row.call_kind, row.user_id, row.customer_id) == (
        "embedding", payer.users["admin"], None)
    assert row.input_tokens == reported_tokens(fake_openai[0].embedding_requests[sent:]) > 0


# --- free embedders ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    LexicalEmbedder,
    pytest.param(LocalEmbedder, marks=pytest.mark.skipif(not has_local(),
                                                         reason="no [local] extra")),
])
async def test_local_and_lexical_embedders_write_no_rows(app_engine, owner_engine, tenants, make):
    payer = tenants["payer"]
    embedder = make()
    before = await head(owner_engine, payer.id)
    async with owner_engine.begin() as conn:
        await ingest_document(conn, embedder, tenant_id=payer.id, title="Free",
                              source=f"embed-test://free-{embedder.name}.md",
                              content="Ospreys renew in March with a small uplift.")
    outcome = await run_rag_search(app_engine, embedder, payer, "osprey uplift")
    assert outcome.success and outcome.output["results"]
    assert await rows_since(owner_engine, payer.id, before) == []


# --- attacks -------------------------------------------------------------------------------------


async def test_a_search_apis_row_is_in_the_callers_tenant_and_its_report_only(
        http, headers, owner_engine, fake_openai, openai_embedder, app_embedder, tenants):
    payer, bystander = tenants["payer"], tenants["bystander"]
    app_embedder(openai_embedder)
    began = int(time.time()) - 1
    before = {t.id: await head(owner_engine, t.id) for t in (payer, bystander)}
    found = await http.get("/api/knowledge/search", headers=headers(payer, "csm"),
                           params={"q": "renewal uplift cap", "k": 2,
                                   "customerId": str(payer.customer)})
    assert found.status_code == 200, found.text
    (row,) = await rows_since(owner_engine, payer.id, before[payer.id])
    assert (row.call_kind, row.input_tokens, row.user_id, row.customer_id) == (
        "embedding", 3, payer.users["csm"], payer.customer)
    assert await rows_since(owner_engine, bystander.id, before[bystander.id]) == []
    window = {"startTime": began, "endTime": int(time.time()) + 86400, "bucketWidth": "1d",
              "groupBy": "model"}

    async def report(tenant: Tenant) -> list[dict[str, Any]]:
        response = await http.get("/api/usage", headers=headers(tenant, "analyst"),
                                  params=window)
        assert response.status_code == 200, response.text
        return [r for b in response.json()["data"] for r in b["results"] if r["model"] == MODEL]

    # The payer's report shows every embedding row written in the window; the bystander's none.
    async with owner_engine.connect() as conn:
        spent = (await conn.execute(text(
            "SELECT sum(input_tokens), count(*), sum(cost_usd) FROM usage_ledger"
            " WHERE tenant_id = :t AND model = :m AND created_at >= to_timestamp(:s)"),
            {"t": payer.id, "m": MODEL, "s": began})).one()
    shown = await report(payer)
    assert sum(r["inputTokens"] for r in shown) == spent[0] >= 3
    assert sum(r["numModelRequests"] for r in shown) == spent[1]
    assert Decimal(str(sum(r["costUsd"] for r in shown))).quantize(Decimal("1e-8")) == spent[2] > 0
    assert await report(bystander) == []


async def test_a_row_for_another_tenant_is_refused_by_row_level_security(
        app_engine, owner_engine, openai_embedder, tenants):
    payer, bystander = tenants["payer"], tenants["bystander"]
    before = await head(owner_engine, payer.id)
    with pytest.raises(Exception, match="row-level security"):
        async with tenant_driver(app_engine, bystander.id) as db:
            await metered_search(db, openai_embedder, tenant_id=payer.id, user_id=None,
                                 query="renewal", k=1, customer=ALL_CUSTOMERS)
    assert await rows_since(owner_engine, payer.id, before) == []


async def test_a_failed_embedding_call_fails_cleanly_and_writes_nothing(
        http, headers, app_engine, owner_engine, fake_openai, openai_embedder, app_embedder,
        tenants):
    payer = tenants["payer"]
    app_embedder(openai_embedder)
    fake = fake_openai[0]
    before = await head(owner_engine, payer.id)
    fake.embedding_errors.append(ErrorReply(500, "embeddings are down"))
    outcome = await run_rag_search(app_engine, openai_embedder, payer, "renewal uplift")
    assert not outcome.success and outcome.error
    fake.embedding_errors.append(ErrorReply(500, "embeddings are down"))
    with pytest.raises(ProviderError):
        async with owner_engine.begin() as conn:
            await ingest_document(conn, openai_embedder, tenant_id=payer.id, title="Down",
                                  source="embed-test://down.md", content="Never stored at all.")
    fake.embedding_errors.append(ErrorReply(500, "embeddings are down"))
    posted = await http.post("/api/knowledge/documents", headers=headers(payer, "admin"),
                             json={"title": "Down", "source": "embed-test://down-api.md",
                                   "content": "Never stored either."})
    assert posted.status_code >= 500 and posted.headers["content-type"].startswith(
        "application/problem+json")
    fake.embedding_errors.append(ErrorReply(500, "embeddings are down"))
    searched = await http.get("/api/knowledge/search", headers=headers(payer, "csm"),
                              params={"q": "renewal"})
    assert searched.status_code >= 500
    assert await rows_since(owner_engine, payer.id, before) == []
    async with owner_engine.connect() as conn:
        assert not (await conn.execute(text(
            "SELECT count(*) FROM knowledge_documents WHERE source LIKE 'embed-test://down%'"))
        ).scalar_one()
