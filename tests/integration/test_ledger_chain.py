"""The usage ledger is append-only for the service and hash-chained per tenant."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.db.migrate import upgrade
from app.usage.chain import verify_chains

ROOT = Path(__file__).resolve().parents[2]
AUDIT = "from app.usage.cli import audit_cli; audit_cli()"


@pytest.fixture
async def chain_tenant(owner_engine: AsyncEngine, unique: str) -> Any:
    """A tenant of its own, so tampering here breaks no other test's chain; removed after."""
    slug = f"chain-{unique}"
    async with owner_engine.begin() as conn:
        tenant_id = (await conn.execute(text(
            "INSERT INTO tenants (slug, name) VALUES (:s, :s) RETURNING id"), {"s": slug})
        ).scalar_one()
    yield slug, tenant_id
    async with owner_engine.begin() as conn:
        await conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": tenant_id})


async def insert_rows(engine: AsyncEngine, tenant_id: uuid.UUID, count: int,
                      model: str = "gpt-4o") -> list[uuid.UUID]:
    """Insert ledger rows as the runtime role, one transaction each, as the service does."""
    ids = []
    for i in range(count):
        async with engine.begin() as conn:
            await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                               {"t": str(tenant_id)})
            ids.append((await conn.execute(text(
                "INSERT INTO usage_ledger (tenant_id, provider, model, input_tokens, output_tokens,"
                " usage_source, cost_usd) VALUES (:t, 'openai', :m, :i, :o, 'provider', :c)"
                " RETURNING id"),
                {"t": tenant_id, "m": model, "i": 100 + i, "o": 10 + i, "c": "0.00012345"})
            ).scalar_one())
    return ids


