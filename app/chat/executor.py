"""Produce one assistant reply: provider rounds, tool calls, usage rows and the final state.

Every ending (complete, stopped, provider error, cancellation) leaves the assistant message
final with its text so far, a ledger row for each provider call (provider-reported, estimated or
unavailable) and the closing stream parts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.chat import stream as parts
from app.chat.history import Earlier, History, build_messages
from app.chat.models import LlmContext, Run, Thread
from app.chat.runs import ENDING_CTES, RunHandle, RunManager
from app.chat.service import (
    MESSAGE_COLUMNS,
    TURN_CONTEXT_JOIN,
    TURN_SOURCES,
    MessageView,
    PostedMessage,
    context_of,
    payload_of,
    read_message,
)
from app.db.driver import Db, detached, row, select_list, tenant_driver
from app.llm.base import ChatMessage, ChatRequest, Finish, TextDelta, ToolCall, ToolCallReady, Usage
from app.llm.errors import ProviderError, ProviderTimeout
from app.llm.registry import ProviderRegistry
from app.llm.tokens import count_message, count_text, count_tools, estimate_usage
from app.problems import database_unavailable, rolled_back_by_server
from app.settings import Settings
from app.usage.breakdown import scale_to_reported
from app.usage.ledger import (
    LEDGER_CTES,
    LEDGER_PARAMS,
    CallAttribution,
    LedgerEntry,
    Recorded,
    record_call,
    shifted,
    usage_part,
)
from app.usage.pricing import PriceBook
from tools.base import ToolContext, ToolRegistry

TEXT_PIECES = 32  # a reply's text is joined this often: a token's str costs 50 bytes of header
# `||` adds top-level keys to the stored metadata, as dict.update did.
_FINAL_MESSAGE = f"""
UPDATE workflow_chat_messages SET content = $9, status = $5, message_type = $10,
  metadata = COALESCE(metadata, '{{}}'::jsonb) || $11::jsonb /*tokens*/
WHERE id = $8 AND (SELECT count(*) FROM ended) >= 0
RETURNING {MESSAGE_COLUMNS}
"""
_END_REPLY = ENDING_CTES + _FINAL_MESSAGE
# ... and with the ledger row of its last provider call, whose tokens the message adds itself
# (a statement may change a row once).
_END_WITH_ROW = ENDING_CTES + ", " + shifted(LEDGER_CTES, 11) + _FINAL_MESSAGE.replace(
    "/*tokens*/", f", tokens_used = COALESCE(tokens_used, 0) + ${11 + LEDGER_PARAMS}")
# A queued run's turn came: mark it running here and read what its reply needs, at once.
_CLAIM = f"""
WITH claimed AS (
  UPDATE thread_runs SET status = 'running', worker_id = $2
  WHERE id = $1 AND status = 'queued' RETURNING *
)
SELECT {select_list(Run, 'r', 'r_')}, {TURN_SOURCES},
  (SELECT m.metadata FROM workflow_chat_messages m WHERE m.id = r.assistant_message_id)
    AS directives
