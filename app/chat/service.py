"""Thread rules: posting a message (committed before any provider call), stop, complete, read."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.chat import stream as parts
from app.chat.history import RECENT_TURNS, Earlier, Question, earlier_turns
from app.chat.models import LlmContext, Message, Run, Thread, ToolCallRecord
from app.db.driver import Db, Row, detached, row, rows, select_list
from app.errors import Conflict, NotFound
from app.llm.tokens import count_text
from app.usage.budgets import BudgetDecision, check_budget
from app.usage.ledger import UsageFigures, usage_part
from app.usage.pricing import PriceBook

# What a turn needs of its thread (alias t) beside the thread: its LLM context (columns c_*)
# and its execution's workflow key. Read by the post and by a queued run's start.
TURN_SOURCES = f"""{select_list(Thread, 't')}, {select_list(LlmContext, 'c', 'c_')},
  (SELECT e.workflow_key FROM workflow_executions e WHERE e.id = t.workflow_execution_id)
    AS workflow_key"""
TURN_CONTEXT_JOIN = "LEFT JOIN workflow_llm_context c ON c.thread_id = t.id"

# The thread, row-locked for the turn, with its turn sources, the tenant's budgets and the
# newest page of its history.
_LOCK_THREAD = f"""
SELECT {TURN_SOURCES},
  (SELECT s.settings->'budgets' FROM tenants s WHERE s.id = t.tenant_id) AS budgets,
  {RECENT_TURNS}
FROM workflow_chat_threads t {TURN_CONTEXT_JOIN}
WHERE t.id = $1
FOR UPDATE OF t
"""


def context_of(found: Row) -> LlmContext | None:
    """The LLM context read with TURN_SOURCES (None if the thread has none)."""
    return detached(LlmContext, found, "c_") if found.c_id is not None else None


# The question, the reply's placeholder and the run, with the thread's counters, in one round
# trip. Under the thread's row lock, a run with no unfinished predecessor starts running on the
# posting worker ($11), its opening parts ($12) stored with it; later posts queue behind it.
# The foreign keys to the new rows are checked at the statement's end, when all of them exist.
_POST = """
WITH line AS (
  SELECT $11::text IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM thread_runs WHERE thread_id = $1 AND status IN ('queued', 'running')) AS first
), messages AS (
  INSERT INTO workflow_chat_messages (id, thread_id, tenant_id, role, content, tokens_used,
    sequence_number, status, message_type, metadata)
  VALUES ($4, $1, $2, 'user', $7, $8, $9, 'complete', 'text', NULL),
         ($5, $1, $2, 'assistant', '', 0, $9 + 1, 'streaming', 'text', $10::jsonb)
), run AS (
  INSERT INTO thread_runs (id, tenant_id, thread_id, user_id, user_message_id,
    assistant_message_id, status, worker_id)
  SELECT $6, $2, $1, $3, $4, $5, CASE WHEN first THEN 'running' ELSE 'queued' END,
         CASE WHEN first THEN $11::text END
  FROM line
), counters AS (
  UPDATE workflow_chat_threads
  SET last_sequence_number = $9 + 1, total_messages = COALESCE(total_messages, 0) + 2
  WHERE id = $1
), opening AS (
  INSERT INTO run_events (run_id, seq, tenant_id, part)
  SELECT $6, x.seq, $2, x.part::jsonb
  FROM line, unnest($12::text[]) WITH ORDINALITY AS x(part, seq)
  WHERE first
)
SELECT first AS first_in_line, now() AS posted_at FROM line
"""


@dataclass
class PostedMessage:
    """The committed user message, the reply placeholder and the run that will fill it."""

    run: Run
    user_message: Message
    assistant_message: Message
    created: bool  # False when an Idempotency-Key replayed an earlier request
    first_in_line: bool = False  # created running: no earlier reply was queued or running
    thread: Thread | None = None  # the thread, row-locked by this transaction
    context: LlmContext | None = None  # the thread's LLM context, read with the lock
    workflow_key: str | None = None  # the key of the thread's execution's workflow
    opening: list[str] = field(default_factory=list)  # stored opening parts (first in line)
    earlier: Earlier | None = None  # the history page read with the lock, if still whole


def request_hash(*parts: str) -> str:
    """Fingerprint of a request body, to refuse an Idempotency-Key reused for another request."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


async def get_thread(session: AsyncSession, thread_id: str | uuid.UUID, *,
                     for_update: bool = False) -> Thread:
    """A thread of the caller's tenant, or 404 (also for malformed ids)."""
    thread = await session.get(Thread, _thread_key(thread_id), with_for_update=for_update)
    if thread is None:
        raise NotFound(f"thread '{thread_id}' not found")
    return thread


