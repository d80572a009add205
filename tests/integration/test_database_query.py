"""database_query on the real database: tenant-scoped views, a sandbox that holds without the validator."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine, create_sessionmaker
from tools.base import ToolContext, ToolError, ToolRegistry
from tools.database_query import DEFAULT_LIMITS, TOOL, run_sandboxed
from tools.sql_guard import VIEW_CATALOGUE

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATTACKS = json.loads((FIXTURES / "sql_attacks.json").read_text())
ORDINARY = json.loads((FIXTURES / "sql_ordinary.json").read_text())
VIEWS = [view.name for view in VIEW_CATALOGUE]
# A shorter timeout keeps the corpus run fast; one test below checks the default one.
FAST = replace(DEFAULT_LIMITS, statement_timeout_ms=1_000)
MARGIN_S = 1.5
# Tables whose content the attacks go after; compared before and after every attack.
WATCHED_TABLES = ["tenants", "users", "customers", "contracts", "account_teams", "workflows",
                  "workflow_versions", "saved_actions", "workflow_chat_branches",
                  "knowledge_documents"]
SQL_TYPES = {"uuid": "uuid", "text": "text", "numeric": "numeric", "date": "date",
             "integer": "integer", "boolean": "boolean"}


@pytest.fixture(scope="module")
async def tenants(owner_engine: AsyncEngine) -> dict[str, uuid.UUID]:
    async with owner_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT slug, id FROM tenants"))).all()
    return {row.slug: row.id for row in rows}


@pytest.fixture(scope="module")
async def markers(owner_engine: AsyncEngine, tenants: dict[str, uuid.UUID]) -> dict[str, set[str]]:
    """Strings that identify each tenant's rows: ids, names, keys, contract numbers, e-mails."""
    found: dict[str, set[str]] = {}
    async with owner_engine.connect() as conn:
        for slug, tenant in tenants.items():
            rows = (await conn.execute(text(
                "SELECT id::text AS v FROM customers WHERE tenant_id = :t"
                " UNION SELECT name FROM customers WHERE tenant_id = :t"
                " UNION SELECT external_key FROM customers WHERE tenant_id = :t"
                " UNION SELECT contract_number FROM contracts WHERE tenant_id = :t"
                " UNION SELECT email FROM account_teams WHERE tenant_id = :t"
                " UNION SELECT email FROM users WHERE tenant_id = :t"), {"t": tenant})).all()
            found[slug] = {row.v for row in rows} | {str(tenant)}
    assert len(found["other"]) > 5
    return found


def leaked(payload: str, markers: set[str]) -> set[str]:
    return {marker for marker in markers if marker in payload}


async def data_snapshot(owner_engine: AsyncEngine) -> dict[str, Any]:
    """Row counts and content digests of the watched tables, plus objects anyone could create."""
    digests = " UNION ALL ".join(
        f"SELECT '{table}', count(*)::text || ':' || md5(coalesce(string_agg(md5(t::text), ''"
        f" ORDER BY md5(t::text)), '')) FROM {table} t" for table in WATCHED_TABLES)
    async with owner_engine.connect() as conn:
        snapshot = {row[0]: row[1] for row in (await conn.execute(text(digests))).all()}
        snapshot["relations"] = (await conn.execute(text(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ))).scalar_one()
        snapshot["large_objects"] = (await conn.execute(text(
            "SELECT count(*) FROM pg_largeobject_metadata"))).scalar_one()
    return snapshot


async def held_locks(owner_engine: AsyncEngine) -> list[Any]:
    """Locks left held by a service connection, and advisory locks held by anyone.

    A service connection busy with a statement right now (the live app's run sweeper, say)
    holds its own transaction's locks while it runs; only what stays held after the query
    returned is a leak.
    """
    async with owner_engine.connect() as conn:
        return list((await conn.execute(text(
            "SELECT l.locktype, l.mode, l.relation::regclass::text AS relation, a.state"
            " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.pid <> pg_backend_pid()"
            "   AND (l.locktype = 'advisory'"
            "        OR (a.usename = 'chatbranch_app' AND a.state IS DISTINCT FROM 'active')"
            "        OR a.state LIKE 'idle in transaction%')"))).all())


