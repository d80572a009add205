"""The usage API, the thread endpoint and the CSV export agree to the token and the cent.

A generated month (November 2025, two tenants, several models, users and providers, cut and
failed calls, a price change on the 16th) is written to the ledger as the owner, costed with a
test price file and checked against hand arithmetic; live replies through the real app (fake
OpenAI and Anthropic, the local model, cut and stopped streams) are checked across all three
endpoints.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.usage.pricing import PriceBook
from tests.fakes import FakeToolCall, FakeUsage, text_reply, tool_call_reply
from tests.integration.conftest import assert_token_invariants, thread_rows

START = datetime(2025, 11, 1, tzinfo=UTC)
END = datetime(2025, 12, 1, tzinfo=UTC)
CHANGE = datetime(2025, 11, 16, tzinfo=UTC)
MONTH = {"startTime": int(START.timestamp()), "endTime": int(END.timestamp()),
         "bucketWidth": "1d", "limit": 31}
# USD per million (input, cached input, output); gpt-4o gets cheaper on the 16th.
HAND_PRICES = {
    "nov-a": {"gpt-4o": ("2.50", "1.25", "10.00"), "gpt-4o-mini": ("0.15", "0.075", "0.60"),
              "claude-sonnet-4-5": ("3.00", "0.30", "15.00")},
    "nov-b": {"gpt-4o": ("2.00", "1.00", "8.00"), "gpt-4o-mini": ("0.15", "0.075", "0.60"),
              "claude-sonnet-4-5": ("3.00", "0.30", "15.00")},
}
# Stored model name -> (provider, priced model or None when unpriced).
MODELS = {"openai:gpt-4o": ("openai", "gpt-4o"), "gpt-4o-2024-08-06": ("openai", "gpt-4o"),
          "gpt-4o-mini": ("openai", "gpt-4o-mini"),
          "anthropic:claude-sonnet-4-5": ("anthropic", "claude-sonnet-4-5"),
          "local": ("local", None)}
TOOLS = [[], [], ["rag_search"], ["database_query", "create_chart"]]
ANCHOR_CUSTOMER = uuid.uuid4()
EIGHT = Decimal("0.00000001")
DAY = 86400


def hand_cost(model: str, at: datetime, i: int, c: int, o: int) -> tuple[Decimal, str | None]:
    priced = MODELS[model][1]
    if priced is None:
        return Decimal(0), None
    version = "nov-b" if at >= CHANGE else "nov-a"
    p_in, p_cached, p_out = (Decimal(p) for p in HAND_PRICES[version][priced])
    return ((i - c) * p_in + c * p_cached + o * p_out) / 1_000_000, version


@pytest.fixture(scope="module")
def usage_app(live_app: Any) -> Any:
    """The live app with the usage endpoints (registered here until app/main.py wires them)."""
    app, _ = live_app
    if not any(route.path == "/api/usage" for route in app.routes):
        from app.usage.controller import UsageController

        app.register(UsageController)
    return live_app


@pytest.fixture(scope="module")
async def month(usage_app: Any, owner_engine: Any, tmp_path_factory: Any) -> list[dict[str, Any]]:
    """The generated month, as inserted (costed by a test PriceBook, checked by hand)."""
    path = tmp_path_factory.mktemp("prices") / "prices.json"
    path.write_text(json.dumps([
        {"version": v, "effectiveFrom": (START if v == "nov-a" else CHANGE).isoformat(),
         "models": {m: {"input": p[0], "cachedInput": p[1], "output": p[2]}
                    for m, p in models.items()}} for v, models in HAND_PRICES.items()]))
    book = PriceBook.load(path)
    async with owner_engine.connect() as conn:
        people = (await conn.execute(text(
            "SELECT t.slug, u.id AS user_id, c.id AS customer_id FROM tenants t"
            " JOIN users u ON u.tenant_id = t.id JOIN customers c ON c.tenant_id = t.id"
            " WHERE t.slug IN ('demo', 'other')"))).all()
    tenants = {slug: {"users": sorted({p.user_id for p in people if p.slug == slug}),
                      "customers": sorted({p.customer_id for p in people if p.slug == slug})}
               for slug in ("demo", "other")}
    rng = random.Random(20251101)
    rows = []
    for day in range(30):
        for slug in ("demo", "other"):
            for _ in range(rng.randint(3, 8)):
                at = START + timedelta(days=day, seconds=rng.randrange(86400),
                                       microseconds=rng.randrange(1_000_000))
                ending = rng.choice(["ok"] * 6 + ["interrupted", "error"])
                source = {"ok": "provider", "interrupted": "estimated", "error": "unavailable"}
                i = 0 if ending == "error" else rng.randint(50, 20_000)
                c = rng.choice([0, i // 2, rng.randint(0, i)])
                o = 0 if ending == "error" else rng.randint(1, 3000)
                rows.append(_row(slug, at, rng.choice(list(MODELS)), i, c, o,
                                 rng.choice([0, 0, rng.randint(1, 400)]), ending,
                                 source[ending], rng.choice(TOOLS),
                                 rng.choice(tenants[slug]["users"]),
                                 rng.choice(tenants[slug]["customers"]), rng))
    # Hand-checked anchors: the same call a microsecond either side of the price change.
    for at in (CHANGE - timedelta(microseconds=1), CHANGE):
        rows.append(_row("demo", at, "openai:gpt-4o", 1_000_000, 0, 100_000, 0, "ok",
                         "provider", [], None, ANCHOR_CUSTOMER, rng))
    rows.append(_row("demo", START + timedelta(days=2), "gpt-4o-2024-08-06", 1_000_000,
                     400_000, 0, 0, "ok", "provider", [], None, ANCHOR_CUSTOMER, rng))
    for row in rows:
        cost, version = book.cost(row["model"], row["created_at"], row["input_tokens"],
                                  row["cached_tokens"], row["output_tokens"])
        expected, hand_version = hand_cost(row["model"], row["created_at"], row["input_tokens"],
                                           row["cached_tokens"], row["output_tokens"])
        assert (cost, version) == (expected.quantize(EIGHT), hand_version)
        row.update(cost_usd=cost, price_version=version)
    async with owner_engine.begin() as conn:
        slugs = dict((await conn.execute(text("SELECT slug, id FROM tenants"))).all())
        await conn.execute(text(
            "INSERT INTO usage_ledger (tenant_id, user_id, customer_id, workflow_key, step_id,"
            " branch_type, provider, model, input_tokens, output_tokens, cached_tokens,"
            " reasoning_tokens, usage_source, status, cost_usd, price_version, tool_names,"
            " created_at) VALUES (:tenant_id, :user_id, :customer_id, :workflow_key, :step_id,"
            " :branch_type, :provider, :model, :input_tokens, :output_tokens, :cached_tokens,"
            " :reasoning_tokens, :usage_source, :status, :cost_usd, :price_version, :tool_names,"
            " :created_at)"), [{**r, "tenant_id": slugs[r["slug"]]} for r in rows])
    return rows


def _row(slug: str, at: datetime, model: str, i: int, c: int, o: int, reasoning: int,
         status: str, source: str, tools: list[str], user: Any, customer: Any,
         rng: random.Random) -> dict[str, Any]:
    return {"slug": slug, "created_at": at, "model": model, "provider": MODELS[model][0],
            "input_tokens": i, "cached_tokens": c, "output_tokens": o,
            "reasoning_tokens": reasoning, "status": status, "usage_source": source,
            "tool_names": tools, "user_id": user, "customer_id": customer,
            "workflow_key": rng.choice(["critical", "emergency", "overdue"]),
            "step_id": rng.choice(["s1", "s2", "s3"]), "branch_type": rng.choice(["llm", "rag"])}


ROW_KEYS = {"model": "model", "provider": "provider", "userId": "user_id",
            "customerId": "customer_id", "workflowId": "workflow_key", "stepId": "step_id",
            "branchType": "branch_type"}
GROUP_RESULT_KEYS = {"model": "model", "provider": "provider", "user": "userId",
                     "customer": "customerId", "workflow": "workflowId", "step": "stepId",
                     "branchType": "branchType", "tool": "toolName"}


def fold(pairs: Any) -> dict[Any, tuple[Any, ...]]:
    """Sum value tuples per key."""
    sums: dict[Any, tuple[Any, ...]] = {}
    for key, values in pairs:
        old = sums.get(key)
        sums[key] = values if old is None else tuple(a + b for a, b in zip(old, values))
    return sums


def expected_sums(rows: list[dict[str, Any]], keys: list[str], width: timedelta,
                  origin: datetime = START) -> dict[Any, tuple[Any, ...]]:
    """(bucket start, group values...) -> sums, computed from the inserted rows by hand."""
    def pairs() -> Any:
        for row in rows:
            bucket = int((origin + width * ((row["created_at"] - origin) // width)).timestamp())
            tools = (row["tool_names"] or [None]) if "toolName" in keys else [None]
            for tool in tools:
                group = tuple(tool if k == "toolName" else _plain(row[ROW_KEYS[k]])
                              for k in keys)
                yield (bucket, *group), (row["input_tokens"], row["output_tokens"],
                                         row["cached_tokens"], row["reasoning_tokens"], 1,
                                         row["cost_usd"])
    return fold(pairs())


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def api_values(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["inputTokens"], r["outputTokens"], r["cachedTokens"], r["reasoningTokens"],
            r["numModelRequests"], Decimal(str(r["costUsd"])))


def csv_values(row: dict[str, str]) -> tuple[Any, ...]:
    return (int(row["inputTokens"]), int(row["outputTokens"]), int(row["cachedTokens"]),
            int(row["reasoningTokens"]), 1, Decimal(row["costUsd"]))


def api_sums(body: dict[str, Any], keys: list[str]) -> dict[Any, tuple[Any, ...]]:
    """The same mapping read from an API page (costs as exact decimals)."""
    return fold(((b["startTime"], *(r[k] for k in keys)), api_values(r))
                for b in body["data"] for r in b["results"])


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


async def get_usage(http: httpx.AsyncClient, auth: Any, email: str, **params: Any) -> Any:
    response = await http.get("/api/usage", headers=auth(email), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def of(rows: list[dict[str, Any]], slug: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["slug"] == slug]


async def test_month_by_day_and_model_matches_hand_arithmetic_and_the_csv(
        month, http, auth) -> None:
    body = await get_usage(http, auth, "analyst@demo.example", **MONTH, groupBy="model")
    assert len(body["data"]) == 30 and body["hasMore"] is False and body["object"] == "page"
    assert [b["startTime"] for b in body["data"]] == [
        int((START + timedelta(days=d)).timestamp()) for d in range(30)]
    expected = expected_sums(of(month, "demo"), ["model"], timedelta(days=1))
    assert api_sums(body, ["model"]) == expected
    exported = csv_rows(await http.get("/api/usage/export", headers=auth("analyst@demo.example"),
                                       params={**MONTH, "format": "csv"}))
    assert len(exported) == len(of(month, "demo"))
    first = int(START.timestamp())
    for row in exported:
        at = datetime.fromisoformat(row["createdAt"])
        assert row["priceVersion"] == ("" if row["model"] == "local"
                                       else "nov-b" if at >= CHANGE else "nov-a")
    assert fold(((first + (int(r["createdAtUnix"]) - first) // DAY * DAY, r["model"]),
                 csv_values(r)) for r in exported) == expected


@pytest.mark.parametrize("group", ["user", "customer", "workflow", "step", "branchType", "tool",
                                   "provider"])
async def test_every_group_by_matches_the_rows_it_sums(month, http, auth, group) -> None:
    key = GROUP_RESULT_KEYS[group]
    body = await get_usage(http, auth, "analyst@demo.example", **MONTH, groupBy=group)
    assert api_sums(body, [key]) == expected_sums(of(month, "demo"), [key], timedelta(days=1))


async def test_hourly_buckets_and_two_group_keys_match(month, http, auth) -> None:
    day = START + timedelta(days=20)
    rows = [r for r in of(month, "demo") if day <= r["created_at"] < day + timedelta(days=1)]
    body = await get_usage(http, auth, "analyst@demo.example", startTime=int(day.timestamp()),
                           endTime=int(day.timestamp()) + 86400, bucketWidth="1h",
                           groupBy="model,user", limit=24)
    assert len(body["data"]) == 24
    assert api_sums(body, ["model", "userId"]) == expected_sums(
        rows, ["model", "userId"], timedelta(hours=1), origin=day)


async def test_pages_of_buckets_join_up_to_the_whole_month(month, http, auth) -> None:
    whole = await get_usage(http, auth, "analyst@demo.example", **MONTH, groupBy="model")
    params: dict[str, Any] = {**MONTH, "limit": 7, "groupBy": "model"}
    pages = [await get_usage(http, auth, "analyst@demo.example", **params)]
    while pages[-1]["hasMore"]:
        params["page"] = pages[-1]["nextPage"]
        pages.append(await get_usage(http, auth, "analyst@demo.example", **params))
    assert [len(p["data"]) for p in pages] == [7, 7, 7, 7, 2]
    assert [b for p in pages for b in p["data"]] == whole["data"]


async def test_the_price_change_applies_from_its_effective_moment(month, http, auth) -> None:
    body = await get_usage(http, auth, "analyst@demo.example", **MONTH,
                           customerIds=str(ANCHOR_CUSTOMER))
    costs = {b["startTime"]: r["costUsd"] for b in body["data"] for r in b["results"]}
    # 1M input + 100k output of gpt-4o: $2.50 + $1.00 before, $2.00 + $0.80 from the 16th;
    # 1M input of which 400k cached (dated model name): 600k x $2.50 + 400k x $1.25.
    assert costs == {int((CHANGE - timedelta(days=1)).timestamp()): 3.5,
                     int(CHANGE.timestamp()): 2.8,
                     int((START + timedelta(days=2)).timestamp()): 2.0}


async def test_each_tenant_sees_only_its_own_usage(month, http, auth) -> None:
    for slug, email in (("demo", "admin@demo.example"), ("other", "analyst@other.example")):
        body = await get_usage(http, auth, email, **MONTH, groupBy="user")
        assert api_sums(body, ["userId"]) == expected_sums(of(month, slug), ["userId"],
                                                           timedelta(days=1))


@pytest.mark.parametrize("path", ["/api/usage", "/api/usage/export",
                                  f"/api/usage/threads/{uuid.uuid4()}"])
async def test_only_analysts_and_admins_reach_usage(usage_app, http, auth, path) -> None:
    params = {"startTime": MONTH["startTime"]}
    for email in ("csm@demo.example", "manager@demo.example"):
        response = await http.get(path, headers=auth(email), params=params)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await http.get(path, params=params)).status_code == 401


@pytest.mark.parametrize(("params", "bad_key"), [
    ({}, "startTime"),
    ({"startTime": 100, "endTime": 50}, "endTime"),
    ({"startTime": 0, "bucketWidth": "1m"}, "bucketWidth"),
    ({"startTime": 0, "groupBy": "model,planet"}, "groupBy"),
    ({"startTime": 0, "limit": 32}, "limit"),
    ({"startTime": 0, "userIds": "not-a-uuid"}, "userIds"),
    ({"startTime": 0, "endTime": 86400 * 10, "page": "3600"}, "page"),
])
async def test_invalid_queries_answer_400_naming_the_parameter(
        usage_app, http, auth, params, bad_key) -> None:
    response = await http.get("/api/usage", headers=auth("analyst@demo.example"), params=params)
    assert response.status_code == 400
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert bad_key in {e["key"] for e in problem["errors"]}


async def test_export_rejects_formats_other_than_csv(usage_app, http, auth) -> None:
    response = await http.get("/api/usage/export", headers=auth("analyst@demo.example"),
                              params={"format": "xlsx"})
    assert response.status_code == 400 and response.json()["errors"][0]["key"] == "format"


async def _stopped_reply(http: httpx.AsyncClient, headers: dict[str, str], thread: str,
                         content: str) -> None:
    """A streamed reply stopped after a few events, the client then cut off."""
    async with http.stream("POST", f"/api/threads/{thread}/messages",
                           headers={**headers, "accept": "text/event-stream"},
                           json={"content": content}) as response:
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("data:")
            if seen == 4:
                await http.post(f"/api/threads/{thread}/stop", headers=headers)
                break


async def _settle(owner_engine: Any, threads: list[str]) -> None:
    for _ in range(300):
        async with owner_engine.connect() as conn:
            busy = (await conn.execute(text(
                "SELECT count(*) FROM thread_runs WHERE thread_id = ANY(CAST(:t AS uuid[]))"
                " AND status IN ('queued', 'running')"), {"t": threads})).scalar_one()
        if not busy:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("replies did not finish")


async def test_live_replies_agree_across_buckets_thread_endpoint_and_csv(
        usage_app, http, auth, new_thread, owner_engine, fake_openai, fake_anthropic) -> None:
    began = int(time.time()) - 1
    openai, anthropic = fake_openai[0], fake_anthropic[0]
    openai.reset()
    anthropic.reset()
    openai.enqueue(tool_call_reply(FakeToolCall("lookup_renewal", {"customer": "Acme"}),
                                   usage=FakeUsage(input_tokens=410, output_tokens=12,
                                                   cached_tokens=256)),
                   text_reply("Acme renews in ten days.",
                              usage=FakeUsage(input_tokens=520, output_tokens=7)))
    anthropic.default = text_reply(
        "The champion is engaged and legal has the redlines for the renewal.",
        chunk_delay=0.02, usage=FakeUsage(input_tokens=300, output_tokens=16, cached_tokens=40))
    try:
        threads = {
            "openai": await new_thread("openai", tools=["lookup_renewal"]),
            "anthropic": await new_thread("anthropic"),
            "local": await new_thread("local", email="csm2@demo.example"),
        }
        # Other's thread is written by the owner with one ledger row: an execution of tenant
        # Other would start runs whose events change what test_tenancy picks as Other's rows.
        async with owner_engine.begin() as conn:
            other = str((await conn.execute(text(
                "INSERT INTO workflow_chat_threads (step_id, thread_type, tenant_id) SELECT"
                " 'review', 'llm', id FROM tenants WHERE slug = 'other' RETURNING id"))
            ).scalar_one())
            await conn.execute(text(
                "INSERT INTO usage_ledger (tenant_id, thread_id, provider, model, input_tokens,"
                " output_tokens, usage_source, cost_usd) SELECT tenant_id, id, 'openai',"
                " 'openai:gpt-4o-mini', 900, 90, 'provider', 0.0002 FROM workflow_chat_threads"
                " WHERE id = :th"), {"th": other})
        everything = list(threads.values())

        async def reply(thread: str, content: str, email: str = "csm@demo.example") -> None:
            response = await http.post(f"/api/threads/{thread}/messages", headers=auth(email),
                                       json={"content": content})
            assert response.status_code == 200, response.text

        async def stopped(thread: str, content: str, email: str = "csm@demo.example") -> None:
            await _stopped_reply(http, auth(email), thread, content)
            await _settle(owner_engine, everything)

        await reply(threads["openai"], "When does Acme renew?")
        await stopped(threads["anthropic"], "What is the risk?")
        await reply(threads["anthropic"], "And the next step?")
        for n in range(2):
            await stopped(threads["local"], f"[[long]] question {n}", "csm2@demo.example")
        await reply(threads["local"], "A short one.", "csm2@demo.example")
        await _settle(owner_engine, everything)
    finally:
        anthropic.default = None
    analyst = auth("analyst@demo.example")
    per_thread: dict[str, tuple[Any, ...]] = {}
    statuses = set()
    for thread in threads.values():
        stored = await thread_rows(owner_engine, thread)
        assert_token_invariants(stored)
        response = await http.get(f"/api/usage/threads/{thread}", headers=analyst)
        assert response.status_code == 200, response.text
        body = response.json()
        calls = body["calls"]
        assert [(c["inputTokens"], c["outputTokens"], c["cachedTokens"], c["usageSource"])
                for c in calls] == [(r.input_tokens, r.output_tokens, r.cached_tokens,
                                     r.usage_source) for r in stored["ledger"]]
        assert all(c["threadId"] == thread and c["model"] and c["provider"] for c in calls)
        statuses |= {c["status"] for c in calls}
        per_thread[thread] = fold((thread, api_values({**c, "numModelRequests": 1}))
                                  for c in calls)[thread]
        totals = body["totals"]
        assert api_values(totals) == per_thread[thread]
        assert totals["inputTokens"] + totals["outputTokens"] == stored["thread"].total_tokens
    assert {"ok", "stopped"} <= statuses
    window = {"startTime": began, "endTime": int(time.time()) + 3600, "bucketWidth": "1h",
              "limit": 168, "threadIds": ",".join(threads.values())}
    body = await get_usage(http, auth, "analyst@demo.example", **window, groupBy="thread")
    assert fold((r["threadId"], api_values(r)) for b in body["data"] for r in b["results"]) \
        == per_thread
    exported = csv_rows(await http.get("/api/usage/export", headers=analyst,
                                       params={**window, "format": "csv"}))
    assert fold((r["threadId"], csv_values(r)) for r in exported) == per_thread
    # The other tenant's thread does not exist for Demo's analyst, and is in none of its sums.
    assert (await http.get(f"/api/usage/threads/{other}", headers=analyst)).status_code == 404
    assert (await http.get(f"/api/usage/threads/{other}",
                           headers=auth("analyst@other.example"))).status_code == 200
    leaked = await get_usage(http, auth, "analyst@demo.example", **{**window, "threadIds": other})
    assert all(b["results"] == [] for b in leaked["data"])
