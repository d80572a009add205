"""Knowledge ingestion, the per-model HNSW index, hybrid search scoping, the API and rag_search."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db.driver import driver_of
from app.db.tenancy import set_tenant
from app.knowledge.controller import KnowledgeController
from app.knowledge.embedders import LexicalEmbedder, default_embedder
from app.knowledge.search import ALL_CUSTOMERS, model_filter, search_knowledge, vector_leg_sql
from app.knowledge.service import ingest_document
from tests.live import read_stream
from tools import rag_search
from tools.base import ToolContext, ToolRegistry

PROBLEM = "application/problem+json"
OTHER_FACTS = ["KESTREL-BLUEJAY-9172", "Zephyrine Biotech chromatography", "Tomasz Wrobel"]
lexical = LexicalEmbedder()


class TinyEmbedder:
    """Another 'model' (8 dimensions) to prove that chunks record and separate their model."""

    name, model, dims = "test", "test-tiny-8", 8

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [[float((len(t) + i) % 5) + 1.0 for i in range(8)] for t in texts]

    async def warm(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "dims": self.dims}


@pytest.fixture(scope="module")
async def customers(owner_engine) -> dict[str, uuid.UUID]:
    async with owner_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT external_key, id FROM customers"))).all()
    return dict(rows)


@pytest.fixture(scope="module")
async def api(client, owner_engine):
    """The shared client, with the knowledge routes registered if main.py does not yet."""
    if not any(r.path == "/api/knowledge/search" for r in client.app.routes):
        client.app.register(KnowledgeController)
    yield client
    async with owner_engine.begin() as conn:
        await conn.execute(text("DELETE FROM knowledge_documents WHERE source LIKE 'test://%'"))


async def tenant_of_documents(owner_engine, document_ids: list[str]) -> set[uuid.UUID]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT DISTINCT tenant_id FROM knowledge_documents WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(d) for d in document_ids]})
        return set(rows.scalars())


async def new_tenant(conn) -> uuid.UUID:
    slug = f"kb-{uuid.uuid4().hex[:8]}"
    return (await conn.execute(text("INSERT INTO tenants (slug, name) VALUES (:s, :s)"
                                    " RETURNING id"), {"s": slug})).scalar_one()


# --- ingestion -----------------------------------------------------------------------------------


async def test_seeded_documents_are_chunked_and_embedded_by_the_default_embedder(owner_engine):
    embedder = default_embedder()
    async with owner_engine.connect() as conn:
        missing = (await conn.execute(text(
            "SELECT count(*) FROM knowledge_documents d WHERE d.source NOT LIKE 'test://%'"
            " AND NOT EXISTS (SELECT 1 FROM knowledge_chunks c WHERE c.document_id = d.id)"
        ))).scalar_one()
        models = (await conn.execute(text(
            "SELECT DISTINCT embedding_model, embedding_dims FROM knowledge_chunks"))).all()
        index = (await conn.execute(text("SELECT to_regclass(embedding_index_name(:m, :d))"),
                                    {"m": embedder.model, "d": embedder.dims})).scalar_one()
    assert missing == 0
    assert (embedder.model, embedder.dims) in models
    assert index is not None


async def test_ingesting_the_same_content_twice_changes_nothing(owner_engine, demo):
    content = "# Puffin rule\n\nEvery puffin renewal needs two signatures. " * 20
    snapshot = text("SELECT id, chunk_index, CAST(embedding AS text) FROM knowledge_chunks"
                    " WHERE document_id = :d ORDER BY chunk_index")
    async with owner_engine.connect() as conn:  # never committed: rolled back on close
        first = await ingest_document(conn, lexical, tenant_id=demo, title="Puffin",
                                      content=content, source="test://puffin.md")
        before = (await conn.execute(snapshot, {"d": first.document_id})).all()
        again = await ingest_document(conn, lexical, tenant_id=demo, title="Puffin (renamed)",
                                      content=content + "\n\n", source="test://other-name.md")
        after = (await conn.execute(snapshot, {"d": first.document_id})).all()
        documents = (await conn.execute(text(
            "SELECT count(*) FROM knowledge_documents WHERE source LIKE 'test://%'"))).scalar_one()
    assert first.created and first.chunks == len(before) > 1
    assert (again.document_id, again.created, again.embedded) == (first.document_id, False, 0)
    assert after == before and documents == 1


async def test_another_embedder_re_embeds_the_chunks_and_gets_its_own_index(owner_engine, demo):
    async with owner_engine.connect() as conn:
        first = await ingest_document(conn, lexical, tenant_id=demo, title="Gannet",
                                      content="Gannet accounts renew in May. " * 30,
                                      source="test://gannet.md")
        second = await ingest_document(conn, TinyEmbedder(), tenant_id=demo, title="Gannet",
                                       content="Gannet accounts renew in May. " * 30,
                                       source="test://gannet.md")
        models = (await conn.execute(text(
            "SELECT DISTINCT embedding_model, embedding_dims FROM knowledge_chunks"
            " WHERE document_id = :d"), {"d": first.document_id})).all()
        index = (await conn.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = embedding_index_name(:m, 8)"),
            {"m": TinyEmbedder.model})).scalar_one()
    assert second.document_id == first.document_id and second.embedded == first.chunks
    assert models == [("test-tiny-8", 8)]
    assert "hnsw" in index and "vector(8)" in index and "'test-tiny-8'" in index


@pytest.mark.parametrize(("model", "dims"), [
    ("x'; DROP TABLE tenants; --", 8), ("ok-model", 0), ("ok-model", 4001), ("", 8)])
async def test_index_function_refuses_unsafe_names_and_sizes(app_engine, model, dims):
    async with app_engine.connect() as conn:
        with pytest.raises(DBAPIError, match="invalid embedding model|between 1 and 4000"):
            await conn.execute(text("SELECT ensure_embedding_index(:m, :d)"),
                               {"m": model, "d": dims})


async def test_the_runtime_role_gets_indexes_only_through_the_definer_function(app_engine):
    async with app_engine.connect() as conn:
        name = (await conn.execute(text("SELECT ensure_embedding_index('role-test-4', 4)"))
                ).scalar_one()
        assert (await conn.execute(text("SELECT to_regclass(:n)"), {"n": name})).scalar_one()
        await conn.rollback()
        with pytest.raises(DBAPIError, match="must be owner"):
            await conn.execute(text("CREATE INDEX nope ON knowledge_chunks (chunk_index)"))


# --- search: scope and completeness --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_no_result_ever_comes_from_another_tenant(app_engine, owner_engine, demo, other,
                                                        mode):
    embedder = default_embedder()
    async with app_engine.connect() as conn:
        await set_tenant(conn, other)
        control = await search_knowledge(await driver_of(conn), embedder, tenant_id=other,
                                         query=OTHER_FACTS[0], k=3, customer=ALL_CUSTOMERS,
                                         mode=mode)
        await conn.rollback()
        await set_tenant(conn, demo)
        db = await driver_of(conn)
        seen = []
        for fact in OTHER_FACTS:
            seen += await search_knowledge(db, embedder, tenant_id=demo, query=fact, k=20,
                                           customer=ALL_CUSTOMERS, mode=mode)
        # RLS holds even when the code names the other tenant: its rows are not visible.
        smuggled = await search_knowledge(db, embedder, tenant_id=other, query=OTHER_FACTS[0],
                                          k=20, customer=ALL_CUSTOMERS, mode=mode)
    # The control proves the query can find the fact at all (the full-text legs find the code).
    assert control
    if mode != "vector":
        assert control[0].source == "policies/kestrel-pricing-rules.md"
    assert await tenant_of_documents(owner_engine, [str(h.document_id) for h in seen]) <= {demo}
    assert all("KESTREL" not in h.content for h in seen)
    assert seen or mode == "text"  # full text alone rightly finds nothing in Demo
    assert smuggled == []


async def test_search_returns_k_results_whenever_k_exist(owner_engine):
    async with owner_engine.connect() as conn:
        tenant = await new_tenant(conn)
        for word in ("alpha", "bravo", "charlie"):
            await ingest_document(conn, lexical, tenant_id=tenant, title=word,
                                  content=f"The {word} clause covers renewals.",
                                  source=f"test://{word}.md")
        await ingest_document(conn, TinyEmbedder(), tenant_id=tenant, title="delta",
                              content="Delta notes embedded by another model.",
                              source="test://delta.md")

        async def count(query: str, k: int, **kw: Any) -> int:
            return len(await search_knowledge(await driver_of(conn), lexical, tenant_id=tenant,
                                              query=query, k=k, customer=ALL_CUSTOMERS, **kw))

        assert await count("alpha clause", 2) == 2
        assert await count("alpha clause", 10) == 4  # delta only through full text or the fill
        assert await count("zzzz qqqq", 3) == 3  # nothing matches: still the k that exist
        assert await count("alpha clause", 3, exact_scan_limit=0) == 3  # the HNSW path
        assert await count("alpha clause", 3, mode="vector", exact_scan_limit=0) == 3


async def test_a_search_outside_a_transaction_is_refused(app_engine, demo):
    # Its scan settings and the tenant are transaction-local: outside one, the text leg would
    # silently find nothing and the vector leg lose its recall.
    async with app_engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        with pytest.raises(RuntimeError, match="tenant-scoped transaction"):
            await search_knowledge(raw, lexical, tenant_id=demo, query="renewal discount", k=3)


async def test_hnsw_and_exact_vector_search_agree(owner_engine, demo):
    async with owner_engine.connect() as conn:
        await set_tenant(conn, demo)  # search runs in a transaction (its scan settings are local)
        db = await driver_of(conn)
        for query in ("war room charter", "discount approval matrix"):
            exact = await search_knowledge(db, default_embedder(), tenant_id=demo, query=query,
                                           k=8, customer=None, mode="vector")
            hnsw = await search_knowledge(db, default_embedder(), tenant_id=demo, query=query,
                                          k=8, customer=None, mode="vector", exact_scan_limit=0)
            assert [h.chunk_id for h in hnsw] == [h.chunk_id for h in exact]


async def test_the_vector_leg_uses_the_models_hnsw_index(owner_engine, demo):
    embedder = default_embedder()
    [vector] = await embedder.embed(["war room"])
    where = f"c.tenant_id = :tenant_id AND {model_filter(embedder.model, embedder.dims)}"
    params = {"tenant_id": demo, "n": 5, "q": "[" + ",".join(map(str, vector)) + "]"}
    async with owner_engine.connect() as conn:
        index = (await conn.execute(text("SELECT embedding_index_name(:m, :d)"),
                                    {"m": embedder.model, "d": embedder.dims})).scalar_one()
        # Only the HNSW index is left to choose, so the plan shows whether its expression fits.
        await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        await conn.execute(text("DROP INDEX knowledge_chunks_model_idx, knowledge_chunks_tenant_idx"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        approximate = (await conn.execute(
            text("EXPLAIN " + vector_leg_sql(embedder.dims, where, exact=False)), params)).scalars()
        exact = (await conn.execute(
            text("EXPLAIN " + vector_leg_sql(embedder.dims, where, exact=True)), params)).scalars()
        assert index in "\n".join(approximate)
        assert index not in "\n".join(exact)


# --- the tool: the thread's customer -------------------------------------------------------------


@pytest.fixture(scope="module")
def tools(app_engine, settings):
    """rag_search as the reply executor runs it: a registry and the app's services."""
    registry = ToolRegistry()
    registry.register(rag_search.TOOL)
    services = SimpleNamespace(engine=app_engine, settings=settings)
    return registry, services


