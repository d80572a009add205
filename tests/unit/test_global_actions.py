"""Saved actions: snooze, skip and escalate return the right intents and refuse bad config."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from handlers import GlobalActions
from handlers.types import ActionContext, ActionResult, HandlerInputError

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)

STEPS: list[dict[str, Any]] = [
    {"id": "status-check", "name": "Status check", "type": "analysis"},
    {
        "id": "team-escalation",
        "name": "Team escalation",
        "type": "conditional_routing",
        "routing": {"routes": [], "defaultRoute": "outcome-resolution"},
    },
    {
        "id": "final-push",
        "name": "Final push",
        "type": "action",
        "routing": {"routes": [], "defaultRoute": "final-push"},
    },
    {"id": "outcome-resolution", "name": "Outcome resolution", "type": "action"},
]

TEMPLATE_CONTEXT: dict[str, Any] = {
    "customer": {"id": "c-1", "name": "Acme Corp", "arr": 120000},
    "csm": {"email": "csm@demo.example", "name": "Casey", "manager": "manager@demo.example"},
    "workflow": {"daysUntilRenewal": 5, "renewalARR": 120000},
    "company": {"vpCustomerSuccess": "vp@demo.example", "ceo": "ceo@demo.example"},
    "accountTeam": {"ae": "ae@demo.example"},
}


def make_context(
    step_id: str = "status-check",
    action_config: dict[str, Any] | None = None,
    template_context: dict[str, Any] | None = None,
    now: datetime = NOW,
) -> ActionContext:
    step = next((step for step in STEPS if step["id"] == step_id), {"id": step_id})
    return ActionContext(
        execution_id="exec-1",
        workflow_id="emergency",
        step_id=step_id,
        step=step,
        steps=STEPS,
        action_config=action_config if action_config is not None else {},
        template_context=template_context if template_context is not None else TEMPLATE_CONTEXT,
        now=now,
        actor_email="csm@demo.example",
    )


def test_snooze_seven_days_pauses_until_exactly_a_week_later() -> None:
    outcome = GlobalActions.snooze(make_context(action_config={"days": 7}))
    assert outcome.snoozed_until == NOW + timedelta(days=7)
    assert outcome.pause is True
    assert outcome.next_step_id is None
    assert outcome.completed is False
    assert outcome.result["snoozedUntil"] == (NOW + timedelta(days=7)).isoformat()
    assert outcome.result["days"] == 7


@pytest.mark.parametrize("days", [1, 90])
def test_snooze_accepts_the_boundaries(days: int) -> None:
    outcome = GlobalActions.snooze(make_context(action_config={"days": days}))
    assert outcome.snoozed_until == NOW + timedelta(days=days)


@pytest.mark.parametrize("days", [0, 91, -3, "7", 7.5, True, None, [7]])
def test_snooze_rejects_days_outside_whole_one_to_ninety(days: object) -> None:
    with pytest.raises(HandlerInputError, match="days"):
        GlobalActions.snooze(make_context(action_config={"days": days}))


def test_snooze_without_days_is_rejected() -> None:
    with pytest.raises(HandlerInputError, match="days"):
        GlobalActions.snooze(make_context(action_config={}))


def test_snooze_reports_the_deadline_in_utc_for_any_aware_clock() -> None:
    local_now = NOW.astimezone(timezone(timedelta(hours=-5)))
    outcome = GlobalActions.snooze(make_context(action_config={"days": 2}, now=local_now))
    assert outcome.snoozed_until == NOW + timedelta(days=2)
    assert outcome.snoozed_until is not None
    assert outcome.snoozed_until.utcoffset() == timedelta(0)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(HandlerInputError, match="timezone-aware"):
        make_context(now=datetime(2025, 3, 14, 9, 30))  # noqa: DTZ001


def test_skip_follows_the_default_route() -> None:
    outcome = GlobalActions.skip(make_context(step_id="team-escalation"))
    assert outcome.next_step_id == "outcome-resolution"
    assert outcome.result["skippedStepId"] == "team-escalation"
    assert outcome.completed is False


def test_skip_without_routing_moves_to_the_next_step_in_order() -> None:
    outcome = GlobalActions.skip(make_context(step_id="status-check"))
    assert outcome.next_step_id == "team-escalation"


def test_skip_leaves_a_step_whose_default_route_loops_back_to_itself() -> None:
    outcome = GlobalActions.skip(make_context(step_id="final-push"))
    assert outcome.next_step_id == "outcome-resolution"


def test_skip_at_the_last_step_completes_the_workflow() -> None:
    outcome = GlobalActions.skip(make_context(step_id="outcome-resolution"))
    assert outcome.next_step_id is None
    assert outcome.completed is True
    assert outcome.result["completed"] is True


def test_skip_rejects_a_default_route_to_a_missing_step() -> None:
    context = make_context(step_id="status-check")
    broken = dataclasses.replace(
        context, step={"id": "status-check", "routing": {"defaultRoute": "x"}}
    )
    with pytest.raises(HandlerInputError, match="defaultRoute"):
        GlobalActions.skip(broken)


def test_skip_rejects_a_step_outside_the_workflow() -> None:
    with pytest.raises(HandlerInputError, match="not part of the workflow"):
        GlobalActions.skip(make_context(step_id="no-such-step"))


@pytest.mark.parametrize(
    ("level", "recipient"),
    [("manager", "manager@demo.example"), ("vp", "vp@demo.example"), ("ceo", "ceo@demo.example")],
)
def test_escalate_addresses_the_recipient_for_its_level(level: str, recipient: str) -> None:
    config = {"level": level, "reason": "Champion left the company"}
    outcome = GlobalActions.escalate(make_context(action_config=config))
    assert outcome.escalation is not None
    assert outcome.escalation["recipients"] == [recipient]
    assert outcome.escalation["level"] == level
    assert outcome.escalation["reason"] == "Champion left the company"
    assert outcome.fired_actions == ["escalate"]
    assert outcome.next_step_id is None


def test_escalate_defaults_to_the_manager_and_names_the_actor() -> None:
    outcome = GlobalActions.escalate(make_context())
    assert outcome.escalation is not None
    assert outcome.escalation["recipients"] == ["manager@demo.example"]
    assert "csm@demo.example" in outcome.escalation["reason"]


def test_escalate_still_records_when_no_recipient_is_on_file() -> None:
    context = make_context(action_config={"level": "ceo"}, template_context={"company": {}})
    outcome = GlobalActions.escalate(context)
    assert outcome.escalation is not None
    assert outcome.escalation["recipients"] == []
    assert "company.ceo" in outcome.result["warning"]
    assert outcome.fired_actions == ["escalate"]


@pytest.mark.parametrize("config", [{"level": "board"}, {"level": 3}, {"reason": ["x"]}])
def test_escalate_rejects_bad_config(config: dict[str, Any]) -> None:
    with pytest.raises(HandlerInputError):
        GlobalActions.escalate(make_context(action_config=config))


def test_results_are_immutable_intents() -> None:
    outcome = GlobalActions.skip(make_context())
    assert isinstance(outcome, ActionResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.next_step_id = "elsewhere"  # type: ignore[misc]
