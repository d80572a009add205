"""Streamed replies through the real SDKs and fake providers: protocol, tools, failures, resume."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy import text

from app.chat.runs import KEPT_PARTS
from tests.fakes import (
    AbortReply,
    ErrorReply,
    FakeToolCall,
    FakeUsage,
    StallReply,
    text_reply,
    tool_call_reply,
)
from tests.integration.conftest import assert_token_invariants, thread_rows
from tests.live import read_stream

PROTOCOL_ORDER = ["start", "data-message", "start-step", "text-start", "text-delta", "text-end",
                  "finish-step", "data-usage", "finish"]


def types(events):
    return [e.part["type"] for e in events if e.part is not None]


def collapse(kinds):
    out = []
    for kind in kinds:
        if not out or out[-1] != kind:
            out.append(kind)
    return out


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_streamed_reply_follows_the_protocol_and_records_provider_usage(
        provider, http, auth, new_thread, owner_engine, fake_openai, fake_anthropic):
    fake = fake_openai[0] if provider == "openai" else fake_anthropic[0]
    usage = FakeUsage(input_tokens=321, output_tokens=54, cached_tokens=100, reasoning_tokens=7,
                      output_steps=(10, 30, 54))
    fake.enqueue(text_reply("The renewal is due in ten days and the champion is engaged.",
                            usage=usage))
    thread = await new_thread(provider)
    response, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                         headers=auth(), json={"content": "When is it due?"})
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1].data == "[DONE]"
    assert all(e.id for e in events)
    assert collapse(types(events)) == PROTOCOL_ORDER
    text = "".join(e.part["delta"] for e in events[:-1] if e.part["type"] == "text-delta")
    assert text == "The renewal is due in ten days and the champion is engaged."
    usage_part = next(e.part["data"] for e in events[:-1] if e.part["type"] == "data-usage")
    expected_input = 321 if provider == "openai" else 321 + 100
    assert usage_part["completionTokens"] == 54 and usage_part["source"] == "provider"
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].content == text and rows["messages"][-1].status == "complete"
    (ledger,) = rows["ledger"]
    assert (ledger.input_tokens, ledger.output_tokens) == (expected_input, 54)
    assert ledger.usage_source == "provider"
    assert_token_invariants(rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_call_round_trip_is_recorded_and_fed_back(
        provider, http, auth, new_thread, owner_engine, fake_openai, fake_anthropic):
    fake = fake_openai[0] if provider == "openai" else fake_anthropic[0]
    fake.reset()
    fake.enqueue(tool_call_reply(FakeToolCall("lookup_renewal", {"customer": "Acme"}),
                                 usage=FakeUsage(input_tokens=50, output_tokens=9)),
                 text_reply("Acme renews in 10 days.",
                            usage=FakeUsage(input_tokens=80, output_tokens=6)))
    thread = await new_thread(provider, tools=["lookup_renewal"])
    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "When does Acme renew?"})
    parts = [e.part for e in events[:-1]]
    tool_input = next(p for p in parts if p["type"] == "tool-input-available")
    tool_output = next(p for p in parts if p["type"] == "tool-output-available")
    rows = await thread_rows(owner_engine, thread)
    (call,) = rows["calls"]
    assert tool_input["toolCallId"] == tool_output["toolCallId"] == str(call.id)
    assert call.tool_input == {"customer": "Acme"} and call.success is True
    assert call.tool_output["renewsInDays"] == 10 and call.latency_ms is not None
    assert call.message_id == rows["messages"][-1].id
    second_request = fake.requests[-1]
    assert "renewsInDays" in str(second_request["messages"])
    assert [(r.input_tokens, r.output_tokens) for r in rows["ledger"]] == [(50, 9), (80, 6)]
    first, second = (r.prompt_breakdown for r in rows["ledger"])
    assert sum(first.values()) == 50 and sum(second.values()) == 80
    assert first.get("toolResults", 0) == 0 < second["toolResults"]
    assert {"system", "context", "question", "tools"} <= set(second)
    assert second["context"] > 0
    assert rows["messages"][-1].content.endswith("Acme renews in 10 days.")
    assert_token_invariants(rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_provider_error_before_content_ends_the_reply_with_an_explicit_usage_row(
        provider, http, auth, new_thread, owner_engine, fake_openai, fake_anthropic):
    fake = fake_openai[0] if provider == "openai" else fake_anthropic[0]
    fake.reset()
    fake.enqueue(ErrorReply(status=500), ErrorReply(status=500))
    thread = await new_thread(provider)
    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "Hello?"})
    kinds = types(events)
    assert kinds[-3:] == ["error", "data-usage", "finish"] or \
        kinds[kinds.index("error"):] == ["error", "finish-step", "data-usage", "finish"]
    assert len(fake.requests) == 2  # retried once before any content, then gave up
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].status == "error"
    (ledger,) = rows["ledger"]
    assert (ledger.usage_source, ledger.status) == ("unavailable", "error")
    assert_token_invariants(rows)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_provider_error_after_content_keeps_the_text_and_estimates_usage(
        provider, http, auth, new_thread, owner_engine, fake_openai, fake_anthropic):
    fake = fake_openai[0] if provider == "openai" else fake_anthropic[0]
    fake.reset()
    fake.enqueue(AbortReply(chunks=("Partial", " answer about the renewal")))
    thread = await new_thread(provider)
    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "Tell me more"})
    assert "error" in types(events)
    assert len(fake.requests) == 1  # never retried after content
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].status == "error"
    assert rows["messages"][-1].content == "Partial answer about the renewal"
    (ledger,) = rows["ledger"]
    assert ledger.usage_source == "estimated" and ledger.output_tokens > 0
    assert_token_invariants(rows)


async def test_stalled_provider_is_abandoned_within_its_read_timeout(
        http, auth, new_thread, owner_engine, fake_openai):
    fake = fake_openai[0]
    fake.reset()
    fake.enqueue(StallReply(chunks=("Thinking",), seconds=30))
    thread = await new_thread("openai")
    started = time.monotonic()
    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "Slow question"})
    elapsed = time.monotonic() - started
    assert "error" in types(events)
    assert elapsed < 10  # read timeout is 1 s; the stall would last 30 s
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].status == "error" and rows["messages"][-1].content == "Thinking"


async def test_resume_with_last_event_id_delivers_the_rest_exactly_once(
        http, auth, new_thread, owner_engine):
    thread = await new_thread("local")
    _, first = await read_stream(http, "POST", f"/api/threads/{thread}/messages", limit=5,
                                 headers=auth(), json={"content": "[[long]] Summarise the account"})
    _, rest = await read_stream(http, "GET", f"/api/threads/{thread}/stream",
                                headers={**auth(), "last-event-id": first[-1].id})
    seqs = [int(e.id.rsplit(":", 1)[1]) for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(e.part["delta"] for e in first + rest[:-1] if e.part["type"] == "text-delta")
    rows = await thread_rows(owner_engine, thread)
    assert text == rows["messages"][-1].content and rows["messages"][-1].status == "complete"


async def test_stream_endpoint_answers_204_when_no_reply_is_active(http, auth, new_thread):
    thread = await new_thread("local")
    response = await http.get(f"/api/threads/{thread}/stream", headers=auth())
    assert response.status_code == 204


async def test_stop_ends_the_reply_with_its_text_so_far_and_estimated_usage(
        http, auth, new_thread, owner_engine, live_app):
    thread = await new_thread("local")
    app = live_app[0]
    app.state.settings  # the delay comes from the local provider config (1 ms per token)
    _, first = await read_stream(http, "POST", f"/api/threads/{thread}/messages", limit=6,
                                 headers=auth(), json={"content": "[[stall]] Walk me through it"})
    stopped = await http.post(f"/api/threads/{thread}/stop", headers=auth())
    assert stopped.json()["stopped"] is True
    _, rest = await read_stream(http, "GET", f"/api/threads/{thread}/stream",
                                headers={**auth(), "last-event-id": first[-1].id})
    finish = [e.part for e in rest if e.part and e.part["type"] == "finish"]
    assert finish and finish[0]["messageMetadata"]["status"] == "stopped"
    rows = await thread_rows(owner_engine, thread)
    reply = rows["messages"][-1]
    assert reply.status == "stopped" and reply.content
    assert rows["ledger"][-1].usage_source == "estimated"
    assert rows["ledger"][-1].status == "stopped"
    assert_token_invariants(rows)


async def test_idempotency_key_replays_the_first_reply_without_a_second_provider_call(
        http, auth, new_thread, owner_engine, fake_openai):
    fake = fake_openai[0]
    fake.reset()
    fake.default = text_reply("Only once.")
    thread = await new_thread("openai")
    headers = {**auth(), "idempotency-key": f"key-{thread}"}
    first = await http.post(f"/api/threads/{thread}/messages", headers=headers,
                            json={"content": "Once please"})
    second = await http.post(f"/api/threads/{thread}/messages", headers=headers,
                             json={"content": "Once please"})
    assert first.status_code == second.status_code == 200
    assert first.json()["assistantMessage"]["id"] == second.json()["assistantMessage"]["id"]
    assert len(fake.requests) == 1
    other = await http.post(f"/api/threads/{thread}/messages", headers=headers,
                            json={"content": "A different question"})
    assert other.status_code == 409
    rows = await thread_rows(owner_engine, thread)
    assert len(rows["messages"]) == 2
    fake.default = None


async def test_fifty_concurrent_posts_keep_sequence_numbers_contiguous(
        http, auth, new_thread, owner_engine):
    for _ in range(2):
        thread = await new_thread("local")
        responses = await asyncio.gather(*[
            http.post(f"/api/threads/{thread}/messages", headers=auth(),
                      json={"content": f"Question number {i}"}) for i in range(50)])
        assert [r.status_code for r in responses] == [200] * 50
        rows = await thread_rows(owner_engine, thread)
        seqs = [m.sequence_number for m in rows["messages"]]
        assert seqs == list(range(1, 101))
        assert all(m.status == "complete" for m in rows["messages"])
        assert_token_invariants(rows)


async def test_a_long_reply_leaves_memory_as_it_is_stored_and_a_late_reader_misses_nothing(
        http, auth, new_thread, owner_engine, fake_openai, live_app):
    fake = fake_openai[0]
    fake.reset()
    fake.enqueue(text_reply(" ".join(f"word{i}" for i in range(500)), chunk_delay=0.004))
    thread = await new_thread("openai")
    _, first = await read_stream(http, "POST", f"/api/threads/{thread}/messages", limit=2,
                                 headers=auth(), json={"content": "Tell me everything"})
    run_id = uuid.UUID(first[0].id.rsplit(":", 1)[0])
    manager = live_app[0].state.run_manager
    deadline = time.monotonic() + 10
    while (handle := manager.handles.get(run_id)) is not None and handle.base == 0:
        assert time.monotonic() < deadline, "no part ever left memory"
        await asyncio.sleep(0.01)
    assert handle is not None and not handle.done, "the reply ended before the check"
    assert len(handle.parts) < 2 * KEPT_PARTS  # a window, not the whole reply
    # A reader resuming after part 1 needs parts that are now only in the database.
    _, rest = await read_stream(http, "GET", f"/api/threads/{thread}/stream",
                                headers={**auth(), "last-event-id": first[0].id})
    received = [e for e in first[:1] + rest if e.part is not None]  # not the [DONE] line
    assert [int(e.id.rsplit(":", 1)[1]) for e in received] == list(range(1, len(received) + 1))
    async with owner_engine.connect() as conn:
        stored = (await conn.execute(text(
            "SELECT part FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id})
        ).scalars().all()
    assert [e.part for e in received] == stored
    rows = await thread_rows(owner_engine, thread)
    text_seen = "".join(e.part["delta"] for e in received if e.part["type"] == "text-delta")
    assert text_seen == rows["messages"][-1].content and rows["messages"][-1].status == "complete"
    assert len(received) > 500


@pytest.mark.parametrize("with_tool", [False, True])
async def test_a_json_answer_is_what_the_thread_stores(
        with_tool, http, auth, new_thread, owner_engine, fake_openai):
    """The JSON answer is built from what the reply's ending wrote, not read back: it must
    still equal the stored thread (messages, tool calls) and the ledger (usage, cost)."""
    fake = fake_openai[0]
    fake.reset()
    if with_tool:
        fake.enqueue(tool_call_reply(FakeToolCall("lookup_renewal", {"customer": "Acme"}),
                                     usage=FakeUsage(input_tokens=50, output_tokens=9)))
    fake.enqueue(text_reply("Acme renews in 10 days.",
                            usage=FakeUsage(input_tokens=80, output_tokens=6, cached_tokens=20)))
    thread = await new_thread("openai", tools=["lookup_renewal"] if with_tool else [])
    response = await http.post(f"/api/threads/{thread}/messages", headers=auth(),
                               json={"content": "When does Acme renew?"})
    assert response.status_code == 200, response.text
    body = response.json()
    detail = (await http.get(f"/api/threads/{thread}", headers=auth())).json()
    assert body["userMessage"] == detail["messages"][-2]
    assert body["assistantMessage"] == detail["messages"][-1]
    assert body["toolCalls"] == detail["toolCalls"]
    assert len(body["toolCalls"]) == int(with_tool)
    async with owner_engine.connect() as conn:
        stored = (await conn.execute(text(
            "SELECT sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd),"
            " count(*) FROM usage_ledger WHERE message_id = :m"),
            {"m": body["assistantMessage"]["id"]})).one()
    usage = body["usage"]
    assert (usage["promptTokens"], usage["completionTokens"], usage["cachedTokens"],
            usage["providerCalls"]) == (stored[0], stored[1], stored[2], stored[4])
    assert usage["costUsd"] == float(stored[3]) > 0
    assert usage["source"] == "provider"
