"""Benchmark `GET /api/usage` over a generated ledger (default: 1,000,000 rows over 30 days).

    python -m bench.usage_report            # 1M rows, 30 timed runs, prints JSON
    python -m bench.usage_report --smoke    # 10,000 rows, 3 runs (CI: it must not rot)

Runs from a fresh clone: it starts the embedded PostgreSQL in the data folder, creates a dedicated
database there (dropped first if it exists), migrates and seeds it, writes the ledger with one
INSERT ... SELECT generate_series as the owner (through the hash-chain trigger, as production
rows are), then times the report grouped by model in 1d buckets over the 30 days, through the
real app (auth, RLS, serialisation) in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import secrets
import statistics
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.auth.tokens import TokenCodec
from app.db.embedded import EmbeddedPostgres
from app.db.engine import RUNTIME_ROLE, DatabaseUrls, create_engine
from app.db.migrate import upgrade
from app.settings import Settings

# One line per request would drown the report.
logging.getLogger("httpx").setLevel(logging.WARNING)

BENCH_DB = "chatbranch_bench"
DAYS = 30
ANALYST = "analyst@demo.example"
EXTRA_TENANTS = ("bench-north", "bench-south")

# Spread over four tenants (demo half of it), six models, every user of each tenant; prices per
# million tokens as in prices.json; a tool on some calls; one call in 50 cut short.
GENERATE = """
WITH t AS (
  SELECT array_agg(id ORDER BY slug = 'demo' DESC, slug) AS ids FROM tenants
), u AS (
  SELECT tenant_id, array_agg(id ORDER BY email) AS ids FROM users GROUP BY tenant_id
), m(models, providers, p_in, p_cached, p_out) AS (
  SELECT ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'gpt-4.1-mini', 'claude-sonnet-4-5',
               'claude-haiku-4-5'],
         ARRAY['openai', 'openai', 'openai', 'openai', 'anthropic', 'anthropic'],
         ARRAY[2.50, 0.15, 2.00, 0.40, 3.00, 1.00]::numeric[],
         ARRAY[1.25, 0.075, 0.50, 0.10, 0.30, 0.10]::numeric[],
         ARRAY[10.00, 0.60, 8.00, 1.60, 15.00, 5.00]::numeric[]
), g AS (
  SELECT i,
         CASE WHEN i % 20 < 10 THEN 1 WHEN i % 20 < 14 THEN 2 WHEN i % 20 < 17 THEN 3 ELSE 4
         END AS tenant_no,
         CAST(1 + (i * 7) % 6 AS int) AS model_no,
         200 + (i * 7919) % 4000 AS input_tokens,
         20 + (i * 104729) % 800 AS output_tokens
  FROM generate_series(1, CAST(:rows AS bigint)) AS i
), r AS (
  SELECT g.*, t.ids[g.tenant_no] AS tenant_id,
         CASE WHEN g.i % 3 = 0 THEN g.input_tokens / 2 ELSE 0 END AS cached_tokens
  FROM g, t
)
INSERT INTO usage_ledger (tenant_id, user_id, workflow_key, step_id, branch_type, call_kind,
                          provider, model, input_tokens, output_tokens, cached_tokens,
                          usage_source, status, latency_ms, cost_usd, price_version, tool_names,
                          created_at)
SELECT r.tenant_id, u.ids[CAST(1 + r.i % cardinality(u.ids) AS int)],
       (ARRAY['critical', 'emergency', 'overdue'])[CAST(1 + r.i % 3 AS int)],
       'step-' || (r.i % 5), (ARRAY['llm', 'rag'])[CAST(1 + r.i % 2 AS int)], 'chat',
       m.providers[r.model_no], m.models[r.model_no], r.input_tokens, r.output_tokens,
       r.cached_tokens, CASE WHEN r.i % 50 = 0 THEN 'estimated' ELSE 'provider' END,
       CASE WHEN r.i % 50 = 0 THEN 'interrupted' ELSE 'ok' END, 300 + r.i % 2000,
       round(((r.input_tokens - r.cached_tokens) * m.p_in[r.model_no]
              + r.cached_tokens * m.p_cached[r.model_no]
              + r.output_tokens * m.p_out[r.model_no]) / 1000000, 8),
       '2026-01',
       CASE r.i % 7 WHEN 0 THEN ARRAY['rag_search'] WHEN 3 THEN ARRAY['database_query',
            'create_chart'] ELSE ARRAY[]::text[] END,
       CAST(:start AS timestamptz)
         + make_interval(secs => (r.i - 1) * CAST(:span_s AS float8) / CAST(:rows AS int))
