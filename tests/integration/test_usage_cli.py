"""`chatbranch usage`: the terminal report follows the API's rules (role, tenant, sums)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.usage.cli import UsageCliError, report_window, usage_report

ROOT = Path(__file__).resolve().parents[2]
USAGE = "import typer; from app.usage.cli import usage_command; typer.run(usage_command)"
OCTOBER = datetime(2025, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
async def october(owner_engine: Any) -> dict[str, int]:
    """A few October rows for Demo and one for Other, in a month no other test writes."""
    async with owner_engine.begin() as conn:
        tenants = dict((await conn.execute(text("SELECT slug, id FROM tenants"))).all())
        for tenant, model, tokens, day in (("demo", "cli-model-a", 1000, 2),
                                           ("demo", "cli-model-a", 500, 9),
                                           ("demo", "cli-model-b", 70, 9),
                                           ("other", "cli-model-other", 5, 3)):
            await conn.execute(text(
                "INSERT INTO usage_ledger (tenant_id, provider, model, input_tokens,"
                " output_tokens, usage_source, cost_usd, created_at) VALUES (:t, 'openai', :m,"
                " :i, 0, 'provider', :c, :at)"),
                {"t": tenants[tenant], "m": model, "i": tokens, "c": tokens / 1000,
                 "at": OCTOBER + timedelta(days=day, hours=5)})
    return {"cli-model-a": 1500, "cli-model-b": 70}


def run_usage(database: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database.owner_url, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", USAGE, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_the_report_sums_the_analysts_tenant_per_group(october, database) -> None:
    slug, _, buckets = await usage_report(
        database, "analyst@demo.example", start=OCTOBER, end=OCTOBER + timedelta(days=31),
        bucket_width="1d", group_by=["model"])
    assert slug == "demo" and len(buckets) == 31
    tokens: dict[str, int] = {}
    for bucket in buckets:
        for r in bucket.results:
            tokens[r["model"]] = tokens.get(r["model"], 0) + r["inputTokens"]
    assert tokens == october


async def test_the_command_prints_a_table_with_a_trend_per_row(october, database) -> None:
    result = await asyncio.to_thread(run_usage, database, "--as", "admin@demo.example",
                                     "--since", "2025-10-01", "--until", "2025-11-01")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "cli-model-a" in x)
    assert "1,500" in line and "1.5000" in line and "█" in line
    assert "cli-model-other" not in result.stdout


@pytest.mark.parametrize("email", ["csm@demo.example", "manager@demo.example",
                                   "nobody@demo.example"])
async def test_only_analysts_and_admins_get_a_report(october, database, email) -> None:
    with pytest.raises(UsageCliError):
        await usage_report(database, email, start=OCTOBER, end=OCTOBER + timedelta(days=1),
                           bucket_width="1d", group_by=["model"])
    result = await asyncio.to_thread(run_usage, database, "--as", email, "--days", "1")
    assert result.returncode == 1 and "cli-model" not in result.stdout


def test_the_default_period_is_whole_days_ending_today() -> None:
    now = datetime(2026, 3, 10, 15, 42, tzinfo=UTC)
    assert report_window(7, None, None, "1d", now) == (datetime(2026, 3, 4, tzinfo=UTC), now)
    assert report_window(1, None, None, "1h", now) == (datetime(2026, 3, 9, 16, tzinfo=UTC), now)
    assert report_window(30, "2026-01-01", "2026-02-01", "1d", now) == (
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(UsageCliError):
        report_window(7, "yesterday", None, "1d", now)
