"""The full-text leg's definer function (migrations 0009-0016): tenant-bound, index-served,
ranking by Okapi BM25 as a reference computed here does, and its per-scope totals and word list
kept exact by the chunk statements themselves; the hybrid search that calls it in one statement
ranks as the legs fused one by one."""

from __future__ import annotations

import math
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db.driver import driver_of
from app.db.tenancy import set_tenant
from app.knowledge import search
from app.knowledge.embedders import LexicalEmbedder, default_embedder
from app.knowledge.search import ALL_CUSTOMERS, search_knowledge
from app.knowledge.service import ingest_document

lexical = LexicalEmbedder()
RANKS = text("SELECT id FROM knowledge_text_ranks(:tenant, :query, :customer, :every, 20)")
OTHER_FACT = "KESTREL-BLUEJAY-9172"  # only in the other tenant's pricing rules
SIGNATURE = "knowledge_text_ranks(uuid, text, uuid, boolean, integer)"


async def ranked(conn, tenant, query, customer=None, every=True) -> list[uuid.UUID]:
    rows = await conn.execute(RANKS, {"tenant": tenant, "query": query, "customer": customer,
                                      "every": every})
    return list(rows.scalars())


async def tenants_of_chunks(owner_engine, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT DISTINCT tenant_id FROM knowledge_chunks WHERE id = ANY(:ids)"),
            {"ids": ids})
        return set(rows.scalars())


async def test_ranks_come_only_from_the_tenant_of_the_transaction(app_engine, demo, other):
    async with app_engine.connect() as conn:
        await set_tenant(conn, other)
        assert await ranked(conn, other, OTHER_FACT)  # control: the fact is findable
        await conn.rollback()
        await set_tenant(conn, demo)
        # Naming the other tenant is not enough: the transaction belongs to Demo.
        assert await ranked(conn, other, OTHER_FACT) == []
        assert await ranked(conn, demo, OTHER_FACT) == []
        await conn.rollback()
        # No tenant at all: nothing, whoever is named.
        assert await ranked(conn, other, OTHER_FACT) == []


async def test_another_tenants_customer_widens_nothing(app_engine, owner_engine, demo, other):
    async with owner_engine.connect() as conn:
        foreign = (await conn.execute(text("SELECT id FROM customers WHERE tenant_id = :t"
                                           " LIMIT 1"), {"t": other})).scalar_one()
    async with app_engine.connect() as conn:
        await set_tenant(conn, demo)
        found = await ranked(conn, demo, "renewal discount pricing " + OTHER_FACT,
                             customer=foreign, every=False)
    assert found  # Demo's general documents still answer
    assert await tenants_of_chunks(owner_engine, found) == {demo}


async def test_only_the_service_role_may_call_it(owner_engine, demo):
    async with owner_engine.connect() as conn:
        allowed = (await conn.execute(text(
            f"SELECT has_function_privilege('chatbranch_app', '{SIGNATURE}', 'EXECUTE'),"
            f" has_function_privilege('chatbranch_query', '{SIGNATURE}', 'EXECUTE')"))).one()
        assert tuple(allowed) == (True, False)
        await conn.rollback()
        await set_tenant(conn, demo)  # as the database_query tool does, before dropping role
        await conn.execute(text("SET LOCAL ROLE chatbranch_query"))
        with pytest.raises(DBAPIError, match="permission denied"):
            await ranked(conn, demo, "renewal")


async def index_scans(conn) -> int:
    """This transaction's scans of the full-text index so far (its own statistics)."""
    return (await conn.execute(text(
        "SELECT pg_stat_get_xact_numscans('knowledge_chunks_search_idx'::regclass)"))).scalar_one()


