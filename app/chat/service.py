"""Thread rules: posting a message (committed before any provider call), stop, complete, read."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.auth.principal import Principal
from app.chat.models import LlmContext, Message, Run, Thread, ToolCallRecord
from app.errors import Conflict, NotFound
from app.llm.tokens import count_text
from app.usage.budgets import BudgetDecision, check_budget
from app.usage.ledger import UsageFigures, usage_part
from app.usage.pricing import PriceBook

# The question, the reply's placeholder and the run, with the thread's counters, in one round
# trip. The foreign keys from the run to its messages are checked at the statement's end, when
# all three rows exist.
_POST = text("""
WITH messages AS (
  INSERT INTO workflow_chat_messages (id, thread_id, tenant_id, role, content, tokens_used,
    sequence_number, status, message_type, metadata)
  VALUES (:question, :thread, :tenant, 'user', :content, :tokens, :seq, 'complete', 'text', NULL),
         (:reply, :thread, :tenant, 'assistant', '', 0, :seq + 1, 'streaming', 'text',
          CAST(:metadata AS jsonb))
), run AS (
  INSERT INTO thread_runs (id, tenant_id, thread_id, user_id, user_message_id,
    assistant_message_id, status, worker_id)
  VALUES (:run, :tenant, :thread, :user, :question, :reply, :status, :worker)
)
UPDATE workflow_chat_threads
SET last_sequence_number = :seq + 1, total_messages = COALESCE(total_messages, 0) + 2
WHERE id = :thread
""")


@dataclass
class PostedMessage:
    """The committed user message, the reply placeholder and the run that will fill it."""

    run: Run
    user_message: Message
    assistant_message: Message
    created: bool  # False when an Idempotency-Key replayed an earlier request
    first_in_line: bool = False  # created running: no earlier reply was queued or running
    thread: Thread | None = None  # the thread, row-locked by this transaction


def request_hash(*parts: str) -> str:
    """Fingerprint of a request body, to refuse an Idempotency-Key reused for another request."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


async def get_thread(session: AsyncSession, thread_id: str | uuid.UUID, *,
                     for_update: bool = False) -> Thread:
    """A thread of the caller's tenant, or 404 (also for malformed ids)."""
    try:
        key = uuid.UUID(str(thread_id))
    except ValueError:
        raise NotFound(f"thread '{thread_id}' not found") from None
    thread = await session.get(Thread, key, with_for_update=for_update)
    if thread is None:
        raise NotFound(f"thread '{thread_id}' not found")
    return thread


async def post_message(session: AsyncSession, principal: Principal, thread_id: str, content: str,
                       idempotency_key: str | None, prices: PriceBook | None = None, *,
                       start_as: str | None = None) -> PostedMessage:
    """Commit the user message and a queued run, in the caller's transaction.

    With `start_as` (a worker id) a run that is first in line is created running on that
    worker, which then starts it right after the commit.
    """
    fingerprint = request_hash(str(thread_id), content)
    if idempotency_key:
        replay = await _claim_idempotency_key(session, principal, idempotency_key, fingerprint,
                                              f"thread:{thread_id}:messages")
        if replay is not None:
            return replay
    thread = await get_thread(session, thread_id, for_update=True)
    if thread.status != "active":
        raise Conflict(f"the thread is {thread.status}; open a new branch to keep talking")
    user_seq = thread.last_sequence_number + 1
    content_tokens = count_text(content)
    reply_metadata: dict[str, Any] = {"replyTo": user_seq}
    if prices is not None:
        reply_metadata.update(await _budget(session, principal, thread, content_tokens, prices))
    # Under the thread's row lock: runs posted later queue behind this one, so a run with no
    # unfinished predecessor now never has to wait for its turn.
    busy = (await session.execute(text(
        "SELECT 1 FROM thread_runs WHERE thread_id = :t AND status IN ('queued', 'running')"
        " LIMIT 1"), {"t": thread.id})).first()
    first_in_line = busy is None and start_as is not None
    user_message = Message(id=uuid.uuid4(), thread_id=thread.id, role="user", content=content,
                           tokens_used=content_tokens, sequence_number=user_seq,
                           tenant_id=principal.tenant_id, status="complete",
                           message_type="text", metadata_=None)
    assistant = Message(id=uuid.uuid4(), thread_id=thread.id, role="assistant", content="",
                        sequence_number=user_seq + 1, tenant_id=principal.tenant_id,
                        status="streaming", tokens_used=0, message_type="text",
                        metadata_=reply_metadata)
    run = Run(id=uuid.uuid4(), tenant_id=principal.tenant_id, thread_id=thread.id,
              user_id=principal.user_id, user_message_id=user_message.id,
              assistant_message_id=assistant.id, stop_requested=False, last_event_seq=0,
              status="running" if first_in_line else "queued",
              worker_id=start_as if first_in_line else None)
    await session.execute(_POST, {
        "thread": thread.id, "tenant": principal.tenant_id, "user": principal.user_id,
        "question": user_message.id, "reply": assistant.id, "run": run.id,
        "content": content, "tokens": content_tokens, "seq": user_seq,
        "metadata": json.dumps(reply_metadata, default=str), "status": run.status,
        "worker": run.worker_id})
    # The statement moved the thread's counters; the loaded thread says so without a flush.
    set_committed_value(thread, "last_sequence_number", user_seq + 1)
    set_committed_value(thread, "total_messages", (thread.total_messages or 0) + 2)
    if idempotency_key:
        await session.execute(text(
            "UPDATE idempotency_keys SET run_id = :r WHERE tenant_id = :t AND key = :k"),
            {"r": run.id, "t": principal.tenant_id, "k": idempotency_key})
    return PostedMessage(run, user_message, assistant, created=True,
                         first_in_line=first_in_line, thread=thread)


