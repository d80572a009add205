"""The full-text leg ranks by Okapi BM25, from the word list alone: no chunk is read to rank.

Until now a chunk scored the inverse document frequency of the query words it holds, and the
best 4 x limit of those were read back from their rows for `ts_rank_cd` (how often and how
densely the words occur). Two flaws: chunks holding the same words tie on that first score, so
when more tie than the head holds, the head took them by id, at random; and reading the head's
rows was a third of the function's CPU (bench row 4).

Now each (word, chunk) row of `knowledge_chunk_words` also keeps the word's count in the chunk
(`tf`) and the chunk's length in words (`dl`), and each scope its total length (`words`, beside
`chunks`), all kept by the chunk statements' triggers. A chunk's score is BM25's
    sum over the query words it holds of  idf(word) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
with k1 1.2, b 0.75 and 0009's idf (within scope), plus 0009's point for matching the whole
websearch query; the best `p_limit` are returned, ties by id. Every candidate is scored on the
same terms, so a chunk that says a word three times in ten words beats one that says it once
in two hundred, however many share it.

Measured on the benchmark's 100,000 chunks (bench row 4's queries): the function 2.4 -> 1.4 ms
(695 -> 57 buffers read), backend CPU per `rag_search` 4.5 -> 3.3 ms, and `rag_search` at 4
clients p95 20.6 -> 16.3 ms. On the seeded questions, recall@5 of the text leg 0.974 -> 1.000.
The price: two more columns per word row, and a scope length to keep.
The function's signature, tenant binding, customer scope and privileges are 0011's.

Revision ID: 0016_text_ranks_bm25
Revises: 0015_flush_beats_in_id_order
Create Date: 2026-11-26
"""

from app.db.migrate import earlier_constant, execute_script

revision = "0016_text_ranks_bm25"
down_revision = "0015_flush_beats_in_id_order"
branch_labels = None
depends_on = None

# No chunk is written while the word list and the totals are rebuilt from the chunks (an
# ingestion's triggers would otherwise run the old bodies against the new columns, or be missed).
LOCK = "LOCK TABLE knowledge_chunks IN SHARE MODE;"

# The length of a chunk in words: its lexemes' positions (stop words excluded, as in the
# matching). A lexeme without positions (a stripped tsvector) counts once. A tsvector keeps at
# most 256 positions of a lexeme, and none past 16,383: far beyond a chunk (about 200 tokens).
LENGTH = """
CREATE FUNCTION knowledge_text_length(p_vector tsvector) RETURNS INT
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog AS $$
  SELECT coalesce(sum(coalesce(cardinality(w.positions), 1)), 0)::int FROM unnest(p_vector) AS w
$$;
-- Called by the chunk statements' triggers, which run as the writing role.
REVOKE ALL ON FUNCTION knowledge_text_length(tsvector) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION knowledge_text_length(tsvector) TO chatbranch_app;
"""

