"""Budgets warn, degrade and refuse, in the stream and in the API, with nothing half-written."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

from sqlalchemy import text

from tests.integration.conftest import thread_rows
from tests.live import read_stream


@asynccontextmanager
async def tenant_budgets(owner_engine, budgets: dict):
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            "UPDATE tenants SET settings = jsonb_set(settings, '{budgets}', CAST(:b AS jsonb))"
            " WHERE slug = 'demo'"), {"b": json.dumps(budgets)})
    try:
        yield
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text(
                "UPDATE tenants SET settings = settings - 'budgets' WHERE slug = 'demo'"))


async def count(owner_engine, sql: str, **params) -> int:
    async with owner_engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


def part_of(events, kind):
    return [e.part for e in events if e.part and e.part["type"] == kind]


async def test_soft_limit_warns_in_the_stream(http, auth, new_thread, owner_engine):
    thread = await new_thread("local")
    async with tenant_budgets(owner_engine, {"monthlyTokens": 10**9, "softRatio": 0.0}):
        _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                      headers=auth(), json={"content": "How are we doing?"})
    (budget,) = part_of(events, "data-budget")
    assert budget["data"]["action"] == "warn"
    assert budget["data"]["warnings"][0]["scope"] == "tenant"
    assert part_of(events, "finish")[0]["messageMetadata"]["status"] == "complete"


async def test_hard_limit_refuses_with_429_and_writes_only_the_refusal(
        http, auth, new_thread, owner_engine):
    thread = await new_thread("local")
    messages = "SELECT count(*) FROM workflow_chat_messages WHERE thread_id = :t"
    ledger = "SELECT count(*) FROM usage_ledger WHERE thread_id = :t"
    refusals = "SELECT count(*) FROM usage_refusals WHERE thread_id = :t"
    async with tenant_budgets(owner_engine, {"threadTokens": 1}):
        response = await http.post(f"/api/threads/{thread}/messages", headers=auth(),
                                   json={"content": "One more question"})
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert "thread tokens budget" in body["detail"]
    assert body["errors"][0]["scope"] == "thread"
    assert await count(owner_engine, messages, t=thread) == 0
    assert await count(owner_engine, ledger, t=thread) == 0
    assert await count(owner_engine, refusals, t=thread) == 1


async def test_degrade_mode_switches_to_the_cheaper_model(http, auth, new_thread, owner_engine):
    thread = await new_thread("local")
    async with tenant_budgets(owner_engine, {"threadTokens": 1, "mode": "cheaper",
                                             "cheaperModel": "local-mini"}):
        _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                      headers=auth(), json={"content": "Summarise it"})
    (budget,) = part_of(events, "data-budget")
    assert budget["data"]["action"] == "cheaper" and budget["data"]["model"] == "local-mini"
    async with owner_engine.connect() as conn:
        models = (await conn.execute(text(
            "SELECT model FROM usage_ledger WHERE thread_id = :t"), {"t": thread})).scalars().all()
    assert models == ["local-mini"]


async def test_degrade_mode_trims_the_history(http, auth, new_thread, owner_engine):
    thread = await new_thread("local")
    for question in ("First long question about the renewal and its history",
                     "Second question about pricing and the discount policy"):
        await http.post(f"/api/threads/{thread}/messages", headers=auth(),
                        json={"content": question})
    async with tenant_budgets(owner_engine, {"threadTokens": 1, "mode": "trim",
                                             "trimHistoryTokens": 5}):
        _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                      headers=auth(), json={"content": "And now?"})
    assert part_of(events, "data-budget")[0]["data"]["action"] == "trim"
    rows = await thread_rows(owner_engine, thread)
    assert rows["ledger"][-1].prompt_breakdown.get("history", 0) == 0
    assert rows["ledger"][0].prompt_breakdown.get("history", 0) == 0
    assert rows["ledger"][1].prompt_breakdown["history"] > 0
