"""A flush locks the runs it beats in id order, as a stop request does.

The flush's heartbeat UPDATE locked a worker's runs in whatever order its plan produced, while a
stop request (the ORM updating a thread's unfinished runs) locks them in primary-key order. A
thread with a running and a queued run, a stop and a flush at the same moment: each held one
run the other needed, and PostgreSQL killed one of them. The runs are now locked in id order
before the UPDATE; its result and everything else are 0014's.

Revision ID: 0015_flush_beats_in_id_order
Revises: 0014_flush_parts_in_order
Create Date: 2026-11-26
"""

from app.db.migrate import earlier_constant, execute_script

revision = "0015_flush_beats_in_id_order"
down_revision = "0014_flush_parts_in_order"
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
    ORDER BY x.r, x.s  -- the order every writer of parts keeps (migration 0014)
    ON CONFLICT DO NOTHING RETURNING run_id
  ), woken AS (
    SELECT pg_notify('chatbranch_runs', d.run_id::text) FROM (SELECT DISTINCT run_id FROM added) d
  ), locked AS (  -- after the parts, in id order: the order a stop request locks runs in
    SELECT l.id FROM thread_runs l
    WHERE l.id = ANY(p_beats) AND (SELECT count(*) FROM woken) >= 0
    ORDER BY l.id FOR NO KEY UPDATE
  )
  UPDATE thread_runs t SET heartbeat_at = now(),
                           last_event_seq = GREATEST(t.last_event_seq, x.last)
  FROM unnest(p_beats, p_lasts) AS x(run, last)
  WHERE t.id = x.run AND (SELECT count(*) FROM locked) >= 0
  RETURNING t.id, t.stop_requested;
END $$;
"""


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(earlier_constant(__file__, "0014_flush_parts_in_order.py"))
