"""How executions look on the wire."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.executions.models import Execution, NotificationLog
from app.executions.steps import find_step
from app.workflows import repository as workflows
from app.workflows.models import ChatBranch, Workflow


def execution_out(e: Execution) -> dict[str, Any]:
    """The execution itself."""
    state = e.state or {}
    return {"id": str(e.id), "workflowId": e.workflow_key, "customerId": str(e.customer_id),
            "currentStepId": e.current_step_id, "status": e.status,
            "snoozedUntil": e.snoozed_until.isoformat() if e.snoozed_until else None,
            "analysis": state.get("analysis") or {}, "routing": state.get("routing"),
            "approvals": state.get("approvals") or {}, "escalations": state.get("escalations", []),
            "stepHistory": state.get("stepHistory", [])}


def branch_out(b: ChatBranch) -> dict[str, Any]:
    """A branch offered at a step."""
    return {"branchId": b.branch_id, "branchLabel": b.branch_label, "branchType": b.branch_type,
            "userPrompts": list(b.user_prompts or []), "allowOffScript": b.allow_off_script,
            "nextStepId": b.next_step_id, "savedActionId": b.saved_action_id,
            "returnToStep": b.return_to_step}


def notification_out(n: NotificationLog) -> dict[str, Any]:
    """A fired notification."""
    return {"id": str(n.id), "notificationId": n.notification_id, "stepId": n.step_id,
            "type": n.type, "title": n.title, "message": n.message,
            "recipients": list(n.recipients or []), "priority": n.priority,
            "firedBy": n.fired_by, "action": n.action, "createdAt": n.created_at.isoformat()}


async def execution_view(session: AsyncSession, execution: Execution, workflow: Workflow,
                         tenant_id: uuid.UUID) -> dict[str, Any]:
    """Execution + current step + its branches + the notifications fired at it."""
    step = find_step(workflow.config, execution.current_step_id) or {}
    branches = await workflows.get_step_branches(session, execution.workflow_key,
                                                 execution.current_step_id or "", tenant_id)
    fired = (await session.scalars(
        select(NotificationLog).where(NotificationLog.execution_id == execution.id,
                                      NotificationLog.step_id == execution.current_step_id)
        .order_by(NotificationLog.created_at))).all()
    return {
        "execution": execution_out(execution),
        "currentStep": {k: step.get(k) for k in ("id", "name", "type", "description")},
        "branches": [branch_out(b) for b in branches],
        "notifications": [notification_out(n) for n in fired],
    }
