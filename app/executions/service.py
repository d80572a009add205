"""Execution rules: start a workflow for a customer, take branches, approve, return from threads."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Tenant
from app.auth.principal import Principal
from app.chat.models import Message, Thread
from app.chat.runs import RunHandle, RunManager
from app.chat.service import PostedMessage
from app.context.service import build_context, find_customer
from app.db.tenancy import tenant_transaction
from app.errors import Conflict, NotFound, Unprocessable
from app.executions.actions import apply_saved_action
from app.executions.models import Execution
from app.executions.steps import enter_step, evaluate_routing, find_step, needs_approval
from app.executions.views import execution_view
from app.handler_registry import HandlerRegistry
from app.settings import Settings
from app.templates.engine import TemplateEngine
from app.workflows import repository as workflows
from app.workflows.models import ChatBranch, Workflow
from app.workflows.triggers import window_matches

PUNCTUATION = re.compile(r"[^\w\s]")


def normalise_prompt(text: str) -> str:
    """Case- and punctuation-insensitive form used to match free text to branch prompts."""
    return " ".join(PUNCTUATION.sub(" ", text.casefold()).split())


@dataclass
class Services:
    """What the execution rules need from the app."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    templates: TemplateEngine
    handlers: HandlerRegistry
    manager: RunManager
    launch_run: Any  # (PostedMessage, Principal) -> RunHandle