@asynccontextmanager
async def granted_to_query_role(owner_engine: AsyncEngine, *functions: str) -> AsyncIterator[None]:
    """Give the sandbox role functions it normally lacks (a database where revoking failed)."""
    targets = ", ".join(f"pg_catalog.{f}" for f in functions)
    async with owner_engine.begin() as conn:
        await conn.execute(text(f"GRANT EXECUTE ON FUNCTION {targets} TO chatbranch_query"))
    try:
        yield
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text(f"REVOKE EXECUTE ON FUNCTION {targets} FROM chatbranch_query"))


def tool_context(app_engine: AsyncEngine, tenant: uuid.UUID) -> ToolContext:
    services = SimpleNamespace(sessionmaker=create_sessionmaker(app_engine))
    return ToolContext(tenant_id=tenant, user_id=None, services=services)


# --- the views -------------------------------------------------------------------------------


async def test_views_have_exactly_the_documented_columns(owner_engine):
    async with owner_engine.connect() as conn:
        for view in VIEW_CATALOGUE:
            columns = (await conn.execute(text(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = :v ORDER BY ordinal_position"),
                {"v": view.name})).all()
            assert [tuple(c) for c in columns] == [(c.name, SQL_TYPES[c.type]) for c in view.columns]


@pytest.mark.parametrize("slug", ["demo", "other"])
async def test_each_view_shows_a_tenant_exactly_its_own_rows(
        slug, app_engine, owner_engine, tenants, markers):
    base = {"customers_v": "customers", "contracts_v": "contracts", "renewals_v": "customers",
            "account_teams_v": "account_teams"}
    stranger = next(s for s in tenants if s != slug)
    for view in VIEWS:
        async with owner_engine.connect() as conn:
            expected = (await conn.execute(text(
                f"SELECT count(*) FROM {base[view]} WHERE tenant_id = :t"),
                {"t": tenants[slug]})).scalar_one()
        table = await run_sandboxed(app_engine, tenants[slug], f"SELECT * FROM {view}")
        payload = json.dumps(table.rows)
        assert len(table.rows) == expected > 0, view
        assert leaked(payload, markers[stranger]) == set(), view
        assert leaked(payload, markers[slug]), view


async def test_views_show_nothing_without_a_tenant(app_engine):
    for tenant in (None, uuid.uuid4()):
        async with app_engine.connect() as conn, conn.begin():
            if tenant is not None:
                await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                                   {"t": str(tenant)})
            await conn.execute(text("SET LOCAL ROLE chatbranch_query"))
            for view in VIEWS:
                count = (await conn.execute(text(f"SELECT count(*) FROM {view}"))).scalar_one()
                assert count == 0, (tenant, view)


async def test_errors_only_ever_show_the_callers_rows(app_engine, tenants, markers):
    # security_barrier: the view's tenant filter runs before the caller's failing cast.
    with pytest.raises(ToolError) as failed:
        await run_sandboxed(app_engine, tenants["demo"],
                            "SELECT name FROM customers_v WHERE name::int > 0")

    assert "invalid input syntax" in str(failed.value)
    assert leaked(str(failed.value), markers["demo"])
    assert leaked(str(failed.value), markers["other"]) == set()


# --- the role --------------------------------------------------------------------------------


async def test_query_role_may_select_only_the_curated_views(owner_engine):
    async with owner_engine.connect() as conn:
        readable = (await conn.execute(text(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
            " AND has_table_privilege('chatbranch_query', oid, 'SELECT')"))).scalars().all()
    assert sorted(readable) == sorted(VIEWS)


