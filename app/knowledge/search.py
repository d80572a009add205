"""Hybrid retrieval: pgvector nearest neighbours and PostgreSQL full-text search, fused by RRF.

Scope is always one tenant (named in SQL and enforced again by RLS) and, for a customer's
thread, the tenant's general documents plus that customer's: never another customer's notes.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from app.db.driver import Db
from app.db.named import named_rows
from app.knowledge import repository
from app.knowledge.embedders import Embedder, lexical_terms

log = logging.getLogger("chatbranch.knowledge")

RRF_K = 60  # the constant of Cormack et al.; damps the weight of top ranks
EXACT_SCAN_LIMIT = 5_000  # up to this many chunks in scope, exact search is fast and exact
MAX_K = 20
HNSW_EF_SEARCH = 60  # the least candidate list of an HNSW scan (pgvector's default is 40)
Mode = Literal["hybrid", "vector", "text"]


class AllCustomers(enum.Enum):
    """Scope marker: the tenant's general documents and every customer's (search API)."""

    ALL = "all"


ALL_CUSTOMERS = AllCustomers.ALL
CustomerScope = uuid.UUID | None | AllCustomers


class Embedding(enum.Enum):
    """Marker: the search embeds its query itself (the caller passed no vector)."""

    TO_DO = "to do"


EMBED_IN_SEARCH = Embedding.TO_DO


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk with its document, in rank order."""

    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    source: str
    content: str
    snippet: str
    score: float
    vector_rank: int | None = None
    text_rank: int | None = None


async def search_knowledge(
    db: Db,
    embedder: Embedder,
    *,
    tenant_id: uuid.UUID,
    query: str,
    k: int = 5,
    customer: CustomerScope = None,
    mode: Mode = "hybrid",
    exact_scan_limit: int = EXACT_SCAN_LIMIT,
    query_vector: list[float] | Embedding | None = EMBED_IN_SEARCH,
) -> list[SearchHit]:
    """The `k` best chunks for `query`; k of them whenever k chunks exist in scope (hybrid).

    `customer`: None searches the tenant's general documents only, a customer id adds that
    customer's documents, ALL_CUSTOMERS every document of the tenant.
    Scores: hybrid is the RRF sum (higher is better), vector the cosine similarity, text the
    full-text rank. `query_vector`: `embed_query`'s answer for `query`, when the caller embedded
    it before taking a connection (an embedding may be a network call).
    """
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}")
    if not db.is_in_transaction():  # the scan settings and the tenant are transaction-local
        raise RuntimeError("search_knowledge runs inside a tenant-scoped transaction")
    query = query.strip()
    scope_sql, params = _scope(tenant_id, customer)
    depth = min(200, max(4 * k, 40))
    vector = None
    if mode != "text" and query:
        vector = (await embed_query(embedder, query) if query_vector is EMBED_IN_SEARCH
                  else query_vector)
    if mode == "hybrid" and query:
        hits = await _hybrid(db, embedder, vector, query, tenant_id, customer, k, depth,
                             exact_scan_limit)
        if hits is not None:
            return hits
        exact_scan_limit = sys.maxsize  # its HNSW scan came back short: search exactly
    vector_ranks: list[tuple[uuid.UUID, float]] = []
    text_ranks: list[tuple[uuid.UUID, float]] = []
    if vector is not None:
        vector_ranks = await _vector_leg(
            db, embedder, vector, tenant_id, customer, depth, exact_scan_limit
        )
    if mode in ("hybrid", "text") and query:
        text_ranks = await _text_leg(db, query, tenant_id, customer, depth)
    if mode == "vector":
        ranked = [(cid, 1.0 - dist) for cid, dist in vector_ranks[:k]]
    elif mode == "text":
        ranked = text_ranks[:k]
    else:
        ranked = fuse([vector_ranks, text_ranks], k)
        if len(ranked) < k:
            taken = [cid for cid, _ in ranked]
            ranked += await _fill(db, scope_sql, params, taken, k - len(ranked))
    vector_pos = {cid: i for i, (cid, _) in enumerate(vector_ranks, start=1)}
    text_pos = {cid: i for i, (cid, _) in enumerate(text_ranks, start=1)}
    return await _hits(db, query, tenant_id, ranked, vector_pos, text_pos)


async def embed_query(embedder: Embedder, query: str) -> list[float] | None:
    """The query's embedding; None when it has no direction to compare (no known words)."""
    [vector] = await embedder.embed([query.strip()])
    if not any(vector) or any(math.isnan(v) for v in vector):
        return None
    return vector


