"""A flush stores each run's parts in sequence order, as a reply's ending does.

Both write the same parts (a flush takes a run's new parts while its ending stores them too), so
each waits on the other's uncommitted rows. They must take them in one order. The ending inserts
straight from its arrays, in order; the flush's insert joins its arrays to `thread_runs`, and once
that table is big enough the plan hashes the arrays and hands each run's parts back newest
first. Flush and ending then each held a part the other needed, and PostgreSQL killed one of
them; in CI it was the ending, and its reply never finished (tests/integration/test_driver.py
reproduces it).
The insert now sorts by (run, sequence number); nothing else changes.

Revision ID: 0014_flush_parts_in_order
Revises: 0013_flush_in_one_statement
Create Date: 2026-11-26
"""

from app.db.migrate import earlier_constant, execute_script

revision = "0014_flush_parts_in_order"
down_revision = "0013_flush_in_one_statement"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION flush_run_events(
  p_tenant UUID, p_runs UUID[], p_seqs INT[], p_parts TEXT[], p_beats UUID[], p_lasts INT[]
) RETURNS TABLE (id UUID, stop_requested BOOLEAN)
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF p_tenant IS NULL THEN
    RAISE EXCEPTION 'flush_run_events needs a tenant';
  END IF;
  -- Local: they end with the caller's transaction (the statement's own, when called alone).
  -- Stream parts are many and small; the reply's ending is committed durably elsewhere.
  PERFORM set_config('app.tenant_id', p_tenant::text, true),
          set_config('synchronous_commit', 'off', true);
  RETURN QUERY
  WITH added AS (
    INSERT INTO run_events (run_id, seq, tenant_id, part)
    SELECT x.r, x.s, p_tenant, x.p::jsonb
    FROM unnest(p_runs, p_seqs, p_parts) AS x(r, s, p)
    WHERE x.r IN (SELECT t.id FROM thread_runs t WHERE t.id = ANY(p_runs))  -- RLS: own runs
    ORDER BY x.r, x.s  -- the order every writer of parts keeps (see the migration's note)
    ON CONFLICT DO NOTHING RETURNING run_id
  ), woken AS (
    SELECT pg_notify('chatbranch_runs', d.run_id::text) FROM (SELECT DISTINCT run_id FROM added) d
  )
  UPDATE thread_runs t SET heartbeat_at = now(),
                           last_event_seq = GREATEST(t.last_event_seq, x.last)
  FROM unnest(p_beats, p_lasts) AS x(run, last)
  WHERE t.id = x.run AND (SELECT count(*) FROM woken) >= 0
  RETURNING t.id, t.stop_requested;
END $$;
"""


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(
        "DROP FUNCTION IF EXISTS flush_run_events(UUID, UUID[], INT[], TEXT[], UUID[], INT[]);"
        + earlier_constant(__file__, "0013_flush_in_one_statement.py"))
