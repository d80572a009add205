"""Clients cut off at random points: nothing is lost and every reply ends with its usage."""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import pytest
from sqlalchemy import text

from tests.fakes import FakeUsage, text_reply
from tests.integration.conftest import assert_token_invariants, thread_rows

CUTS_PER_PROVIDER = 50
THREADS_PER_PROVIDER = 5
FINAL = {"complete", "stopped", "interrupted", "error"}


async def cut_once(base: str, headers: dict, thread: str, content: str, read_events: int,
                   also_stop: bool) -> None:
    """Post with SSE, read `read_events` events, then drop the connection (maybe stop too)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with client.stream("POST", f"/api/threads/{thread}/messages",
                                 headers={**headers, "accept": "text/event-stream"},
                                 json={"content": content}) as response:
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    seen += 1
                if seen >= read_events:
                    break
        if also_stop:
            await client.post(f"/api/threads/{thread}/stop", headers=headers)


async def wait_until_settled(owner_engine, threads: list[str], within_s: float = 90) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with owner_engine.connect() as conn:
            busy = (await conn.execute(text(
                "SELECT count(*) FROM thread_runs WHERE thread_id = ANY(CAST(:t AS uuid[]))"
                " AND status IN ('queued', 'running')"), {"t": threads})).scalar_one()
        if busy == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{busy} runs still unfinished")


@pytest.mark.parametrize("provider", ["local", "openai", "anthropic"])
async def test_random_client_cuts_lose_nothing_and_every_ending_has_usage(
        provider, live_app, auth, new_thread, owner_engine, fake_openai, fake_anthropic):
    seed = int(os.environ.get("CUT_SEED", random.randrange(1_000_000)))
    print(f"\ncut test seed for {provider}: {seed} (rerun with CUT_SEED={seed})")
    rng = random.Random(seed)
    fake = {"openai": fake_openai[0], "anthropic": fake_anthropic[0]}.get(provider)
    if fake is not None:
        fake.reset()
        fake.default = text_reply(
            "Acme's renewal is in ten days; the champion is engaged and legal has the redlines.",
            chunk_delay=0.003, usage=FakeUsage(input_tokens=200, output_tokens=20))
    try:
        threads = [await new_thread(provider) for _ in range(THREADS_PER_PROVIDER)]
        sent: dict[str, list[str]] = {t: [] for t in threads}
        jobs = []
        for i in range(CUTS_PER_PROVIDER):
            thread = threads[i % len(threads)]
            content = f"[[long]] cut question {i} seed {seed}" if provider == "local" \
                else f"cut question {i} seed {seed}"
            sent[thread].append(content)
            jobs.append(cut_once(live_app[1], auth(), thread, content, rng.randrange(0, 14),
                                 rng.random() < 0.2))
        for batch in range(0, len(jobs), 10):
            await asyncio.gather(*jobs[batch:batch + 10])
        await wait_until_settled(owner_engine, threads)
    finally:
        if fake is not None:
            fake.default = None
    endings = {}
    for thread in threads:
        rows = await thread_rows(owner_engine, thread)
        users = [m.content for m in rows["messages"] if m.role == "user"]
        assert sorted(users) == sorted(sent[thread]), f"seed {seed}: a user message was lost"
        replies = [m for m in rows["messages"] if m.role == "assistant"]
        assert len(replies) == len(users)
        ledger_by_message = {}
        for row in rows["ledger"]:
            ledger_by_message.setdefault(row.message_id, []).append(row)
        for reply in replies:
            assert reply.status in FINAL, f"seed {seed}: reply left {reply.status}"
            usage = ledger_by_message.get(reply.id)
            assert usage, f"seed {seed}: a reply ended without a usage row"
            assert {u.usage_source for u in usage} <= {"provider", "estimated", "unavailable"}
            if reply.status == "complete":
                assert reply.content and usage[-1].usage_source == "provider"
            endings[reply.status] = endings.get(reply.status, 0) + 1
        assert [m.sequence_number for m in rows["messages"]] == \
            list(range(1, len(rows["messages"]) + 1))
        assert_token_invariants(rows)
    print(f"endings for {provider}: {endings}")
    assert sum(endings.values()) == CUTS_PER_PROVIDER