async def run_tool(tools, users, customer_id: uuid.UUID | None, arguments: dict[str, Any]):
    registry, services = tools
    csm = users["csm@demo.example"]
    context = ToolContext(tenant_id=csm.tenant_id, user_id=csm.id, customer_id=customer_id,
                          services=services)
    return await registry.execute("rag_search", arguments, context)


class PoolWatchingEmbedder(LexicalEmbedder):
    """Lexical vectors, noting how many of the pool's connections were out at each call."""

    def __init__(self, engine) -> None:
        self.pool = engine.sync_engine.pool
        self.checked_out: list[int] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.checked_out.append(self.pool.checkedout())
        return await super().embed(texts)


async def test_rag_search_embeds_its_query_before_taking_a_connection(app_engine, settings,
                                                                      users):
    # A paid embedding is a network call of 100 ms or more: a pooled connection held through
    # it is one fewer for every other request.
    watcher = PoolWatchingEmbedder(app_engine)
    registry = ToolRegistry()
    registry.register(rag_search.TOOL)
    services = SimpleNamespace(engine=app_engine, settings=settings, embedder=watcher)
    before = app_engine.sync_engine.pool.checkedout()
    outcome = await run_tool((registry, services), users, None, {"query": "renewal discount"})
    assert outcome.success, outcome.error
    assert watcher.checked_out == [before]


