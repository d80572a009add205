"""Curated views and the sandbox role for the database_query tool.

The views are the only relations `chatbranch_query` may read. They run with their owner's
privileges (the owner may bypass row-level security), so each one filters explicitly by the
transaction's tenant: that filter is the tenancy boundary, and `security_barrier` keeps a
caller's leaky expressions from seeing rows before it applies. The columns are documented for
the model in tools/sql_guard.py (VIEW_CATALOGUE); a test keeps the two in step.

Revision ID: 0003_query_sandbox
Revises: 0002_runs
Create Date: 2026-11-26
"""

from app.db.migrate import execute_script

revision = "0003_query_sandbox"
down_revision = "0002_runs"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
# Calendar days are counted in UTC, as GET /api/customers counts them.
TODAY = "(now() AT TIME ZONE 'UTC')::date"
VIEWS = ["customers_v", "contracts_v", "renewals_v", "account_teams_v"]

# Functions every role may call by default that would let a sandboxed query change its own
# tenant or role (set_config), stall (pg_sleep*), leave locks behind (advisory locks) or run a
# second query of its own (query_to_xml*), or signal other sessions (pg_notify). The service role
# keeps them; the sandbox loses them.
GUARDED_FUNCTIONS = [
    "set_config(text, text, boolean)",
    "pg_sleep(double precision)",
    "pg_sleep_for(interval)",
    "pg_sleep_until(timestamp with time zone)",
    *(
        f"{name}({args})"
        for name in (
            "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
            "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
        )
        for args in ("bigint", "integer, integer")
    ),
    "query_to_xml(text, boolean, boolean, text)",
    "query_to_xmlschema(text, boolean, boolean, text)",
    "query_to_xml_and_xmlschema(text, boolean, boolean, text)",
    "pg_notify(text, text)",
]
# Server activity the sandbox has no business reading.
GUARDED_CATALOG_VIEWS = ["pg_stat_activity", "pg_locks"]

VIEW_SQL = f"""
CREATE VIEW customers_v WITH (security_barrier) AS
SELECT c.id AS customer_id,
       c.external_key::text AS customer_key,
       c.name::text AS name,
       c.industry::text AS industry,
       c.arr,
       c.renewal_date,
       (c.renewal_date - {TODAY}) AS days_until_renewal,
       c.health_score,
       c.has_account_plan,
       u.name::text AS csm_name,
       u.email::text AS csm_email
FROM customers c
LEFT JOIN users u ON u.id = c.csm_id AND u.tenant_id = c.tenant_id
WHERE c.tenant_id = {CURRENT_TENANT};

CREATE VIEW contracts_v WITH (security_barrier) AS
SELECT k.contract_number::text AS contract_number,
       k.customer_id,
       c.name::text AS customer_name,
       k.plan::text AS plan,
       k.seats,
       k.arr,
       k.start_date,
       k.end_date,
       k.status::text AS status,
       k.auto_renew,
       (k.end_date - {TODAY}) AS days_until_end
FROM contracts k
JOIN customers c ON c.id = k.customer_id AND c.tenant_id = k.tenant_id
WHERE k.tenant_id = {CURRENT_TENANT};

-- A customer's renewal: its current contract (the active one, else the latest) and the core
-- workflow whose trigger window (trigger.daysUntilRenewal min/max, inclusive) holds it.
CREATE VIEW renewals_v WITH (security_barrier) AS
SELECT c.id AS customer_id,
       c.name::text AS customer_name,
       u.email::text AS csm_email,
       c.renewal_date,
       (c.renewal_date - {TODAY}) AS days_until_renewal,
       c.arr,
       c.health_score,
       k.contract_number::text AS contract_number,
       k.plan::text AS plan,
       k.seats,
       k.arr AS contract_arr,
       k.status::text AS contract_status,
       k.end_date AS contract_end_date,
       k.auto_renew,
       m.workflow_id::text AS matching_workflow_id
FROM customers c
LEFT JOIN users u ON u.id = c.csm_id AND u.tenant_id = c.tenant_id
LEFT JOIN LATERAL (
  SELECT k2.* FROM contracts k2
  WHERE k2.customer_id = c.id AND k2.tenant_id = c.tenant_id
  ORDER BY (k2.status = 'active') DESC, k2.end_date DESC, k2.contract_number
  LIMIT 1
) k ON true
LEFT JOIN LATERAL (
  SELECT w.workflow_id FROM (
    SELECT wf.workflow_id,
           CASE WHEN jsonb_typeof(wf.config #> '{{trigger,daysUntilRenewal,min}}') = 'number'
                THEN (wf.config #>> '{{trigger,daysUntilRenewal,min}}')::numeric END AS low,
           CASE WHEN jsonb_typeof(wf.config #> '{{trigger,daysUntilRenewal,max}}') = 'number'
                THEN (wf.config #>> '{{trigger,daysUntilRenewal,max}}')::numeric END AS high
    FROM workflows wf
    WHERE wf.is_core AND wf.tenant_id IS NULL
  ) w
  WHERE (w.low IS NOT NULL OR w.high IS NOT NULL)
    AND (w.low IS NULL OR (c.renewal_date - {TODAY}) >= w.low)
    AND (w.high IS NULL OR (c.renewal_date - {TODAY}) <= w.high)
  ORDER BY w.workflow_id
  LIMIT 1
) m ON true
WHERE c.tenant_id = {CURRENT_TENANT};

CREATE VIEW account_teams_v WITH (security_barrier) AS
SELECT a.customer_id,
       c.name::text AS customer_name,
       a.role::text AS role,
       a.name::text AS member_name,
       a.email::text AS member_email
FROM account_teams a
JOIN customers c ON c.id = a.customer_id AND c.tenant_id = a.tenant_id
WHERE a.tenant_id = {CURRENT_TENANT};
"""