# Scope totals: a chunk's length joins its scope's total with its count. Chunks never change
# scope (0009's trigger refuses it), but a chunk's text may change: its scope's total follows.
SCOPE_TOTALS = """
ALTER TABLE knowledge_scope_sizes ADD COLUMN words BIGINT NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION knowledge_scope_sizes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO knowledge_scope_sizes (tenant_id, customer_id, chunks, words)
  SELECT tenant_id, customer_id, count(*), sum(knowledge_text_length(search_vector))
  FROM added GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (tenant_id, customer_id)
  DO UPDATE SET chunks = knowledge_scope_sizes.chunks + EXCLUDED.chunks,
                words = knowledge_scope_sizes.words + EXCLUDED.words;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION knowledge_scope_sizes_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE knowledge_scope_sizes s SET chunks = s.chunks - r.n, words = s.words - r.words
  FROM (SELECT tenant_id, customer_id, count(*) AS n,
               sum(knowledge_text_length(search_vector)) AS words
        FROM removed GROUP BY 1, 2 ORDER BY 1, 2) r
  WHERE s.tenant_id = r.tenant_id AND s.customer_id IS NOT DISTINCT FROM r.customer_id;
  RETURN NULL;
END $$;

-- New lengths minus old ones, per scope (rows are not paired: an UPDATE may change ids too).
CREATE FUNCTION knowledge_scope_sizes_replace() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE knowledge_scope_sizes s SET words = s.words + r.change
  FROM (SELECT tenant_id, customer_id, sum(n) AS change
        FROM (SELECT tenant_id, customer_id, knowledge_text_length(search_vector) AS n
              FROM added
              UNION ALL
              SELECT tenant_id, customer_id, -knowledge_text_length(search_vector) FROM removed
             ) AS lengths
        GROUP BY 1, 2 ORDER BY 1, 2) r
  WHERE s.tenant_id = r.tenant_id AND s.customer_id IS NOT DISTINCT FROM r.customer_id
    AND r.change <> 0;
  RETURN NULL;
END $$;

CREATE TRIGGER knowledge_chunks_sizes_replace AFTER UPDATE ON knowledge_chunks
  REFERENCING OLD TABLE AS removed NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION knowledge_scope_sizes_replace();

UPDATE knowledge_scope_sizes s SET words = t.words
FROM (SELECT tenant_id, customer_id, sum(knowledge_text_length(search_vector)) AS words
      FROM knowledge_chunks GROUP BY 1, 2) t
WHERE s.tenant_id = t.tenant_id AND s.customer_id IS NOT DISTINCT FROM t.customer_id;
"""

# The word list gains each word's count and its chunk's length; its index carries them, so a
# search still reads the index alone. Rebuilt whole: it is derived from the chunks.
# The length once per chunk (OFFSET 0 keeps the planner from computing it again for every word:
# 17 x slower at 100,000 chunks).
_WORD_ROWS = """
  INSERT INTO knowledge_chunk_words (tenant_id, word, customer_id, chunk_id, tf, dl)
  SELECT a.tenant_id, w.lexeme, a.customer_id, a.id, coalesce(cardinality(w.positions), 1), l.dl
  FROM {source} a
       CROSS JOIN LATERAL (SELECT knowledge_text_length(a.search_vector) AS dl OFFSET 0) AS l,
       unnest(a.search_vector) AS w;
"""
_REMOVE_WORDS = """
  DELETE FROM knowledge_chunk_words k
  USING (SELECT r.tenant_id, w.word, r.id
         FROM {source} r, unnest(tsvector_to_array(r.search_vector)) AS w(word)) AS r
  WHERE k.tenant_id = r.tenant_id AND k.word = r.word AND k.chunk_id = r.id;
"""
# An UPDATE replaces the words of the chunks whose text changed, and only theirs: re-embedding a
# chunk (the most common update) leaves its rows, and the index-only scans, alone.
_CHANGED = ("(SELECT * FROM {this} x WHERE NOT EXISTS (SELECT FROM {other} y"
            " WHERE y.id = x.id AND y.search_vector = x.search_vector))")
WORD_COUNTS = f"""
DROP INDEX knowledge_chunk_words_idx;
TRUNCATE knowledge_chunk_words;  -- derived data: no dead rows, and no row-level security
ALTER TABLE knowledge_chunk_words ADD COLUMN tf SMALLINT NOT NULL, ADD COLUMN dl INT NOT NULL;

CREATE OR REPLACE FUNCTION knowledge_chunk_words_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{_WORD_ROWS.format(source="added")}
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION knowledge_chunk_words_replace() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
{_REMOVE_WORDS.format(source=_CHANGED.format(this="removed", other="added"))}
{_WORD_ROWS.format(source=_CHANGED.format(this="added", other="removed"))}
  RETURN NULL;
END $$;

{_WORD_ROWS.format(source="knowledge_chunks")}
CREATE INDEX knowledge_chunk_words_idx
  ON knowledge_chunk_words (tenant_id, word, chunk_id) INCLUDE (customer_id, tf, dl);
"""