async def run_as(engine: AsyncEngine, tenant_id: uuid.UUID, sql: str, params: dict[str, Any],
                 role: str | None = None) -> None:
    """One statement in a transaction scoped to the tenant (and switched to `role`)."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                           {"t": str(tenant_id)})
        if role:
            await conn.execute(text(f"SET LOCAL ROLE {role}"))
        await conn.execute(text(sql), params)


def audit_verify(owner_url: str, tenant: str) -> subprocess.CompletedProcess[str]:
    """`chatbranch audit verify --tenant T`, as a separate process against the test database."""
    env = {**os.environ, "DATABASE_URL": owner_url}
    return subprocess.run([sys.executable, "-c", AUDIT, "verify", "--tenant", tenant], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


async def chain_of(owner_engine: AsyncEngine, tenant_id: uuid.UUID) -> list[Any]:
    async with owner_engine.connect() as conn:
        return list((await conn.execute(text(
            "SELECT id, chain_seq, prev_hash, row_hash FROM usage_ledger WHERE tenant_id = :t"
            " ORDER BY chain_seq"), {"t": tenant_id})).all())


async def test_runtime_role_can_neither_update_nor_delete_nor_truncate_the_ledger(
        app_engine: AsyncEngine, owner_engine: AsyncEngine, chain_tenant: Any) -> None:
    _, tenant_id = chain_tenant
    (row_id,) = await insert_rows(app_engine, tenant_id, 1)
    for sql in ("UPDATE usage_ledger SET input_tokens = 0 WHERE id = :id",
                "DELETE FROM usage_ledger WHERE id = :id",
                "TRUNCATE usage_ledger"):
        with pytest.raises(DBAPIError) as caught:
            await run_as(app_engine, tenant_id, sql, {"id": row_id})
        assert "permission denied" in str(caught.value.orig)
    assert [r.id for r in await chain_of(owner_engine, tenant_id)] == [row_id]


async def test_the_trigger_refuses_changes_even_to_a_role_granted_update_and_delete(
        owner_engine: AsyncEngine, app_engine: AsyncEngine, chain_tenant: Any,
        unique: str) -> None:
    _, tenant_id = chain_tenant
    (row_id,) = await insert_rows(app_engine, tenant_id, 1)
    role = f"ledger_editor_{unique}"
    async with owner_engine.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        await conn.execute(text(f"GRANT SELECT, UPDATE, DELETE ON usage_ledger TO {role}"))
    try:
        for sql in ("UPDATE usage_ledger SET input_tokens = 0 WHERE id = :id",
                    "DELETE FROM usage_ledger WHERE id = :id"):
            with pytest.raises(DBAPIError) as caught:
                await run_as(owner_engine, tenant_id, sql, {"id": row_id}, role=role)
            assert "append-only" in str(caught.value.orig)
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text(f"REVOKE ALL ON usage_ledger FROM {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))


async def test_chain_columns_given_by_the_writer_are_replaced_by_the_trigger(
        app_engine: AsyncEngine, owner_engine: AsyncEngine, chain_tenant: Any) -> None:
    _, tenant_id = chain_tenant
    await insert_rows(app_engine, tenant_id, 2)
    async with app_engine.begin() as conn:
        await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                           {"t": str(tenant_id)})
        await conn.execute(text(
            "INSERT INTO usage_ledger (tenant_id, provider, model, usage_source, chain_seq,"
            " prev_hash, row_hash) VALUES (:t, 'local', 'local', 'provider', 99, 'x', 'forged')"),
            {"t": tenant_id})
    rows = await chain_of(owner_engine, tenant_id)
    assert [r.chain_seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == ""
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]
    assert "forged" not in {r.row_hash for r in rows}
    async with owner_engine.connect() as conn:
        (chain,) = await verify_chains(conn, tenant_id)
    assert chain.ok and chain.rows == 3 and chain.head_hash == rows[-1].row_hash


async def test_an_untouched_chain_verifies(
        app_engine: AsyncEngine, chain_tenant: Any, database: Any) -> None:
    slug, tenant_id = chain_tenant
    await insert_rows(app_engine, tenant_id, 5)
    result = await asyncio.to_thread(audit_verify, database.owner_url, slug)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{slug}: 5 rows" in result.stdout


async def test_a_row_altered_by_the_owner_is_named_by_audit_verify(
        app_engine: AsyncEngine, owner_engine: AsyncEngine, chain_tenant: Any,
        database: Any) -> None:
    slug, tenant_id = chain_tenant
    ids = await insert_rows(app_engine, tenant_id, 5)
    async with owner_engine.begin() as conn:
        await conn.execute(text("UPDATE usage_ledger SET output_tokens = 1 WHERE id = :id"),
                           {"id": ids[2]})
    result = await asyncio.to_thread(audit_verify, database.owner_url, slug)
    assert result.returncode == 1
    assert str(ids[2]) in result.stdout and "hash mismatch" in result.stdout
    assert not any(str(other) in result.stdout for other in ids if other != ids[2])


async def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(
        app_engine: AsyncEngine, owner_engine: AsyncEngine, chain_tenant: Any) -> None:
    _, tenant_id = chain_tenant
    ids = await insert_rows(app_engine, tenant_id, 4)
    async with owner_engine.begin() as conn:
        await conn.execute(text("UPDATE usage_ledger SET cost_usd = 0 WHERE id = :id"),
                           {"id": ids[1]})
        await conn.execute(text(
            "UPDATE usage_ledger l SET row_hash = usage_ledger_row_hash(l.prev_hash, l)"
            " WHERE id = :id"), {"id": ids[1]})
    async with owner_engine.connect() as conn:
        (chain,) = await verify_chains(conn, tenant_id)
    assert chain.broken is not None
    assert (chain.broken.row_id, chain.broken.kind) == (ids[2], "link")
    assert chain.broken.previous_id == ids[1]
    assert str(ids[1]) in chain.broken.reason


async def test_a_row_deleted_by_the_owner_is_reported_as_a_gap(
        app_engine: AsyncEngine, owner_engine: AsyncEngine, chain_tenant: Any,
        database: Any) -> None:
    slug, tenant_id = chain_tenant
    ids = await insert_rows(app_engine, tenant_id, 4)
    async with owner_engine.begin() as conn:
        await conn.execute(text("DELETE FROM usage_ledger WHERE id = :id"), {"id": ids[1]})
    result = await asyncio.to_thread(audit_verify, database.owner_url, slug)
    assert result.returncode == 1
    assert str(ids[2]) in result.stdout and "gap" in result.stdout
    async with owner_engine.connect() as conn:
        (chain,) = await verify_chains(conn, tenant_id)
    assert chain.broken is not None
    assert (chain.broken.kind, chain.broken.chain_seq, chain.broken.previous_seq) == ("gap", 3, 1)


async def test_concurrent_writers_keep_one_unbroken_chain(
        database: Any, owner_engine: AsyncEngine, chain_tenant: Any) -> None:
    _, tenant_id = chain_tenant
    writers, each = 8, 15
    engine = create_engine(database.app_url, pool_size=writers)
    try:
        await asyncio.gather(*(insert_rows(engine, tenant_id, each, model=f"m{w}")
                               for w in range(writers)))
    finally:
        await engine.dispose()
    rows = await chain_of(owner_engine, tenant_id)
    assert [r.chain_seq for r in rows] == list(range(1, writers * each + 1))
    async with owner_engine.connect() as conn:
        (chain,) = await verify_chains(conn, tenant_id)
    assert chain.ok, chain.broken


async def test_the_migration_chains_rows_written_before_it(embedded_pg: Any) -> None:
    embedded_pg.create_database("chatbranch_chain_backfill")
    url = embedded_pg.url(database="chatbranch_chain_backfill")
    await asyncio.to_thread(upgrade, url, "0005_charts")
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            tenants = [(await conn.execute(text(
                "INSERT INTO tenants (slug, name) VALUES (:s, :s) RETURNING id"), {"s": s})
            ).scalar_one() for s in ("a", "b")]
            for i in range(6):
                await conn.execute(text(
                    "INSERT INTO usage_ledger (tenant_id, provider, model, usage_source,"
                    " input_tokens, created_at) VALUES (:t, 'openai', 'gpt-4o', 'provider', :i,"
                    " now() - make_interval(secs => :s))"), {"t": tenants[i % 2], "i": i, "s": i})
        await asyncio.to_thread(upgrade, url)
        async with engine.connect() as conn:
            chains = await verify_chains(conn)
            seqs = (await conn.execute(text(
                "SELECT tenant_id, array_agg(chain_seq ORDER BY created_at) FROM usage_ledger"
                " GROUP BY tenant_id"))).all()
    finally:
        await engine.dispose()
    assert all(c.ok and c.rows == 3 for c in chains)
    assert {tuple(s[1]) for s in seqs} == {(1, 2, 3)}