def _grants() -> str:
    views = ", ".join(VIEWS)
    return f"""
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM chatbranch_query;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM chatbranch_query;
REVOKE ALL ON {views} FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO chatbranch_query;
GRANT SELECT ON {views} TO chatbranch_query;
"""


def _guard_catalog(revoke: bool) -> str:
    """Take (or give back) PUBLIC's rights to the guarded catalog objects.

    Only a superuser may change the rights of built-in objects; any other owner (a managed
    database) leaves them as they are, and the validator and the execution wrapper still apply.
    """
    targets = [("EXECUTE", f"FUNCTION pg_catalog.{f}") for f in GUARDED_FUNCTIONS]
    targets += [("SELECT", f"pg_catalog.{v}") for v in GUARDED_CATALOG_VIEWS]
    statements = [
        f"REVOKE {right} ON {target} FROM PUBLIC; GRANT {right} ON {target} TO chatbranch_app;"
        if revoke
        else f"GRANT {right} ON {target} TO PUBLIC; REVOKE {right} ON {target} FROM chatbranch_app;"
        for right, target in targets
    ]
    body = "\n    ".join(statements)
    return f"""
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    {body}
  ELSE
    RAISE NOTICE 'not a superuser: built-in functions keep their default rights';
  END IF;
END $$;
"""


def _self_check() -> str:
    views = ", ".join(f"'{name}'" for name in VIEWS)
    return f"""
DO $$
DECLARE
  bad TEXT;
BEGIN
  SELECT string_agg(v, ', ') INTO bad FROM unnest(ARRAY[{views}]) AS v
  WHERE NOT has_table_privilege('chatbranch_query', 'public.' || v, 'SELECT');
  IF bad IS NOT NULL THEN RAISE EXCEPTION 'migration check: sandbox cannot read %', bad; END IF;

  SELECT string_agg(c.relname, ', ') INTO bad FROM pg_class c
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND c.relname <> ALL(ARRAY[{views}])
    AND has_table_privilege('chatbranch_query', c.oid, 'SELECT');
  IF bad IS NOT NULL THEN RAISE EXCEPTION 'migration check: sandbox can read %', bad; END IF;

  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chatbranch_query'
             AND (rolsuper OR rolbypassrls OR rolcanlogin)) THEN
    RAISE EXCEPTION 'migration check: chatbranch_query must be a plain NOLOGIN role';
  END IF;
END $$;
"""


def upgrade() -> None:
    for script in (VIEW_SQL, _grants(), _guard_catalog(revoke=True), _self_check()):
        execute_script(script)


def downgrade() -> None:
    execute_script(_guard_catalog(revoke=False))
    execute_script(f"DROP VIEW IF EXISTS {', '.join(reversed(VIEWS))};")
