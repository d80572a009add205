"""Usage rollup: ledger sums per tenant, hour, model and provider, kept by the insert itself.

The analyst's everyday question (tokens and cost by model or provider, per hour or day) then reads
a few thousand rollup rows instead of a month of ledger rows. The rollup is derived data: the
ledger stays the record, and any other grouping or filter still reads the ledger.

Revision ID: 0007_usage_hourly
Revises: 0006_usage_audit
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0007_usage_hourly"
down_revision = "0006_usage_audit"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"

# Prompt segments in app/usage/breakdown.py's SEGMENTS order, as columns (camelCase keys there).
SEGMENTS = {"system": "system", "context": "context", "history": "history",
            "question": "question", "retrieved": "retrieved", "toolResults": "tool_results",
            "tools": "tools", "overhead": "overhead"}

SEGMENT_COLUMNS = ",\n".join(f"  pb_{column} BIGINT NOT NULL DEFAULT 0"
                             for column in SEGMENTS.values())
SUMS = ", ".join(["sum(input_tokens)", "sum(output_tokens)", "sum(cached_tokens)",
                  "sum(reasoning_tokens)", "count(*)", "sum(cost_usd)"]
                 + [f"sum(COALESCE((prompt_breakdown->>'{key}')::bigint, 0))"
                    for key in SEGMENTS])
TOTALS = ["input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "requests",
          "cost_usd"] + [f"pb_{column}" for column in SEGMENTS.values()]
INSERT_COLUMNS = ", ".join(["tenant_id", "hour", "model", "provider", *TOTALS])
ADD_UP = ", ".join(f"{c} = usage_hourly.{c} + EXCLUDED.{c}" for c in TOTALS)

TABLE = f"""
CREATE TABLE usage_hourly (
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  hour TIMESTAMPTZ NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cached_tokens BIGINT NOT NULL DEFAULT 0,
  reasoning_tokens BIGINT NOT NULL DEFAULT 0,
  requests BIGINT NOT NULL DEFAULT 0,
  cost_usd NUMERIC NOT NULL DEFAULT 0,
{SEGMENT_COLUMNS},
  PRIMARY KEY (tenant_id, hour, model, provider)
);
-- The runtime role adds to its own tenant's rows through the ledger trigger (SECURITY INVOKER,
-- like the chain): RLS keeps each tenant's sums to itself.
GRANT SELECT, INSERT, UPDATE ON usage_hourly TO chatbranch_app;
ALTER TABLE usage_hourly ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_hourly FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_hourly
  USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT});
"""

# One upsert per statement, whatever its row count: a turn's single row and a bulk load alike.
# Sums are added in key order, so concurrent statements lock rollup rows in the same order.
TRIGGER = f"""
CREATE FUNCTION usage_hourly_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_hourly ({INSERT_COLUMNS})
  SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), model, provider, {SUMS}
  FROM added GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
  ON CONFLICT (tenant_id, hour, model, provider) DO UPDATE SET {ADD_UP};
  RETURN NULL;
END $$;

CREATE TRIGGER usage_ledger_hourly AFTER INSERT ON usage_ledger
  REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION usage_hourly_add();
"""

BACKFILL = f"""
INSERT INTO usage_hourly ({INSERT_COLUMNS})
SELECT tenant_id, date_trunc('hour', created_at, 'UTC'), model, provider, {SUMS}
FROM usage_ledger GROUP BY 1, 2, 3, 4;
"""


def upgrade() -> None:
    for script in (TABLE, TRIGGER, BACKFILL):
        execute_script(script)


def downgrade() -> None:
    execute_script("""
DROP TRIGGER IF EXISTS usage_ledger_hourly ON usage_ledger;
DROP FUNCTION IF EXISTS usage_hourly_add();
DROP TABLE IF EXISTS usage_hourly;
""")
