"""The schema migrates both ways, checks itself, and the seed is idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.db.embedded import EmbeddedPostgres
from app.db.engine import create_engine
from app.db.migrate import downgrade, upgrade
from app.seeding import load_seed_files, seed


async def _count(url: str, sql: str) -> int:
    engine = create_engine(url, pool_size=1)
    async with engine.connect() as conn:
        value = (await conn.execute(text(sql))).scalar_one()
    await engine.dispose()
    return int(value)


@pytest.fixture(scope="module")
def scratch_url(embedded_pg: EmbeddedPostgres) -> str:
    embedded_pg.create_database("chatbranch_migrations")
    return embedded_pg.url(database="chatbranch_migrations")


async def test_upgrade_downgrade_upgrade_round_trip(scratch_url: str) -> None:
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
    await _run(upgrade, scratch_url)
    created = await _count(scratch_url, tables)
    assert created >= 18
    await _run(downgrade, scratch_url)
    assert await _count(scratch_url, tables) == 0
    await _run(upgrade, scratch_url)
    assert await _count(scratch_url, tables) == created
    policies = await _count(scratch_url, "SELECT count(*) FROM pg_policies")
    assert policies >= 18


async def _built_index(url: str, model: str) -> tuple[list[str], int]:
    """Ensure `model`'s HNSW index (as ingestion does): the options it was built with, and its
    storage file (which a rebuild replaces)."""
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        name = (await conn.execute(text("SELECT ensure_embedding_index(:m, 8)"),
                                   {"m": model})).scalar_one()
        options, storage = (await conn.execute(text(
            "SELECT reloptions, pg_relation_filenode(oid) FROM pg_class WHERE relname = :n"),
            {"n": name})).one()
    await engine.dispose()
    return list(options or []), storage


async def test_embedding_indexes_are_built_and_rebuilt_with_the_better_graph(embedded_pg):
    # An index made before 0012 has pgvector's defaults; 0012 rebuilds it, and new ones follow.
    embedded_pg.create_database("chatbranch_index_options")
    url = embedded_pg.url(database="chatbranch_index_options")
    await _run(lambda owner_url: upgrade(owner_url, "0011_knowledge_chunk_words"), url)
    options, storage = await _built_index(url, "older-model")
    assert options == []
    await _run(upgrade, url)
    options, rebuilt = await _built_index(url, "older-model")
    assert options == ["ef_construction=128"]
    assert rebuilt != storage  # built again, not only relabelled
    assert (await _built_index(url, "newer-model"))[0] == ["ef_construction=128"]


async def _run(fn, url: str) -> None:
    import asyncio

    await asyncio.to_thread(fn, url)


async def test_seed_twice_changes_nothing(database) -> None:
    data = load_seed_files()
    engine = create_engine(database.owner_url, pool_size=1)
    versions = "SELECT count(*) FROM workflow_versions"
    before = await _count(database.owner_url, versions)
    async with engine.begin() as conn:
        report = await seed(conn, data)
    await engine.dispose()
    assert report.total == 0, report.changed
    assert await _count(database.owner_url, versions) == before


async def test_seed_covers_every_window_and_branch_type(database) -> None:
    url = database.owner_url
    assert await _count(url, "SELECT count(DISTINCT branch_type) FROM workflow_chat_branches") == 4
    steps_without_branches = await _count(url, """
        SELECT count(*) FROM workflows w, jsonb_array_elements(w.config->'steps') s
        WHERE w.is_core AND NOT EXISTS (SELECT 1 FROM workflow_chat_branches b
          WHERE b.workflow_id = w.workflow_id AND b.from_step_id = s->>'id')""")
    assert steps_without_branches == 0
    for low, high in ((7, 14), (0, 6), (-10000, -1)):
        n = await _count(url, f"""SELECT count(*) FROM customers c JOIN tenants t ON t.id = c.tenant_id
            WHERE t.slug = 'demo' AND c.renewal_date - current_date BETWEEN {low} AND {high}""")
        assert n >= 1, (low, high)
    roles = await _count(url, "SELECT count(DISTINCT role) FROM users u JOIN tenants t"
                              " ON t.id = u.tenant_id WHERE t.slug = 'demo'")
    assert roles == 4
    assert await _count(url, "SELECT count(*) FROM knowledge_documents") >= 12
