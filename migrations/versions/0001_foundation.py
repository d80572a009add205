"""Foundation: the spec's eight workflow tables, tenancy, knowledge, usage ledger, RLS and roles.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-26
"""


from app.db.migrate import execute_script

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

# The tenant of the current transaction; "no tenant" is NULL and matches nothing.
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"

# Tables every row of which belongs to exactly one tenant.
TENANT_TABLES = [
    "users", "customers", "contracts", "account_teams", "workflow_executions",
    "workflow_chat_threads", "workflow_chat_messages", "workflow_llm_context",
    "workflow_llm_tool_calls", "notifications_log", "knowledge_documents", "knowledge_chunks",
    "usage_ledger",
]
# Tables whose rows are a tenant's or shared by all tenants (tenant_id NULL), readable but not writable.
SHARED_TABLES = {
    "workflows": "is_core",
    "workflow_versions": "true",
    "saved_actions": "available_globally",
    "workflow_chat_branches": "true",
}
ALL_RLS_TABLES = ["tenants", *TENANT_TABLES, *SHARED_TABLES]

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tenants (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  slug VARCHAR(64) NOT NULL UNIQUE,
  name VARCHAR(255) NOT NULL,
  company JSONB NOT NULL DEFAULT '{}'::jsonb,
  settings JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  email VARCHAR(320) NOT NULL UNIQUE,
  name VARCHAR(255) NOT NULL,
  role VARCHAR(16) NOT NULL CHECK (role IN ('csm', 'manager', 'analyst', 'admin')),
  manager_email VARCHAR(320),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX users_tenant_idx ON users (tenant_id);

CREATE TABLE customers (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  external_key VARCHAR(64) NOT NULL,
  name VARCHAR(255) NOT NULL,
  arr NUMERIC(14, 2) NOT NULL DEFAULT 0 CHECK (arr >= 0),
  renewal_date DATE NOT NULL,
  has_account_plan BOOLEAN NOT NULL DEFAULT false,
  industry VARCHAR(120),
  health_score INT CHECK (health_score BETWEEN 0 AND 100),
  csm_id UUID REFERENCES users(id) ON DELETE SET NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, external_key)
);
CREATE INDEX customers_tenant_renewal_idx ON customers (tenant_id, renewal_date);

CREATE TABLE contracts (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id UUID NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  contract_number VARCHAR(64) NOT NULL,
  plan VARCHAR(120),
  seats INT CHECK (seats >= 0),
  arr NUMERIC(14, 2) NOT NULL DEFAULT 0 CHECK (arr >= 0),
  start_date DATE NOT NULL,
  end_date DATE NOT NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'expired', 'lapsed', 'renewed', 'cancelled', 'pending')),
  auto_renew BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, contract_number),
  CHECK (end_date >= start_date)
);
CREATE INDEX contracts_customer_idx ON contracts (customer_id);

CREATE TABLE account_teams (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id UUID NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  role VARCHAR(20) NOT NULL CHECK (role IN ('ae', 'sa', 'csm', 'exec_sponsor', 'support')),
  name VARCHAR(255) NOT NULL,
  email VARCHAR(320) NOT NULL,
  UNIQUE (customer_id, role, email)
);
CREATE INDEX account_teams_customer_idx ON account_teams (customer_id);

-- The spec's eight tables, with tenant_id added where the spec lacks it (ARCHITECTURE decision 2).

CREATE TABLE workflows (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  workflow_id VARCHAR(50) NOT NULL,
  name VARCHAR(255) NOT NULL,
  description TEXT,
  version VARCHAR(20) DEFAULT '1.0.0',
  config JSONB NOT NULL,
  is_core BOOLEAN DEFAULT FALSE,
  tenant_id UUID REFERENCES tenants(id) ON DELETE CASCADE,
  created_by UUID REFERENCES users(id),
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  -- A tenant's workflow may shadow a core workflow of the same id, so the spec's global UNIQUE
  -- becomes unique per owner (NULL = core).
  CONSTRAINT workflows_workflow_id_key UNIQUE NULLS NOT DISTINCT (tenant_id, workflow_id),
  CONSTRAINT workflows_core_has_no_tenant CHECK (NOT is_core OR tenant_id IS NULL),
  CONSTRAINT workflows_config_is_object CHECK (jsonb_typeof(config) = 'object')
);
CREATE INDEX workflows_workflow_id_idx ON workflows (workflow_id);
CREATE INDEX workflows_tenant_idx ON workflows (tenant_id);

