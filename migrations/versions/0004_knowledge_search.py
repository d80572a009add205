"""Knowledge search: a per-embedding-model HNSW index, created on demand by a definer function.

The runtime role owns nothing, so it cannot create indexes; yet the embedding model is chosen at
start-up (openai, local or the lexical fallback) and may change between deployments. Instead of
asking an operator to create an index by hand for each model, `ensure_embedding_index(model, dims)`
runs as the schema owner and creates exactly one kind of object: a partial HNSW index over
`knowledge_chunks.embedding` for that model, under a name derived from it. The model name is
validated and quoted with format() (%I, %L), dims is bounded, and search_path is pinned, so the
function cannot be turned into arbitrary DDL.

Revision ID: 0004_knowledge_search
Revises: 0003_query_sandbox
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0004_knowledge_search"
down_revision = "0003_query_sandbox"
branch_labels = None
depends_on = None

FUNCTIONS = r"""
-- The index name for a model: readable part (only [a-z0-9_]) + an md5 prefix so that two models
-- whose names differ only in punctuation never share an index; always under 63 bytes.
CREATE FUNCTION embedding_index_name(p_model TEXT, p_dims INT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp AS $$
  SELECT 'knowledge_chunks_emb_'
         || left(trim(both '_' from regexp_replace(lower(p_model), '[^a-z0-9]+', '_', 'g')), 24)
         || '_' || left(md5(p_model), 8) || '_' || p_dims::text
$$;

CREATE FUNCTION ensure_embedding_index(p_model TEXT, p_dims INT) RETURNS TEXT
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  index_name TEXT;
  -- pgvector's HNSW indexes `vector` up to 2000 dimensions and `halfvec` up to 4000.
  cast_type TEXT;
BEGIN
  IF p_model IS NULL OR p_model !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$' THEN
    RAISE EXCEPTION 'invalid embedding model name %', quote_literal(coalesce(p_model, 'NULL'))
      USING ERRCODE = '22023';
  END IF;
  IF p_dims IS NULL OR p_dims < 1 OR p_dims > 4000 THEN
    RAISE EXCEPTION 'embedding dimensions must be between 1 and 4000, got %', p_dims
      USING ERRCODE = '22023';
  END IF;
  cast_type := CASE WHEN p_dims <= 2000 THEN 'vector' ELSE 'halfvec' END;
  index_name := embedding_index_name(p_model, p_dims);
  -- Checked first: CREATE INDEX IF NOT EXISTS would still lock the table against writes.
  IF to_regclass(format('public.%I', index_name)) IS NOT NULL THEN
    RETURN index_name;
  END IF;
  BEGIN
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS %I ON public.knowledge_chunks USING hnsw '
      '((embedding::%s(%s)) %s) WHERE embedding_model = %L AND embedding_dims = %s',
      index_name, cast_type, p_dims, cast_type || '_cosine_ops', p_model, p_dims);
  EXCEPTION WHEN unique_violation OR duplicate_table THEN
    -- Another transaction created it at the same moment: that is what we wanted.
    NULL;
  END;
  RETURN index_name;
END $$;

REVOKE ALL ON FUNCTION ensure_embedding_index(TEXT, INT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_embedding_index(TEXT, INT) TO chatbranch_app;
GRANT EXECUTE ON FUNCTION embedding_index_name(TEXT, INT) TO chatbranch_app;

-- Chunk lists per document (re-embedding, citations) and model lookups in the vector leg.
CREATE INDEX IF NOT EXISTS knowledge_chunks_model_idx
  ON knowledge_chunks (tenant_id, embedding_model, embedding_dims);
"""

DROP = """
DO $$
DECLARE
  name TEXT;
BEGIN
  FOR name IN SELECT indexname FROM pg_indexes
              WHERE schemaname = 'public' AND indexname LIKE 'knowledge\\_chunks\\_emb\\_%'
  LOOP
    EXECUTE format('DROP INDEX IF EXISTS public.%I', name);
  END LOOP;
END $$;
DROP INDEX IF EXISTS knowledge_chunks_model_idx;
DROP FUNCTION IF EXISTS ensure_embedding_index(TEXT, INT);
DROP FUNCTION IF EXISTS embedding_index_name(TEXT, INT);
"""


def upgrade() -> None:
    execute_script(FUNCTIONS)


def downgrade() -> None:
    execute_script(DROP)
