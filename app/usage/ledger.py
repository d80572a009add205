"""Write one ledger row per provider call and keep message, thread and context totals in step."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from app.db.driver import Db
from app.llm.base import Usage
from app.usage.pricing import PriceBook


@dataclass
class CallAttribution:
    """Who and what a provider call served (the ledger's group-by keys)."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    customer_id: uuid.UUID | None
    execution_id: uuid.UUID | None
    workflow_key: str | None
    step_id: str | None
    branch_type: str | None
    thread_id: uuid.UUID | None
    message_id: uuid.UUID | None
    call_kind: str = "chat"


# The row and the running totals of its thread and LLM context, as CTEs whose parameters start
# at $1: the 24 columns, then the call's total tokens ($25). `shifted` renumbers them to follow
# another statement's own parameters.
LEDGER_CTES = """
row AS (
  INSERT INTO usage_ledger (tenant_id, user_id, customer_id, execution_id, workflow_key,
    step_id, branch_type, thread_id, message_id, call_kind, provider, model, input_tokens,
    output_tokens, cached_tokens, reasoning_tokens, usage_source, status, latency_ms,
    time_to_first_token_ms, cost_usd, price_version, prompt_breakdown, tool_names)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, $23::jsonb, $24::text[])
  RETURNING id
), thread AS (
  UPDATE workflow_chat_threads SET total_tokens = total_tokens + $25
  WHERE id = $8 RETURNING 1
), context AS (
  UPDATE workflow_llm_context SET total_tokens_used = total_tokens_used + $25
  WHERE thread_id = $8 RETURNING 1
)"""
LEDGER_PARAMS = 25
# One row and its three totals (the third, the message's, here) in one round trip. Data-modifying
# CTEs all run, whether or not the final SELECT reads them.
_RECORD = f"""
WITH {LEDGER_CTES}, message AS (
  UPDATE workflow_chat_messages SET tokens_used = COALESCE(tokens_used, 0) + $25
  WHERE id = $9 RETURNING 1
)
SELECT id FROM row
"""


def shifted(sql: str, by: int) -> str:
    """`sql` with every parameter $n renumbered $(n + by)."""
    return re.sub(r"\$(\d+)", lambda found: f"${int(found.group(1)) + by}", sql)


@dataclass(frozen=True)
class LedgerEntry:
    """One provider call's ledger row, ready to be written."""

    who: CallAttribution
    provider: str
    model: str
    usage: Usage
    status: str
    latency_ms: int | None
    ttft_ms: int | None
    breakdown: dict[str, Any] = field(default_factory=dict)
    tool_names: list[str] = field(default_factory=list)

    def params(self, prices: PriceBook) -> tuple[list[Any], Recorded]:
        """The LEDGER_CTES parameters, priced now, and the figures they write."""
        who, usage = self.who, self.usage
        cost, version = prices.cost(self.model, datetime.now(UTC), usage.input_tokens,
                                    usage.cached_tokens, usage.output_tokens)
        values = [
            who.tenant_id, who.user_id, who.customer_id, who.execution_id, who.workflow_key,
            who.step_id, who.branch_type, who.thread_id, who.message_id, who.call_kind,
            self.provider, self.model, usage.input_tokens, usage.output_tokens,
            usage.cached_tokens, usage.reasoning_tokens, usage.source, self.status,
            self.latency_ms, self.ttft_ms, cost, version, json.dumps(self.breakdown),
            self.tool_names, usage.total]
        return values, Recorded(usage.source, usage.input_tokens, usage.output_tokens,
                                usage.cached_tokens, cost)


async def record_call(db: Db, prices: PriceBook, entry: LedgerEntry) -> Recorded:
    """Insert the row and add its tokens to the message, thread and LLM context in one go.

    Runs in the caller's transaction, so the invariants (Σ ledger = thread total = Σ assistant
    message tokens) hold at every commit, whatever ends the reply. Returns what it wrote.
    """
    values, recorded = entry.params(prices)
    await db.execute(_RECORD, *values)
    return recorded


@dataclass(frozen=True)
class Recorded:
    """The figures of a ledger row as written (a UsageFigures): a reply sums its own rows
    without reading them back."""

    usage_source: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal


class UsageFigures(Protocol):
    """What the usage part reads of a ledger row (an ORM row, a plain one, or Recorded)."""

    @property
    def usage_source(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def cost_usd(self) -> Decimal: ...


def usage_part(rows: Sequence[UsageFigures]) -> dict[str, Any]:
    """The `data-usage` payload for a reply: its provider calls summed, with their provenance."""
    sources = {r.usage_source for r in rows}
    # The reply's provenance is its weakest part: all provider-reported is "provider"; any
    # estimate (or a mix) is "estimated"; nothing known at all is "unavailable".
    if sources == {"provider"}:
        source = "provider"
    elif "estimated" in sources or len(sources) > 1:
        source = "estimated"
    else:
        source = "unavailable"
    prompt = sum(r.input_tokens for r in rows)
    completion = sum(r.output_tokens for r in rows)
    return {
        "promptTokens": prompt, "completionTokens": completion,
        "cachedTokens": sum(r.cached_tokens for r in rows),
        "totalTokens": prompt + completion,
        "costUsd": float(sum((r.cost_usd for r in rows), Decimal(0))),
        "source": source, "providerCalls": len(rows),
    }
