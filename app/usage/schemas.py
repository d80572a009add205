"""Shapes of the usage API: a validated query, OpenAI-style buckets, ledger rows on the wire."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

BucketWidth = Literal["1h", "1d"]
WIDTHS: dict[str, timedelta] = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
# As OpenAI's usage API: buckets per page by default and at most.
DEFAULT_LIMIT = {"1h": 24, "1d": 7}
MAX_LIMIT = {"1h": 168, "1d": 31}


@dataclass(frozen=True)
class GroupKey:
    """A `groupBy` value: the SQL expression it groups on and its key in each result."""

    name: str
    sql: str
    result_key: str


# `tool` unnests tool_names: a call that used two tools counts once under each, and a call that
# used none is grouped under null.
GROUP_KEYS: dict[str, GroupKey] = {
    key.name: key
    for key in (
        GroupKey("model", "l.model", "model"),
        GroupKey("provider", "l.provider", "provider"),
        GroupKey("user", "l.user_id", "userId"),
        GroupKey("customer", "l.customer_id", "customerId"),
        GroupKey("workflow", "l.workflow_key", "workflowId"),
        GroupKey("step", "l.step_id", "stepId"),
        GroupKey("branchType", "l.branch_type", "branchType"),
        GroupKey("thread", "l.thread_id", "threadId"),
        GroupKey("tool", "used_tool.name", "toolName"),
    )
}


@dataclass(frozen=True)
class UsageFilters:
    """Row filters shared by the bucket report and the export; empty means 'any'."""

    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    user_ids: tuple[uuid.UUID, ...] = ()
    customer_ids: tuple[uuid.UUID, ...] = ()
    workflow_ids: tuple[str, ...] = ()
    step_ids: tuple[str, ...] = ()
    branch_types: tuple[str, ...] = ()
    thread_ids: tuple[uuid.UUID, ...] = ()
    tool_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimeRange:
    """[start, end) in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class UsageQuery:
    """A validated `GET /api/usage` request: one page of buckets."""

    origin: datetime  # startTime: buckets are aligned to it
    page_start: datetime  # first bucket of this page (origin unless a page cursor was given)
    end: datetime
    bucket_width: BucketWidth
    group_by: tuple[str, ...]
    limit: int
    filters: UsageFilters = field(default_factory=UsageFilters)

    @property
    def width(self) -> timedelta:
        """The bucket width as a duration."""
        return WIDTHS[self.bucket_width]

    @property
    def page_end(self) -> datetime:
        """End of this page's last bucket (clipped to the query's end)."""
        return min(self.end, self.page_start + self.limit * self.width)


class Camel(msgspec.Struct, rename="camel"):
    """Base for wire structs: snake_case in Python, camelCase in JSON."""


class UsageBucket(Camel):
    """One time bucket: its bounds in Unix seconds and one result per group."""

    start_time: int
    end_time: int
    results: list[dict[str, Any]]
    object: str = "bucket"


class UsagePage(Camel):
    """`GET /api/usage`: the bucket page of OpenAI's organization usage API, in camelCase."""

    data: list[UsageBucket]
    has_more: bool
    next_page: str | None
    object: str = "page"


class LedgerCall(Camel):
    """One provider call as the ledger recorded it, with its provenance."""

    id: str
    created_at: datetime
    provider: str
    model: str
    call_kind: str
    status: str
    usage_source: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    price_version: str | None
    latency_ms: int | None
    time_to_first_token_ms: int | None
    tool_names: list[str]
    prompt_breakdown: dict[str, Any]
    user_id: str | None
    customer_id: str | None
    execution_id: str | None
    workflow_id: str | None
    step_id: str | None
    branch_type: str | None
    thread_id: str | None
    message_id: str | None
    chain_seq: int
    row_hash: str


class UsageTotals(Camel):
    """Sums over a set of ledger rows."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    num_model_requests: int
    cost_usd: float


class ThreadUsage(Camel):
    """`GET /api/usage/threads/{threadId}`: every provider call of the thread, oldest first."""

    thread_id: str
    totals: UsageTotals
    calls: list[LedgerCall]


# The export's columns, in order: the thread endpoint's fields, plus the time as Unix seconds.
CSV_COLUMNS: tuple[str, ...] = (
    "id", "createdAt", "createdAtUnix", "provider", "model", "callKind", "status", "usageSource",
    "inputTokens", "outputTokens", "cachedTokens", "reasoningTokens", "costUsd", "priceVersion",
    "latencyMs", "timeToFirstTokenMs", "toolNames", "userId", "customerId", "executionId",
    "workflowId", "stepId", "branchType", "threadId", "messageId", "chainSeq", "rowHash",
)


@dataclass(frozen=True)
class UsageParams:
    """Query parameters as received (lists may also be comma-separated); validated by service."""

    start_time: int | None = None
    end_time: int | None = None
    bucket_width: str = "1d"
    group_by: list[str] | None = None
    limit: int | None = None
    page: str | None = None
    models: list[str] | None = None
    providers: list[str] | None = None
    user_ids: list[str] | None = None
    customer_ids: list[str] | None = None
    workflow_ids: list[str] | None = None
    step_ids: list[str] | None = None
    branch_types: list[str] | None = None
    thread_ids: list[str] | None = None
    tool_names: list[str] | None = None