async def test_the_search_api_embeds_its_query_before_taking_a_connection(api, auth,
                                                                          monkeypatch):
    state = api.app.state
    watcher = PoolWatchingEmbedder(state.engine)
    monkeypatch.setattr(state, "embedder", watcher)
    before = state.engine.sync_engine.pool.checkedout()
    response = await api.get("/api/knowledge/search", params={"q": "renewal discount"},
                             headers=auth("csm@demo.example"))
    assert response.status_code == 200, response.text
    assert watcher.checked_out == [before]


async def test_customer_documents_reach_only_that_customers_threads(tools, users, customers):
    question = {"query": "How long does Acme take to issue a purchase order?", "k": 20}
    acme = await run_tool(tools, users, customers["acme"], question)
    helio = await run_tool(tools, users, customers["helio"], question)
    general = await run_tool(tools, users, None, question)
    sources = {name: {r["source"] for r in outcome.output["results"]}
               for name, outcome in (("acme", acme), ("helio", helio), ("none", general))}
    assert acme.output["results"][0]["source"] == "accounts/acme-account-notes.md"
    assert "accounts/acme-account-notes.md" not in sources["helio"]
    assert not any(s.startswith("accounts/") for s in sources["none"])


async def test_rag_search_returns_results_sources_and_citations(tools, users):
    outcome = await run_tool(tools, users, None,
                             {"query": "Who approves a 12 percent discount?", "k": 4})
    assert outcome.success, outcome.error
    results = outcome.output["results"]
    assert len(results) == 4 and results[0]["content"]
    assert {s["documentId"] for s in outcome.output["sources"]} == {r["documentId"] for r in results}
    citations = outcome.result.citations
    assert [c["chunkId"] for c in citations] == [r["chunkId"] for r in results]
    assert set(citations[0]) == {"chunkId", "documentId", "title", "snippet", "score", "source"}
    assert citations[0]["source"] == "policies/pricing-and-discounts.md"