async def _budget(session: AsyncSession, principal: Principal, thread: Thread,
                  content_tokens: int, prices: PriceBook) -> dict[str, Any]:
    """Apply the tenant's budgets to the next turn (raises BudgetExceeded on a hard limit)."""
    budgets = (await session.execute(text(
        "SELECT settings->'budgets' FROM tenants WHERE id = :t"), {"t": principal.tenant_id}
    )).scalar() or {}
    if not budgets:
        return {}
    context = (await session.scalars(
        select(LlmContext).where(LlmContext.thread_id == thread.id))).one()
    decision = await check_budget(session, budgets, thread, context, principal.user_id,
                                  content_tokens, prices)
    metadata: dict[str, Any] = {}
    if decision.part() is not None:
        metadata["budget"] = decision.part()
    if decision.model:
        metadata["modelOverride"] = decision.model
    if decision.history_budget is not None:
        metadata["historyBudget"] = decision.history_budget
    return metadata


async def record_refusal(session: AsyncSession, principal: Principal, thread_id: str,
                         decision: BudgetDecision) -> None:
    """The only row a refused turn writes."""
    await session.execute(text(
        "INSERT INTO usage_refusals (tenant_id, user_id, thread_id, scope, limit_kind,"
        " limit_value, used, estimate) VALUES (:t, :u, :th, :s, :k, :l, :used, :e)"),
        {"t": principal.tenant_id, "u": principal.user_id, "th": uuid.UUID(str(thread_id)),
         "s": decision.scope, "k": decision.limit_kind, "l": decision.limit,
         "used": decision.used, "e": decision.estimate})


async def _claim_idempotency_key(session: AsyncSession, principal: Principal, key: str,
                                 fingerprint: str, scope: str) -> PostedMessage | None:
    """Insert the key, or return the earlier request's result (waiting for it to commit)."""
    if len(key) > 200:
        raise Conflict("Idempotency-Key may have at most 200 characters")
    inserted = (await session.execute(text(
        "INSERT INTO idempotency_keys (tenant_id, key, user_id, scope, request_hash)"
        " VALUES (:t, :k, :u, :s, :h) ON CONFLICT DO NOTHING RETURNING key"),
        {"t": principal.tenant_id, "k": key, "u": principal.user_id, "s": scope,
         "h": fingerprint})).first()
    if inserted is not None:
        return None
    earlier = (await session.execute(text(
        "SELECT scope, request_hash, run_id FROM idempotency_keys"
        " WHERE tenant_id = :t AND key = :k"),
        {"t": principal.tenant_id, "k": key})).one()
    if earlier.scope != scope or earlier.request_hash != fingerprint or earlier.run_id is None:
        raise Conflict("this Idempotency-Key was already used for a different request")
    run = await session.get(Run, earlier.run_id)
    assert run is not None
    user_message = await session.get(Message, run.user_message_id)
    assistant = await session.get(Message, run.assistant_message_id)
    if user_message is None or assistant is None:
        raise Conflict("the request behind this Idempotency-Key no longer exists")
    return PostedMessage(run, user_message, assistant, created=False)


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


async def reply_payload(session: AsyncSession, run: Run) -> dict[str, Any]:
    """The JSON answer to a posted message once its reply is final."""
    assert run.user_message_id is not None
    assert run.assistant_message_id is not None
    user_message = await read_message(session, run.user_message_id)
    assistant = await read_message(session, run.assistant_message_id)
    rows = await reply_usage(session, assistant.id)
    return await payload_of(session, run.id, user_message, assistant, rows)


# A reply's answer is read as plain rows: `message_out` and `usage_part` read attributes.
MESSAGE_COLUMNS = ("id, role, content, message_type, metadata AS metadata_, tokens_used,"
                   " sequence_number, status, created_at")
_MESSAGE = text(f"SELECT {MESSAGE_COLUMNS} FROM workflow_chat_messages WHERE id = :m")
_REPLY_USAGE = text(
    "SELECT usage_source, input_tokens, output_tokens, cached_tokens, cost_usd"
    " FROM usage_ledger WHERE message_id = :m ORDER BY created_at")


async def read_message(session: AsyncSession, message_id: uuid.UUID) -> Any:
    """One message as a plain row (a MessageView)."""
    return (await session.execute(_MESSAGE, {"m": message_id})).one()


async def reply_usage(session: AsyncSession, message_id: uuid.UUID) -> Sequence[Any]:
    """The ledger figures of one reply's provider calls (UsageFigures rows)."""
    return (await session.execute(_REPLY_USAGE, {"m": message_id})).all()


async def payload_of(session: AsyncSession, run_id: uuid.UUID, user_message: MessageView,
                     assistant: MessageView, rows: Sequence[UsageFigures]) -> dict[str, Any]:
    """The JSON answer from the reply's final rows (also built by the reply's own ending)."""
    calls = (await session.scalars(select(ToolCallRecord)
                                   .where(ToolCallRecord.message_id == assistant.id)
                                   .order_by(ToolCallRecord.created_at))).all()
    return {"userMessage": message_out(user_message), "assistantMessage": message_out(assistant),
            "toolCalls": [tool_call_out(c) for c in calls], "usage": usage_part(rows),
            "runId": str(run_id)}