FROM r JOIN u ON u.tenant_id = r.tenant_id, m
"""


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def prepare(db: DatabaseUrls, rows: int, start: datetime) -> dict[str, Any]:
    """Seed, add the bench tenants, generate the ledger; returns timings and counts."""
    from app.seeding import load_seed_files, seed

    # Tenants, users and workflows only: embedding the knowledge base is slow and beside the point.
    data = replace(load_seed_files(), documents=[])
    engine = create_engine(db.owner_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await seed(conn, data)
            for slug in EXTRA_TENANTS:
                tenant = (await conn.execute(text(
                    "INSERT INTO tenants (slug, name) VALUES (:s, :s) RETURNING id"),
                    {"s": slug})).scalar_one()
                for n in range(3):
                    await conn.execute(text(
                        "INSERT INTO users (tenant_id, email, name, role)"
                        " VALUES (:t, :e, :e, 'csm')"), {"t": tenant, "e": f"u{n}@{slug}.example"})
        began = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text(GENERATE), {
                "rows": rows, "start": start, "span_s": DAYS * 86400.0})
        generated = time.perf_counter() - began
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            # What autovacuum would have done by now; it lets the planner see the real table.
            await autocommit.execute(text("VACUUM ANALYZE usage_ledger"))
            counts: dict[str, int] = dict((await conn.execute(text(
                "SELECT t.slug, count(*) FROM usage_ledger l JOIN tenants t ON t.id = l.tenant_id"
                " GROUP BY t.slug"))).all())
    finally:
        await engine.dispose()
    return {"generateSeconds": round(generated, 1), "rowsPerTenant": counts}


async def explain(db: DatabaseUrls, tenant_id: Any, start: datetime,
                  end: datetime) -> list[str]:
    """EXPLAIN ANALYZE of the report's query, as the runtime role under RLS."""
    from app.usage.repository import bucket_sums_sql
    from app.usage.schemas import UsageFilters

    sql, params = bucket_sums_sql(uuid.UUID(str(tenant_id)), origin=start, start=start, end=end,
                                  width=timedelta(days=1), group_by=["model"],
                                  filters=UsageFilters())
    engine = create_engine(db.app_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                               {"t": str(tenant_id)})
            plan = await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params)
            return [row[0] for row in plan.all()]
    finally:
        await engine.dispose()


async def time_report(settings: Settings, db: DatabaseUrls, start: datetime, end: datetime,
                      runs: int) -> dict[str, Any]:
    """Time GET /api/usage (model, 1d, the whole period) through the app, `runs` times."""
    from litestar.testing import AsyncTestClient

    from app.main import create_app

    app = create_app(settings, database=db)
    if not any(route.path == "/api/usage" for route in app.routes):
        from app.usage.controller import UsageController

        app.register(UsageController)
    engine = create_engine(db.owner_url, pool_size=1)
    async with engine.connect() as conn:
        user = (await conn.execute(text(
            "SELECT id, tenant_id, role, email FROM users WHERE email = :e"), {"e": ANALYST})).one()
    await engine.dispose()
    token = TokenCodec(settings).encode(user_id=user.id, tenant_id=user.tenant_id,
                                        role=user.role, email=user.email)
    query: dict[str, str | int] = {
        "startTime": int(start.timestamp()), "endTime": int(end.timestamp()),
        "bucketWidth": "1d", "groupBy": "model", "limit": 31}
    latencies: list[float] = []
    async with AsyncTestClient(app=app, timeout=120) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(runs + 2):  # two warm-up requests
            began = time.perf_counter()
            response = await client.get("/api/usage", params=query, headers=headers)
            elapsed = (time.perf_counter() - began) * 1000
            response.raise_for_status()
            if i >= 2:
                latencies.append(elapsed)
        body = response.json()
    requests = sum(r["numModelRequests"] for b in body["data"] for r in b["results"])
    return {
        "runs": runs, "p50Ms": round(percentile(latencies, 0.50), 1),
        "p95Ms": round(percentile(latencies, 0.95), 1),
        "meanMs": round(statistics.fmean(latencies), 1), "maxMs": round(max(latencies), 1),
        "buckets": len(body["data"]), "requestsReported": requests,
        "tenantId": str(user.tenant_id),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="10,000 rows and 3 runs")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Embedded PostgreSQL folder (default: the service's, .chatbranch)")
    parser.add_argument("--explain", action="store_true", help="Add the query plan")
    args = parser.parse_args(argv)
    rows, runs = (10_000, 3) if args.smoke else (args.rows, args.runs)
    settings = Settings(jwt_secret=secrets.token_urlsafe(32), default_model="local",
                        **({"data_dir": args.data_dir} if args.data_dir else {}))
    server = EmbeddedPostgres(settings.data_dir)
    server.start()
    try:
        server.create_database(BENCH_DB)
        db = DatabaseUrls(owner_url=server.url(database=BENCH_DB),
                          app_url=server.url(RUNTIME_ROLE, database=BENCH_DB))
        upgrade(db.owner_url)
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=DAYS)
        report: dict[str, Any] = {"benchmark": "usage_report", "rows": rows, "days": DAYS,
                                  "query": "GET /api/usage groupBy=model bucketWidth=1d"}
        report.update(asyncio.run(prepare(db, rows, start)))
        report.update(asyncio.run(time_report(settings, db, start, end, runs)))
        if args.explain:
            report["plan"] = asyncio.run(explain(db, report["tenantId"], start, end))
    finally:
        server.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
