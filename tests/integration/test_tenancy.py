"""Tenant isolation is enforced by the database itself, for every tenant-owned table."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

# Tables whose primary key is not `id`: the column that identifies a row in these tests.
KEY_COLUMN = {"run_events": "run_id", "idempotency_keys": "key", "usage_hourly": "tenant_id"}

TENANT_TABLES = [
    "thread_runs", "run_events", "idempotency_keys",
    "tenants",
    "users",
    "customers",
    "contracts",
    "account_teams",
    "workflows",
    "workflow_versions",
    "saved_actions",
    "workflow_chat_branches",
    "workflow_executions",
    "workflow_chat_threads",
    "workflow_chat_messages",
    "workflow_llm_context",
    "workflow_llm_tool_calls",
    "notifications_log",
    "knowledge_documents",
    "knowledge_chunks",
    "usage_ledger",
    "charts",
    "usage_refusals",
    "usage_hourly",
]


async def _tenant_id(engine: AsyncEngine, slug: str) -> uuid.UUID:
    async with engine.connect() as conn:
        return (
            await conn.execute(text("SELECT id FROM tenants WHERE slug = :s"), {"s": slug})
        ).scalar_one()


@pytest.fixture(scope="module")
async def other_rows(owner_engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """One row of tenant Other in every tenant-owned table, as the owner sees it."""
    other = await _tenant_id(owner_engine, "other")
    async with owner_engine.begin() as conn:
        ids = (
            await conn.execute(
                text(
                    "SELECT c.id AS customer, u.id AS user_id FROM customers c"
                    " JOIN users u ON u.tenant_id = c.tenant_id WHERE c.tenant_id = :t LIMIT 1"
                ),
                {"t": other},
            )
        ).one()
        wf = (
            await conn.execute(
                text(
                    "INSERT INTO workflows (workflow_id, name, config, tenant_id) VALUES"
                    " ('other-private', 'Other private', '{\"id\": \"other-private\"}', :t) RETURNING id"
                ),
                {"t": other},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO saved_actions (action_id, action_name, action_type, handler, tenant_id,"
                " available_globally) VALUES ('other-snooze', 'Other snooze', 'snooze',"
                " 'code:GlobalActions.snooze', :t, false)"
            ),
            {"t": other},
        )
        await conn.execute(
            text(
                "INSERT INTO workflow_chat_branches (workflow_id, from_step_id, branch_id,"
                " branch_label, branch_type, tenant_id) VALUES ('other-private', 's1', 'b1', 'B1',"
                " 'llm', :t)"
            ),
            {"t": other},
        )
        ex = (
            await conn.execute(
                text(
                    "INSERT INTO workflow_executions (tenant_id, workflow_id, workflow_key, customer_id,"
                    " current_step_id) VALUES (:t, :w, 'other-private', :c, 's1') RETURNING id"
                ),
                {"t": other, "w": wf, "c": ids.customer},
            )
        ).scalar_one()
        th = (
            await conn.execute(
                text(
                    "INSERT INTO workflow_chat_threads (workflow_execution_id, step_id, thread_type,"
                    " tenant_id, customer_id) VALUES (:e, 's1', 'llm', :t, :c) RETURNING id"
                ),
                {"e": ex, "t": other, "c": ids.customer},
            )
        ).scalar_one()
        msg = (
            await conn.execute(
                text(
                    "INSERT INTO workflow_chat_messages (thread_id, role, content, sequence_number,"
                    " tenant_id) VALUES (:th, 'user', 'secret question of Other', 1, :t) RETURNING id"
                ),
                {"th": th, "t": other},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO workflow_llm_context (thread_id, system_prompt, context_data, tenant_id)"
                " VALUES (:th, 'other prompt', '{}', :t)"
            ),
            {"th": th, "t": other},
        )
        await conn.execute(
            text(
                "INSERT INTO workflow_llm_tool_calls (thread_id, message_id, tool_name, tool_input,"
                " tenant_id) VALUES (:th, :m, 'rag_search', '{}', :t)"
            ),
            {"th": th, "m": msg, "t": other},
        )
        await conn.execute(
            text(
                "INSERT INTO notifications_log (tenant_id, execution_id, step_id, type, title)"
                " VALUES (:t, :e, 's1', 'email', 'Other notice')"
            ),
            {"t": other, "e": ex},
        )
        doc = (
            await conn.execute(
                text(
                    "INSERT INTO knowledge_documents (tenant_id, title, source, content, content_hash)"
                    " VALUES (:t, 'Other doc', 'x.md', 'other content', repeat('a', 64)) RETURNING id"
                ),
                {"t": other},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO knowledge_chunks (tenant_id, document_id, chunk_index, content,"
                " token_count) VALUES (:t, :d, 0, 'other chunk', 2)"
            ),
            {"t": other, "d": doc},
        )
        await conn.execute(
            text(
                "INSERT INTO usage_ledger (tenant_id, thread_id, provider, model, usage_source)"
                " VALUES (:t, :th, 'local', 'local', 'provider')"
            ),
            {"t": other, "th": th},
        )
        await conn.execute(text(
            "INSERT INTO usage_refusals (tenant_id, user_id, thread_id, scope, limit_kind,"
            " limit_value, used, estimate) VALUES (:t, :u, :th, 'thread', 'tokens', 1000, 990,"
            " 50)"), {"t": other, "u": ids.user_id, "th": th})
        run = (await conn.execute(text(
            "INSERT INTO thread_runs (tenant_id, thread_id, user_message_id, status)"
            " VALUES (:t, :th, :m, 'complete') RETURNING id"),
            {"t": other, "th": th, "m": msg})).scalar_one()
        await conn.execute(text(
            "INSERT INTO run_events (run_id, seq, tenant_id, part) VALUES (:r, 1, :t,"
            " CAST(:p AS jsonb))"), {"r": run, "t": other, "p": '{"type": "start"}'})
        await conn.execute(text(
            "INSERT INTO idempotency_keys (tenant_id, key, user_id, scope, request_hash, run_id)"
            " VALUES (:t, 'other-key', :u, 'x', repeat('b', 64), :r)"),
            {"t": other, "u": ids.user_id, "r": run})
        await conn.execute(text(
            "INSERT INTO charts (tenant_id, thread_id, chart_type, title, data, spec, svg, png)"
            " VALUES (:t, :th, 'bar', 'Other chart', '{}', '{}', '<svg/>',"
            " decode('89504e47', 'hex'))"), {"t": other, "th": th})
        rows = {}
        for table in TENANT_TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            row = (
                await conn.execute(
                    text(f"SELECT to_jsonb(t) FROM {table} t WHERE {column} = :t LIMIT 1"),
                    {"t": other},
                )
            ).scalar_one()
            rows[table] = row
    return rows


async def _as_tenant(
    app_engine: AsyncEngine,
    tenant: uuid.UUID | None,
    sql: str,
    params: dict[str, Any] | None = None,
) -> Any:
    async with app_engine.connect() as conn, conn.begin():
        if tenant is not None:
            await conn.execute(
                text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant)}
            )
        result = await conn.execute(text(sql), params or {})
        return result.rowcount if not result.returns_rows else result.all()


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_cannot_read_another_tenants_rows(
    table: str, app_engine: AsyncEngine, owner_engine: AsyncEngine, other_rows: dict[str, Any]
) -> None:
    demo = await _tenant_id(owner_engine, "demo")
    key = KEY_COLUMN.get(table, "id")
    row_id = other_rows[table][key]
    rows = await _as_tenant(
        app_engine, demo, f"SELECT * FROM {table} WHERE {key} = :id", {"id": row_id}
    )
    assert rows == []
    everything = await _as_tenant(app_engine, demo, f"SELECT to_jsonb(t)::text FROM {table} t")
    other = str(await _tenant_id(owner_engine, "other"))
    assert not any(other in r[0] for r in everything)


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_cannot_update_or_delete_another_tenants_rows(
    table: str, app_engine: AsyncEngine, owner_engine: AsyncEngine, other_rows: dict[str, Any]
) -> None:
    demo = await _tenant_id(owner_engine, "demo")
    key = KEY_COLUMN.get(table, "id")
    row_id = other_rows[table][key]

    async def count() -> int:
        async with owner_engine.connect() as conn:
            return (await conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE {key} = :id"), {"id": row_id})
            ).scalar_one()

    before = await count()  # 1, or Other's rollup rows (keyed by tenant)
    for sql in (
        f"UPDATE {table} SET {key} = {key} WHERE {key} = :id",
        f"DELETE FROM {table} WHERE {key} = :id",
    ):
        try:
            affected = await _as_tenant(app_engine, demo, sql, {"id": row_id})
        except DBAPIError as exc:  # no UPDATE/DELETE grant at all (append-only tables)
            assert "permission denied" in str(exc.orig)
        else:
            assert affected == 0
    assert before >= 1 and await count() == before


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_cannot_insert_rows_for_another_tenant(
    table: str, app_engine: AsyncEngine, owner_engine: AsyncEngine, other_rows: dict[str, Any]
) -> None:
    demo = await _tenant_id(owner_engine, "demo")
    async with owner_engine.connect() as conn:
        columns = [
            r[0]
            for r in (
                await conn.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = :t"
                        " AND is_generated = 'NEVER' AND column_name <> 'id'"
                    ),
                    {"t": table},
                )
            ).all()
        ]
    cols = ", ".join(columns)
    row = dict(other_rows[table])
    if table == "run_events":
        row["seq"] = 99
    if table == "idempotency_keys":
        row["key"] = "fresh-key"
    with pytest.raises(DBAPIError) as caught:
        await _as_tenant(
            app_engine,
            demo,
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM"
            f" jsonb_populate_record(NULL::{table}, CAST(:row AS jsonb))",
            {"row": json.dumps(row)},
        )
    message = str(caught.value.orig)
    assert "row-level security" in message or "permission denied" in message


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_no_tenant_set_sees_nothing(
    table: str, app_engine: AsyncEngine, other_rows: dict[str, Any]
) -> None:
    rows = await _as_tenant(app_engine, None, f"SELECT count(*) FROM {table}")
    assert rows[0][0] == 0


async def test_rls_is_enabled_and_forced_on_every_tenant_owned_table(
    owner_engine: AsyncEngine,
) -> None:
    async with owner_engine.connect() as conn:
        tables = {
            r[0]
            for r in (
                await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
                        " AND column_name = 'tenant_id'"
                    )
                )
            ).all()
        } | {"tenants"}
        flags = dict(
            (
                await conn.execute(
                    text(
                        "SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class"
                        " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
                    )
                )
            ).all()
        )
    assert tables >= set(TENANT_TABLES)
    assert {t for t in tables if not flags.get(t)} == set()


async def test_runtime_role_is_not_privileged_and_owns_nothing(owner_engine: AsyncEngine) -> None:
    async with owner_engine.connect() as conn:
        role = (
            await conn.execute(
                text(
                    "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
                    " WHERE rolname = 'chatbranch_app'"
                )
            )
        ).one()
        owned = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM pg_class WHERE relowner = 'chatbranch_app'::regrole)"
                    " + (SELECT count(*) FROM pg_proc WHERE proowner = 'chatbranch_app'::regrole)"
                    " + (SELECT count(*) FROM pg_namespace WHERE nspowner = 'chatbranch_app'::regrole)"
                    " + (SELECT count(*) FROM pg_type WHERE typowner = 'chatbranch_app'::regrole)"
                    " + (SELECT count(*) FROM pg_database WHERE datdba = 'chatbranch_app'::regrole)"
                )
            )
        ).scalar_one()
    assert tuple(role) == (False, False, False, False)
    assert owned == 0


async def test_core_workflows_are_readable_but_not_writable_by_tenants(
    app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    demo = await _tenant_id(owner_engine, "demo")
    rows = await _as_tenant(
        app_engine, demo, "SELECT workflow_id FROM workflows WHERE is_core ORDER BY 1"
    )
    assert [r[0] for r in rows] == ["critical", "emergency", "overdue"]
    updated = await _as_tenant(
        app_engine, demo, "UPDATE workflows SET name = 'hacked' WHERE is_core"
    )
    deleted = await _as_tenant(app_engine, demo, "DELETE FROM workflows WHERE is_core")
    assert (updated, deleted) == (0, 0)
    with pytest.raises(DBAPIError):
        await _as_tenant(
            app_engine,
            demo,
            "INSERT INTO workflows (workflow_id, name, config, is_core)"
            " VALUES ('evil-core', 'x', '{}', true)",
        )
