"""Entering a step: notifications, the analysis thread, and the route the step recommends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.chat.service import PostedMessage, post_message
from app.chat.threads import open_thread, resolve_model_settings
from app.db.driver import driver_of
from app.executions.models import Execution, NotificationLog
from app.settings import Settings
from app.templates.engine import TemplateEngine, render_deep
from app.workflows.models import Workflow


def find_step(config: dict[str, Any], step_id: str | None) -> dict[str, Any] | None:
    """The step of a workflow config with that id."""
    return next((s for s in config.get("steps", []) if s.get("id") == step_id), None)


def needs_approval(step: dict[str, Any], execution: Execution) -> bool:
    """True while an approval step has not been approved for this execution."""
    required = (step.get("execution") or {}).get("requiresApproval")
    approvals = (execution.state or {}).get("approvals", {})
    return bool(required) and step.get("id") not in approvals


async def fire_notifications(session: AsyncSession, templates: TemplateEngine,
                             execution: Execution, step: dict[str, Any], context: dict[str, Any],
                             *, action: str | None = None) -> list[NotificationLog]:
    """Render and record the step's notifications: on entry, or those a given action triggers."""
    fired = []
    for notification in _notifications(step):
        trigger = notification.get("actionTriggered")
        if (action is None and trigger) or (action is not None and trigger != action):
            continue
        condition = notification.get("condition")
        if condition and not await templates.aevaluate_condition(str(condition), context):
            continue
        rendered = render_deep(templates, {k: notification.get(k) for k in
                                           ("title", "message", "recipients")}, context)
        recipients = sorted({r.strip() for item in rendered.get("recipients") or []
                             for r in str(item).split(",") if r.strip()})
        log = NotificationLog(
            tenant_id=execution.tenant_id, execution_id=execution.id, step_id=step["id"],
            notification_id=notification.get("id"), type=str(notification.get("type", "in_app")),
            title=str(rendered.get("title") or ""), message=rendered.get("message"),
            recipients=recipients, priority=notification.get("priority"),
            fired_by="action" if action else "step_entry", action=action)
        session.add(log)
        fired.append(log)
    await session.flush()
    return fired


def _notifications(step: dict[str, Any]) -> list[dict[str, Any]]:
    items = step.get("notifications") or []
    return [n for n in items if isinstance(n, dict)]


async def enter_step(session: AsyncSession, *, settings: Settings, templates: TemplateEngine,
                     principal: Principal, workflow: Workflow, execution: Execution,
                     step_id: str, context: dict[str, Any]) -> PostedMessage | None:
    """Move the execution to a step; returns the analysis run to launch after commit, if any."""
    step = find_step(workflow.config, step_id)
    if step is None:
        raise ValueError(f"step {step_id!r} is not in workflow {workflow.workflow_id!r}")
    state = dict(execution.state or {})
    history = list(state.get("stepHistory", []))
    history.append({"stepId": step_id, "at": datetime.now(UTC).isoformat()})
    state.update(stepHistory=history, analysis={}, routing=None)
    execution.current_step_id = step_id
    execution.state = state
    execution.status = "awaiting_approval" if needs_approval(step, execution) else "active"
    await fire_notifications(session, templates, execution, step, context)
    prompt = (step.get("execution") or {}).get("llmPrompt")
    if not prompt:
        return None
    system = await templates.arender(
        str((workflow.config.get("context") or {}).get("systemPrompt", "")), context)
    thread = await open_thread(
        session, tenant_id=execution.tenant_id, user_id=principal.user_id,
        execution_id=execution.id, customer_id=execution.customer_id, step_id=step_id,
        thread_type="analysis", return_to_step=step_id, branch_id=None, system_prompt=system,
        context_data=context, tools=[],
        model=resolve_model_settings(settings, (workflow.config.get("context") or {})))
    question = await templates.arender(str(prompt), context)
    # open_thread flushed the thread and its context, so the driver's statements see them.
    posted = await post_message(await driver_of(session), principal, str(thread.id), question,
                                None)
    state["analysisThreadId"] = str(thread.id)
    execution.state = dict(state)
    return posted


async def evaluate_routing(templates: TemplateEngine, step: dict[str, Any],
                           context: dict[str, Any]) -> dict[str, Any] | None:
    """The first route whose condition holds, else the default route (None without routing)."""
    routing = step.get("routing")
    if not isinstance(routing, dict):
        return None
    for index, route in enumerate(routing.get("routes") or []):
        if await templates.aevaluate_condition(str(route.get("condition", "")), context):
            return {"nextStep": route.get("nextStep"), "matchedRoute": index}
    default = routing.get("defaultRoute")
    return {"nextStep": default, "matchedRoute": None} if default else None

