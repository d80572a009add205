"""Budgets: monthly token/cost limits per tenant and per user, and a cap per thread.

The next turn's prompt is estimated from stored counts before anything is written. Crossing a
soft limit adds a `data-budget` warning to the reply; a hard limit refuses the turn (429) unless
the tenant chose a degrade mode: trim the history, or answer with a cheaper model.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.chat.models import LlmContext, Thread
from app.db.driver import Db
from app.usage.pricing import PriceBook

SCOPES = ("thread", "user", "tenant")


@dataclass
class BudgetDecision:
    """What the budget check allows for the next turn."""

    action: str = "ok"  # ok | warn | refuse | trim | cheaper
    scope: str | None = None
    limit_kind: str | None = None
    limit: float | None = None
    used: float | None = None
    estimate: int = 0
    model: str | None = None
    history_budget: int | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def part(self) -> dict[str, Any] | None:
        """The `data-budget` payload, when there is something to tell the user."""
        if self.action == "ok" and not self.warnings:
            return None
        return {"action": self.action, "estimate": self.estimate, "warnings": self.warnings,
                "scope": self.scope, "limitKind": self.limit_kind, "limit": self.limit,
                "used": self.used, "model": self.model}


class BudgetExceeded(Exception):
    """A hard limit refuses the turn."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(f"{decision.scope} {decision.limit_kind} budget exceeded")
        self.decision = decision


async def _used(db: Db, scope: str, thread: Thread, user_id: uuid.UUID) -> tuple[int, Decimal]:
    if scope == "thread":
        return thread.total_tokens or 0, Decimal(0)
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    sql = ("SELECT COALESCE(sum(input_tokens + output_tokens), 0), COALESCE(sum(cost_usd), 0)"
           " FROM usage_ledger WHERE created_at >= $1")
    found = await (db.fetchrow(sql + " AND user_id = $2", month, user_id) if scope == "user"
                   else db.fetchrow(sql, month))
    assert found is not None
    return int(found[0]), Decimal(found[1])


async def prompt_estimate(db: Db, thread: Thread, context: LlmContext,
                          new_message_tokens: int) -> int:
    """The next prompt's tokens from stored per-message counts (no re-tokenising)."""
    from app.chat.history import TURN_TOKENS, context_snapshot
    from app.usage.breakdown import count_cached

    history = await db.fetchval(
        f"SELECT COALESCE(sum({TURN_TOKENS} + 4), 0) FROM workflow_chat_messages m"
        " WHERE m.thread_id = $1", thread.id)
    return (count_cached(context.system_prompt) + count_cached(context_snapshot(context))
            + int(history) + new_message_tokens + 10)


async def check_budget(db: Db, budgets: dict[str, Any], thread: Thread,
                       context: LlmContext, user_id: uuid.UUID, new_message_tokens: int,
                       prices: PriceBook) -> BudgetDecision:
    """Evaluate every configured limit; raises BudgetExceeded on a hard limit in refuse mode."""
    decision = BudgetDecision()
    if not budgets:
        return decision
    estimate = await prompt_estimate(db, thread, context, new_message_tokens)
    decision.estimate = estimate
    model = context.model_used or "local"
    est_cost, _ = prices.cost(model, datetime.now(UTC), estimate, 0, 0)
    soft_ratio = float(budgets.get("softRatio", 0.8))
    limits = {
        "thread": {"tokens": budgets.get("threadTokens")},
        "user": dict(budgets.get("perUser") or {}),
        "tenant": {"tokens": budgets.get("monthlyTokens"), "cost": budgets.get("monthlyCostUsd")},
    }
    limits["user"] = {"tokens": limits["user"].get("monthlyTokens"),
                      "cost": limits["user"].get("monthlyCostUsd")}
    for scope in SCOPES:
        if not any(v is not None for v in limits[scope].values()):
            continue
        tokens, cost = await _used(db, scope, thread, user_id)
        for kind, limit in limits[scope].items():
            if limit is None:
                continue
            used = float(tokens if kind == "tokens" else cost)
            projected = used + float(estimate if kind == "tokens" else est_cost)
            if projected > float(limit):
                decision.action, decision.scope, decision.limit_kind = "refuse", scope, kind
                decision.limit, decision.used = float(limit), used
                return _degrade(decision, budgets, model)
            if projected > soft_ratio * float(limit):
                decision.warnings.append({"scope": scope, "limitKind": kind, "limit": limit,
                                          "used": used, "projected": projected})
    if decision.warnings:
        decision.action = "warn"
    return decision


def _degrade(decision: BudgetDecision, budgets: dict[str, Any], model: str) -> BudgetDecision:
    mode = budgets.get("mode", "refuse")
    cheaper = budgets.get("cheaperModel")
    if mode == "cheaper" and cheaper and cheaper != model:
        decision.action, decision.model = "cheaper", str(cheaper)
        return decision
    if mode == "trim":
        decision.action = "trim"
        decision.history_budget = int(budgets.get("trimHistoryTokens", 1000))
        return decision
    raise BudgetExceeded(decision)
