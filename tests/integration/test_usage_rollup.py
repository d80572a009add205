"""The hourly rollup answers exactly what the ledger answers, for every request it is used for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.db.engine import create_sessionmaker
from app.db.tenancy import set_tenant
from app.usage import repository
from app.usage.schemas import UsageFilters

START = datetime(2001, 3, 1, tzinfo=UTC)  # a month no other test writes to
END = START + timedelta(days=3)

BULK = """
INSERT INTO usage_ledger (tenant_id, provider, model, usage_source, input_tokens, output_tokens,
                          cached_tokens, reasoning_tokens, cost_usd, prompt_breakdown, created_at)
SELECT t.id, (ARRAY['openai', 'anthropic'])[1 + n % 2],
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-haiku-4-5'])[1 + n % 3], 'provider',
       100 + n % 97, 10 + n % 13, n % 7, n % 5, (n % 11) * 0.00012345,
       jsonb_build_object('system', n % 17, 'history', n % 29, 'toolResults', n % 3),
       CAST(:start AS timestamptz) + make_interval(mins => n * 7)
FROM tenants t, generate_series(1, 600) AS n WHERE t.slug = :slug
"""
SINGLE = """
INSERT INTO usage_ledger (tenant_id, provider, model, usage_source, input_tokens, output_tokens,
                          cost_usd, prompt_breakdown, created_at)
SELECT id, 'openai', 'gpt-4o', 'estimated', CAST(:n AS int), 3, 0.5,
       jsonb_build_object('question', CAST(:n AS int)), :at
FROM tenants WHERE slug = :slug
"""


@pytest.fixture(scope="module")
async def ledger(owner_engine):
    """Rows for two tenants: one bulk statement each plus single-row statements (as turns do)."""
    async with owner_engine.begin() as conn:
        for slug in ("demo", "other"):
            await conn.execute(text(BULK), {"start": START, "slug": slug})
    for minute in range(0, 180, 37):
        async with owner_engine.begin() as conn:
            await conn.execute(text(SINGLE), {"n": minute, "slug": "demo",
                                              "at": START + timedelta(minutes=minute, seconds=5)})
    async with owner_engine.connect() as conn:
        return (await conn.execute(text("SELECT id FROM tenants WHERE slug = 'demo'"))
                ).scalar_one()


@pytest.mark.parametrize("group_by", [[], ["model"], ["provider"], ["model", "provider"]])
@pytest.mark.parametrize("width", [timedelta(hours=1), timedelta(days=1)])
async def test_rollup_sums_equal_ledger_sums(ledger, app_engine, group_by, width):
    tenant_id = ledger
    arguments = {"origin": START, "start": START, "end": END, "width": width,
                 "group_by": group_by, "filters": UsageFilters()}
    assert repository.uses_rollup(START, START, END, width, group_by, UsageFilters())
    async with create_sessionmaker(app_engine)() as session, session.begin():
        await set_tenant(session, tenant_id)
        results = []
        for build in (repository.rollup_sql, repository.ledger_sql):
            sql, params = build(tenant_id, **arguments)
            rows = (await session.execute(text(sql), params)).all()
            results.append([tuple(row) for row in rows])
    from_rollup, from_ledger = results
    assert from_ledger and len(from_ledger) >= (3 if width.days else 60)
    assert from_rollup == from_ledger


async def test_rollup_is_tenant_scoped_and_only_used_when_exact(ledger, app_engine):
    async with create_sessionmaker(app_engine)() as session, session.begin():
        await set_tenant(session, ledger)
        tenants = (await session.execute(text("SELECT DISTINCT tenant_id FROM usage_hourly"))
                   ).scalars().all()
    assert tenants == [ledger]  # RLS: the other tenant's sums stay hidden
    half_hour = START + timedelta(minutes=30)
    hour = timedelta(hours=1)
    assert not repository.uses_rollup(half_hour, half_hour, END, hour, [], UsageFilters())
    assert not repository.uses_rollup(START, START, END, hour, ["user"], UsageFilters())
    assert not repository.uses_rollup(START, START, END, hour, ["model"],
                                      UsageFilters(branch_types=("llm",)))
    assert repository.uses_rollup(START, START, END, hour, ["model"],
                                  UsageFilters(models=("gpt-4o",)))