CREATE TABLE workflow_versions (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  workflow_id UUID REFERENCES workflows(id) ON DELETE CASCADE,
  version INT NOT NULL,
  config JSONB NOT NULL,
  changed_by UUID REFERENCES users(id),
  changed_at TIMESTAMPTZ DEFAULT NOW(),
  change_description TEXT,
  tenant_id UUID REFERENCES tenants(id) ON DELETE CASCADE,
  UNIQUE(workflow_id, version)
);

CREATE TABLE saved_actions (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  action_id VARCHAR UNIQUE NOT NULL,
  action_name VARCHAR NOT NULL,
  action_type VARCHAR NOT NULL CHECK (action_type IN ('snooze', 'skip', 'escalation', 'script')),
  handler VARCHAR,
  config JSONB,
  available_globally BOOLEAN DEFAULT TRUE,
  created_by UUID REFERENCES users(id),
  created_at TIMESTAMPTZ DEFAULT NOW(),
  tenant_id UUID REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE TABLE workflow_chat_branches (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  workflow_id VARCHAR NOT NULL,
  from_step_id VARCHAR NOT NULL,
  branch_id VARCHAR NOT NULL,
  branch_label VARCHAR NOT NULL,
  branch_type VARCHAR NOT NULL CHECK (branch_type IN ('fixed', 'llm', 'saved_action', 'rag')),
  user_prompts TEXT[],
  response_text TEXT,
  next_step_id VARCHAR,
  saved_action_id VARCHAR REFERENCES saved_actions(action_id),
  llm_handler VARCHAR,
  allow_off_script BOOLEAN DEFAULT FALSE,
  return_to_step VARCHAR,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  tenant_id UUID REFERENCES tenants(id) ON DELETE CASCADE,
  llm_config JSONB NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT workflow_chat_branches_branch_key
    UNIQUE NULLS NOT DISTINCT (tenant_id, workflow_id, from_step_id, branch_id),
  CONSTRAINT workflow_chat_branches_saved_action_needs_id
    CHECK (branch_type <> 'saved_action' OR saved_action_id IS NOT NULL)
);
CREATE INDEX workflow_chat_branches_step_idx ON workflow_chat_branches (workflow_id, from_step_id);

CREATE TABLE workflow_executions (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  workflow_id UUID NOT NULL REFERENCES workflows(id),
  workflow_key VARCHAR(50) NOT NULL,
  customer_id UUID NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  current_step_id VARCHAR,
  status VARCHAR(20) NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'snoozed', 'awaiting_approval', 'completed', 'cancelled')),
  snoozed_until TIMESTAMPTZ,
  state JSONB NOT NULL DEFAULT '{}'::jsonb,
  started_by UUID REFERENCES users(id),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  completed_at TIMESTAMPTZ
);
CREATE INDEX workflow_executions_tenant_customer_idx ON workflow_executions (tenant_id, customer_id);

CREATE TABLE workflow_chat_threads (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  workflow_execution_id UUID REFERENCES workflow_executions(id),
  step_id VARCHAR NOT NULL,
  thread_type VARCHAR NOT NULL CHECK (thread_type IN ('llm', 'rag', 'analysis', 'custom')),
  started_by UUID REFERENCES users(id),
  started_at TIMESTAMPTZ DEFAULT NOW(),
  ended_at TIMESTAMPTZ,
  status VARCHAR DEFAULT 'active' CHECK (status IN ('active', 'completed', 'abandoned')),
  return_to_step VARCHAR,
  total_messages INT DEFAULT 0,
  total_tokens INT DEFAULT 0,
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id UUID REFERENCES customers(id) ON DELETE CASCADE,
  branch_id VARCHAR,
  -- Row-locked counter for message sequence numbers (never max()+1).
  last_sequence_number INT NOT NULL DEFAULT 0
);
CREATE INDEX workflow_chat_threads_execution_idx ON workflow_chat_threads (workflow_execution_id);

CREATE TABLE workflow_chat_messages (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  thread_id UUID REFERENCES workflow_chat_threads(id) ON DELETE CASCADE,
  role VARCHAR NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content TEXT NOT NULL,
  message_type VARCHAR DEFAULT 'text' CHECK (message_type IN ('text', 'chart', 'table', 'code')),
  metadata JSONB,
  tokens_used INT,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  sequence_number INT NOT NULL,
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  status VARCHAR(16) NOT NULL DEFAULT 'complete'
    CHECK (status IN ('streaming', 'complete', 'stopped', 'interrupted', 'error')),
  CONSTRAINT workflow_chat_messages_thread_sequence_key UNIQUE (thread_id, sequence_number)
);

