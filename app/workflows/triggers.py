"""Trigger windows: which workflow a customer's days-until-renewal falls into."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.workflows.models import Workflow


def window_matches(config: dict[str, Any], days_until_renewal: int) -> bool:
    """True when `trigger.daysUntilRenewal` {min?, max?} (inclusive) holds the value."""
    window = (config.get("trigger") or {}).get("daysUntilRenewal")
    if not isinstance(window, dict):
        return False
    low, high = window.get("min"), window.get("max")
    if low is None and high is None:
        return False
    above = low is None or days_until_renewal >= low
    return above and (high is None or days_until_renewal <= high)


def matching_workflow_id(workflows: Iterable[Workflow], days_until_renewal: int) -> str | None:
    """The first core workflow (by id) whose window holds the customer, else None."""
    for workflow in sorted(workflows, key=lambda w: w.workflow_id):
        if workflow.is_core and window_matches(workflow.config, days_until_renewal):
            return workflow.workflow_id
    return None
