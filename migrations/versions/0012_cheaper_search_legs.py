"""Cheaper search legs: a better-built HNSW graph, and a proximity rerank of a shorter head.

Vector leg. The embedding indexes were built with pgvector's defaults (m 16, ef_construction
64). On the benchmark's 100,000 clustered chunks such a graph needed an `ef_search` of 140 for
recall@10 of 0.98, and four builds of the same data ranged from 0.93 to 0.98 at 100. Built with
ef_construction 128 it gave 1.000 at an `ef_search` of 60 in each of three builds (and 0.98 at
40), so a search walks less of it: backend CPU per vector leg 1.6-1.7 -> 1.2-1.3 ms. The build
takes about twice as long (40 s at 100,000 chunks on two cores, in parallel). Existing indexes
are rebuilt here, concurrently and serially, with room for the graph in memory.

Text leg. `knowledge_text_ranks` re-ranked the 4 x limit best chunks by idf weight with
ts_rank_cd (proximity); that rerank was half of the function's CPU (1.2 of 2.5 ms). It now
re-ranks the 2 x limit best and every chunk tied with the last of them, up to 4 x limit as
before: a chunk left out scores less by weight than 2 x limit others, so it needs a proximity
bonus larger than that difference (a one-word query, where every match ties, keeps them all). On
the benchmark's queries the top 10 were the same and the top 40 99.4 % the same, for 2.5 -> 1.9
ms. And each word's chunks are joined to its weight rather than collected into an array and
unnested again (2.1 -> 1.9 ms in another run), the weights summed exactly as numeric.

Revision ID: 0012_cheaper_search_legs
Revises: 0011_knowledge_chunk_words
Create Date: 2026-11-26
"""

from alembic import op

from app.db.migrate import earlier_constant, execute_script

revision = "0012_cheaper_search_legs"
down_revision = "0011_knowledge_chunk_words"
branch_labels = None
depends_on = None

EF_CONSTRUCTION = 128
_DEFAULT_BUILD = "'((embedding::%s(%s)) %s) WHERE embedding_model = %L AND embedding_dims = %s'"
_BETTER_BUILD = (f"'((embedding::%s(%s)) %s) WITH (ef_construction = {EF_CONSTRUCTION})"
                 " WHERE embedding_model = %L AND embedding_dims = %s'")

