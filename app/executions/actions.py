"""Saved-action branches: resolve the handler through the registry, run it, apply its intent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.chat.service import PostedMessage
from app.errors import NotFound, Unprocessable
from app.executions.models import Execution
from app.executions.steps import fire_notifications
from app.handler_registry import HandlerReferenceError
from app.workflows import repository as workflows
from app.workflows.models import ChatBranch, Workflow
from handlers.types import ActionContext, ActionResult, HandlerInputError

if TYPE_CHECKING:
    from app.executions.service import ExecutionService


async def apply_saved_action(service: ExecutionService, session: AsyncSession,
                             principal: Principal, workflow: Workflow, execution: Execution,
                             step: dict[str, Any], branch: ChatBranch, context: dict[str, Any]
                             ) -> tuple[dict[str, Any], PostedMessage | None]:
    """Run the branch's saved action; returns the response body and any analysis to run."""
    action = await workflows.get_saved_action(session, branch.saved_action_id or "")
    if action is None:
        raise NotFound(f"saved action '{branch.saved_action_id}' not found")
    try:
        handler = service.s.handlers.resolve(action.handler or "")
        result: ActionResult = handler(ActionContext(
            execution_id=str(execution.id), workflow_id=workflow.workflow_id,
            step_id=execution.current_step_id or "", step=step,
            steps=list(workflow.config.get("steps") or []), action_config=action.config or {},
            template_context=context, now=datetime.now(UTC), actor_email=principal.email))
    except (HandlerReferenceError, HandlerInputError) as exc:
        raise Unprocessable(f"saved action '{action.action_id}' cannot run: {exc}") from exc
    state = dict(execution.state or {})
    for fired in result.fired_actions:
        await fire_notifications(session, service.s.templates, execution, step, context,
                                 action=fired)
    if result.escalation:
        escalations = list(state.get("escalations", []))
        escalations.append({**result.escalation, "stepId": step.get("id"),
                            "by": principal.email, "at": datetime.now(UTC).isoformat()})
        state["escalations"] = escalations
    execution.state = state
    target = _target_step(action.action_type, result, branch, state, execution)
    analysis = None
    if result.completed and action.action_type == "skip":
        execution.status, execution.completed_at = "completed", datetime.now(UTC)
    elif target and target != execution.current_step_id:
        analysis = await service._move(session, principal, workflow, execution, target)
    if result.pause and result.snoozed_until:
        execution.status, execution.snoozed_until = "snoozed", result.snoozed_until
    text = await service.s.templates.arender(branch.response_text or "", context)
    body = {"type": "saved_action", "responseText": text,
            "action": {"actionId": action.action_id, "actionType": action.action_type,
                       "result": result.result},
            "returnToStep": execution.current_step_id}
    return body, analysis


def _target_step(action_type: str, result: ActionResult, branch: ChatBranch,
                 state: dict[str, Any], execution: Execution) -> str | None:
    """Skip follows the step's evaluated routing; other actions return to the branch's step."""
    if action_type == "skip":
        routed = (state.get("routing") or {}).get("nextStep")
        if routed and routed != execution.current_step_id:
            return str(routed)
        return result.next_step_id or branch.return_to_step
    return result.next_step_id or branch.return_to_step