# Per word, one index-only scan yields its chunks with their BM25 term factors (the scope's
# average length is known by then) and its document frequency, hence its idf; each chunk then
# sums idf x factor over its words in one hash aggregation. All in float8 (numeric is slow).
FUNCTION = r"""
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
         array_agg(lexeme ORDER BY CAST(quoted AS tsquery)) AS each_word
  FROM terms
),
scope_size AS MATERIALIZED (
  SELECT coalesce(sum(s.chunks), 0)::float8 AS n,
         greatest(coalesce(sum(s.words), 0)::float8 / greatest(sum(s.chunks), 1)::float8, 1)
           AS avgdl
  FROM knowledge_scope_sizes s, tenant
  WHERE s.tenant_id = tenant.id
    AND (p_every_customer OR s.customer_id IS NULL OR s.customer_id = p_customer)
),
weighted AS MATERIALIZED (  -- per word: its chunks, their term factors, its idf; then the query's
  SELECT true AS is_word, m.ids, m.factors,
         ln(1 + (greatest(s.n, m.hits) - m.hits + 0.5) / (m.hits + 0.5)) AS weight
  FROM q, unnest(q.each_word) AS t(word), tenant, scope_size s,
       LATERAL (SELECT count(*) AS hits, array_agg(w.chunk_id) AS ids,
                       array_agg(w.tf * 2.2::float8
                                 / (w.tf + 1.2::float8 * (0.25::float8
                                                          + 0.75::float8 * w.dl / s.avgdl)))
                         AS factors
                FROM knowledge_chunk_words w
                WHERE w.tenant_id = tenant.id AND w.word = t.word
                  AND (p_every_customer OR w.customer_id IS NULL OR w.customer_id = p_customer)
               ) AS m
  WHERE m.hits > 0
  UNION ALL
  SELECT false, m.ids, NULL, 1.0
  FROM q, tenant,
       LATERAL (SELECT array_agg(c.id) AS ids
                FROM knowledge_chunks c
                WHERE c.tenant_id = tenant.id AND c.search_vector @@ q.strict_query
                  AND (p_every_customer OR c.customer_id IS NULL OR c.customer_id = p_customer)
               ) AS m
  WHERE m.ids IS NOT NULL
)
SELECT h.id, sum(w.weight * coalesce(h.factor, 1.0::float8)) AS rank
FROM weighted w, unnest(w.ids, w.factors) AS h(id, factor)
GROUP BY h.id
HAVING bool_or(w.is_word)  -- the whole-query point alone (an exclusion) ranks nothing
ORDER BY rank DESC, h.id
LIMIT p_limit
$$;
"""


def upgrade() -> None:
    execute_script(LOCK + LENGTH + SCOPE_TOTALS + WORD_COUNTS + FUNCTION)


def downgrade() -> None:
    words_0011 = earlier_constant(__file__, "0011_knowledge_chunk_words.py", "WORDS")
    add_0011 = words_0011[words_0011.index("CREATE FUNCTION knowledge_chunk_words_add()"):
                          words_0011.index("CREATE FUNCTION knowledge_chunk_words_remove()")]
    replace_0011 = words_0011[
        words_0011.index("CREATE FUNCTION knowledge_chunk_words_replace()"):
        words_0011.index("CREATE FUNCTION knowledge_chunk_words_clear()")]
    sizes_0009 = earlier_constant(__file__, "0009_knowledge_text_ranks.py", "SCOPE_SIZES")
    sizes_add_remove = sizes_0009[
        sizes_0009.index("CREATE FUNCTION knowledge_scope_sizes_add()"):
        sizes_0009.index("CREATE FUNCTION knowledge_scope_sizes_clear()")]
    execute_script(
        earlier_constant(__file__, "0011_knowledge_chunk_words.py")
        + (add_0011 + replace_0011 + sizes_add_remove).replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
        + """
DROP TRIGGER IF EXISTS knowledge_chunks_sizes_replace ON knowledge_chunks;
DROP FUNCTION IF EXISTS knowledge_scope_sizes_replace();
ALTER TABLE knowledge_scope_sizes DROP COLUMN words;
DROP INDEX knowledge_chunk_words_idx;
ALTER TABLE knowledge_chunk_words DROP COLUMN tf, DROP COLUMN dl;
CREATE INDEX knowledge_chunk_words_idx
  ON knowledge_chunk_words (tenant_id, word, chunk_id) INCLUDE (customer_id);
DROP FUNCTION IF EXISTS knowledge_text_length(tsvector);
""")