FROM claimed r JOIN workflow_chat_threads t ON t.id = r.thread_id {TURN_CONTEXT_JOIN}
"""


@dataclass
class Round:
    """One provider call in progress."""

    request: ChatRequest
    number: int
    segments: dict[str, int] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    text_open: bool = False


@dataclass
class Claimed:
    """A run marked running by this worker, with everything its reply needs."""

    thread: Thread
    context: LlmContext
    who: CallAttribution
    history: History
    stop_requested: bool = False
    question: MessageView | None = None  # the user message as posted, when this worker posted it


@dataclass
class Reply:
    """Everything the reply accumulated across rounds."""

    text: list[str] = field(default_factory=list)
    tool_call_ids: list[str] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    message_type: str = "text"
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    error: str | None = None
    pending_rows: list[LedgerEntry] = field(default_factory=list)  # written by `_finish`
    recorded: list[Recorded] = field(default_factory=list)  # ledger rows already committed
    user_message_id: uuid.UUID | None = None
    question: MessageView | None = None


class ReplyExecutor:
    """Runs a queued reply to its end; one instance per app."""

    def __init__(self, *, settings: Settings, manager: RunManager, providers: ProviderRegistry,
                 tools: ToolRegistry, prices: PriceBook, services: Any) -> None:
        self.settings = settings
        self.manager = manager
        self.providers = providers
        self.tools = tools
        self.prices = prices
        self.services = services

    async def __call__(self, handle: RunHandle) -> None:
        """The run body (launched by the RunManager)."""
        claimed = handle.claimed or await self._begin(handle)
        handle.claimed = None
        if claimed is None:
            handle.close("interrupted")
            return
        handle.status = "running"
        if claimed.stop_requested:
            handle.request_stop()
        thread, context = claimed.thread, claimed.context
        who, history = claimed.who, claimed.history
        reply = Reply(user_message_id=history.user_message_id, question=claimed.question)
        current: Round | None = None
        try:
            if not handle.count:  # else the post transaction stored them already
                for part in opening_parts(claimed, handle.run_id):
                    handle.emit(part)
            messages = history.messages
            tool_specs = self.tools.specs(list(context.tools_available or []))
            model = history.model_override or context.model_used or self.settings.default_model
            provider = self.providers.get(model)
            calls_made = 0
            segments = dict(history.segments)
            for round_no in range(self.settings.max_tool_rounds + 1):
                offer = tool_specs if (round_no < self.settings.max_tool_rounds
                                       and calls_made < self.settings.max_tool_calls) else []
                current = Round(ChatRequest(
                    model=model,
                    messages=list(messages), tools=offer, temperature=context.temperature,
                    max_tokens=context.max_tokens, context=context.context_data), round_no,
                    {**segments, "tools": count_tools(offer)})
                handle.emit(parts.simple("start-step"))
                ending = await self._provider_round(handle, provider, current)
                finished_round, current = current, None
                ledger_row = self._ledger_row(who, provider.name, finished_round, ending, reply)
                if ending == "ok" and finished_round.calls:
                    await self._write(who, ledger_row, reply)  # durable before the tools run
                else:  # the last call: its row commits with the reply's ending
                    reply.pending_rows.append(ledger_row)
                if ending != "ok":
                    handle.emit(parts.simple("finish-step"))
                    break
                if not finished_round.calls:
                    handle.emit(parts.simple("finish-step"))
                    break
                messages.append(ChatMessage("assistant", "".join(finished_round.text),
                                            tool_calls=finished_round.calls))
                segments["toolResults"] = segments.get("toolResults", 0) + count_message(
                    messages[-1])
                for call in finished_round.calls:
                    if calls_made >= self.settings.max_tool_calls:
                        break
                    output = await self._run_tool(handle, thread, who, call, reply)
                    messages.append(ChatMessage("tool", json.dumps(output, default=str),
                                                tool_call_id=call.id, name=call.name))
                    segment = "retrieved" if call.name == "rag_search" else "toolResults"
                    segments[segment] = segments.get(segment, 0) + count_message(messages[-1])
                    calls_made += 1
                handle.emit(parts.simple("finish-step"))
                if handle.stop.is_set():
                    reply.status = "stopped"
                    break
        except asyncio.CancelledError:
            reply.status = "interrupted"
            reply.error = "the server stopped before the reply finished"
            if current is not None:
                await asyncio.shield(self._record(who, provider_name_of(context), current,
                                                  "interrupted", reply))
            await asyncio.shield(self._finish(handle, who, reply))
            raise
        except Exception as exc:  # an unexpected bug must still end the reply cleanly
            reply.status, reply.error = "error", f"internal error: {type(exc).__name__}"
            if current is not None:
                await self._record(who, provider_name_of(context), current, "error", reply)
        await self._finish(handle, who, reply)

    async def _begin(self, handle: RunHandle) -> Claimed | None:
        """Mark a queued run running here, when its turn came, and load what its reply needs."""
        async with tenant_driver(self.manager.engine, handle.tenant_id) as db:
            found = await row(db, _CLAIM, handle.run_id, self.manager.worker_id)
            if found is None:  # not queued any more (stopped, or claimed elsewhere)
                return None
            return await self._load(db, detached(Run, found, "r_"), detached(Thread, found),
                                    context_of(found), found.workflow_key,
                                    found.directives or {})

    async def start_posted(self, db: Db, posted: PostedMessage) -> RunHandle:
        """A run created running (first in line): load it, with its opening parts.

        Called inside the post transaction, which also stored those parts, so a turn reaches
        the provider after a single commit and a reader's first parts are already stored when
        its stream starts.
        """
        run, thread = posted.run, posted.thread
        assert thread is not None
        claimed = await self._load(db, run, thread, posted.context, posted.workflow_key,
                                   posted.assistant_message.metadata_ or {}, posted.earlier)
        claimed.question = posted.user_message
        handle = RunHandle(run_id=run.id, thread_id=run.thread_id, tenant_id=run.tenant_id,
                           order=posted.user_message.sequence_number, claimed=claimed)
        for text in posted.opening:
            handle.emit_text(text)
        return handle

    async def _load(self, db: Db, run: Run, thread: Thread, context: LlmContext | None,
                    workflow_key: str | None, directives: dict[str, Any],
                    earlier: Earlier | None = None) -> Claimed:
        assert context is not None, "every thread is opened with its LLM context"
        assert run.assistant_message_id is not None
        history = await build_messages(
            db, thread, context, run,
            int(directives.get("historyBudget", self.settings.history_token_budget)), earlier)
        history.budget = directives.get("budget")
        history.model_override = directives.get("modelOverride")
        who = CallAttribution(
            tenant_id=run.tenant_id, user_id=run.user_id, customer_id=thread.customer_id,
            execution_id=thread.workflow_execution_id,
            workflow_key=workflow_key,
            step_id=thread.step_id, branch_type=thread.thread_type, thread_id=thread.id,
            message_id=run.assistant_message_id,
            call_kind="analysis" if thread.thread_type == "analysis" else "chat")
        return Claimed(thread, context, who, history, run.stop_requested)

    async def _provider_round(self, handle: RunHandle, provider: Any, current: Round) -> str:
        """Stream one provider call; returns 'ok', 'stopped' or 'error' (error kept on Round)."""
        # A stop cancels the consumer (RunHandle.request_stop); waiting on it alone also lets
        # the run be cancelled without the consumer's error or cancellation reaching it.
        consumer = asyncio.create_task(self._consume(handle, provider, current))
        handle.consumer = consumer
        if handle.stop.is_set():
            consumer.cancel()
        try:
            await asyncio.wait((consumer,))
        finally:
            handle.consumer = None
            if not consumer.done():  # the run itself was cancelled: so is its provider call
                consumer.cancel()
        if consumer.cancelled():
            self._close_text(handle, current)
            return "stopped"
        error = consumer.exception()
        self._close_text(handle, current)
        if error is None:
            return "ok"
        if isinstance(error, ProviderError):
            current.finish_reason = "error"
            handle.emit(parts.error(provider_error_text(error)))
            current.usage = error.partial_usage
            return "error"
        raise error

    async def _consume(self, handle: RunHandle, provider: Any, current: Round) -> None:
        read_timeout = self.settings.provider_read_timeout_s
        loop = asyncio.get_running_loop()
        events = provider.stream(current.request)
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    deadline.reschedule(loop.time() + read_timeout)
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                    if isinstance(event, TextDelta):
                        if current.first_token_at is None:
                            current.first_token_at = time.perf_counter()
                        if not current.text_open:
                            current.text_open = True
                            handle.emit(parts.text_start(text_part_id(current)))
                        current.text.append(event.text)
                        if len(current.text) >= TEXT_PIECES:  # one string, not a token each
                            current.text[:] = ["".join(current.text)]
                        handle.emit(parts.text_delta(text_part_id(current), event.text))
                    elif isinstance(event, ToolCallReady):
                        current.calls.append(event.call)
                    elif isinstance(event, Finish):
                        current.usage, current.finish_reason = event.usage, event.finish_reason
        except TimeoutError as exc:
            raise ProviderTimeout(f"no data from the model for {read_timeout:g}s",
                                  retryable=False) from exc
        finally:
            await events.aclose()

    @staticmethod
    def _close_text(handle: RunHandle, current: Round) -> None:
        if current.text_open:
            current.text_open = False
            handle.emit(parts.text_end(text_part_id(current)))

    async def _record(self, who: CallAttribution, provider: str, current: Round, ending: str,
                      reply: Reply) -> None:
        """Write the ledger row of one provider call now."""
        await self._write(who, self._ledger_row(who, provider, current, ending, reply), reply)

    async def _write(self, who: CallAttribution, entry: LedgerEntry, reply: Reply) -> None:
        async def write() -> None:
            async with tenant_driver(self.manager.engine, who.tenant_id) as db:
                written = await record_call(db, self.prices, entry)
            reply.recorded.append(written)

        await with_db_retries(write)

    def _ledger_row(self, who: CallAttribution, provider: str, current: Round, ending: str,
                    reply: Reply) -> LedgerEntry:
        """The ledger row of one provider call; estimated (never a silent zero) when unknown."""
        text_so_far = "".join(current.text)
        reply.text.append(text_so_far)
        usage = current.usage if ending == "ok" else None
        if usage is None:
            partial = current.usage
            if text_so_far or current.calls or (partial and partial.input_tokens):
                estimate = estimate_usage(current.request, text_so_far, current.calls)
                usage = Usage(
                    input_tokens=partial.input_tokens if partial and partial.input_tokens
                    else estimate.input_tokens,
                    output_tokens=estimate.output_tokens,
                    cached_tokens=partial.cached_tokens if partial else 0, source="estimated")
            else:
                usage = Usage(0, 0, source="unavailable")
        status = {"ok": "ok", "stopped": "stopped", "interrupted": "interrupted"}.get(ending,
                                                                                     "error")
        if ending == "stopped":
            reply.status = "stopped"
        elif ending not in ("ok", "interrupted"):
            reply.status, reply.error = "error", reply.error or "the model provider failed"
        now = time.perf_counter()
        return LedgerEntry(
            who, provider=provider, model=current.request.model, usage=usage, status=status,
            latency_ms=int((now - current.started) * 1000),
            ttft_ms=int((current.first_token_at - current.started) * 1000)
            if current.first_token_at else None,
            breakdown=scale_to_reported(current.segments, usage.input_tokens),
            tool_names=sorted({call.name for call in current.calls}))

    async def _run_tool(self, handle: RunHandle, thread: Thread, who: CallAttribution,
                        call: ToolCall, reply: Reply) -> dict[str, Any]:
        async with tenant_driver(self.manager.engine, who.tenant_id) as db:
            record_id = await db.fetchval(
                "INSERT INTO workflow_llm_tool_calls (thread_id, message_id, tool_name, tool_input,"
                " tenant_id, provider_call_id) VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id",
                thread.id, who.message_id, call.name, json.dumps(call.arguments, default=str),
                who.tenant_id, call.id[:128])
        handle.emit(parts.tool_input(record_id, call.name, call.arguments))
        outcome = await self.tools.execute(
            call.name, call.arguments,
            ToolContext(tenant_id=who.tenant_id, user_id=who.user_id, thread_id=thread.id,
                        customer_id=thread.customer_id, services=self.services,
                        tool_call_id=record_id),
            max_output_chars=self.settings.max_tool_output_chars)
        async with tenant_driver(self.manager.engine, who.tenant_id) as db:
            await db.execute(
                "UPDATE workflow_llm_tool_calls SET tool_output = $1::jsonb, success = $2,"
                " error_message = $3, latency_ms = $4 WHERE id = $5",
                json.dumps(outcome.output, default=str) if outcome.output is not None else None,
                outcome.success, outcome.error, outcome.latency_ms, record_id)
        reply.tool_call_ids.append(str(record_id))
        if not outcome.success:
            handle.emit(parts.tool_error(record_id, outcome.error or "tool failed"))
            return {"error": outcome.error}
        handle.emit(parts.tool_output(record_id, outcome.output))
        result = outcome.result
        if result is not None:
            for citation in result.citations:
                reply.citations.append(citation)
                handle.emit(parts.source_document(str(citation.get("chunkId")),
                                                  str(citation.get("title", "")),
                                                  citation.get("source")))
            if result.message_type in ("chart", "table") and reply.message_type != "chart":
                reply.message_type = result.message_type
                reply.metadata.update(result.message_metadata)
        return outcome.output or {}

    async def _finish(self, handle: RunHandle, who: CallAttribution, reply: Reply) -> None:
        """Make the reply final: message, usage part, run status, all in one transaction."""
        closing = handle.count  # a retry must not emit the closing parts twice
        handle.ending = True
        try:
            await with_db_retries(lambda: self._finish_once(handle, who, reply, closing))
        except BaseException:
            # The reply did not end: its closing parts ("finish", usage) must reach no reader.
            del handle.parts[closing - handle.base:]
            raise
        finally:
            handle.ending = False
        handle.mark_stored(handle.count)
        handle.close(reply.status)

    async def _finish_once(self, handle: RunHandle, who: CallAttribution, reply: Reply,
                           closing: int) -> None:
        content = "".join(reply.text)
        payload = None
        async with tenant_driver(self.manager.engine, who.tenant_id) as db:
            usage = [*reply.recorded]
            # The usual last call's row goes in the ending's own statement; any other first.
            last: LedgerEntry | None = reply.pending_rows[-1] if reply.pending_rows else None
            for entry in reply.pending_rows[:-1]:
                usage.append(await record_call(db, self.prices, entry))
            row_values: list[Any] = []
            if last is not None:
                row_values, written = last.params(self.prices)
                usage.append(written)
            assert who.message_id is not None
            added: dict[str, Any] = {**reply.metadata, "contentTokens": count_text(content),
                                     "toolCalls": reply.tool_call_ids}
            if reply.citations:
                added["citations"] = reply.citations
            if reply.error:
                added["error"] = reply.error
            del handle.parts[closing - handle.base:]
            handle.emit(parts.data("usage", usage_part(usage)))
            handle.emit(parts.finish(reply.status))
            message = await row(
                db, _END_WITH_ROW if row_values else _END_REPLY,
                *RunManager.ending_args(handle, reply.status, reply.error), who.message_id,
                content, reply.message_type, json.dumps(added, default=str), *row_values)
            assert message is not None, "a run's messages are deleted only with it"
            if handle.wants_payload:  # a JSON client waits: answer it from this transaction
                assert reply.user_message_id is not None
                user_message = reply.question or await read_message(db, reply.user_message_id)
                payload = await payload_of(db, handle.run_id, user_message, message, usage,
                                           tool_calls=bool(reply.tool_call_ids))
        handle.payload = payload  # only once committed


async def with_db_retries(write: Callable[[], Awaitable[None]], *, attempts: int = 6) -> None:
    """Run a reply's closing database write, retrying while the database is briefly away.

    A reply's ending (its usage row, its final state) must survive a database restart; the
    write is retried on connection errors for about ten seconds before giving up. A transaction
    the server rolled back to break a deadlock or a serialization conflict is retried too: the
    write is one transaction, so nothing of it was kept.
    """
    for attempt in range(attempts):
        try:
            await write()
            return
        except Exception as exc:
            # A database that is away, or a pool drained by a burst: both pass; a bug does not.
            # Statements on the driver raise asyncpg's errors, the rest SQLAlchemy's.
            transient = isinstance(exc, OSError | ConnectionError | PoolTimeout) or \
                database_unavailable(exc) or rolled_back_by_server(exc) or (
                    isinstance(exc, DBAPIError) and isinstance(exc.orig, OSError | ConnectionError))
            if not transient or attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.2 * 2**attempt, 4.0))


def opening_parts(claimed: Claimed, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The opening parts of a run that started from the queue."""
    return parts.opening(reply_id=claimed.who.message_id,
                         question_id=claimed.history.user_message_id,
                         question_seq=claimed.history.user_sequence,
                         thread_id=claimed.thread.id, run_id=run_id,
                         budget=claimed.history.budget)


def text_part_id(current: Round) -> str:
    """A stable id per provider call's text block."""
    return f"text-{current.number}"


def provider_name_of(context: LlmContext) -> str:
    """The provider recorded for a thread (for rows written after a failure)."""
    return context.provider or "unknown"


def provider_error_text(error: ProviderError) -> str:
    """A message safe to show a CSM: what happened, never provider internals."""
    if isinstance(error, ProviderTimeout):
        return "The model did not answer in time. Try again."
    if error.after_content:
        return "The model stopped answering part-way through. The text so far is kept."
    return "The model provider is unavailable right now. Try again in a moment."

