"""Durable runs: reply runs, their stream events (for resume on any worker), idempotency keys.

Revision ID: 0002_runs
Revises: 0001_foundation
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0002_runs"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
TABLES = ["thread_runs", "run_events", "idempotency_keys"]

SCHEMA = """
ALTER TABLE workflow_llm_context ADD COLUMN provider VARCHAR(32);

-- One run produces one assistant reply; it outlives the HTTP request that started it.
CREATE TABLE thread_runs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  thread_id UUID NOT NULL REFERENCES workflow_chat_threads(id) ON DELETE CASCADE,
  user_message_id UUID REFERENCES workflow_chat_messages(id) ON DELETE CASCADE,
  assistant_message_id UUID REFERENCES workflow_chat_messages(id) ON DELETE SET NULL,
  user_id UUID,
  status VARCHAR(16) NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'complete', 'stopped', 'interrupted', 'error')),
  stop_requested BOOLEAN NOT NULL DEFAULT false,
  worker_id VARCHAR(64),
  heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_event_seq INT NOT NULL DEFAULT 0,
  error_message TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  finished_at TIMESTAMPTZ
);
CREATE INDEX thread_runs_thread_idx ON thread_runs (thread_id, created_at);
CREATE INDEX thread_runs_unfinished_idx ON thread_runs (heartbeat_at)
  WHERE status IN ('queued', 'running');

-- Every stream part of a run, in order, so a client can resume from any worker.
CREATE TABLE run_events (
  run_id UUID NOT NULL REFERENCES thread_runs(id) ON DELETE CASCADE,
  seq INT NOT NULL,
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  part JSONB NOT NULL,
  PRIMARY KEY (run_id, seq)
);

CREATE TABLE idempotency_keys (
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  key VARCHAR(200) NOT NULL,
  user_id UUID NOT NULL,
  scope VARCHAR(200) NOT NULL,
  request_hash CHAR(64) NOT NULL,
  run_id UUID REFERENCES thread_runs(id) ON DELETE CASCADE,
  response JSONB,
  status_code INT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);

GRANT SELECT, INSERT, UPDATE ON thread_runs, run_events, idempotency_keys TO chatbranch_app;

-- Crash recovery across tenants: runs whose worker stopped heart-beating end as 'interrupted'
-- with their text so far, an explicit 'unavailable' usage row and closing stream parts. It runs
-- as the owner because it must see every tenant; it takes nothing but a number.
CREATE FUNCTION recover_stale_runs(stale_after_seconds INT) RETURNS INT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  r RECORD;
  recovered INT := 0;
  next_seq INT;
  used RECORD;
BEGIN
  FOR r IN
    UPDATE thread_runs SET status = 'interrupted', finished_at = now(),
           error_message = 'the worker stopped before the reply finished'
    WHERE status IN ('queued', 'running')
      AND heartbeat_at < now() - make_interval(secs => GREATEST(stale_after_seconds, 1))
    RETURNING id, tenant_id, thread_id, assistant_message_id, user_id, last_event_seq
  LOOP
    -- The text so far survives in the run's stored stream parts.
    UPDATE workflow_chat_messages m SET status = 'interrupted',
      content = COALESCE(NULLIF(m.content, ''), (
        SELECT string_agg(e.part->>'delta', '' ORDER BY e.seq) FROM run_events e
        WHERE e.run_id = r.id AND e.part->>'type' = 'text-delta'), '')
    WHERE m.id = r.assistant_message_id AND m.status = 'streaming';
    INSERT INTO usage_ledger (tenant_id, user_id, customer_id, execution_id, workflow_key, step_id,
                              branch_type, thread_id, message_id, call_kind, provider, model,
                              usage_source, status)
    SELECT r.tenant_id, r.user_id, t.customer_id, t.workflow_execution_id, e.workflow_key,
           t.step_id, t.thread_type, t.id, r.assistant_message_id,
           CASE WHEN t.thread_type = 'analysis' THEN 'analysis' ELSE 'chat' END,
           COALESCE(c.provider, 'unknown'), COALESCE(c.model_used, 'unknown'),
           'unavailable', 'interrupted'
    FROM workflow_chat_threads t
    LEFT JOIN workflow_executions e ON e.id = t.workflow_execution_id
    LEFT JOIN workflow_llm_context c ON c.thread_id = t.id
    WHERE t.id = r.thread_id;
    SELECT COALESCE(sum(input_tokens), 0) AS i, COALESCE(sum(output_tokens), 0) AS o,
           COALESCE(sum(cached_tokens), 0) AS c, COALESCE(sum(cost_usd), 0) AS usd
      INTO used FROM usage_ledger WHERE message_id = r.assistant_message_id;
    next_seq := r.last_event_seq;
    IF next_seq = 0 THEN
      next_seq := next_seq + 1;
      INSERT INTO run_events VALUES (r.id, next_seq, r.tenant_id,
        jsonb_build_object('type', 'start', 'messageId', r.assistant_message_id));
    END IF;
    INSERT INTO run_events VALUES
      (r.id, next_seq + 1, r.tenant_id, jsonb_build_object('type', 'error',
        'errorText', 'The reply was interrupted because the server stopped. Send it again.')),
      (r.id, next_seq + 2, r.tenant_id, jsonb_build_object('type', 'data-usage', 'data',
        jsonb_build_object('promptTokens', used.i, 'completionTokens', used.o,
          'cachedTokens', used.c, 'totalTokens', used.i + used.o, 'costUsd', used.usd,
          'source', 'unavailable'))),
      (r.id, next_seq + 3, r.tenant_id, jsonb_build_object('type', 'finish',
        'finishReason', 'interrupted', 'messageMetadata', jsonb_build_object('status', 'interrupted')));
    UPDATE thread_runs SET last_event_seq = next_seq + 3 WHERE id = r.id;
    recovered := recovered + 1;
  END LOOP;
  RETURN recovered;
END $$;
REVOKE ALL ON FUNCTION recover_stale_runs(INT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recover_stale_runs(INT) TO chatbranch_app;
"""


def _policies() -> str:
    t = CURRENT_TENANT
    return "\n".join(
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"
        f"CREATE POLICY tenant_isolation ON {table} USING (tenant_id = {t}) WITH CHECK (tenant_id = {t});"
        for table in TABLES
    )


def upgrade() -> None:
    execute_script(SCHEMA)
    execute_script(_policies())


def downgrade() -> None:
    execute_script(
        "DROP FUNCTION IF EXISTS recover_stale_runs(INT);"
        "DROP TABLE IF EXISTS idempotency_keys, run_events, thread_runs CASCADE;"
        "ALTER TABLE workflow_llm_context DROP COLUMN IF EXISTS provider;"
    )
