"""Ledger queries: sums per time bucket and group, a thread's calls, rows for export."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncResult, AsyncSession

from app.usage.breakdown import SEGMENTS
from app.usage.schemas import GROUP_KEYS, UsageFilters

# (filter attribute, column, element type); every filter is "column is one of these values".
_FILTER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("models", "l.model", "text"),
    ("providers", "l.provider", "text"),
    ("user_ids", "l.user_id", "uuid"),
    ("customer_ids", "l.customer_id", "uuid"),
    ("workflow_ids", "l.workflow_key", "text"),
    ("step_ids", "l.step_id", "text"),
    ("branch_types", "l.branch_type", "text"),
    ("thread_ids", "l.thread_id", "uuid"),
)

def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


# Prompt-segment sums (pb0, pb1, ... in SEGMENTS order): why a group's input costs what it does.
_BREAKDOWN_SUMS = "".join(
    f", sum(COALESCE((l.prompt_breakdown->>'{name}')::bigint, 0)) AS pb{i}"
    for i, name in enumerate(SEGMENTS))

# A call that used no tool still appears once (the outer join), under a null tool.
_UNNEST_TOOLS = " LEFT JOIN LATERAL unnest(l.tool_names) AS used_tool(name) ON true"

LEDGER_COLUMNS = (
    "l.id, l.created_at, l.provider, l.model, l.call_kind, l.status, l.usage_source,"
    " l.input_tokens, l.output_tokens, l.cached_tokens, l.reasoning_tokens, l.cost_usd,"
    " l.price_version, l.latency_ms, l.time_to_first_token_ms, l.tool_names, l.prompt_breakdown,"
    " l.user_id, l.customer_id, l.execution_id, l.workflow_key, l.step_id, l.branch_type,"
    " l.thread_id, l.message_id, l.chain_seq, l.row_hash"
)


def _where(tenant_id: uuid.UUID, start: datetime, end: datetime, filters: UsageFilters,
           time_column: str = "l.created_at") -> tuple[str, dict[str, Any]]:
    """The WHERE clause and its parameters; the tenant is named even though RLS also applies."""
    clauses = ["l.tenant_id = :tenant_id", f"{time_column} >= :start", f"{time_column} < :end"]
    params: dict[str, Any] = {"tenant_id": tenant_id, "start": start, "end": end}
    for attribute, column, element in _FILTER_COLUMNS:
        values = getattr(filters, attribute)
        if values:
            clauses.append(f"{column} = ANY(CAST(:{attribute} AS {element}[]))")
            params[attribute] = list(values)
    if filters.tool_names:
        clauses.append("l.tool_names && CAST(:tool_names AS text[])")
        params["tool_names"] = list(filters.tool_names)
    return " AND ".join(clauses), params


# Groupings and filters the hourly rollup (migration 0007) can answer: it keeps these columns.
_ROLLUP_KEYS = frozenset({"model", "provider"})
_ROLLUP_SUMS = (
    "sum(l.input_tokens) AS input_tokens, sum(l.output_tokens) AS output_tokens,"
    " sum(l.cached_tokens) AS cached_tokens, sum(l.reasoning_tokens) AS reasoning_tokens,"
    " sum(l.requests) AS num_model_requests, sum(l.cost_usd) AS cost_usd"
    + "".join(f", sum(l.pb_{_snake(name)}) AS pb{i}" for i, name in enumerate(SEGMENTS))
)


def uses_rollup(origin: datetime, start: datetime, end: datetime, width: timedelta,
                group_by: Sequence[str], filters: UsageFilters) -> bool:
    """True when whole hours of the rollup give exactly the ledger's sums for this request."""
    whole_hours = all(moment.timestamp() % 3600 == 0 for moment in (origin, start, end)) and \
        width.total_seconds() % 3600 == 0
    other_filters = any(getattr(filters, attribute) for attribute, _, _ in _FILTER_COLUMNS
                        if attribute not in ("models", "providers")) or filters.tool_names
    return whole_hours and set(group_by) <= _ROLLUP_KEYS and not other_filters