@pytest.mark.parametrize("arguments", [{"query": "x", "k": 0}, {"query": "x", "k": 21},
                                       {"query": ""}, {"k": 5}])
async def test_rag_search_rejects_bad_input(tools, users, arguments):
    outcome = await run_tool(tools, users, None, arguments)
    assert not outcome.success and "invalid input" in outcome.error


async def test_a_rag_reply_streams_and_stores_its_citations(http, auth, new_thread, owner_engine):
    thread = await new_thread("local", tools=["rag_search"])
    response, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                         headers=auth(),
                                         json={"content": "Who should be in a war room?"})
    parts = [e.part for e in events if e.part is not None]
    sources = [p for p in parts if p["type"] == "source-document"]
    assert response.status_code == 200 and sources
    async with owner_engine.connect() as conn:
        metadata = (await conn.execute(text(
            "SELECT metadata FROM workflow_chat_messages WHERE thread_id = :t"
            " AND role = 'assistant' ORDER BY sequence_number DESC LIMIT 1"),
            {"t": thread})).scalar_one()
    citations = metadata["citations"]
    assert [c["chunkId"] for c in citations] == [s["sourceId"] for s in sources]
    assert any(c["source"] == "playbooks/war-room-runbook.md" for c in citations)


# --- HTTP API ------------------------------------------------------------------------------------


async def test_admin_posts_a_document_once_and_gets_the_same_one_back(api, auth):
    body = {"title": "Osprey terms", "source": "test://osprey.md",
            "content": "Osprey customers renew every March with a 4% uplift."}
    first = await api.post("/api/knowledge/documents", headers=auth("admin@demo.example"),
                           json=body)
    again = await api.post("/api/knowledge/documents", headers=auth("admin@demo.example"),
                           json=body)
    assert first.status_code == 201 and again.status_code == 200, first.text
    assert first.json()["document"]["chunks"] == 1
    assert again.json()["document"]["id"] == first.json()["document"]["id"]
    found = await api.get("/api/knowledge/search", params={"q": "Osprey uplift", "k": 1},
                          headers=auth("csm@demo.example"))
    assert found.json()["results"][0]["documentId"] == first.json()["document"]["id"]