CREATE TABLE workflow_llm_context (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  thread_id UUID REFERENCES workflow_chat_threads(id) ON DELETE CASCADE UNIQUE,
  system_prompt TEXT NOT NULL,
  tools_available TEXT[],
  context_data JSONB NOT NULL,
  model_used VARCHAR,
  temperature FLOAT DEFAULT 0.7,
  max_tokens INT DEFAULT 2000,
  total_tokens_used INT DEFAULT 0,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  context_as_of TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE workflow_llm_tool_calls (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  thread_id UUID REFERENCES workflow_chat_threads(id) ON DELETE CASCADE,
  message_id UUID REFERENCES workflow_chat_messages(id) ON DELETE CASCADE,
  tool_name VARCHAR NOT NULL,
  tool_input JSONB NOT NULL,
  tool_output JSONB,
  success BOOLEAN,
  error_message TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  provider_call_id VARCHAR(128),
  latency_ms INT
);
CREATE INDEX workflow_llm_tool_calls_thread_idx ON workflow_llm_tool_calls (thread_id, created_at);
CREATE INDEX workflow_llm_tool_calls_message_idx ON workflow_llm_tool_calls (message_id);

CREATE TABLE notifications_log (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  execution_id UUID NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
  step_id VARCHAR NOT NULL,
  notification_id VARCHAR,
  type VARCHAR(16) NOT NULL,
  title TEXT NOT NULL,
  message TEXT,
  recipients TEXT[] NOT NULL DEFAULT '{}',
  priority VARCHAR(16),
  fired_by VARCHAR(16) NOT NULL DEFAULT 'step_entry' CHECK (fired_by IN ('step_entry', 'action')),
  action VARCHAR(64),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_log_execution_idx ON notifications_log (execution_id, created_at);

CREATE TABLE knowledge_documents (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id UUID REFERENCES customers(id) ON DELETE CASCADE,
  title VARCHAR(500) NOT NULL,
  source VARCHAR(1000) NOT NULL,
  content TEXT NOT NULL,
  content_hash CHAR(64) NOT NULL,
  metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT knowledge_documents_content_key
    UNIQUE NULLS NOT DISTINCT (tenant_id, customer_id, content_hash)
);

CREATE TABLE knowledge_chunks (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  document_id UUID NOT NULL REFERENCES knowledge_documents(id) ON DELETE CASCADE,
  customer_id UUID REFERENCES customers(id) ON DELETE CASCADE,
  chunk_index INT NOT NULL,
  content TEXT NOT NULL,
  token_count INT NOT NULL,
  -- Dimensionless so several embedding models can coexist; each gets its own partial HNSW index.
  embedding vector,
  embedding_model VARCHAR(100),
  embedding_dims INT,
  search_vector tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (document_id, chunk_index)
);
CREATE INDEX knowledge_chunks_tenant_idx ON knowledge_chunks (tenant_id, customer_id);
CREATE INDEX knowledge_chunks_search_idx ON knowledge_chunks USING gin (search_vector);

-- One row per provider call; no foreign keys so history outlives what it describes.
CREATE TABLE usage_ledger (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id UUID,
  customer_id UUID,
  execution_id UUID,
  workflow_key VARCHAR(50),
  step_id VARCHAR,
  branch_type VARCHAR(16),
  thread_id UUID,
  message_id UUID,
  call_kind VARCHAR(16) NOT NULL DEFAULT 'chat' CHECK (call_kind IN ('chat', 'analysis', 'embedding')),
  provider VARCHAR(32) NOT NULL,
  model VARCHAR(128) NOT NULL,
  input_tokens INT NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
  output_tokens INT NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
  cached_tokens INT NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
  reasoning_tokens INT NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
  usage_source VARCHAR(16) NOT NULL CHECK (usage_source IN ('provider', 'estimated', 'unavailable')),
  status VARCHAR(16) NOT NULL DEFAULT 'ok'
    CHECK (status IN ('ok', 'error', 'stopped', 'interrupted')),
  latency_ms INT,
  time_to_first_token_ms INT,
  cost_usd NUMERIC(18, 8) NOT NULL DEFAULT 0,
  price_version VARCHAR(64),
  prompt_breakdown JSONB NOT NULL DEFAULT '{}'::jsonb,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_tenant_time_idx ON usage_ledger (tenant_id, created_at);
CREATE INDEX usage_ledger_thread_idx ON usage_ledger (thread_id);
"""

FUNCTIONS = """
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- The spec's automatic versioning: every config written gets a workflow_versions row.
CREATE FUNCTION record_workflow_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO workflow_versions (workflow_id, version, config, changed_by, change_description, tenant_id)
  SELECT NEW.id,
         COALESCE(MAX(v.version), 0) + 1,
         NEW.config,
         COALESCE(NULLIF(current_setting('app.user_id', true), '')::uuid, NEW.created_by),
         COALESCE(NULLIF(current_setting('app.change_description', true), ''),
                  CASE WHEN TG_OP = 'INSERT' THEN 'created' ELSE 'updated' END),
         NEW.tenant_id
  FROM workflow_versions v WHERE v.workflow_id = NEW.id;
  RETURN NEW;
END $$;

CREATE TRIGGER workflows_updated_at BEFORE UPDATE ON workflows
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER workflow_llm_context_updated_at BEFORE UPDATE ON workflow_llm_context
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER customers_updated_at BEFORE UPDATE ON customers
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER workflow_executions_updated_at BEFORE UPDATE ON workflow_executions
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER workflows_version_on_insert AFTER INSERT ON workflows
  FOR EACH ROW EXECUTE FUNCTION record_workflow_version();
CREATE TRIGGER workflows_version_on_update AFTER UPDATE OF config ON workflows
  FOR EACH ROW WHEN (OLD.config IS DISTINCT FROM NEW.config)
  EXECUTE FUNCTION record_workflow_version();

-- Helper functions of the spec. SECURITY INVOKER: row-level security still applies to the caller.
CREATE FUNCTION get_tenant_workflows(p_tenant_id UUID) RETURNS SETOF workflows
LANGUAGE sql STABLE AS $$
  SELECT DISTINCT ON (w.workflow_id) w.*
  FROM workflows w
  WHERE w.tenant_id = p_tenant_id OR (w.tenant_id IS NULL AND w.is_core)
  ORDER BY w.workflow_id, w.tenant_id NULLS LAST
$$;

CREATE FUNCTION get_workflow(p_workflow_id VARCHAR, p_tenant_id UUID) RETURNS SETOF workflows
LANGUAGE sql STABLE AS $$
  SELECT w.* FROM workflows w
  WHERE w.workflow_id = p_workflow_id
    AND (w.tenant_id = p_tenant_id OR (w.tenant_id IS NULL AND w.is_core))
  ORDER BY w.tenant_id NULLS LAST
  LIMIT 1
$$;

CREATE FUNCTION get_step_chat_branches(p_workflow_id VARCHAR, p_step_id VARCHAR, p_tenant_id UUID)
RETURNS SETOF workflow_chat_branches
LANGUAGE sql STABLE AS $$
  SELECT b.* FROM (
    SELECT DISTINCT ON (cb.branch_id) cb.*
    FROM workflow_chat_branches cb
    WHERE cb.workflow_id = p_workflow_id AND cb.from_step_id = p_step_id
      AND (cb.tenant_id = p_tenant_id OR cb.tenant_id IS NULL)
    ORDER BY cb.branch_id, cb.tenant_id NULLS LAST
  ) b
  ORDER BY b.created_at, b.branch_id
$$;
"""

ROLES = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chatbranch_app') THEN
    CREATE ROLE chatbranch_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chatbranch_query') THEN
    CREATE ROLE chatbranch_query NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
GRANT chatbranch_query TO chatbranch_app;
GRANT USAGE ON SCHEMA public TO chatbranch_app;
GRANT SELECT ON tenants TO chatbranch_app;
GRANT SELECT, UPDATE ON users TO chatbranch_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
  customers, contracts, account_teams, workflows, saved_actions, workflow_chat_branches,
  workflow_executions, workflow_chat_threads, workflow_chat_messages, workflow_llm_context,
  workflow_llm_tool_calls, notifications_log, knowledge_documents, knowledge_chunks
  TO chatbranch_app;
-- History tables are append-only for the service.
GRANT SELECT, INSERT ON workflow_versions, usage_ledger TO chatbranch_app;
GRANT SELECT ON alembic_version TO chatbranch_app;
GRANT EXECUTE ON FUNCTION get_tenant_workflows(UUID), get_workflow(VARCHAR, UUID),
  get_step_chat_branches(VARCHAR, VARCHAR, UUID) TO chatbranch_app;
"""


def _policies() -> str:
    t = CURRENT_TENANT
    sql = ["ALTER TABLE tenants ENABLE ROW LEVEL SECURITY; ALTER TABLE tenants FORCE ROW LEVEL SECURITY;",
           f"CREATE POLICY tenant_isolation ON tenants USING (id = {t});"]
    for table in TENANT_TABLES:
        sql.append(
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"
            f"CREATE POLICY tenant_isolation ON {table} USING (tenant_id = {t}) WITH CHECK (tenant_id = {t});"
        )
    for table, shared in SHARED_TABLES.items():
        sql.append(
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"
            # Shared rows are visible only to a caller that names a tenant: no tenant sees nothing.
            f"CREATE POLICY tenant_read ON {table} FOR SELECT USING (tenant_id = {t}"
            f" OR ({t} IS NOT NULL AND tenant_id IS NULL AND {shared}));"
            f"CREATE POLICY tenant_insert ON {table} FOR INSERT WITH CHECK (tenant_id = {t});"
            f"CREATE POLICY tenant_update ON {table} FOR UPDATE USING (tenant_id = {t})"
            f" WITH CHECK (tenant_id = {t});"
            f"CREATE POLICY tenant_delete ON {table} FOR DELETE USING (tenant_id = {t});"
        )
    return "\n".join(sql)


def _self_check() -> str:
    """The spec's built-in validation: fail the migration when anything is missing."""
    tables = ", ".join(f"'{name}'" for name in ALL_RLS_TABLES)
    return f"""
DO $$
DECLARE
  missing TEXT;
BEGIN
  SELECT string_agg(t, ', ') INTO missing FROM unnest(ARRAY[{tables}]) AS t
  WHERE to_regclass('public.' || t) IS NULL;
  IF missing IS NOT NULL THEN RAISE EXCEPTION 'migration check: missing tables %', missing; END IF;

  SELECT string_agg(c.relname, ', ') INTO missing FROM pg_class c
  WHERE c.relname = ANY(ARRAY[{tables}]) AND c.relnamespace = 'public'::regnamespace
    AND NOT (c.relrowsecurity AND c.relforcerowsecurity);
  IF missing IS NOT NULL THEN RAISE EXCEPTION 'migration check: RLS not forced on %', missing; END IF;

  SELECT string_agg(t, ', ') INTO missing FROM unnest(ARRAY[{tables}]) AS t
  WHERE NOT EXISTS (SELECT 1 FROM pg_policies p WHERE p.tablename = t);
  IF missing IS NOT NULL THEN RAISE EXCEPTION 'migration check: no policy on %', missing; END IF;

  SELECT string_agg(f, ', ') INTO missing
  FROM unnest(ARRAY['get_tenant_workflows', 'get_workflow', 'get_step_chat_branches',
                    'record_workflow_version', 'set_updated_at']) AS f
  WHERE NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = f);
  IF missing IS NOT NULL THEN RAISE EXCEPTION 'migration check: missing functions %', missing; END IF;

  SELECT string_agg(g, ', ') INTO missing
  FROM unnest(ARRAY['workflows_version_on_insert', 'workflows_version_on_update',
                    'workflows_updated_at', 'workflow_llm_context_updated_at']) AS g
  WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = g);
  IF missing IS NOT NULL THEN RAISE EXCEPTION 'migration check: missing triggers %', missing; END IF;

  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chatbranch_app'
             AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'migration check: chatbranch_app must not be superuser or bypass RLS';
  END IF;
END $$;
"""


def upgrade() -> None:
    for script in (SCHEMA, FUNCTIONS, ROLES, _policies(), _self_check()):
        execute_script(script)


def downgrade() -> None:
    tables = ", ".join(reversed(ALL_RLS_TABLES))
    execute_script(f"DROP TABLE IF EXISTS {tables} CASCADE;")
    execute_script(
        "DROP FUNCTION IF EXISTS get_tenant_workflows(UUID), get_workflow(VARCHAR, UUID),"
        " get_step_chat_branches(VARCHAR, VARCHAR, UUID), record_workflow_version(),"
        " set_updated_at();"
    )
    execute_script("REVOKE ALL ON SCHEMA public FROM chatbranch_app;")
    # Roles are cluster-wide: another database may still use them, so leave them in place.
