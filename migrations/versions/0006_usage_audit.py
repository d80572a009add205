"""Usage audit: hash-chained ledger, tool attribution, budget refusals.

Revision ID: 0006_usage_audit
Revises: 0005_charts
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0006_usage_audit"
down_revision = "0005_charts"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"

COLUMNS = """
ALTER TABLE usage_ledger
  ADD COLUMN tool_names TEXT[] NOT NULL DEFAULT '{}',
  ADD COLUMN chain_seq BIGINT,
  ADD COLUMN prev_hash TEXT,
  ADD COLUMN row_hash TEXT;
"""

REFUSALS = f"""
-- A reply refused by a token or cost budget, before any provider call.
CREATE TABLE usage_refusals (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id UUID,
  thread_id UUID,
  scope VARCHAR(16) NOT NULL CHECK (scope IN ('tenant', 'user', 'thread')),
  limit_kind VARCHAR(16) NOT NULL CHECK (limit_kind IN ('tokens', 'cost')),
  limit_value NUMERIC,
  used NUMERIC,
  estimate NUMERIC,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_refusals_tenant_created_idx ON usage_refusals (tenant_id, created_at);
GRANT SELECT, INSERT ON usage_refusals TO chatbranch_app;
ALTER TABLE usage_refusals ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_refusals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_refusals
  USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT});
"""

# The one definition of a row's digest: the insert trigger and `chatbranch audit verify` both call
# it, so they cannot disagree. Timestamps are rendered in UTC by hand because their text form
# otherwise follows the session's TimeZone; jsonb gives NULLs, arrays and objects one spelling.
DIGEST = """
CREATE FUNCTION usage_ledger_row_hash(p_prev_hash TEXT, p_row usage_ledger) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(COALESCE(p_prev_hash, '') || jsonb_build_array(
    p_row.id, p_row.tenant_id,
    to_char(p_row.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    p_row.user_id, p_row.customer_id, p_row.execution_id, p_row.workflow_key, p_row.step_id,
    p_row.branch_type, p_row.thread_id, p_row.message_id, p_row.call_kind, p_row.provider,
    p_row.model, p_row.input_tokens, p_row.output_tokens, p_row.cached_tokens,
    p_row.reasoning_tokens, p_row.usage_source, p_row.status, p_row.latency_ms,
    p_row.time_to_first_token_ms, p_row.cost_usd, p_row.price_version, p_row.prompt_breakdown,
    p_row.tool_names, p_row.chain_seq
  )::text, 'UTF8')), 'hex')
$$;
"""

# Existing rows join the chain in the order they were written.
BACKFILL = """
DO $$
DECLARE
  r usage_ledger;
  current_tenant UUID;
  seq BIGINT := 0;
  previous TEXT := '';
BEGIN
  FOR r IN SELECT * FROM usage_ledger ORDER BY tenant_id, created_at, id LOOP
    IF current_tenant IS DISTINCT FROM r.tenant_id THEN
      current_tenant := r.tenant_id;
      seq := 0;
      previous := '';
    END IF;
    seq := seq + 1;
    r.chain_seq := seq;
    r.prev_hash := previous;
    r.row_hash := usage_ledger_row_hash(previous, r);
    UPDATE usage_ledger SET chain_seq = r.chain_seq, prev_hash = r.prev_hash,
                            row_hash = r.row_hash
    WHERE id = r.id;
    previous := r.row_hash;
  END LOOP;
END $$;

ALTER TABLE usage_ledger
  ALTER COLUMN chain_seq SET NOT NULL,
  ALTER COLUMN prev_hash SET NOT NULL,
  ALTER COLUMN row_hash SET NOT NULL;
CREATE UNIQUE INDEX usage_ledger_tenant_chain_idx ON usage_ledger (tenant_id, chain_seq);

-- The usage report reads a tenant's time range and sums its tokens and cost: with these columns
-- in the index it never touches the (wide, hash-carrying) rows. It replaces the plain
-- (tenant_id, created_at) index, which it serves for every other lookup too.
CREATE INDEX usage_ledger_tenant_time_report_idx ON usage_ledger (tenant_id, created_at)
  INCLUDE (model, provider, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
           cost_usd);
