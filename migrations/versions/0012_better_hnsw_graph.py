"""A better-built HNSW graph for every embedding index, so that a search walks less of it.

The embedding indexes were built with pgvector's defaults (m 16, ef_construction 64). On the
benchmark's 100,000 clustered chunks such a graph needed an `ef_search` of 140 for recall@10 of
0.98, and four builds of the same data ranged from 0.93 to 0.98 at 100. Built with
ef_construction 128 it gave 1.000 at an `ef_search` of 60 in each of three builds (and 0.98 at
40): backend CPU per vector leg 1.6-1.7 -> 1.2-1.3 ms (app/knowledge/search.py sets the 60). The
build takes about twice as long (40 s at 100,000 chunks on two cores, in parallel). Existing
indexes are rebuilt here, concurrently and serially, with room for the graph in memory.

Revision ID: 0012_better_hnsw_graph
Revises: 0011_knowledge_chunk_words
Create Date: 2026-11-26
"""

from alembic import op

from app.db.migrate import earlier_constant, execute_script

revision = "0012_better_hnsw_graph"
down_revision = "0011_knowledge_chunk_words"
branch_labels = None
depends_on = None

EF_CONSTRUCTION = 128
_DEFAULT_BUILD = "'((embedding::%s(%s)) %s) WHERE embedding_model = %L AND embedding_dims = %s'"
_BETTER_BUILD = (f"'((embedding::%s(%s)) %s) WITH (ef_construction = {EF_CONSTRUCTION})"
                 " WHERE embedding_model = %L AND embedding_dims = %s'")


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
    execute_script(_ensure_function(_BETTER_BUILD))
    _rebuild_embedding_indexes()


def downgrade() -> None:
    # Indexes keep the graph they were built with; new ones get pgvector's defaults again.
    execute_script(_ensure_function(_DEFAULT_BUILD))