def bucket_sums_sql(tenant_id: uuid.UUID, *, origin: datetime, start: datetime, end: datetime,
                    width: timedelta, group_by: Sequence[str],
                    filters: UsageFilters) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of `sum_by_bucket` (the bench EXPLAINs it)."""
    sql_of = rollup_sql if uses_rollup(origin, start, end, width, group_by, filters) else ledger_sql
    return sql_of(tenant_id, origin=origin, start=start, end=end, width=width, group_by=group_by,
                  filters=filters)


def _grouping(group_by: Sequence[str]) -> tuple[str, str, str]:
    """The group keys as select items (g0, g1, ...), GROUP BY positions and ORDER BY terms."""
    groups = [GROUP_KEYS[name].sql for name in group_by]
    selected = "".join(f", {sql} AS g{i}" for i, sql in enumerate(groups))
    positions = "".join(f", {i + 2}" for i in range(len(groups)))
    order = "".join(f", {i + 2} NULLS LAST" for i in range(len(groups)))
    return selected, positions, order


def ledger_sql(tenant_id: uuid.UUID, *, origin: datetime, start: datetime, end: datetime,
               width: timedelta, group_by: Sequence[str],
               filters: UsageFilters) -> tuple[str, dict[str, Any]]:
    """`bucket_sums_sql` over the ledger rows themselves: any grouping, any filter."""
    where, params = _where(tenant_id, start, end, filters)
    selected, positions, order = _grouping(group_by)
    joins = _UNNEST_TOOLS if "tool" in group_by else ""
    # The planner cannot see through date_bin that a month of rows makes a few hundred groups;
    # asked for sorted output it sorts every row to group them. Planned on its own (a
    # materialised CTE) the grouping is hashed, and only the groups are sorted.
    sql = (
        "WITH sums AS MATERIALIZED ("
        "SELECT date_bin(CAST(:width AS interval), l.created_at, :origin) AS bucket"
        f"{selected},"
        " sum(l.input_tokens) AS input_tokens, sum(l.output_tokens) AS output_tokens,"
        " sum(l.cached_tokens) AS cached_tokens, sum(l.reasoning_tokens) AS reasoning_tokens,"
        " count(*) AS num_model_requests, sum(l.cost_usd) AS cost_usd"
        f"{_BREAKDOWN_SUMS}"
        f" FROM usage_ledger l{joins} WHERE {where}"
        f" GROUP BY 1{positions}"
        f") SELECT * FROM sums ORDER BY 1{order}"
    )
    return sql, {**params, "width": width, "origin": origin}


def rollup_sql(tenant_id: uuid.UUID, *, origin: datetime, start: datetime, end: datetime,
                width: timedelta, group_by: Sequence[str],
                filters: UsageFilters) -> tuple[str, dict[str, Any]]:
    """`bucket_sums_sql` over the hourly rollup: the same columns, a few thousand rows read."""
    where, params = _where(tenant_id, start, end, filters, time_column="l.hour")
    selected, positions, order = _grouping(group_by)
    sql = (
        "SELECT date_bin(CAST(:width AS interval), l.hour, :origin) AS bucket"
        f"{selected}, {_ROLLUP_SUMS}"
        f" FROM usage_hourly l WHERE {where}"
        f" GROUP BY 1{positions} ORDER BY 1{order}"
    )
    return sql, {**params, "width": width, "origin": origin}


async def sum_by_bucket(session: AsyncSession, tenant_id: uuid.UUID, *, origin: datetime,
                        start: datetime, end: datetime, width: timedelta,
                        group_by: Sequence[str], filters: UsageFilters) -> Sequence[Row[Any]]:
    """Token, request and cost sums per bucket (aligned to `origin`) and group, in key order.

    Each row has `bucket`, one `g0`, `g1`, ... per group key, then the sums.
    """
    sql, params = bucket_sums_sql(tenant_id, origin=origin, start=start, end=end, width=width,
                                  group_by=group_by, filters=filters)
    return (await session.execute(text(sql), params)).all()


async def thread_exists(session: AsyncSession, tenant_id: uuid.UUID, thread_id: uuid.UUID) -> bool:
    """True when the thread is the tenant's (another tenant's thread does not exist here)."""
    found = await session.execute(
        text("SELECT 1 FROM workflow_chat_threads WHERE id = :id AND tenant_id = :tenant_id"),
        {"id": thread_id, "tenant_id": tenant_id},
    )
    return found.first() is not None


async def list_by_thread(session: AsyncSession, tenant_id: uuid.UUID,
                         thread_id: uuid.UUID) -> Sequence[Row[Any]]:
    """Every ledger row of a thread, in the order it was written."""
    result = await session.execute(
        text(f"SELECT {LEDGER_COLUMNS} FROM usage_ledger l"
             " WHERE l.tenant_id = :tenant_id AND l.thread_id = :thread_id ORDER BY l.chain_seq"),
        {"tenant_id": tenant_id, "thread_id": thread_id},
    )
    return result.all()


async def stream_rows(session: AsyncSession, tenant_id: uuid.UUID, *, start: datetime,
                      end: datetime, filters: UsageFilters,
                      batch_size: int = 2000) -> AsyncResult[Any]:
    """Ledger rows matching the filters, oldest first, fetched in batches by a server cursor."""
    where, params = _where(tenant_id, start, end, filters)
    return await session.stream(
        text(f"SELECT {LEDGER_COLUMNS} FROM usage_ledger l WHERE {where}"
             " ORDER BY l.created_at, l.chain_seq"),
        params,
        execution_options={"yield_per": batch_size},
    )
