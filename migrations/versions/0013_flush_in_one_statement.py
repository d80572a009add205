"""A run-events flush in one statement: `flush_run_events` scopes its own transaction.

Readers see a part only once it is stored, so each flush sits between a token and its readers.
It took three round trips (begin and scope, the statement, commit); as one call in an implicit
transaction it takes one. The function sets the tenant and `synchronous_commit` locally, so both
end with the statement's own transaction and RLS applies to every row it writes, as before.

Revision ID: 0013_flush_in_one_statement
Revises: 0012_better_hnsw_graph
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0013_flush_in_one_statement"
down_revision = "0012_better_hnsw_graph"
branch_labels = None
depends_on = None

# The body is the flusher's statement of app/chat/runs.py: store new parts (idempotent), wake
# readers on other workers, record the runs' heartbeat and last stored part, and say which runs
# were asked to stop. Invoker's rights: the runtime role, under RLS, for the named tenant only;
# unlike the statement it replaces, it also stores no part for a run the tenant cannot see.
FUNCTION = """
CREATE FUNCTION flush_run_events(
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
REVOKE ALL ON FUNCTION flush_run_events(UUID, UUID[], INT[], TEXT[], UUID[], INT[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flush_run_events(UUID, UUID[], INT[], TEXT[], UUID[], INT[])
  TO chatbranch_app;
"""


def upgrade() -> None:
    execute_script(FUNCTION)


def downgrade() -> None:
    execute_script(
        "DROP FUNCTION IF EXISTS flush_run_events(UUID, UUID[], INT[], TEXT[], UUID[], INT[]);")
