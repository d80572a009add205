"""What the model sees of a long thread: the newest turns that fit the budget, in order, read one
page at a time from the end (a thread of any length costs what its newest turns cost)."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat import history
from app.chat.history import build_messages
from app.chat.models import LlmContext, Thread
from app.db.driver import driver_of
from tests.fakes import text_reply

TURNS = 70  # 140 earlier messages: several pages


async def long_thread(owner_engine, thread_id: str) -> uuid.UUID:
    """TURNS answered turns (plus a failed empty reply), then the question; returns its id."""
    rows = []
    for turn in range(TURNS):
        rows.append({"role": "user", "content": f"question {turn}", "tokens": 3, "status":
                     "complete", "meta": None})
        rows.append({"role": "assistant", "content": f"answer {turn}", "tokens": 0,
                     "status": "complete", "meta": json.dumps({"contentTokens": 3})})
    rows.append({"role": "user", "content": "unanswered", "tokens": 2, "status": "complete",
                 "meta": None})
    rows.append({"role": "assistant", "content": "", "tokens": 0, "status": "error",
                 "meta": json.dumps({"contentTokens": 0})})
    rows.append({"role": "user", "content": "the question", "tokens": 3, "status": "complete",
                 "meta": None})
    async with owner_engine.begin() as conn:
        tenant = (await conn.execute(text(
            "SELECT tenant_id FROM workflow_chat_threads WHERE id = :t"), {"t": thread_id})
        ).scalar_one()
        for number, row in enumerate(rows, start=1):
            question = (await conn.execute(text(
                "INSERT INTO workflow_chat_messages (thread_id, tenant_id, role, content,"
                " tokens_used, sequence_number, status, metadata) VALUES (:t, :tenant, :role,"
                " :content, :tokens, :n, :status, CAST(:meta AS jsonb)) RETURNING id"),
                {**row, "t": thread_id, "tenant": tenant, "n": number})).scalar_one()
        await conn.execute(text(
            "UPDATE workflow_chat_threads SET last_sequence_number = :n WHERE id = :t"),
            {"n": len(rows), "t": thread_id})
    return question


async def seen(owner_engine, thread_id: str, question: uuid.UUID, budget: int):
    async with AsyncSession(owner_engine) as session, session.begin():
        thread = await session.get(Thread, uuid.UUID(thread_id))
        context = (await session.scalars(
            select(LlmContext).where(LlmContext.thread_id == thread.id))).one()
        return await build_messages(await driver_of(session), thread, context,
                                    SimpleNamespace(user_message_id=question), budget)


async def test_the_model_sees_every_turn_that_fits_in_order(new_thread, owner_engine):
    thread = await new_thread("local")
    question = await long_thread(owner_engine, thread)
    result = await seen(owner_engine, thread, question, budget=100_000)
    texts = [m.content for m in result.messages[1:]]
    expected = [t for turn in range(TURNS) for t in (f"question {turn}", f"answer {turn}")]
    assert texts == [*expected, "unanswered", "the question"]  # the empty failed reply is left out
    assert [m.role for m in result.messages[1:3]] == ["user", "assistant"]
    assert result.user_message_id == question
    assert result.segments["history"] == 2 * TURNS * (3 + 4) + (2 + 4)


async def test_a_small_budget_keeps_the_newest_turns_only(new_thread, owner_engine, monkeypatch):
    monkeypatch.setattr(history, "PAGE", 4)  # the budget ends inside the fourth page
    thread = await new_thread("local")
    question = await long_thread(owner_engine, thread)
    result = await seen(owner_engine, thread, question, budget=3 + 6 + 7 * 10 + 3)
    texts = [m.content for m in result.messages[1:]]
    assert texts[-1] == "the question" and texts[-2] == "unanswered"
    assert texts[:-2] == [t for turn in range(TURNS - 5, TURNS)
                          for t in (f"question {turn}", f"answer {turn}")]
    assert result.segments["history"] == 10 * 7 + 6


async def test_a_posted_question_sends_the_history_a_queued_one_would_read(
        new_thread, owner_engine, http, auth, fake_openai, live_settings):
    """A question posted to an idle thread is answered with history read by the statement that
    locked the thread (its newest page), then paged on; it must match the history read later
    from the stored thread, as a queued run's is."""
    fake = fake_openai[0]
    fake.reset()
    fake.enqueue(text_reply("noted"))
    thread = await new_thread("openai")
    await long_thread(owner_engine, thread)
    answer = await http.post(f"/api/threads/{thread}/messages", headers=auth(),
                             json={"content": "and now?"})
    assert answer.status_code == 200, answer.text
    sent = [(m["role"], m["content"]) for m in fake.requests[-1]["messages"]]
    stored = await seen(owner_engine, thread, uuid.UUID(answer.json()["userMessage"]["id"]),
                        budget=live_settings.history_token_budget)
    assert sent == [(m.role, m.content) for m in stored.messages]
    assert len(sent) > 2 * history.PAGE  # the read went past the first page


def test_a_page_read_by_a_post_that_waited_for_the_lock_is_not_used() -> None:
    question = history.Question(uuid.uuid4(), "q", 8, 1)
    recent = [["assistant", "a", 6, 2], ["user", "u", 5, 1]]
    whole = history.earlier_turns(recent, 6, 6, False, question)
    assert whole is not None and whole.page[0] == history.Turn("assistant", "a", 6, 2)
    # The post before it committed messages 7 and 8 while this one waited for the lock.
    assert history.earlier_turns(recent, 6, 8, False, question) is None
    # A reply was still running in its snapshot: it may be final by the time this run starts.
    assert history.earlier_turns(recent, 6, 6, True, question) is None
    assert history.earlier_turns(None, None, 0, False, question) is not None  # a new thread
