"""Assemble what the model sees: system prompt with the context snapshot, then history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.chat.models import LlmContext, Run, Thread
from app.db.driver import Db, rows
from app.llm.base import ChatMessage
from app.usage.breakdown import count_cached


@dataclass
class History:
    """The messages of one provider request and the user message it answers."""

    messages: list[ChatMessage]
    user_message_id: uuid.UUID
    user_sequence: int
    segments: dict[str, int]  # estimated prompt tokens by segment (see app/usage/breakdown.py)
    budget: dict[str, Any] | None = None  # the budget check's verdict, shown as `data-budget`
    model_override: str | None = None  # a cheaper model chosen by the budget's degrade mode


def context_snapshot(context: LlmContext) -> str:
    """The customer data the model may use, with the time it was taken."""
    snapshot = json.dumps(context.context_data, default=str, sort_keys=True)
    return f"Customer context (as of {context.context_as_of.isoformat()}):\n{snapshot}"


def system_prompt(context: LlmContext) -> str:
    """The stored system prompt plus the customer data snapshot it may use."""
    return f"{context.system_prompt}\n\n{context_snapshot(context)}"


# What the model sees of a message: its token count (a question's own, a reply's content's),
# and whether it is shown at all (every question; a reply once final and not empty).
TURN_TOKENS = ("CASE WHEN m.role = 'user' THEN coalesce(m.tokens_used, 0)"
               " ELSE coalesce((m.metadata->>'contentTokens')::int, 0) END")
_SHOWN = ("(m.role = 'user'"
          " OR (m.status IN ('complete', 'stopped', 'interrupted', 'error') AND m.content <> ''))")
# The question, then the earlier turns the model may see, newest first, one page at a time:
# a long thread costs what its newest turns cost, not what all of them do. Plain rows, not ORM
# objects: nothing here is changed or kept.
_TURNS = f"""
WITH question AS (SELECT sequence_number FROM workflow_chat_messages WHERE id = $1)
SELECT m.id, m.role, m.content, m.sequence_number, {TURN_TOKENS} AS tokens
FROM workflow_chat_messages m, question q
WHERE m.thread_id = $2 AND m.sequence_number <= q.sequence_number
  AND m.sequence_number < $3 AND (m.id = $1 OR {_SHOWN})
ORDER BY m.sequence_number DESC
LIMIT $4
"""
PAGE = 50
# The same turns read by the statement that locks the thread to post a question, before the
# question exists: the newest page, newest first, as [role, content, sequence, tokens] arrays.
# `seen` is the newest message that statement's snapshot saw: a post that waited for the lock
# may have been blind to the one before it, and then its page is not used. Nor is it when a
# reply was unfinished in that snapshot: it may end before the post's next statement, which
# then starts this run at once, and the page would lack that reply.
RECENT_TURNS = f"""
  (SELECT json_agg(json_build_array(h.role, h.content, h.sequence_number, h.tokens)
                   ORDER BY h.sequence_number DESC)
   FROM (SELECT m.role, m.content, m.sequence_number, {TURN_TOKENS} AS tokens
         FROM workflow_chat_messages m
         WHERE m.thread_id = t.id AND {_SHOWN}
         ORDER BY m.sequence_number DESC LIMIT {PAGE}) h) AS recent,
  (SELECT max(m.sequence_number) FROM workflow_chat_messages m WHERE m.thread_id = t.id)
    AS seen,
  EXISTS (SELECT 1 FROM thread_runs r WHERE r.thread_id = t.id
          AND r.status IN ('queued', 'running')) AS unfinished"""


class Turn(NamedTuple):
    """An earlier message as the model sees it."""

    role: str
    content: str
    sequence_number: int
    tokens: int


class Question(NamedTuple):
    """The message the reply answers."""

    id: uuid.UUID
    content: str
    sequence_number: int
    tokens: int


@dataclass(frozen=True)
class Earlier:
    """History read with the thread's lock, before the question was stored."""

    question: Question
    page: list[Turn]  # newest first, at most PAGE


def earlier_turns(recent: list[list[Any]] | None, seen: int | None, last_sequence: int,
                  unfinished: bool, question: Question) -> Earlier | None:
    """The pre-read page, when its snapshot saw every message of the thread, all final."""
    if unfinished or (seen or 0) != last_sequence:
        return None
    return Earlier(question, [Turn(*turn) for turn in recent or ()])


async def build_messages(db: Db, thread: Thread, context: LlmContext, run: Run,
                         budget: int, earlier: Earlier | None = None) -> History:
    """System prompt, then the newest earlier turns that fit `budget` tokens, then the question.

    Counts come from the stored per-message numbers, so history is never re-tokenised. With
    `earlier` the first page is already read; further pages, if the budget wants them, are not.
    """
    assert run.user_message_id is not None, "a run always answers a stored user message"
    question: Any = None
    kept: list[Any] = []
    used = 0
    full = False
    page: Sequence[Any]
    row: Any  # a Turn, or a Row of _TURNS (the question comes first)
    if earlier is not None:
        question, used, page = earlier.question, earlier.question.tokens, earlier.page
    else:
        page = await rows(db, _TURNS, run.user_message_id, thread.id, 2**31 - 1, PAGE)
    while True:
        for row in page:
            if question is None:
                assert row.id == run.user_message_id, "the first row is the question itself"
                question, used = row, row.tokens
                continue
            cost = row.tokens + 4
            if used + cost > budget:
                full = True
                break
            kept.append(row)
            used += cost
        if full or len(page) < PAGE:
            break
        page = await rows(db, _TURNS, run.user_message_id, thread.id,
                          page[-1].sequence_number, PAGE)
    assert question is not None, "a run always answers a stored user message"
    kept.reverse()
    segments = {
        "system": count_cached(context.system_prompt),
        "context": count_cached(context_snapshot(context)),
        "history": used - question.tokens,
        "question": question.tokens,
        "overhead": 3 + 4 * (len(kept) + 2),
    }
    messages = [ChatMessage("system", system_prompt(context))]
    messages += [ChatMessage(_role(m.role), m.content) for m in kept]
    messages.append(ChatMessage("user", question.content))
    return History(messages, question.id, question.sequence_number, segments)


def _role(role: str) -> Any:
    return "assistant" if role == "assistant" else "user"
