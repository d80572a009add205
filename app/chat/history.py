"""Assemble what the model sees: system prompt with the context snapshot, then history."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.models import LlmContext, Message, Run, Thread
from app.llm.base import ChatMessage
from app.usage.breakdown import count_cached

FINAL_REPLY_STATUSES = ("complete", "stopped", "interrupted", "error")


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


def _stored_tokens(message: Message) -> int:
    """Tokens of a message's own text, counted once when it was written."""
    if message.role == "user":
        return message.tokens_used or 0
    return int((message.metadata_ or {}).get("contentTokens", 0))


async def build_messages(session: AsyncSession, thread: Thread, context: LlmContext, run: Run,
                         budget: int) -> History:
    """System prompt, then the newest earlier turns that fit `budget` tokens, then the question.

    Counts come from the stored per-message numbers, so history is never re-tokenised.
    """
    rows = (await session.scalars(
        select(Message).where(Message.thread_id == thread.id)
        .order_by(Message.sequence_number))).all()
    by_id = {m.id: m for m in rows}
    question = by_id[run.user_message_id] if run.user_message_id else None
    assert question is not None, "a run always answers a stored user message"
    earlier = [m for m in rows if m.sequence_number < question.sequence_number
               and (m.role == "user" or (m.status in FINAL_REPLY_STATUSES and m.content))]
    kept: list[Message] = []
    used = _stored_tokens(question)
    for message in reversed(earlier):
        cost = _stored_tokens(message) + 4
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    segments = {
        "system": count_cached(context.system_prompt),
        "context": count_cached(context_snapshot(context)),
        "history": used - _stored_tokens(question),
        "question": _stored_tokens(question),
        "overhead": 3 + 4 * (len(kept) + 2),
    }
    messages = [ChatMessage("system", system_prompt(context))]
    messages += [ChatMessage(_role(m), m.content) for m in kept]
    messages.append(ChatMessage("user", question.content))
    return History(messages, question.id, question.sequence_number, segments)


def _role(message: Message) -> Any:
    return "assistant" if message.role == "assistant" else "user"