async def test_the_service_roles_text_search_is_served_by_the_full_text_index(owner_engine,
                                                                              demo):
    async with owner_engine.connect() as conn:
        # The demo base is small: any index on the tenant would beat the full-text one. Drop
        # those for this transaction only (rolled back), and rule out whole-table reads, to see
        # what the planner does at 100,000 chunks.
        await conn.execute(text("DROP INDEX knowledge_chunks_tenant_idx"))
        await conn.execute(text("DROP INDEX knowledge_chunks_model_idx"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL ROLE chatbranch_app"))
        await set_tenant(conn, demo)
        # Why the function exists: under RLS a plain match cannot use the index (`@@` is not
        # leakproof), so it reads every chunk of the tenant.
        before = await index_scans(conn)
        await conn.execute(text("SELECT count(*) FROM knowledge_chunks"
                                " WHERE search_vector @@ to_tsquery('english', 'renewal')"))
        assert await index_scans(conn) == before
        db = await driver_of(conn)
        hits = await search_knowledge(db, lexical, tenant_id=demo, query="renewal discount",
                                      k=5, mode="text")
        assert hits
        assert await index_scans(conn) > before
        await conn.rollback()


async def scratch_tenant(owner_engine, key: str, customer_name: str
                         ) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant of its own with one customer, for counts no other test disturbs."""
    async with owner_engine.begin() as conn:
        tenant = (await conn.execute(text(
            "INSERT INTO tenants (slug, name) VALUES (:s, :s) RETURNING id"),
            {"s": f"kb-{key}-{uuid.uuid4().hex[:8]}"})).scalar_one()
        customer = (await conn.execute(text(
            "INSERT INTO customers (tenant_id, external_key, name, renewal_date)"
            " VALUES (:t, :k, :n, '2027-01-01') RETURNING id"),
            {"t": tenant, "k": key, "n": customer_name})).scalar_one()
    return tenant, customer


async def scope_sizes(owner_engine, tenant) -> dict[uuid.UUID | None, int]:
    """Chunks per scope, checked (with the scope's length in words) against the chunks."""
    async with owner_engine.connect() as conn:
        kept = {row.customer_id: (row.chunks, row.words) for row in (await conn.execute(text(
            "SELECT customer_id, chunks, words FROM knowledge_scope_sizes WHERE tenant_id = :t"),
            {"t": tenant})).all()}
        emptied = {customer for customer, totals in kept.items() if totals == (0, 0)}
        counted = {}
        for customer_id, in (await conn.execute(text(
                "SELECT DISTINCT customer_id FROM knowledge_chunks WHERE tenant_id = :t"),
                {"t": tenant})).all():
            chunks = (await conn.execute(text(
                "SELECT count(*) FROM knowledge_chunks WHERE tenant_id = :t"
                " AND customer_id IS NOT DISTINCT FROM :c"),
                {"t": tenant, "c": customer_id})).scalar_one()
            counted[customer_id] = (chunks, await words_in(conn, tenant, customer_id))
    assert {c: totals for c, totals in kept.items() if c not in emptied} == counted
    return {customer: chunks for customer, (chunks, _) in counted.items()}


async def words_in(conn, tenant, customer_id) -> int:
    """A scope's length in words, by PostgreSQL's own word statistics (ts_stat)."""
    scope = (f"SELECT search_vector FROM knowledge_chunks WHERE tenant_id = '{tenant}'"
             + (" AND customer_id IS NULL" if customer_id is None
                else f" AND customer_id = '{customer_id}'"))
    return (await conn.execute(text("SELECT coalesce(sum(nentry), 0) FROM ts_stat(:q)"),
                                {"q": scope})).scalar_one()


async def test_scope_sizes_follow_every_insert_and_delete(owner_engine):
    tenant, customer = await scratch_tenant(owner_engine, "sizes", "Sizes Co")
    long_text = "\n\n".join(f"Section {i}. The renewal clause {i} covers pricing." * 20
                            for i in range(6))
    try:
        async with owner_engine.begin() as conn:
            await ingest_document(conn, lexical, tenant_id=tenant, title="general",
                                  content=long_text, source="test://sizes-general.md")
            await ingest_document(conn, lexical, tenant_id=tenant, customer_id=customer,
                                  title="notes", content="Sizes Co wants a discount.",
                                  source="test://sizes-notes.md")
        sizes = await scope_sizes(owner_engine, tenant)
        assert sizes[customer] == 1 and sizes[None] > 1
        async with owner_engine.begin() as conn:  # the same document again: nothing new
            await ingest_document(conn, lexical, tenant_id=tenant, title="general",
                                  content=long_text, source="test://sizes-general.md")
        assert await scope_sizes(owner_engine, tenant) == sizes
        async with owner_engine.begin() as conn:
            await conn.execute(text("DELETE FROM knowledge_documents WHERE tenant_id = :t"
                                    " AND customer_id IS NOT NULL"), {"t": tenant})
        assert await scope_sizes(owner_engine, tenant) == {None: sizes[None]}
        async with owner_engine.begin() as conn:  # new text: the scope's length follows
            await conn.execute(text("UPDATE knowledge_chunks SET content = 'Osprey osprey.'"
                                    " WHERE tenant_id = :t AND chunk_index = 0"), {"t": tenant})
        assert await scope_sizes(owner_engine, tenant) == {None: sizes[None]}
        async with owner_engine.begin() as conn:  # one statement, both scopes, ids changed too
            await ingest_document(conn, lexical, tenant_id=tenant, customer_id=customer,
                                  title="notes", content="Sizes Co wants a discount.",
                                  source="test://sizes-notes.md")
            await conn.execute(text("UPDATE knowledge_chunks SET id = gen_random_uuid(),"
                                    " content = content || ' Renewal renewal.'"
                                    " WHERE tenant_id = :t"), {"t": tenant})
        assert await scope_sizes(owner_engine, tenant) == {None: sizes[None], customer: 1}
        async with owner_engine.begin() as conn:
            with pytest.raises(DBAPIError, match="cannot move to another tenant or customer"):
                await conn.execute(text("UPDATE knowledge_chunks SET customer_id = :c"
                                        " WHERE tenant_id = :t"), {"c": customer, "t": tenant})
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": tenant})


QUERIES = ["renewal discount", "who approves a discount above 20%", "war room charter escalation",
           '"executive sponsor" -churn', "-renewal", "renewals renewal renewing", "the of and",
           "Acme's champion left", "pricing OR uplift", "zzzz qqqq"]


async def bm25_reference(conn, tenant, query, customer, every) -> list[tuple[float, uuid.UUID]]:
    """Every matching chunk's score and id, best first, computed here from the chunks' words:
    Okapi BM25 (k1 1.2, b 0.75, idf within scope) plus a point for the whole query's match."""
    scope = ("" if every else " AND (customer_id IS NULL OR customer_id = :c)" if customer
             else " AND customer_id IS NULL")
    args = {"t": tenant, "c": customer, "q": query}
    chunks = (await conn.execute(text(
        "SELECT id, search_vector @@ websearch_to_tsquery('english', :q) AS whole"
        f" FROM knowledge_chunks WHERE tenant_id = :t{scope}"), args)).all()
    words: dict[uuid.UUID, dict[str, int]] = {}
    for chunk in chunks:
        words[chunk.id] = dict((await conn.execute(text("SELECT word, nentry FROM ts_stat(:s)"), {
            "s": f"SELECT search_vector FROM knowledge_chunks WHERE id = '{chunk.id}'"})).all())
    asked = set((await conn.execute(text(
        "SELECT tsvector_to_array(to_tsvector('english', :q))"), args)).scalar_one())
    total = len(chunks)
    avgdl = max(sum(sum(w.values()) for w in words.values()) / max(total, 1), 1)
    hits = {word: sum(word in w for w in words.values()) for word in asked}
    scored = []
    for chunk in chunks:
        mine = words[chunk.id]
        held = [word for word in asked if word in mine]
        if not held:
            continue
        length = sum(mine.values())
        score = sum(math.log(1 + (total - hits[word] + 0.5) / (hits[word] + 0.5))
                    * mine[word] * 2.2 / (mine[word] + 1.2 * (0.25 + 0.75 * length / avgdl))
                    for word in held)
        scored.append((score + (1.0 if chunk.whole else 0.0), chunk.id))
    return sorted(scored, key=lambda pair: (-pair[0], pair[1]))


async def test_the_text_leg_ranks_by_bm25_as_computed_from_the_chunks_words(owner_engine, demo):
    async with owner_engine.connect() as conn:
        await set_tenant(conn, demo)
        customer = (await conn.execute(text("SELECT id FROM customers WHERE tenant_id = :t"
                                            " ORDER BY external_key LIMIT 1"),
                                       {"t": demo})).scalar_one()
        compared = 0
        for query in QUERIES:
            for scope, every in ((None, False), (customer, False), (None, True)):
                expected = await bm25_reference(conn, demo, query, scope, every)
                for limit in (3, 40):
                    ranked_rows = (await conn.execute(text(
                        "SELECT id, rank FROM knowledge_text_ranks(:t, :q, :c, :e, :n)"),
                        {"t": demo, "q": query, "c": scope, "e": every, "n": limit})).all()
                    best = expected[:limit]
                    assert [r.rank for r in ranked_rows] == pytest.approx(
                        [score for score, _ in best], rel=1e-9), query
                    # The same chunks in the same order, but for scores equal to the last bits
                    # (summed in another order here), which may come either way.
                    floor = best[-1][0] - 1e-9 if best else 0
                    assert {r.id for r in ranked_rows} <= {cid for score, cid in expected
                                                           if score >= floor}, query
                    scores = {cid: score for score, cid in expected}
                    assert all(r.rank == pytest.approx(scores[r.id], rel=1e-9)
                               for r in ranked_rows), query  # each chunk with its own score
                    compared += bool(best)
        await conn.rollback()
    assert compared > 30  # most queries find something: the comparison is not vacuous


async def test_a_chunk_dense_in_the_word_outranks_many_that_mention_it_once(owner_engine):
    """However many chunks share a word, the one that says it most for its length ranks first:
    no chunk is left out for its id (the head of 0009-0011 took tied chunks by id)."""
    tenant, _ = await scratch_tenant(owner_engine, "dense", "Dense Co")
    filler = " ".join(f"clause{i}" for i in range(40))
    dense = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff")  # the last of any tie by id
    try:
        async with owner_engine.begin() as conn:
            document = (await conn.execute(text(
                "INSERT INTO knowledge_documents (tenant_id, title, source, content, content_hash)"
                " VALUES (:t, 'Terms', 'test://dense', '', 'dense') RETURNING id"),
                {"t": tenant})).scalar_one()
            rows = [{"id": uuid.uuid4(), "n": n, "content": f"The osprey clause. {filler}"}
                    for n in range(100)]  # more than 0011's head of 4 x 20 held
            rows.append({"id": dense, "n": 100, "content": "Osprey: the osprey, osprey terms."})
            await conn.execute(text(
                "INSERT INTO knowledge_chunks (id, tenant_id, document_id, chunk_index, content,"
                " token_count) VALUES (:id, :t, :d, :n, :content, 10)"),
                [{**row, "t": tenant, "d": document} for row in rows])
        async with owner_engine.connect() as conn:
            await set_tenant(conn, tenant)
            found = await ranked(conn, tenant, "osprey")
            assert len(found) == 20 and found[0] == dense
            await conn.rollback()
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": tenant})


async def test_exclusions_never_bring_in_chunks_that_share_no_word(app_engine, demo):
    async with app_engine.connect() as conn:
        await set_tenant(conn, demo)
        # "-renewal" matches (as a whole query) every chunk without the word; only chunks
        # that have it may rank, and the whole-query point goes to none of them.
        assert await ranked(conn, demo, "-renewal") == await ranked(conn, demo, "renewal")


async def _legs_one_by_one(*args, **kwargs):
    return None  # what _hybrid answers when an HNSW scan came back short


@pytest.mark.parametrize("exact_scan_limit", [search.EXACT_SCAN_LIMIT, 0])
async def test_the_one_statement_hybrid_search_ranks_as_the_legs_fused_in_python(
        app_engine, demo, monkeypatch, exact_scan_limit):
    embedder = default_embedder()
    async with app_engine.connect() as conn:
        await set_tenant(conn, demo)
        customer = (await conn.execute(text("SELECT id FROM customers"
                                            " ORDER BY external_key LIMIT 1"))).scalar_one()
        cases = [(query, scope, k) for query in QUERIES
                 for scope in (None, customer, ALL_CUSTOMERS) for k in (1, 5, 20)]
        db = await driver_of(conn)
        fused = [await search_knowledge(db, embedder, tenant_id=demo, query=query, k=k,
                                        customer=scope, exact_scan_limit=exact_scan_limit)
                 for query, scope, k in cases]
        with monkeypatch.context() as patch:
            patch.setattr(search, "_hybrid", _legs_one_by_one)
            legs = [await search_knowledge(db, embedder, tenant_id=demo, query=query, k=k,
                                           customer=scope, exact_scan_limit=exact_scan_limit)
                    for query, scope, k in cases]
    assert fused == legs
    assert all(len(hits) == k for hits, (_, _, k) in zip(fused, cases, strict=True))
    assert sum(hit.vector_rank is not None and hit.text_rank is not None
               for hits in fused for hit in hits) > 20  # both legs did contribute


async def chunk_words(owner_engine, tenant) -> list[tuple]:
    """The tenant's word list (migrations 0011, 0016), checked against the words of its chunks:
    each word's count in its chunk and the chunk's length by PostgreSQL's ts_stat."""
    async with owner_engine.connect() as conn:
        kept = sorted((await conn.execute(text(
            "SELECT word, customer_id, chunk_id, tf, dl FROM knowledge_chunk_words"
            " WHERE tenant_id = :t"), {"t": tenant})).all())
        derived = []
        for chunk_id, customer_id in (await conn.execute(text(
                "SELECT id, customer_id FROM knowledge_chunks WHERE tenant_id = :t"),
                {"t": tenant})).all():
            counts = (await conn.execute(text("SELECT word, nentry FROM ts_stat(:q)"), {
                "q": f"SELECT search_vector FROM knowledge_chunks WHERE id = '{chunk_id}'"})).all()
            length = sum(n for _, n in counts)
            derived += [(word, customer_id, chunk_id, n, length) for word, n in counts]
    assert kept == sorted(derived)  # no word missing, none left over, none twice
    return [(word, customer_id, chunk_id) for word, customer_id, chunk_id, _, _ in kept]


async def word_row_addresses(owner_engine, tenant) -> set[str]:
    async with owner_engine.connect() as conn:
        return {str(a) for a in (await conn.execute(text(
            "SELECT ctid FROM knowledge_chunk_words WHERE tenant_id = :t"), {"t": tenant})
        ).scalars()}


async def test_the_word_list_follows_every_insert_update_and_delete(owner_engine):
    tenant, customer = await scratch_tenant(owner_engine, "words", "Words Co")
    try:
        async with owner_engine.begin() as conn:
            await ingest_document(conn, lexical, tenant_id=tenant, title="general",
                                  content="The renewal clause covers pricing and uplift.",
                                  source="test://words-general.md")
            await ingest_document(conn, lexical, tenant_id=tenant, customer_id=customer,
                                  title="notes", content="Words Co wants a discount.",
                                  source="test://words-notes.md")
        words = await chunk_words(owner_engine, tenant)
        assert ("discount", customer) in {(w, c) for w, c, _ in words}
        before = await word_row_addresses(owner_engine, tenant)
        async with owner_engine.begin() as conn:  # as re-embedding does: every chunk, no text
            await conn.execute(text("UPDATE knowledge_chunks SET token_count = token_count + 1"
                                    " WHERE tenant_id = :t"), {"t": tenant})
        assert await word_row_addresses(owner_engine, tenant) == before  # not rewritten
        assert await chunk_words(owner_engine, tenant) == words
        async with owner_engine.begin() as conn:
            await conn.execute(text("UPDATE knowledge_chunks SET content = 'Osprey escalation'"
                                    " WHERE tenant_id = :t AND customer_id IS NULL"),
                               {"t": tenant})
        words = await chunk_words(owner_engine, tenant)
        assert "osprey" in {w for w, _, _ in words} and "renew" not in {w for w, _, _ in words}
        async with owner_engine.begin() as conn:
            await conn.execute(text("DELETE FROM knowledge_documents WHERE tenant_id = :t"
                                    " AND customer_id IS NOT NULL"), {"t": tenant})
        assert {c for _, c, _ in await chunk_words(owner_engine, tenant)} == {None}
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": tenant})
    assert await chunk_words(owner_engine, tenant) == []


async def test_the_word_list_shows_a_tenant_its_own_words_and_the_sandbox_none(
        app_engine, owner_engine, demo, other):
    async with app_engine.connect() as conn:
        await set_tenant(conn, demo)
        seen = (await conn.execute(text(
            "SELECT DISTINCT tenant_id FROM knowledge_chunk_words"))).scalars().all()
        assert seen == [demo]
        assert (await conn.execute(text(
            "SELECT count(*) FROM knowledge_chunk_words WHERE tenant_id = :t"),
            {"t": other})).scalar_one() == 0
        with pytest.raises(DBAPIError, match="row-level security"):
            await conn.execute(text("INSERT INTO knowledge_chunk_words"
                                    " VALUES (:t, 'x', NULL, :c, 1, 1)"),
                               {"t": other, "c": uuid.uuid4()})
        await conn.rollback()
        await set_tenant(conn, demo)
        await conn.execute(text("SET LOCAL ROLE chatbranch_query"))
        with pytest.raises(DBAPIError, match="permission denied"):
            await conn.execute(text("SELECT count(*) FROM knowledge_chunk_words"))
    async with owner_engine.connect() as conn:  # control: the other tenant has words
        assert (await conn.execute(text(
            "SELECT count(*) FROM knowledge_chunk_words WHERE tenant_id = :t"),
            {"t": other})).scalar_one() > 0