async def test_query_role_lacks_the_functions_that_could_escape_its_sandbox(owner_engine):
    checks = {
        "set_config(text, text, boolean)": "EXECUTE", "pg_sleep(double precision)": "EXECUTE",
        "pg_advisory_lock(bigint)": "EXECUTE", "pg_try_advisory_lock(integer, integer)": "EXECUTE",
        "query_to_xml(text, boolean, boolean, text)": "EXECUTE",
    }
    async with owner_engine.connect() as conn:
        for function, privilege in checks.items():
            target = f"pg_catalog.{function}"
            sandbox, service = (await conn.execute(text(
                "SELECT has_function_privilege('chatbranch_query', :f, :p),"
                " has_function_privilege('chatbranch_app', :f, :p)"),
                {"f": target, "p": privilege})).one()
            assert (sandbox, service) == (False, True), function
        activity = (await conn.execute(text(
            "SELECT has_table_privilege('chatbranch_query', 'pg_catalog.pg_stat_activity',"
            " 'SELECT')"))).scalar_one()
    assert activity is False


async def test_query_role_cannot_read_any_base_table_even_without_the_validator(
        app_engine, owner_engine, tenants):
    async with owner_engine.connect() as conn:
        tables = (await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
    assert "customers" in tables
    for table in tables:
        with pytest.raises(ToolError, match="permission denied"):
            await run_sandboxed(app_engine, tenants["demo"], f"SELECT * FROM {table}",
                                validate=False, limits=FAST)


# --- the malicious corpus through the execution wrapper alone --------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=[a["name"] for a in ATTACKS])
async def test_attack_without_the_validator_writes_nothing_leaks_nothing_locks_nothing(
        attack, app_engine, owner_engine, tenants, markers):
    sql = attack["sql"].replace("{other_tenant_id}", str(tenants["other"]))
    before = await data_snapshot(owner_engine)
    started = time.perf_counter()
    try:
        table = await run_sandboxed(app_engine, tenants["demo"], sql, validate=False, limits=FAST)
        payload = json.dumps([table.columns, table.rows])
    except ToolError as refused:
        payload = str(refused)
    elapsed = time.perf_counter() - started

    assert elapsed < FAST.statement_timeout_ms / 1000 + MARGIN_S
    assert leaked(payload, markers["other"]) == set()
    assert await data_snapshot(owner_engine) == before
    assert await held_locks(owner_engine) == []


async def test_default_timeout_ends_an_endless_query(app_engine, tenants):
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    started = time.perf_counter()
    with pytest.raises(ToolError, match="longer than 3s"):
        await run_sandboxed(app_engine, tenants["demo"], endless, validate=False)

    assert time.perf_counter() - started < DEFAULT_LIMITS.statement_timeout_ms / 1000 + MARGIN_S


async def test_result_is_refused_when_the_query_switched_tenant(
        app_engine, owner_engine, tenants):
    sql = (f"SELECT set_config('app.tenant_id', '{tenants['other']}', true) AS t, name"
           " FROM customers_v")
    async with granted_to_query_role(owner_engine, "set_config(text, text, boolean)"):
        with pytest.raises(ToolError, match="changed its own sandbox"):
            await run_sandboxed(app_engine, tenants["demo"], sql, validate=False, limits=FAST)


async def test_session_advisory_locks_are_released_even_when_the_role_may_take_them(
        app_engine, owner_engine, tenants):
    async with granted_to_query_role(owner_engine, "pg_advisory_lock(bigint)"):
        table = await run_sandboxed(app_engine, tenants["demo"], "SELECT pg_advisory_lock(4242)",
                                    validate=False, limits=FAST)
        assert table.rows == [[""]]
        with pytest.raises(ToolError, match="division by zero"):
            await run_sandboxed(app_engine, tenants["demo"],
                                "SELECT pg_advisory_lock(4243), 1 / 0", validate=False,
                                limits=FAST)
    assert await held_locks(owner_engine) == []


# --- the tool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ORDINARY, ids=[q["name"] for q in ORDINARY])
async def test_ordinary_question_returns_the_callers_rows_only(
        question, app_engine, tenants, markers):
    table = await run_sandboxed(app_engine, tenants["demo"], question["sql"])

    assert table.columns
    assert leaked(json.dumps(table.rows), markers["other"]) == set()
    json.dumps(table.rows, allow_nan=False)


async def test_tool_answers_with_a_table_message_that_keeps_the_sql(app_engine, tenants):
    registry = ToolRegistry()
    registry.register(TOOL)
    sql = ("SELECT name, arr, renewal_date, has_account_plan FROM customers_v"
           " ORDER BY arr DESC LIMIT 3")

    outcome = await registry.execute("database_query", {"query": sql},
                                     tool_context(app_engine, tenants["demo"]))

    assert outcome.success, outcome.error
    assert outcome.result is not None and outcome.result.message_type == "table"
    output = outcome.output
    assert output is not None
    assert output["columns"] == ["name", "arr", "renewal_date", "has_account_plan"]
    assert output["rowCount"] == len(output["rows"]) == 3 and output["truncated"] is False
    assert output["sql"] == outcome.result.message_metadata["sql"]
    assert output["sql"] == sql
    assert outcome.result.message_metadata["rows"] == output["rows"]
    name, arr, renewal, has_plan = output["rows"][0]
    assert isinstance(name, str) and isinstance(arr, float) and isinstance(has_plan, bool)
    assert len(renewal) == 10 and renewal[4] == "-"
    assert [row[1] for row in output["rows"]] == sorted((r[1] for r in output["rows"]),
                                                       reverse=True)


async def test_tool_refuses_every_attack_before_the_database(app_engine, tenants):
    registry = ToolRegistry()
    registry.register(TOOL)
    context = tool_context(app_engine, tenants["demo"])
    for attack in ATTACKS:
        sql = attack["sql"].replace("{other_tenant_id}", str(tenants["other"]))
        outcome = await registry.execute("database_query", {"query": sql}, context)
        assert not outcome.success and outcome.error, attack["name"]
        assert outcome.error.startswith("query refused: "), outcome.error


async def test_row_cap_cuts_the_result_and_says_so(app_engine, tenants):
    limits = replace(DEFAULT_LIMITS, max_rows=3)
    table = await run_sandboxed(app_engine, tenants["demo"], "SELECT name FROM customers_v",
                                limits=limits)

    assert len(table.rows) == 3 and table.truncated


async def test_byte_cap_keeps_the_result_under_the_limit(app_engine, tenants):
    limits = replace(DEFAULT_LIMITS, max_bytes=400)
    table = await run_sandboxed(app_engine, tenants["demo"], "SELECT * FROM contracts_v",
                                limits=limits)

    assert table.truncated and len(table.rows) > 0
    assert len(json.dumps(table.rows)) <= 400


async def test_unreachable_database_is_a_tool_error_not_a_crash(tmp_path):
    engine = create_engine(f"postgresql+asyncpg://nobody@/nowhere?host={tmp_path}", pool_size=1)
    try:
        with pytest.raises(ToolError, match="could not run the query"):
            await run_sandboxed(engine, uuid.uuid4(), "SELECT name FROM customers_v")
    finally:
        await engine.dispose()


async def test_offline_model_answers_a_data_question_with_a_table(http, auth, new_thread, markers):
    thread = await new_thread("local", tools=["database_query"])

    reply = await http.post(f"/api/threads/{thread}/messages", headers=auth(),
                            json={"content": "List the contracts and their ARR"})

    assert reply.status_code in (200, 201), reply.text
    body = reply.json()
    (call,) = body["toolCalls"]
    assert call["toolName"] == "database_query" and call["success"] is True, call
    message = body["assistantMessage"]
    assert message["messageType"] == "table"
    assert message["metadata"]["sql"] == call["toolInput"]["query"]
    assert message["metadata"]["rows"]
    assert leaked(json.dumps(message["metadata"]), markers["other"]) == set()
