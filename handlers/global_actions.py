"""Saved actions every workflow can use: snooze, skip and escalate (``code:GlobalActions.*``)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from handlers.types import ActionContext, ActionResult, HandlerInputError

MIN_SNOOZE_DAYS = 1
MAX_SNOOZE_DAYS = 90
MAX_REASON_CHARS = 500

# Where each escalation level finds its recipient in the template context (section, key).
ESCALATION_RECIPIENTS: dict[str, tuple[str, str]] = {
    "manager": ("csm", "manager"),
    "vp": ("company", "vpCustomerSuccess"),
    "ceo": ("company", "ceo"),
}


class GlobalActions:
    """Stateless saved actions; each reads an ActionContext and returns an ActionResult intent."""

    @staticmethod
    def snooze(ctx: ActionContext) -> ActionResult:
        """Pause the execution on its current step for ``config.days`` (1-90) days."""
        days = ctx.action_config.get("days")
        # bool is an int subclass; JSON `true` must not mean one day.
        if isinstance(days, bool) or not isinstance(days, int):
            raise HandlerInputError("snooze needs config.days as a whole number of days")
        if not MIN_SNOOZE_DAYS <= days <= MAX_SNOOZE_DAYS:
            raise HandlerInputError(
                f"snooze config.days must be between {MIN_SNOOZE_DAYS} and {MAX_SNOOZE_DAYS}"
            )
        snoozed_until = (ctx.now + timedelta(days=days)).astimezone(UTC)
        return ActionResult(
            result={
                "action": "snooze",
                "days": days,
                "stepId": ctx.step_id,
                "snoozedUntil": snoozed_until.isoformat(),
            },
            snoozed_until=snoozed_until,
            pause=True,
        )

    @staticmethod
    def skip(ctx: ActionContext) -> ActionResult:
        """Leave the current step by its ``routing.defaultRoute``, else the next step in order."""
        step_ids = [str(step.get("id")) for step in ctx.steps]
        if ctx.step_id not in step_ids:
            raise HandlerInputError("skip: the current step is not part of the workflow")
        next_step_id = _default_route(ctx.step)
        if next_step_id is not None and next_step_id not in step_ids:
            raise HandlerInputError("skip: routing.defaultRoute names a step the workflow lacks")
        # A step whose default route loops back to itself (a daily follow-up) must still be left.
        if next_step_id is None or next_step_id == ctx.step_id:
            next_step_id = None
            position = step_ids.index(ctx.step_id)
            if position + 1 < len(step_ids):
                next_step_id = step_ids[position + 1]
        completed = next_step_id is None
        return ActionResult(
            result={
                "action": "skip",
                "skippedStepId": ctx.step_id,
                "nextStepId": next_step_id,
                "completed": completed,
            },
            next_step_id=next_step_id,
            completed=completed,
        )

    @staticmethod
    def escalate(ctx: ActionContext) -> ActionResult:
        """Record an escalation at ``config.level`` (manager, vp, ceo); fire its notifications."""
        level = ctx.action_config.get("level", "manager")
        if not isinstance(level, str) or level not in ESCALATION_RECIPIENTS:
            known = ", ".join(ESCALATION_RECIPIENTS)
            raise HandlerInputError(f"escalate config.level must be one of: {known}")
        reason = ctx.action_config.get("reason") or f"Escalated by {ctx.actor_email}"
        if not isinstance(reason, str):
            raise HandlerInputError("escalate config.reason must be text")
        reason = reason.strip()[:MAX_REASON_CHARS]
        section, key = ESCALATION_RECIPIENTS[level]
        recipient = _context_value(ctx.template_context, section, key)
        recipients = [recipient] if recipient else []
        escalation: dict[str, Any] = {
            "level": level,
            "reason": reason,
            "recipients": recipients,
            "escalatedBy": ctx.actor_email,
            "escalatedAt": ctx.now.astimezone(UTC).isoformat(),
            "stepId": ctx.step_id,
        }
        result: dict[str, Any] = {"action": "escalate", **escalation}
        if not recipients:
            # Escalating must still work when the account record is incomplete; say who is missing.
            result["warning"] = f"no {section}.{key} on file; nobody was addressed"
        return ActionResult(result=result, fired_actions=["escalate"], escalation=escalation)


def _default_route(step: dict[str, Any]) -> str | None:
    """Return the step's ``routing.defaultRoute`` step id, or None when it has none."""
    routing = step.get("routing")
    if routing is None:
        return None
    if not isinstance(routing, dict):
        raise HandlerInputError("skip: step routing must be an object")
    default_route = routing.get("defaultRoute")
    if default_route is None or default_route == "":
        return None
    if not isinstance(default_route, str):
        raise HandlerInputError("skip: routing.defaultRoute must be a step id")
    return default_route


def _context_value(template_context: dict[str, Any], section: str, key: str) -> str | None:
    """Return a non-empty string at ``template_context[section][key]``, else None."""
    container = template_context.get(section)
    if not isinstance(container, dict):
        return None
    value = container.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