class ExecutionService:
    """Executions and branches; every write happens in one transaction, or not at all."""

    def __init__(self, services: Services) -> None:
        self.s = services

    async def start(self, principal: Principal, workflow_id: str, customer_ref: str,
                    force: bool) -> dict[str, Any]:
        """Start a workflow for a customer whose renewal window matches (unless forced)."""
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id,
                                      principal.user_id) as session:
            workflow = await workflows.get_by_workflow_id(session, workflow_id,
                                                          principal.tenant_id)
            if workflow is None:
                raise NotFound(f"workflow '{workflow_id}' not found")
            customer = await find_customer(session, customer_ref)
            context = await build_context(session, customer)
            days = context["workflow"]["daysUntilRenewal"]
            if not window_matches(workflow.config, days) and not force:
                window = (workflow.config.get("trigger") or {}).get("daysUntilRenewal")
                raise Conflict(
                    f"{customer.name} renews in {days} days, outside the '{workflow_id}' window "
                    f"{window}; pass force=true to start it anyway")
            steps = workflow.config.get("steps") or []
            if not steps:
                raise Unprocessable(f"workflow '{workflow_id}' has no steps")
            execution = Execution(tenant_id=principal.tenant_id, workflow_id=workflow.id,
                                  workflow_key=workflow.workflow_id, customer_id=customer.id,
                                  started_by=principal.user_id,
                                  state={"forced": bool(force and not window_matches(
                                      workflow.config, days))})
            session.add(execution)
            await session.flush()
            analysis = await enter_step(session, settings=self.s.settings,
                                        templates=self.s.templates, principal=principal,
                                        workflow=workflow, execution=execution,
                                        step_id=steps[0]["id"], context=context)
            execution_id = execution.id
        await self._finish_analysis(principal, execution_id, analysis)
        return await self.view(principal, execution_id)

    async def view(self, principal: Principal, execution_id: uuid.UUID | str) -> dict[str, Any]:
        """GET /api/executions/{id}."""
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id) as session:
            execution, workflow = await self._load(session, execution_id)
            return await execution_view(session, execution, workflow, principal.tenant_id)

    async def _load(self, session: AsyncSession, execution_id: uuid.UUID | str, *,
                    lock: bool = False) -> tuple[Execution, Workflow]:
        try:
            key = uuid.UUID(str(execution_id))
        except ValueError:
            raise NotFound(f"execution '{execution_id}' not found") from None
        execution = await session.get(Execution, key, with_for_update=lock)
        if execution is None:
            raise NotFound(f"execution '{execution_id}' not found")
        workflow = await session.get(Workflow, execution.workflow_id)
        assert workflow is not None
        return execution, workflow

    async def _context(self, session: AsyncSession, execution: Execution) -> dict[str, Any]:
        customer = await find_customer(session, str(execution.customer_id))
        context = await build_context(session, customer)
        context["analysis"] = dict((execution.state or {}).get("analysis") or {})
        return context

    async def _finish_analysis(self, principal: Principal, execution_id: uuid.UUID,
                               posted: PostedMessage | None) -> None:
        """Run a step's analysis prompt, process the reply, and record the recommended route."""
        if posted is None:
            return
        handle: RunHandle = self.s.launch_run(posted, principal)
        try:
            await asyncio.wait_for(handle.finished.wait(),
                                   timeout=self.s.settings.analysis_timeout_s)
        except TimeoutError:
            handle.request_stop()
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id) as session:
            execution, workflow = await self._load(session, execution_id, lock=True)
            reply = await session.get(Message, posted.assistant_message.id)
            step = find_step(workflow.config, execution.current_step_id) or {}
            context = await self._context(session, execution)
            analysis: dict[str, Any] = {}
            processor = (step.get("execution") or {}).get("processor")
            if reply is not None and reply.status == "complete" and processor:
                function = self.s.handlers.resolve(str(processor))
                analysis = dict(function(reply.content, context))
            elif reply is not None and reply.status != "complete":
                analysis = {"error": f"analysis {reply.status}"}
            context["analysis"] = analysis
            state = dict(execution.state or {})
            state["analysis"] = analysis
            state["routing"] = await evaluate_routing(self.s.templates, step, context)
            execution.state = state

    async def take_branch(self, principal: Principal, execution_id: str,
                          branch_id: str) -> tuple[dict[str, Any], int]:
        """Take a branch of the current step; returns (response body, HTTP status)."""
        analysis = None
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id,
                                      principal.user_id) as session:
            execution, workflow = await self._load(session, execution_id, lock=True)
            if execution.status in ("completed", "cancelled"):
                raise Conflict(f"the execution is {execution.status}")
            branch = await self._branch(session, principal, execution, branch_id)
            if execution.status == "snoozed":  # taking a branch wakes a snoozed renewal
                execution.status, execution.snoozed_until = "active", None
            context = await self._context(session, execution)
            step = find_step(workflow.config, execution.current_step_id) or {}
            if branch.branch_type == "fixed":
                if (needs_approval(step, execution) and branch.next_step_id
                        and branch.next_step_id != execution.current_step_id):
                    raise Conflict("this step needs a manager's approval before moving on")
                text = await self.s.templates.arender(branch.response_text or "", context)
                if branch.next_step_id:
                    analysis = await self._move(session, principal, workflow, execution,
                                                branch.next_step_id)
                body: dict[str, Any] = {"type": "fixed", "responseText": text,
                                        "nextStepId": branch.next_step_id}
                status = 200
            elif branch.branch_type == "saved_action":
                body, analysis = await apply_saved_action(self, session, principal, workflow,
                                                          execution, step, branch, context)
                status = 200
            else:
                thread = await self.open_branch_thread(session, principal, workflow, execution,
                                                       step, branch, context)
                body = {"type": branch.branch_type, "thread": {
                    "id": str(thread.id), "stepId": thread.step_id,
                    "threadType": thread.thread_type, "status": thread.status,
                    "returnToStep": thread.return_to_step}}
                status = 201
            execution_key = execution.id
        await self._finish_analysis(principal, execution_key, analysis)
        if "thread" not in body:
            body["execution"] = (await self.view(principal, execution_key))["execution"]
        return body, status

    async def _branch(self, session: AsyncSession, principal: Principal, execution: Execution,
                      branch_id: str) -> ChatBranch:
        branches = await workflows.get_step_branches(session, execution.workflow_key,
                                                     execution.current_step_id or "",
                                                     principal.tenant_id)
        branch = next((b for b in branches if b.branch_id == branch_id), None)
        if branch is None:
            raise NotFound(f"branch '{branch_id}' is not offered at step "
                           f"'{execution.current_step_id}'")
        return branch

    async def _move(self, session: AsyncSession, principal: Principal, workflow: Workflow,
                    execution: Execution, step_id: str) -> PostedMessage | None:
        context = await self._context(session, execution)
        return await enter_step(session, settings=self.s.settings, templates=self.s.templates,
                                principal=principal, workflow=workflow, execution=execution,
                                step_id=step_id, context=context)

    async def open_branch_thread(self, session: AsyncSession, principal: Principal,
                                 workflow: Workflow, execution: Execution, step: dict[str, Any],
                                 branch: ChatBranch, context: dict[str, Any]) -> Thread:
        """An llm/rag thread shaped by the branch's handler, with its context snapshot."""
        from app.executions.llm_branches import open_llm_thread

        tenant = await session.get(Tenant, principal.tenant_id)
        return await open_llm_thread(self, session, principal, workflow, execution, step, branch,
                                     context, (tenant.settings or {}).get("llm") if tenant else {})

    async def advance(self, principal: Principal, execution_id: str) -> dict[str, Any]:
        """Leave the step by its routing: the route its analysis matched, else the default."""
        analysis = None
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id,
                                      principal.user_id) as session:
            execution, workflow = await self._load(session, execution_id, lock=True)
            if execution.status in ("completed", "cancelled"):
                raise Conflict(f"the execution is {execution.status}")
            step = find_step(workflow.config, execution.current_step_id) or {}
            if needs_approval(step, execution):
                raise Conflict("this step needs a manager's approval before moving on")
            routing = (execution.state or {}).get("routing") or await evaluate_routing(
                self.s.templates, step, await self._context(session, execution))
            target = (routing or {}).get("nextStep")
            if not target:
                execution.status, execution.completed_at = "completed", datetime.now(UTC)
            else:
                if execution.status == "snoozed":
                    execution.status, execution.snoozed_until = "active", None
                analysis = await self._move(session, principal, workflow, execution, str(target))
            key = execution.id
        await self._finish_analysis(principal, key, analysis)
        return await self.view(principal, key)

    async def approve(self, principal: Principal, execution_id: str) -> dict[str, Any]:
        """A manager approves the current approval step."""
        async with tenant_transaction(self.s.sessionmaker, principal.tenant_id,
                                      principal.user_id) as session:
            execution, workflow = await self._load(session, execution_id, lock=True)
            step = find_step(workflow.config, execution.current_step_id) or {}
            if not needs_approval(step, execution):
                raise Conflict("the current step is not waiting for an approval")
            state = dict(execution.state or {})
            approvals = dict(state.get("approvals", {}))
            approvals[step["id"]] = {"by": principal.email, "at": datetime.now(UTC).isoformat()}
            state["approvals"] = approvals
            execution.state, execution.status = state, "active"
        return await self.view(principal, execution_id)

    async def return_from_thread(self, session: AsyncSession, principal: Principal,
                                 thread: Thread) -> tuple[str | None, PostedMessage | None]:
        """After a thread completes, put its execution back on the thread's return step."""
        if thread.workflow_execution_id is None or not thread.return_to_step:
            return None, None
        execution, workflow = await self._load(session, thread.workflow_execution_id, lock=True)
        if thread.return_to_step == execution.current_step_id:
            return execution.current_step_id, None
        posted = await self._move(session, principal, workflow, execution, thread.return_to_step)
        return execution.current_step_id, posted

    async def match_free_text(self, session: AsyncSession, principal: Principal,
                              execution: Execution, text: str) -> ChatBranch | None:
        """The fixed or saved-action branch whose prompts match the text, if any."""
        wanted = normalise_prompt(text)
        branches = await workflows.get_step_branches(session, execution.workflow_key,
                                                     execution.current_step_id or "",
                                                     principal.tenant_id)
        for branch in branches:
            if branch.branch_type in ("fixed", "saved_action") and any(
                    normalise_prompt(p) == wanted for p in branch.user_prompts or []):
                return branch
        return None