DROP INDEX usage_ledger_tenant_time_idx;
"""

# SECURITY INVOKER on purpose: the runtime role may only insert rows of the tenant its transaction
# names, and RLS shows it exactly that tenant's previous row, which is all the chain needs. The
# owner (migrations, crash recovery, seeds, the bench) sees every row. Nothing is gained by running
# as definer, and a definer function would be one more thing that bypasses RLS.
CHAIN = """
-- The previous row is found by a backward scan of (tenant_id, chain_seq). PL/pgSQL caches the
-- plan it makes for the first rows of a session; made while the table (or its statistics) looked
-- tiny, that plan is a sequential scan, and bulk inserts then turn quadratic. Only the index
-- path is allowed here.
CREATE FUNCTION usage_ledger_chain() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off AS $$
DECLARE
  last_seq BIGINT;
  last_hash TEXT;
BEGIN
  -- One writer per tenant until commit, so two transactions never take the same chain_seq.
  -- 1970495847 ('usag') keeps these keys apart from any other advisory lock of the service.
  PERFORM pg_advisory_xact_lock(1970495847, hashtext(NEW.tenant_id::text));
  SELECT l.chain_seq, l.row_hash INTO last_seq, last_hash
  FROM usage_ledger l WHERE l.tenant_id = NEW.tenant_id
  ORDER BY l.chain_seq DESC LIMIT 1;
  NEW.chain_seq := COALESCE(last_seq, 0) + 1;
  NEW.prev_hash := COALESCE(last_hash, '');
  NEW.row_hash := usage_ledger_row_hash(NEW.prev_hash, NEW);
  RETURN NEW;
END $$;

-- Named to sort last: BEFORE triggers fire in name order, and the chain must hash the final row.
CREATE TRIGGER usage_ledger_zz_chain BEFORE INSERT ON usage_ledger
  FOR EACH ROW EXECUTE FUNCTION usage_ledger_chain();

-- Defence in depth beside the missing UPDATE/DELETE grants: only the owner (or a superuser) may
-- change history, and `chatbranch audit verify` catches it when they do.
CREATE FUNCTION usage_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID),
                 'MEMBER') THEN
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  END IF;
  RAISE EXCEPTION 'usage_ledger is append-only: % is refused for role %', TG_OP, current_user
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER usage_ledger_append_only BEFORE UPDATE OR DELETE ON usage_ledger
  FOR EACH ROW EXECUTE FUNCTION usage_ledger_append_only();
CREATE TRIGGER usage_ledger_no_truncate BEFORE TRUNCATE ON usage_ledger
  FOR EACH STATEMENT EXECUTE FUNCTION usage_ledger_append_only();
"""


def upgrade() -> None:
    for script in (COLUMNS, REFUSALS, DIGEST, BACKFILL, CHAIN):
        execute_script(script)


def downgrade() -> None:
    execute_script("""
DROP TRIGGER IF EXISTS usage_ledger_no_truncate ON usage_ledger;
DROP TRIGGER IF EXISTS usage_ledger_append_only ON usage_ledger;
DROP TRIGGER IF EXISTS usage_ledger_zz_chain ON usage_ledger;
DROP FUNCTION IF EXISTS usage_ledger_append_only();
DROP FUNCTION IF EXISTS usage_ledger_chain();
DROP INDEX IF EXISTS usage_ledger_tenant_chain_idx;
CREATE INDEX IF NOT EXISTS usage_ledger_tenant_time_idx ON usage_ledger (tenant_id, created_at);
DROP INDEX IF EXISTS usage_ledger_tenant_time_report_idx;
DROP FUNCTION IF EXISTS usage_ledger_row_hash(TEXT, usage_ledger);
DROP TABLE IF EXISTS usage_refusals CASCADE;
ALTER TABLE usage_ledger
  DROP COLUMN IF EXISTS row_hash,
  DROP COLUMN IF EXISTS prev_hash,
  DROP COLUMN IF EXISTS chain_seq,
  DROP COLUMN IF EXISTS tool_names;
""")