async def post_message(db: Db, principal: Principal, thread_id: str, content: str,
                       idempotency_key: str | None, prices: PriceBook | None = None, *,
                       start_as: str | None = None) -> PostedMessage:
    """Commit the user message and a queued run, in the caller's transaction.

    With `start_as` (a worker id) a run that is first in line is created running on that
    worker, which then starts it right after the commit.
    """
    fingerprint = request_hash(str(thread_id), content)
    if idempotency_key:
        replay = await _claim_idempotency_key(db, principal, idempotency_key, fingerprint,
                                              f"thread:{thread_id}:messages")
        if replay is not None:
            return replay
    locked = await row(db, _LOCK_THREAD, _thread_key(thread_id))
    if locked is None:
        raise NotFound(f"thread '{thread_id}' not found")
    thread, context = detached(Thread, locked), context_of(locked)
    if thread.status != "active":
        raise Conflict(f"the thread is {thread.status}; open a new branch to keep talking")
    user_seq = thread.last_sequence_number + 1
    content_tokens = count_text(content)
    reply_metadata: dict[str, Any] = {"replyTo": user_seq}
    if prices is not None and locked.budgets:
        assert context is not None, "every thread is opened with its LLM context"
        reply_metadata.update(await _budget(db, principal, thread, context, locked.budgets,
                                            content_tokens, prices))
    ids = question_id, reply_id, run_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    opening = [parts.encode(part) for part in parts.opening(
        reply_id=reply_id, question_id=question_id, question_seq=user_seq, thread_id=thread.id,
        run_id=run_id, budget=reply_metadata.get("budget"))] if start_as else []
    posted = await row(
        db, _POST, thread.id, principal.tenant_id, principal.user_id, *ids, content,
        content_tokens, user_seq, json.dumps(reply_metadata, default=str), start_as, opening)
    assert posted is not None
    first_in_line = bool(posted.first_in_line)
    user_message = Message(id=question_id, thread_id=thread.id, role="user", content=content,
                           tokens_used=content_tokens, sequence_number=user_seq,
                           tenant_id=principal.tenant_id, status="complete",
                           message_type="text", metadata_=None, created_at=posted.posted_at)
    assistant = Message(id=reply_id, thread_id=thread.id, role="assistant", content="",
                        sequence_number=user_seq + 1, tenant_id=principal.tenant_id,
                        status="streaming", tokens_used=0, message_type="text",
                        metadata_=reply_metadata)
    run = Run(id=run_id, tenant_id=principal.tenant_id, thread_id=thread.id,
              user_id=principal.user_id, user_message_id=question_id,
              assistant_message_id=reply_id, stop_requested=False, last_event_seq=0,
              status="running" if first_in_line else "queued",
              worker_id=start_as if first_in_line else None)
    thread.last_sequence_number = user_seq + 1
    thread.total_messages = (thread.total_messages or 0) + 2
    if idempotency_key:
        await db.execute(
            "UPDATE idempotency_keys SET run_id = $1 WHERE tenant_id = $2 AND key = $3",
            run_id, principal.tenant_id, idempotency_key)
    earlier = earlier_turns(locked.recent, locked.seen, user_seq - 1, locked.unfinished,
                            Question(question_id, content, user_seq, content_tokens))
    return PostedMessage(run, user_message, assistant, created=True,
                         first_in_line=first_in_line, thread=thread, context=context,
                         workflow_key=locked.workflow_key,
                         opening=opening if first_in_line else [], earlier=earlier)