def fuse(rankings: list[list[tuple[uuid.UUID, float]]], k: int) -> list[tuple[uuid.UUID, float]]:
    """Reciprocal rank fusion: each list adds 1 / (60 + rank) for every id it ranks."""
    scores: dict[uuid.UUID, float] = {}
    best: dict[uuid.UUID, int] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            best[chunk_id] = min(best.get(chunk_id, rank), rank)
    order = sorted(scores, key=lambda cid: (-scores[cid], best[cid], str(cid)))
    return [(cid, scores[cid]) for cid in order[:k]]


def _scope(
    tenant_id: uuid.UUID, customer: CustomerScope, alias: str = "c"
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"tenant_id": tenant_id}
    if customer is ALL_CUSTOMERS:
        return f"{alias}.tenant_id = :tenant_id", params
    if customer is None:
        return f"{alias}.tenant_id = :tenant_id AND {alias}.customer_id IS NULL", params
    params["customer_id"] = customer
    return (
        f"{alias}.tenant_id = :tenant_id"
        f" AND ({alias}.customer_id IS NULL OR {alias}.customer_id = :customer_id)",
        params,
    )


async def _vector_leg(
    db: Db,
    embedder: Embedder,
    vector: list[float],
    tenant_id: uuid.UUID,
    customer: CustomerScope,
    depth: int,
    exact_scan_limit: int,
) -> list[tuple[uuid.UUID, float]]:
    """(chunk id, cosine distance), nearest first, among chunks embedded by this model."""
    scope_sql, params = _scope(tenant_id, customer)
    where = f"{scope_sql} AND {model_filter(embedder.model, embedder.dims)}"
    args = {**params, "q": repository.vector_literal(vector), "n": depth}
    in_scope = await _prepare_vector_scan(db, tenant_id, customer, depth)
    if in_scope > exact_scan_limit:
        rows = await named_rows(db, vector_leg_sql(embedder.dims, where, exact=False), args)
        found = [(row.id, float(row.distance)) for row in rows]
        if len(found) >= min(depth, in_scope):
            return found
        log.warning("hnsw scan returned %d of %d neighbours; using exact search", len(found), depth)
    rows = await named_rows(db, vector_leg_sql(embedder.dims, where, exact=True), args)
    return [(row.id, float(row.distance)) for row in rows]