@pytest.mark.parametrize(("email", "body", "status"), [
    ("csm@demo.example", {"title": "t", "source": "test://x", "content": "c"}, 403),
    ("admin@demo.example", {"source": "test://x", "content": "c"}, 400),
    ("admin@demo.example", {"title": "t", "source": "test://x", "content": ""}, 400),
    ("admin@demo.example", {"title": "t", "source": "test://x", "content": "c", "x": 1}, 400),
    ("admin@demo.example", {"title": "t", "source": "test://x", "content": "c",
                            "customerId": "not-a-uuid"}, 400),
    ("admin@demo.example", {"title": "t", "source": "test://x", "content": "c",
                            "customerId": "zephyrine"}, 422),
])
async def test_bad_document_posts_are_refused_and_write_nothing(api, auth, owner_engine,
                                                                customers, email, body, status):
    if body.get("customerId") == "zephyrine":
        body = {**body, "customerId": str(customers["zephyrine"])}  # the Other tenant's
    response = await api.post("/api/knowledge/documents", headers=auth(email), json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    async with owner_engine.connect() as conn:
        assert not (await conn.execute(text(
            "SELECT count(*) FROM knowledge_documents WHERE source = 'test://x'"))).scalar_one()


async def test_search_answers_k_results_with_their_fields(api, auth):
    response = await api.get("/api/knowledge/search", headers=auth(),
                             params={"q": "war room charter", "k": 3})
    results = response.json()["results"]
    assert response.status_code == 200 and len(results) == 3
    assert {"chunkId", "documentId", "title", "snippet", "score"} <= set(results[0])
    assert results[0]["score"] >= results[-1]["score"] > 0


@pytest.mark.parametrize("params", [{"q": "x", "k": 0}, {"q": "x", "k": 21}, {"k": 3}, {"q": ""},
                                    {"q": "   "}, {"q": "x", "customerId": "acme"}])
async def test_search_rejects_bad_parameters(api, auth, params):
    response = await api.get("/api/knowledge/search", headers=auth(), params=params)
    assert response.status_code == 400


async def test_search_as_demo_never_shows_the_other_tenants_facts(api, auth, owner_engine, demo):
    for fact in OTHER_FACTS:
        response = await api.get("/api/knowledge/search", headers=auth(),
                                 params={"q": fact, "k": 20})
        ids = [r["documentId"] for r in response.json()["results"]]
        assert await tenant_of_documents(owner_engine, ids) == {demo}
    control = await api.get("/api/knowledge/search", headers=auth("admin@other.example"),
                            params={"q": OTHER_FACTS[0], "k": 1})
    assert "KESTREL-BLUEJAY-9172" in control.json()["results"][0]["snippet"]


# --- command line --------------------------------------------------------------------------------


def test_ingest_command_loads_files_once_and_scopes_them(tmp_path, database, settings):
    import asyncio

    from app.knowledge.cli import IngestError, ingest_command

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "heron.md").write_text(
        "---\ntitle: Heron terms\nsource: test://heron.md\n---\n\nHeron renews in June.")
    (tmp_path / "notes" / "ignored.json").write_text("{}")
    (tmp_path / "ibis.txt").write_text("Ibis pays quarterly with a 3% surcharge.")
    lexical_settings = settings.model_copy(update={"embedder": "lexical"})
    paths = [tmp_path / "notes", tmp_path / "ibis.txt"]
    try:
        first = ingest_command(paths, "other", "zephyrine", settings=lexical_settings,
                               database=database)
        again = ingest_command(paths, "other", "zephyrine", settings=lexical_settings,
                               database=database)
        rows = asyncio.run(_documents(database.owner_url, tmp_path))
    finally:
        asyncio.run(_documents(database.owner_url, tmp_path, delete=True))
    assert first.ok and sorted(first.created) == ["heron.md", "ibis.txt"] and first.chunks == 2
    assert again.ok and not again.created and sorted(again.unchanged) == ["heron.md", "ibis.txt"]
    assert {(r.title, r.source, r.slug, r.external_key) for r in rows} == {
        ("Heron terms", "test://heron.md", "other", "zephyrine"),
        ("ibis", "ibis.txt", "other", "zephyrine")}
    with pytest.raises(IngestError, match="no customer"):
        ingest_command(paths, "demo", "zephyrine", settings=lexical_settings, database=database)
    with pytest.raises(IngestError, match="no such file"):
        ingest_command([tmp_path / "missing.md"], "demo", None, settings=lexical_settings,
                       database=database)


async def _documents(owner_url: str, folder, *, delete: bool = False):
    from app.db.engine import create_engine

    engine = create_engine(owner_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            if delete:
                await conn.execute(text("DELETE FROM knowledge_documents"
                                        " WHERE metadata->>'path' LIKE :p"), {"p": f"{folder}%"})
                return []
            return (await conn.execute(text(
                "SELECT d.title, d.source, t.slug, c.external_key FROM knowledge_documents d"
                " JOIN tenants t ON t.id = d.tenant_id LEFT JOIN customers c"
                " ON c.id = d.customer_id WHERE d.metadata->>'path' LIKE :p"),
                {"p": f"{folder}%"})).all()
    finally:
        await engine.dispose()
