"""HTTP endpoints of threads: post (stream or JSON), resume, stop, read, complete, abandon."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody

from app.chat import service
from app.chat.responses import sse, wait_for_json, wants_stream
from app.chat.schemas import PostMessage, message_text
from app.chat.stream import parse_event_id
from app.db.driver import tenant_driver
from app.db.tenancy import tenant_transaction
from app.deps import CurrentUser
from app.errors import TooManyRequests
from app.usage.budgets import BudgetExceeded


class ThreadController(Controller):
    """Multi-turn LLM conversations opened from workflow steps."""

    path = "/api/threads"
    tags = ["threads"]

    @post("/{thread_id:str}/messages", status_code=200)
    async def post_message(self, request: Request[Any, Any, Any], principal: CurrentUser,
                           thread_id: FromPath[str], data: JSONBody[PostMessage]) -> Any:
        """Commit the message, start the reply, and stream it (SSE) or answer when done (JSON)."""
        text = message_text(data)
        return await post_and_answer(request, principal, thread_id, text)

    @get("/{thread_id:str}/stream")
    async def resume(self, request: Request[Any, Any, Any], principal: CurrentUser,
                     thread_id: FromPath[str]) -> Any:
        """Resume the active reply after Last-Event-ID; 204 when no reply is active."""
        state = request.app.state
        last_run, last_seq = parse_event_id(request.headers.get("last-event-id"))
        async with tenant_transaction(state.sessionmaker, principal.tenant_id) as session:
            thread = await service.get_thread(session, thread_id)
            run = await service.run_to_resume(session, thread.id, last_run, last_seq)
        if run is None:
            return Response(content=None, status_code=204)
        after = last_seq if last_run == str(run.id) else 0
        return sse(state.run_manager, principal.tenant_id, run.id, after)

    @post("/{thread_id:str}/stop", status_code=200)
    async def stop(self, request: Request[Any, Any, Any], principal: CurrentUser,
                   thread_id: FromPath[str]) -> dict[str, Any]:
        """Stop the running reply (its text so far is kept); stop is not disconnect."""
        state = request.app.state
        async with tenant_transaction(state.sessionmaker, principal.tenant_id) as session:
            thread = await service.get_thread(session, thread_id)
            stopped = await service.request_stop(session, thread)
        for run_id in stopped:
            state.run_manager.request_local_stop(run_id)
        return {"stopped": bool(stopped), "runIds": [str(r) for r in stopped]}

    @get("/{thread_id:str}")
    async def read(self, request: Request[Any, Any, Any], principal: CurrentUser,
                   thread_id: FromPath[str]) -> dict[str, Any]:
        """The thread with its LLM context, messages and tool calls."""
        async with tenant_transaction(request.app.state.sessionmaker,
                                      principal.tenant_id) as session:
            thread = await service.get_thread(session, thread_id)
            return await service.thread_detail(session, thread)

    @post("/{thread_id:str}/complete", status_code=200)
    async def complete(self, request: Request[Any, Any, Any], principal: CurrentUser,
                       thread_id: FromPath[str]) -> dict[str, Any]:
        """Close the thread as completed; its execution returns to the thread's return step."""
        return await close(request, principal, thread_id, "completed")

    @post("/{thread_id:str}/abandon", status_code=200)
    async def abandon(self, request: Request[Any, Any, Any], principal: CurrentUser,
                      thread_id: FromPath[str]) -> dict[str, Any]:
        """Close the thread as abandoned; the execution stays where it is."""
        return await close(request, principal, thread_id, "abandoned")


async def post_and_answer(request: Request[Any, Any, Any], principal: Any, thread_id: str,
                          text: str) -> Any:
    """Shared by the thread API and an execution's free-text chat."""
    state = request.app.state
    key = request.headers.get("idempotency-key")
    try:
        async with tenant_driver(state.engine, principal.tenant_id, principal.user_id) as db:
            posted = await service.post_message(db, principal, thread_id, text, key,
                                                state.prices,
                                                start_as=state.run_manager.worker_id)
            started = None
            if posted.created and posted.first_in_line:  # started in this same commit
                started = await state.reply_executor.start_posted(db, posted)
    except BudgetExceeded as exc:
        decision = exc.decision
        async with tenant_driver(state.engine, principal.tenant_id) as db:
            await service.record_refusal(db, principal, thread_id, decision)
        raise TooManyRequests(
            f"this turn would exceed the {decision.scope} {decision.limit_kind} budget "
            f"({decision.used:g} used of {decision.limit:g}; this prompt ~{decision.estimate} "
            "tokens)", errors=[decision.part()]) from exc
    if started is not None:
        started.mark_stored(started.count)  # committed with the message
    if posted.created:
        state.launch_run(posted, principal, started)
    if wants_stream(request):
        return sse(state.run_manager, principal.tenant_id, posted.run.id)
    return await wait_for_json(request, principal, posted.run.id,
                               state.settings.provider_total_timeout_s + 30)


async def close(request: Request[Any, Any, Any], principal: Any, thread_id: str,
                status: str) -> dict[str, Any]:
    """Complete or abandon a thread in one transaction."""
    state = request.app.state
    async with tenant_transaction(state.sessionmaker, principal.tenant_id,
                                  principal.user_id) as session:
        thread = await service.get_thread_to_close(session, thread_id)
        stopped = await service.close_thread(session, thread, status)
        step, analysis = (None, None)
        if status == "completed":
            step, analysis = await state.executions.return_from_thread(session, principal, thread)
        body = {"thread": service.thread_out(thread), "returnedToStep": step}
        execution_id = thread.workflow_execution_id
    for run_id in stopped:
        state.run_manager.request_local_stop(run_id)
    if analysis is not None and execution_id is not None:
        await state.executions._finish_analysis(principal, execution_id, analysis)
    if execution_id is not None:
        body["execution"] = (await state.executions.view(principal, execution_id))["execution"]
    return body