async def _prepare_vector_scan(
    db: Db, tenant_id: uuid.UUID, customer: CustomerScope, depth: int
) -> int:
    """Chunks in scope (of every model: an upper bound of this model's); sets the HNSW scan up.

    The scope's size is kept by the chunk statements (migration 0009); the HNSW settings ride
    along in the same round trip.
    """
    sizes_sql, params = _scope(tenant_id, customer, alias="s")
    # With graphs built at ef_construction 128 (migration 0012), ef_search 60 gave recall@10 of
    # 1.000 over three builds of the benchmark's 100,000 chunks (at 40: 0.98). A deeper leg
    # gets 1.5 x its depth: a candidate list no longer than the leg would cost recall.
    [found] = await named_rows(
        db,
        "SELECT coalesce(sum(s.chunks), 0) AS n,"
        " set_config('hnsw.ef_search', :ef, true),"
        " set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        f" FROM knowledge_scope_sizes s WHERE {sizes_sql}",
        {**params, "ef": str(min(1000, max(HNSW_EF_SEARCH, depth + depth // 2)))},
    )
    return int(found.n)


def model_filter(model: str, dims: int) -> str:
    """SQL restricting chunks to one embedding model, as literals.

    Literals, not parameters: only then can the planner prove the partial HNSW index's
    predicate (a generic plan with $n parameters would never use it).
    """
    return (
        f"c.embedding_model = '{repository.checked_model_name(model)}'"
        f" AND c.embedding_dims = {int(dims)}"
    )


def vector_leg_sql(dims: int, where: str, *, exact: bool, limit: str = ":n") -> str:
    """Nearest chunks by cosine distance to :q, `limit` of them, among rows matching `where`.

    The query vector is a subquery, so it is parsed once even in a generic plan (as a bare
    parameter it would be cast again for every row).
    """
    if exact:
        # The dimensionless expression matches no index: a plain, exact scan of the scope.
        return (
            "SELECT c.id, c.embedding <=> (SELECT CAST(CAST(:q AS text) AS vector)) AS distance"
            f" FROM knowledge_chunks c WHERE {where} ORDER BY distance, c.id LIMIT {limit}"
        )
    vtype = repository.vector_type(dims)
    # The same expression as the model's index; relaxed_order (iterative scan) may return
    # neighbours slightly out of order, so the materialised set is sorted again.
    return (
        "WITH nearest AS MATERIALIZED ("
        f" SELECT c.id, c.embedding::{vtype} <=> (SELECT CAST(CAST(:q AS text) AS {vtype}))"
        f" AS distance FROM knowledge_chunks c WHERE {where} ORDER BY distance LIMIT {limit})"
        " SELECT id, distance FROM nearest ORDER BY distance, id"
    )


# PostgreSQL's ranks know nothing of how rare a word is, and a question rarely shares all its
# words with the answer. So any query word may match, and a chunk scores Okapi BM25 (within
# scope) over the query words it contains, plus a point when it matches the whole websearch query
# ("phrases", -excluded). The ranking lives in the definer function `knowledge_text_ranks`
# (migrations 0009, 0016): run as the runtime role, RLS would keep the full-text index from being
# used at all.
_TEXT_RANKS = (
    "SELECT id, rank FROM knowledge_text_ranks(:tenant_id, :query, :customer, :every, :n)"
)


async def _text_leg(
    db: Db, query: str, tenant_id: uuid.UUID, customer: CustomerScope, depth: int
) -> list[tuple[uuid.UUID, float]]:
    """(chunk id, rank), best first, among chunks sharing a word stem with the query.

    Empty unless `tenant_id` is the transaction's own (`app.tenant_id`), as RLS would have it.
    """
    every = customer is ALL_CUSTOMERS
    rows = await named_rows(
        db, _TEXT_RANKS,
        {"tenant_id": tenant_id, "query": query, "customer": None if every else customer,
         "every": every, "n": depth},
    )
    return [(row.id, float(row.rank)) for row in rows]


# Both legs, their fusion (as `fuse` does it: the same float sums, the same order) and the
# winners' details in one statement: one round trip instead of three. The outer one-row join
# reports the vector leg's count even when nothing at all was found.
_HYBRID = """
WITH vector_leg AS MATERIALIZED ({vector_leg}),
vector_ranks AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM vector_leg),
text_ranks AS (
  SELECT t.id, t.pos AS rank
  FROM knowledge_text_ranks(:tenant_id, CAST(:query AS text), CAST(:text_customer AS uuid),
                            CAST(:every AS boolean), {depth})
       WITH ORDINALITY AS t(id, score, pos)
),
fused AS MATERIALIZED (
  SELECT coalesce(v.id, t.id) AS id, v.rank AS vector_rank, t.rank AS text_rank,
         coalesce(1.0::float8 / ({rrf_k} + v.rank), 0)
           + coalesce(1.0::float8 / ({rrf_k} + t.rank), 0) AS score,
         least(v.rank, t.rank) AS best
  FROM vector_ranks v FULL JOIN text_ranks t ON t.id = v.id
  ORDER BY score DESC, best, id
  LIMIT {k}
)
SELECT (SELECT count(*) FROM vector_leg) AS vector_found, f.id, f.score, f.vector_rank,
       f.text_rank, c.document_id, c.content, d.title, d.source
FROM (SELECT) AS one
LEFT JOIN (fused f JOIN knowledge_chunks c ON c.id = f.id AND c.tenant_id = :tenant_id
           JOIN knowledge_documents d ON d.id = c.document_id) ON true
ORDER BY f.score DESC, f.best, f.id
"""
_NO_VECTOR = "SELECT CAST(NULL AS uuid) AS id, CAST(NULL AS float8) AS distance WHERE false"


@functools.lru_cache(maxsize=256)
def _hybrid_statement(vector_leg: str, depth: int, k: int) -> str:
    # Limits are literals: with them as parameters no generic plan is good enough, and every
    # call would be planned again (about 0.35 ms).
    return _HYBRID.format(vector_leg=vector_leg, rrf_k=RRF_K, depth=int(depth), k=int(k))


async def _hybrid(
    db: Db,
    embedder: Embedder,
    vector: list[float] | None,
    query: str,
    tenant_id: uuid.UUID,
    customer: CustomerScope,
    k: int,
    depth: int,
    exact_scan_limit: int,
) -> list[SearchHit] | None:
    """The hybrid search in one statement after the scan set-up; None if HNSW came back short."""
    scope_sql, params = _scope(tenant_id, customer)
    every = customer is ALL_CUSTOMERS
    args: dict[str, Any] = {**params, "query": query, "every": every,
                            "text_customer": None if every else customer}
    vector_sql, approximate, in_scope = _NO_VECTOR, False, 0
    if vector is not None:
        in_scope = await _prepare_vector_scan(db, tenant_id, customer, depth)
        approximate = in_scope > exact_scan_limit
        where = f"{scope_sql} AND {model_filter(embedder.model, embedder.dims)}"
        vector_sql = vector_leg_sql(embedder.dims, where, exact=not approximate,
                                    limit=str(depth))
        args["q"] = repository.vector_literal(vector)
    rows = await named_rows(db, _hybrid_statement(vector_sql, depth, k), args)
    if approximate and rows[0].vector_found < min(depth, in_scope):
        log.warning("hnsw scan returned %d of %d neighbours; using exact search",
                    rows[0].vector_found, depth)
        return None
    hits = [
        SearchHit(chunk_id=row.id, document_id=row.document_id, title=row.title,
                  source=row.source, content=row.content, snippet=make_snippet(row.content, query),
                  score=round(row.score, 6), vector_rank=row.vector_rank,
                  text_rank=row.text_rank)
        for row in rows if row.id is not None
    ]
    if len(hits) < k:  # the fill: chunks neither leg reached, after all those they did
        taken = [hit.chunk_id for hit in hits]
        filler = await _fill(db, scope_sql, params, taken, k - len(hits))
        hits += await _hits(db, query, tenant_id, filler, {}, {})
    return hits


async def _fill(
    db: Db, scope_sql: str, params: dict[str, Any], taken: list[uuid.UUID], wanted: int
) -> list[tuple[uuid.UUID, float]]:
    """Chunks neither leg reached (no shared word, embedded by another model), newest first.

    Keeps the promise of k results whenever k exist; they rank last with a score of 0.
    """
    rows = await named_rows(
        db,
        f"SELECT c.id FROM knowledge_chunks c WHERE {scope_sql}"
        " AND NOT (c.id = ANY(CAST(:taken AS uuid[])))"
        " ORDER BY c.created_at DESC, c.document_id, c.chunk_index LIMIT :n",
        {**params, "taken": [str(t) for t in taken], "n": wanted},
    )
    return [(row.id, 0.0) for row in rows]


_DETAILS = """
SELECT c.id, c.document_id, c.content, d.title, d.source
FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
WHERE c.tenant_id = :tenant_id AND c.id = ANY(CAST(:ids AS uuid[]))
"""
_MARKUP = re.compile(r"[*_`]+|^#+\s*|^\s*[-+>]\s+|^\|\s*|\s*\|\s*$", re.MULTILINE)
_MARKUP_CHARS = frozenset("*_`#-+>|")  # every match of _MARKUP holds one of them
SNIPPET_CHARS = 300


def _plain(line: str) -> str:
    """The line without Markdown markup, stripped. A line with none of its characters skips
    the expression, which tries five alternatives at every position (about 10 µs a line)."""
    if _MARKUP_CHARS.isdisjoint(line):
        return line.strip()
    return _MARKUP.sub("", line).strip()


def make_snippet(content: str, query: str, max_chars: int = SNIPPET_CHARS) -> str:
    """The passage's lines that share most words with the query, as plain text, cut to size.

    Chunks hold one sentence or list item per line (see chunking), so a line is a natural unit;
    Markdown emphasis and bullets are dropped because snippets are shown and quoted as text.
    """
    lines = [line for line in (_plain(raw) for raw in content.split("\n")) if line]
    if not lines:
        return ""
    best = 0
    if len(lines) > 1:  # a single line needs no choosing (nor its words stemmed)
        wanted = set(lexical_terms(query))
        overlap = [len(wanted & set(lexical_terms(line))) for line in lines]
        best = max(range(len(lines)), key=lambda i: (overlap[i], -i)) if any(overlap) else 0
    snippet = ""
    for line in lines[best:]:
        snippet = f"{snippet} {line}".strip()
        if len(snippet) >= max_chars:
            break
    if len(snippet) <= max_chars:
        return snippet
    cut = snippet[:max_chars].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " …"


async def _hits(
    db: Db,
    query: str,
    tenant_id: uuid.UUID,
    ranked: list[tuple[uuid.UUID, float]],
    vector_pos: dict[uuid.UUID, int],
    text_pos: dict[uuid.UUID, int],
) -> list[SearchHit]:
    if not ranked:
        return []
    rows = await named_rows(
        db, _DETAILS, {"tenant_id": tenant_id, "ids": [str(cid) for cid, _ in ranked]}
    )
    details = {row.id: row for row in rows}
    hits = []
    for chunk_id, score in ranked:
        row = details.get(chunk_id)
        if row is None:
            continue
        hits.append(
            SearchHit(
                chunk_id=chunk_id,
                document_id=row.document_id,
                title=row.title,
                source=row.source,
                content=row.content,
                snippet=make_snippet(row.content, query),
                score=round(score, 6),
                vector_rank=vector_pos.get(chunk_id),
                text_rank=text_pos.get(chunk_id),
            )
        )
    return hits
