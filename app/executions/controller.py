"""HTTP endpoints of executions: start, read, branches, free-text chat, approval."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody

from app.auth.guards import requires_role
from app.chat.controller import post_and_answer
from app.chat.schemas import MAX_MESSAGE_CHARS
from app.db.tenancy import tenant_transaction
from app.deps import CurrentUser
from app.errors import BadRequest, NotFound, Unprocessable
from app.executions.idempotency import idempotent
from app.executions.views import branch_out
from app.workflows import repository as workflows


class StartExecution(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """POST /api/executions."""

    workflow_id: str
    customer_id: str
    force: bool = False


class ChatText(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/executions/{id}/chat."""

    text: str


class ExecutionController(Controller):
    """A customer's run through a workflow."""

    path = "/api/executions"
    tags = ["executions"]

    @post("/", status_code=201)
    async def start(self, request: Request[Any, Any, Any], principal: CurrentUser,
                    data: JSONBody[StartExecution]) -> Any:
        """Start a workflow for a customer (409 when the renewal window does not match)."""
        service = request.app.state.executions

        async def run() -> dict[str, Any]:
            return await service.start(principal, data.workflow_id, data.customer_id, data.force)

        body, replayed = await idempotent(request, principal, "executions:start",
                                          msgspec.json.encode(data).decode(), run)
        return Response(body, status_code=200 if replayed else 201)

    @get("/{execution_id:str}")
    async def read(self, request: Request[Any, Any, Any], principal: CurrentUser,
                   execution_id: FromPath[str]) -> dict[str, Any]:
        """The execution, its current step, the step's branches and notifications."""
        return await request.app.state.executions.view(principal, execution_id)  # type: ignore[no-any-return]

    @get("/{execution_id:str}/steps/{step_id:str}/branches")
    async def branches(self, request: Request[Any, Any, Any], principal: CurrentUser,
                       execution_id: FromPath[str], step_id: FromPath[str]) -> dict[str, Any]:
        """The branches offered at a step of this execution's workflow."""
        service = request.app.state.executions
        async with tenant_transaction(request.app.state.sessionmaker,
                                      principal.tenant_id) as session:
            execution, workflow = await service._load(session, execution_id)
            if not any(s.get("id") == step_id for s in workflow.config.get("steps", [])):
                raise NotFound(f"step '{step_id}' is not in workflow '{workflow.workflow_id}'")
            rows = await workflows.get_step_branches(session, execution.workflow_key, step_id,
                                                     principal.tenant_id)
        return {"branches": [branch_out(b) for b in rows]}

    @post("/{execution_id:str}/branches/{branch_id:str}", status_code=200)
    async def take_branch(self, request: Request[Any, Any, Any], principal: CurrentUser,
                          execution_id: FromPath[str], branch_id: FromPath[str]) -> Any:
        """Take a branch: fixed moves, saved actions act, llm/rag open a thread (201)."""
        service = request.app.state.executions
        result: dict[str, Any] = {}

        async def run() -> dict[str, Any]:
            body, status = await service.take_branch(principal, execution_id, branch_id)
            result["status"] = status
            return body  # type: ignore[no-any-return]

        body, replayed = await idempotent(request, principal,
                                          f"execution:{execution_id}:branch:{branch_id}", "", run)
        status = result.get("status", 201 if "thread" in body else 200)
        return Response(body, status_code=200 if replayed else status)

    @post("/{execution_id:str}/chat", status_code=200)
    async def chat(self, request: Request[Any, Any, Any], principal: CurrentUser,
                   execution_id: FromPath[str], data: JSONBody[ChatText]) -> Any:
        """Free text: a matching fixed/saved-action prompt takes that branch; else off-script."""
        text = data.text.strip()
        if not text:
            raise BadRequest("the text is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise BadRequest(f"a message may have at most {MAX_MESSAGE_CHARS} characters")
        thread_id = await _off_script_thread(request, principal, execution_id, text)
        if isinstance(thread_id, dict):
            return Response(thread_id["body"], status_code=thread_id["status"])
        return await post_and_answer(request, principal, thread_id, text)

    @post("/{execution_id:str}/advance", status_code=200)
    async def advance(self, request: Request[Any, Any, Any], principal: CurrentUser,
                      execution_id: FromPath[str]) -> Any:
        """Follow the current step's routing (the route its analysis matched, else default)."""
        service = request.app.state.executions
        body, _ = await idempotent(
            request, principal, f"execution:{execution_id}:advance", "",
            lambda: service.advance(principal, execution_id))
        return Response(body, status_code=200)

    @post("/{execution_id:str}/approve", guards=[requires_role("manager", "admin")],
          status_code=200)
    async def approve(self, request: Request[Any, Any, Any], principal: CurrentUser,
                      execution_id: FromPath[str]) -> dict[str, Any]:
        """A manager approves the current approval step."""
        return await request.app.state.executions.approve(principal, execution_id)  # type: ignore[no-any-return]


async def _off_script_thread(request: Request[Any, Any, Any], principal: Any,
                             execution_id: str, text: str) -> Any:
    """Route free text: a branch's prompt, else the step's open (or a new) off-script thread."""
    from sqlalchemy import select

    from app.chat.models import Thread

    service = request.app.state.executions
    async with tenant_transaction(request.app.state.sessionmaker, principal.tenant_id,
                                  principal.user_id) as session:
        execution, _ = await service._load(session, execution_id)
        branch = await service.match_free_text(session, principal, execution, text)
        if branch is None:
            open_thread = (await session.scalars(
                select(Thread).where(Thread.workflow_execution_id == execution.id,
                                     Thread.step_id == execution.current_step_id,
                                     Thread.status == "active",
                                     Thread.thread_type.in_(("llm", "rag")))
                .order_by(Thread.started_at.desc()).limit(1))).first()
            if open_thread is not None:
                return str(open_thread.id)
            branches = await workflows.get_step_branches(session, execution.workflow_key,
                                                         execution.current_step_id or "",
                                                         principal.tenant_id)
            off_script = next((b for b in branches if b.allow_off_script
                               and b.branch_type in ("llm", "rag")), None)
            if off_script is None:
                raise Unprocessable("no branch of this step matches the text, and the step "
                                    "does not allow off-script questions")
            branch_id = off_script.branch_id
        else:
            branch_id = branch.branch_id
    body, status = await service.take_branch(principal, execution_id, branch_id)
    if "thread" in body:
        return body["thread"]["id"]
    return {"body": body, "status": status}
