"""Charts created by the create_chart tool: the Vega-Lite spec and its SVG and PNG renderings.

Revision ID: 0005_charts
Revises: 0004_knowledge_search
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0005_charts"
down_revision = "0004_knowledge_search"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"

SCHEMA = """
-- Immutable once written: the service may read and insert, never change a chart.
CREATE TABLE charts (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  thread_id UUID REFERENCES workflow_chat_threads(id) ON DELETE CASCADE,
  tool_call_id UUID,
  chart_type VARCHAR(16) NOT NULL CHECK (chart_type IN ('bar', 'line', 'area', 'pie', 'scatter')),
  title VARCHAR(200) NOT NULL,
  data JSONB NOT NULL,
  spec JSONB NOT NULL,
  svg TEXT NOT NULL,
  png BYTEA NOT NULL,
  created_by UUID,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX charts_tenant_created_idx ON charts (tenant_id, created_at);
CREATE INDEX charts_thread_idx ON charts (thread_id) WHERE thread_id IS NOT NULL;

GRANT SELECT, INSERT ON charts TO chatbranch_app;
"""


def _policies() -> str:
    t = CURRENT_TENANT
    return (
        "ALTER TABLE charts ENABLE ROW LEVEL SECURITY; ALTER TABLE charts FORCE ROW LEVEL SECURITY;"
        f"CREATE POLICY tenant_isolation ON charts USING (tenant_id = {t})"
        f" WITH CHECK (tenant_id = {t});"
    )


def upgrade() -> None:
    execute_script(SCHEMA)
    execute_script(_policies())


def downgrade() -> None:
    execute_script("DROP TABLE IF EXISTS charts CASCADE;")