# 0011's ranking over a shorter head. The weights are summed as numeric, exactly, so a chunk's
# base does not depend on the order the plan adds them in: chunks with the same words tie exactly,
# and ties go by id.
TEXT_RANKS = r"""
CREATE OR REPLACE FUNCTION knowledge_text_ranks(
  p_tenant UUID, p_query TEXT, p_customer UUID, p_every_customer BOOLEAN, p_limit INT
) RETURNS TABLE (id UUID, rank DOUBLE PRECISION)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
WITH tenant AS MATERIALIZED (  -- no rows unless the caller names its own tenant
  SELECT p_tenant AS id WHERE p_tenant = NULLIF(current_setting('app.tenant_id', true), '')::uuid
),
terms AS (
  SELECT DISTINCT lexeme,
         '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''' AS quoted
  FROM unnest(tsvector_to_array(to_tsvector('english', p_query))) AS lexeme
),
q AS MATERIALIZED (
  SELECT websearch_to_tsquery('english', p_query) AS strict_query,
         CAST(string_agg(quoted, ' | ' ORDER BY quoted) AS tsquery) AS any_query,
         array_agg(lexeme ORDER BY CAST(quoted AS tsquery)) AS each_word
  FROM terms
),
scope_size AS MATERIALIZED (
  SELECT coalesce(sum(s.chunks), 0)::float8 AS n FROM knowledge_scope_sizes s, tenant
  WHERE s.tenant_id = tenant.id
    AND (p_every_customer OR s.customer_id IS NULL OR s.customer_id = p_customer)
),
weights AS MATERIALIZED (  -- each word found in scope, with its weight
  SELECT t.word,
         ln(1 + (greatest(s.n, m.hits) - m.hits + 0.5) / (m.hits + 0.5))::numeric AS weight
  FROM q, unnest(q.each_word) AS t(word), tenant, scope_size s,
       LATERAL (SELECT count(*) AS hits FROM knowledge_chunk_words w
                WHERE w.tenant_id = tenant.id AND w.word = t.word
                  AND (p_every_customer OR w.customer_id IS NULL OR w.customer_id = p_customer)
               ) AS m
  WHERE m.hits > 0
),
weighted AS (  -- each word's chunks with its weight; then the whole query's matches
  SELECT true AS is_word, w.chunk_id AS id, ww.weight
  FROM weights ww, tenant, knowledge_chunk_words w
  WHERE w.tenant_id = tenant.id AND w.word = ww.word
    AND (p_every_customer OR w.customer_id IS NULL OR w.customer_id = p_customer)
  UNION ALL
  SELECT false, c.id, 1.0
  FROM q, tenant, knowledge_chunks c
  WHERE c.tenant_id = tenant.id AND c.search_vector @@ q.strict_query
    AND (p_every_customer OR c.customer_id IS NULL OR c.customer_id = p_customer)
),
head AS MATERIALIZED (  -- the 2 x limit best by weight, and those tied with the last of them
  SELECT best.id, best.base
  FROM (SELECT w.id, sum(w.weight)::float8 AS base
        FROM weighted w
        GROUP BY w.id
        HAVING bool_or(w.is_word)
        ORDER BY base DESC
        FETCH FIRST (2 * p_limit) ROWS WITH TIES) AS best
  ORDER BY best.base DESC, best.id
  LIMIT 4 * p_limit  -- 0011's head, the most that is re-ranked
)
SELECT head.id, head.base + ts_rank_cd(c.search_vector, q.any_query, 1) AS rank
FROM head JOIN knowledge_chunks c ON c.id = head.id, q
ORDER BY rank DESC, head.id
LIMIT p_limit
$$;
"""


def _ensure_function(build: str) -> str:
    """0004's `ensure_embedding_index`, as CREATE OR REPLACE, building with `build`."""
    functions = earlier_constant(__file__, "0004_knowledge_search.py", "FUNCTIONS")
    start = functions.index("CREATE FUNCTION ensure_embedding_index")
    body = functions[start:functions.index("END $$;", start) + len("END $$;")]
    assert _DEFAULT_BUILD in body
    return body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
        _DEFAULT_BUILD, build)


_EMBEDDING_INDEXES = ("SELECT format('public.%I', indexname) FROM pg_indexes"
                      " WHERE schemaname = 'public'"
                      " AND indexname LIKE 'knowledge\\_chunks\\_emb\\_%'")
# Serial, so that maintenance_work_mem is local memory grown as needed, not a shared segment
# allocated whole for the workers; 1 GB leaves the graph of 100,000 x 384 (~300 MB) in memory.
_BUILD_SETTINGS = "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0"
_RESET_SETTINGS = "RESET maintenance_work_mem; RESET max_parallel_maintenance_workers"


def _rebuild_embedding_indexes() -> None:
    """Rebuild every embedding index with the better graph, one by one and concurrently: the
    knowledge base stays searchable and writable meanwhile (about a minute per 100,000 chunks)."""
    names = op.get_bind().exec_driver_sql(_EMBEDDING_INDEXES).scalars().all()
    for name in names:
        execute_script(f"ALTER INDEX {name} SET (ef_construction = {EF_CONSTRUCTION})")
    with op.get_context().autocommit_block():  # CONCURRENTLY cannot run in a transaction
        execute_script(_BUILD_SETTINGS)
        try:
            for name in names:
                execute_script(f"REINDEX INDEX CONCURRENTLY {name}")
        finally:
            execute_script(_RESET_SETTINGS)


def upgrade() -> None:
    execute_script(_ensure_function(_BETTER_BUILD) + TEXT_RANKS)
    _rebuild_embedding_indexes()


def downgrade() -> None:
    # Indexes keep the graph they were built with; new ones get pgvector's defaults again.
    execute_script(_ensure_function(_DEFAULT_BUILD)
                   + earlier_constant(__file__, "0011_knowledge_chunk_words.py"))