def _thread_key(thread_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return uuid.UUID(str(thread_id))
    except ValueError:
        raise NotFound(f"thread '{thread_id}' not found") from None


async def _budget(db: Db, principal: Principal, thread: Thread, context: LlmContext,
                  budgets: dict[str, Any], content_tokens: int,
                  prices: PriceBook) -> dict[str, Any]:
    """Apply the tenant's budgets to the next turn (raises BudgetExceeded on a hard limit)."""
    decision = await check_budget(db, budgets, thread, context, principal.user_id,
                                  content_tokens, prices)
    metadata: dict[str, Any] = {}
    if decision.part() is not None:
        metadata["budget"] = decision.part()
    if decision.model:
        metadata["modelOverride"] = decision.model
    if decision.history_budget is not None:
        metadata["historyBudget"] = decision.history_budget
    return metadata


async def record_refusal(db: Db, principal: Principal, thread_id: str,
                         decision: BudgetDecision) -> None:
    """The only row a refused turn writes."""
    await db.execute(
        "INSERT INTO usage_refusals (tenant_id, user_id, thread_id, scope, limit_kind,"
        " limit_value, used, estimate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        principal.tenant_id, principal.user_id, uuid.UUID(str(thread_id)), decision.scope,
        decision.limit_kind, decision.limit, decision.used, decision.estimate)


async def _claim_idempotency_key(db: Db, principal: Principal, key: str,
                                 fingerprint: str, scope: str) -> PostedMessage | None:
    """Insert the key, or return the earlier request's result (waiting for it to commit)."""
    if len(key) > 200:
        raise Conflict("Idempotency-Key may have at most 200 characters")
    inserted = await db.fetchval(
        "INSERT INTO idempotency_keys (tenant_id, key, user_id, scope, request_hash)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING key",
        principal.tenant_id, key, principal.user_id, scope, fingerprint)
    if inserted is not None:
        return None
    earlier = await row(db, "SELECT scope, request_hash, run_id FROM idempotency_keys"
                            " WHERE tenant_id = $1 AND key = $2", principal.tenant_id, key)
    assert earlier is not None
    if earlier.scope != scope or earlier.request_hash != fingerprint or earlier.run_id is None:
        raise Conflict("this Idempotency-Key was already used for a different request")
    found = await row(db, _EARLIER_TURN, earlier.run_id)
    if found is None or found.q_id is None or found.a_id is None:
        raise Conflict("the request behind this Idempotency-Key no longer exists")
    return PostedMessage(detached(Run, found), detached(Message, found, "q_"),
                         detached(Message, found, "a_"), created=False)


_EARLIER_TURN = f"""
SELECT {select_list(Run, 'r')}, {select_list(Message, 'q', 'q_')}, {select_list(Message, 'a', 'a_')}
FROM thread_runs r
LEFT JOIN workflow_chat_messages q ON q.id = r.user_message_id
LEFT JOIN workflow_chat_messages a ON a.id = r.assistant_message_id
WHERE r.id = $1
"""


async def unfinished_runs(session: AsyncSession, thread_id: uuid.UUID) -> list[Run]:
    """Runs of the thread still queued or running, oldest first."""
    return list((await session.scalars(
        select(Run).where(Run.thread_id == thread_id, Run.status.in_(("queued", "running")))
        .order_by(Run.created_at, Run.id))).all())


async def run_to_resume(session: AsyncSession, thread_id: uuid.UUID, last_run: str | None,
                        last_seq: int) -> Run | None:
    """The run a reconnecting client should read.

    The run named by Last-Event-ID wins while it has parts the client has not seen (even if a
    later run has started since); otherwise the oldest unfinished run of the thread.
    """
    if last_run:
        try:
            named = await session.get(Run, uuid.UUID(last_run))
        except ValueError:
            named = None
        if named is not None and named.thread_id == thread_id and (
                named.status in ("queued", "running") or named.last_event_seq > last_seq):
            return named
    active = await unfinished_runs(session, thread_id)
    return active[0] if active else None


async def request_stop(session: AsyncSession, thread: Thread) -> list[uuid.UUID]:
    """Flag every unfinished run of the thread to stop; returns their ids."""
    runs = await unfinished_runs(session, thread.id)
    for run in runs:
        run.stop_requested = True
    await session.flush()
    return [r.id for r in runs]


async def get_thread_to_close(session: AsyncSession, thread_id: str) -> Thread:
    """The thread, locked to be closed, after its unfinished runs (in id order).

    A reply's ending writes its run and then its thread's totals, and a flush locks runs in id
    order: taking the thread first would let a close and an ending each hold what the other
    needs (a deadlock PostgreSQL breaks by failing one). In this order the later one waits.
    """
    await session.execute(
        select(Run.id).where(Run.thread_id == _thread_key(thread_id),
                             Run.status.in_(("queued", "running")))
        .order_by(Run.id).with_for_update(key_share=True))
    return await get_thread(session, thread_id, for_update=True)


async def close_thread(session: AsyncSession, thread: Thread, status: str) -> list[uuid.UUID]:
    """Mark a thread completed or abandoned, stopping any reply still running."""
    if thread.status != "active":
        raise Conflict(f"the thread is already {thread.status}")
    stopped = await request_stop(session, thread)
    thread.status, thread.ended_at = status, datetime.now(UTC)
    await session.flush()
    return stopped


class MessageView(Protocol):
    """What the API shows of a message (an ORM object or a plain row)."""

    id: uuid.UUID
    role: str
    content: str
    message_type: str
    metadata_: dict[str, Any] | None
    tokens_used: int | None
    sequence_number: int
    status: str
    created_at: datetime


def message_out(m: MessageView) -> dict[str, Any]:
    """A message as the API shows it."""
    return {"id": str(m.id), "role": m.role, "content": m.content,
            "messageType": m.message_type, "metadata": m.metadata_ or {},
            "tokensUsed": m.tokens_used, "sequenceNumber": m.sequence_number,
            "status": m.status, "createdAt": m.created_at.isoformat()}


def tool_call_out(t: ToolCallRecord) -> dict[str, Any]:
    """A recorded tool call as the API shows it."""
    return {"id": str(t.id), "messageId": str(t.message_id) if t.message_id else None,
            "toolName": t.tool_name, "toolInput": t.tool_input, "toolOutput": t.tool_output,
            "success": t.success, "errorMessage": t.error_message, "latencyMs": t.latency_ms,
            "createdAt": t.created_at.isoformat()}


def thread_out(t: Thread) -> dict[str, Any]:
    """A thread's summary."""
    return {"id": str(t.id), "stepId": t.step_id, "threadType": t.thread_type,
            "status": t.status, "returnToStep": t.return_to_step,
            "executionId": str(t.workflow_execution_id) if t.workflow_execution_id else None,
            "totalMessages": t.total_messages, "totalTokens": t.total_tokens}


async def thread_detail(session: AsyncSession, thread: Thread) -> dict[str, Any]:
    """GET /api/threads/{id}: the thread, its LLM context, messages and tool calls."""
    context = (await session.scalars(
        select(LlmContext).where(LlmContext.thread_id == thread.id))).one_or_none()
    messages = (await session.scalars(select(Message).where(Message.thread_id == thread.id)
                                      .order_by(Message.sequence_number))).all()
    calls = (await session.scalars(select(ToolCallRecord)
                                   .where(ToolCallRecord.thread_id == thread.id)
                                   .order_by(ToolCallRecord.created_at))).all()
    return {
        "thread": thread_out(thread),
        "llmContext": None if context is None else {
            "systemPrompt": context.system_prompt, "toolsAvailable": context.tools_available,
            "contextData": context.context_data, "contextAsOf": context.context_as_of.isoformat(),
            "modelUsed": context.model_used, "provider": context.provider,
            "temperature": context.temperature, "maxTokens": context.max_tokens,
            "totalTokensUsed": context.total_tokens_used},
        "messages": [message_out(m) for m in messages],
        "toolCalls": [tool_call_out(c) for c in calls],
    }


async def reply_payload(db: Db, run: Run) -> dict[str, Any]:
    """The JSON answer to a posted message once its reply is final."""
    assert run.user_message_id is not None
    assert run.assistant_message_id is not None
    user_message = await read_message(db, run.user_message_id)
    assistant = await read_message(db, run.assistant_message_id)
    usage = await reply_usage(db, assistant.id)
    return await payload_of(db, run.id, user_message, assistant, usage)


# A reply's answer is read as plain rows: `message_out` and `usage_part` read attributes.
MESSAGE_COLUMNS = ("id, role, content, message_type, metadata AS metadata_, tokens_used,"
                   " sequence_number, status, created_at")
_MESSAGE = f"SELECT {MESSAGE_COLUMNS} FROM workflow_chat_messages WHERE id = $1"
_REPLY_USAGE = (
    "SELECT usage_source, input_tokens, output_tokens, cached_tokens, cost_usd"
    " FROM usage_ledger WHERE message_id = $1 ORDER BY created_at")
_REPLY_TOOL_CALLS = (
    f"SELECT {select_list(ToolCallRecord, 't')} FROM workflow_llm_tool_calls t"
    " WHERE t.message_id = $1 ORDER BY t.created_at")


async def read_message(db: Db, message_id: uuid.UUID) -> Any:
    """One message as a plain row (a MessageView)."""
    found = await row(db, _MESSAGE, message_id)
    assert found is not None, "a run's messages are deleted only with it"
    return found


async def reply_usage(db: Db, message_id: uuid.UUID) -> Sequence[Any]:
    """The ledger figures of one reply's provider calls (UsageFigures rows)."""
    return await rows(db, _REPLY_USAGE, message_id)


async def payload_of(db: Db, run_id: uuid.UUID, user_message: MessageView,
                     assistant: MessageView, usage: Sequence[UsageFigures], *,
                     tool_calls: bool = True) -> dict[str, Any]:
    """The JSON answer from the reply's final rows (also built by the reply's own ending).

    `tool_calls=False`: the caller knows the reply called no tool, so none are read.
    """
    calls = await rows(db, _REPLY_TOOL_CALLS, assistant.id) if tool_calls else []
    return {"userMessage": message_out(user_message), "assistantMessage": message_out(assistant),
            "toolCalls": [tool_call_out(detached(ToolCallRecord, c)) for c in calls],
            "usage": usage_part(usage),
            "runId": str(run_id)}
