"""Usage rules: validate a query, shape buckets, a thread's calls and the CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import anyio
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncResult, AsyncSession, async_sessionmaker

from app.db.tenancy import set_tenant
from app.errors import BadRequest, NotFound
from app.usage import repository
from app.usage.breakdown import SEGMENTS
from app.usage.schemas import (
    CSV_COLUMNS,
    DEFAULT_LIMIT,
    GROUP_KEYS,
    MAX_LIMIT,
    WIDTHS,
    BucketWidth,
    LedgerCall,
    ThreadUsage,
    TimeRange,
    UsageBucket,
    UsageFilters,
    UsageParams,
    UsageQuery,
    UsageTotals,
)

# Unix seconds the API accepts: 1970 up to the year 9999.
MAX_UNIX = 253_402_300_799
_UUID_FILTERS = ("user_ids", "customer_ids", "thread_ids")
_TEXT_FILTERS = ("models", "providers", "workflow_ids", "step_ids", "branch_types", "tool_names")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _split(values: list[str] | None) -> list[str]:
    """Repeated parameters and comma-separated lists, both accepted; blanks dropped."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parse_filters(params: UsageParams, errors: list[dict[str, str]]) -> UsageFilters:
    """The row filters; malformed ids are reported in `errors`."""
    values: dict[str, tuple[Any, ...]] = {}
    for name in _TEXT_FILTERS:
        values[name] = tuple(_split(getattr(params, name)))
    for name in _UUID_FILTERS:
        ids = []
        for raw in _split(getattr(params, name)):
            try:
                ids.append(uuid.UUID(raw))
            except ValueError:
                errors.append({"key": _camel(name), "message": f"{raw!r} is not a UUID"})
        values[name] = tuple(ids)
    return UsageFilters(**values)


def parse_time_range(params: UsageParams, errors: list[dict[str, str]], *, start_required: bool,
                     now: datetime | None = None) -> TimeRange:
    """[startTime, endTime) from Unix seconds; endTime defaults to now, startTime to 1970."""
    now = now or datetime.now(UTC)
    start, end = params.start_time, params.end_time
    if start is None and start_required:
        errors.append({"key": "startTime", "message": "required (Unix seconds)"})
    for key, value in (("startTime", start), ("endTime", end)):
        if value is not None and not 0 <= value <= MAX_UNIX:
            errors.append({"key": key, "message": f"must be Unix seconds in [0, {MAX_UNIX}]"})
    begin = _at(start) if start is not None and 0 <= start <= MAX_UNIX else _at(0)
    finish = _at(end) if end is not None and 0 <= end <= MAX_UNIX else now
    if finish <= begin:
        errors.append({"key": "endTime", "message": "must be after startTime"})
    return TimeRange(begin, finish)


def parse_usage_query(params: UsageParams, *, now: datetime | None = None) -> UsageQuery:
    """Validate `GET /api/usage` parameters; every problem is listed in one 400."""
    errors: list[dict[str, str]] = []
    window = parse_time_range(params, errors, start_required=True, now=now)
    width = params.bucket_width
    if width not in WIDTHS:
        errors.append({"key": "bucketWidth", "message": "must be 1h or 1d"})
        width = "1d"
    group_by = tuple(dict.fromkeys(_split(params.group_by)))
    unknown = [g for g in group_by if g not in GROUP_KEYS]
    if unknown:
        errors.append({"key": "groupBy", "message": f"unknown {', '.join(unknown)}; use any of "
                                                   f"{', '.join(GROUP_KEYS)}"})
    limit = params.limit if params.limit is not None else DEFAULT_LIMIT[width]
    if not 1 <= limit <= MAX_LIMIT[width]:
        errors.append({"key": "limit", "message": f"must be 1..{MAX_LIMIT[width]} for {width}"})
    filters = parse_filters(params, errors)
    page_start = window.start
    if params.page is not None:
        page_start = _parse_page(params.page, window, WIDTHS[width].total_seconds(), errors)
    if errors:
        raise BadRequest("invalid usage query", errors=errors)
    return UsageQuery(origin=window.start, page_start=page_start, end=window.end,
                      bucket_width=cast(BucketWidth, width),
                      group_by=tuple(g for g in group_by if g in GROUP_KEYS), limit=limit,
                      filters=filters)


def _parse_page(page: str, window: TimeRange, width_s: float,
                errors: list[dict[str, str]]) -> datetime:
    """A page cursor is the Unix start of its first bucket (as `nextPage` gave it)."""
    try:
        seconds = int(page)
    except ValueError:
        seconds = -1
    offset = seconds - _unix(window.start)
    if seconds < 0 or offset < 0 or offset % width_s or _at(seconds) >= window.end:
        errors.append({"key": "page", "message": "not a page of this query (use nextPage)"})
        return window.start
    return _at(seconds)


async def usage_buckets(session: AsyncSession, tenant_id: uuid.UUID,
                        query: UsageQuery) -> list[UsageBucket]:
    """Every bucket of the query's page, empty ones included, each with one result per group."""
    rows = await repository.sum_by_bucket(
        session, tenant_id, origin=query.origin, start=query.page_start, end=query.page_end,
        width=query.width, group_by=query.group_by, filters=query.filters)
    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        results[_unix(row.bucket)].append(_result(row, query.group_by))
    buckets = []
    moment = query.page_start
    while moment < query.page_end:
        following = min(moment + query.width, query.end)
        buckets.append(UsageBucket(start_time=_unix(moment), end_time=_unix(following),
                                   results=results.get(_unix(moment), [])))
        moment += query.width
    return buckets


def _result(row: Row[Any], group_by: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"object": "usage.result"}
    for i, name in enumerate(group_by):
        value = getattr(row, f"g{i}")
        result[GROUP_KEYS[name].result_key] = str(value) if isinstance(value, uuid.UUID) else value
    result.update(
        inputTokens=int(row.input_tokens), outputTokens=int(row.output_tokens),
        cachedTokens=int(row.cached_tokens), reasoningTokens=int(row.reasoning_tokens),
        numModelRequests=int(row.num_model_requests), costUsd=float(row.cost_usd),
        promptBreakdown={name: int(getattr(row, f"pb{i}")) for i, name in enumerate(SEGMENTS)},
    )
    return result


def next_page(query: UsageQuery) -> str | None:
    """The cursor of the page after this one, or None on the last page."""
    return str(_unix(query.page_end)) if query.page_end < query.end else None


def parse_thread_id(raw: str) -> uuid.UUID:
    """A thread id from a path; malformed ids are simply not found."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"thread '{raw}' not found") from None


async def thread_usage(session: AsyncSession, tenant_id: uuid.UUID, raw_id: str) -> ThreadUsage:
    """Every provider call of one of the tenant's threads, with totals; 404 otherwise."""
    thread_id = parse_thread_id(raw_id)
    if not await repository.thread_exists(session, tenant_id, thread_id):
        raise NotFound(f"thread '{raw_id}' not found")
    rows = await repository.list_by_thread(session, tenant_id, thread_id)
    return ThreadUsage(thread_id=str(thread_id), totals=totals(rows),
                       calls=[ledger_call(row) for row in rows])


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def ledger_call(row: Row[Any]) -> LedgerCall:
    """One ledger row on the wire."""
    return LedgerCall(
        id=str(row.id), created_at=row.created_at, provider=row.provider, model=row.model,
        call_kind=row.call_kind, status=row.status, usage_source=row.usage_source,
        input_tokens=row.input_tokens, output_tokens=row.output_tokens,
        cached_tokens=row.cached_tokens, reasoning_tokens=row.reasoning_tokens,
        cost_usd=float(row.cost_usd), price_version=row.price_version,
        latency_ms=row.latency_ms, time_to_first_token_ms=row.time_to_first_token_ms,
        tool_names=list(row.tool_names or []), prompt_breakdown=row.prompt_breakdown or {},
        user_id=_str(row.user_id), customer_id=_str(row.customer_id),
        execution_id=_str(row.execution_id), workflow_id=row.workflow_key, step_id=row.step_id,
        branch_type=row.branch_type, thread_id=_str(row.thread_id),
        message_id=_str(row.message_id), chain_seq=row.chain_seq, row_hash=row.row_hash,
    )


def totals(rows: Sequence[Row[Any]]) -> UsageTotals:
    """Sums over ledger rows; cost is summed exactly before it becomes a JSON number."""
    return UsageTotals(
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        num_model_requests=len(rows),
        cost_usd=float(sum((r.cost_usd for r in rows), Decimal(0))),
    )


def _csv_values(row: Row[Any]) -> list[Any]:
    return [
        row.id, row.created_at.astimezone(UTC).isoformat(), _unix(row.created_at), row.provider,
        row.model, row.call_kind, row.status, row.usage_source, row.input_tokens,
        row.output_tokens, row.cached_tokens, row.reasoning_tokens, row.cost_usd,
        row.price_version, row.latency_ms, row.time_to_first_token_ms,
        ";".join(row.tool_names or []), row.user_id, row.customer_id, row.execution_id,
        row.workflow_key, row.step_id, row.branch_type, row.thread_id, row.message_id,
        row.chain_seq, row.row_hash,
    ]


async def csv_export(sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID,
                     window: TimeRange, filters: UsageFilters,
                     rows_per_chunk: int = 1000) -> AsyncIterator[str]:
    """The matching ledger rows as CSV text, a chunk at a time (header first).

    Runs in its own session: the request's session is closed once the response starts.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    session = sessionmaker()
    rows: AsyncResult[Any] | None = None
    try:
        await set_tenant(session, tenant_id)
        rows = await repository.stream_rows(session, tenant_id, start=window.start,
                                            end=window.end, filters=filters)
        count = 0
        async for row in rows:
            writer.writerow([_cell(v) for v in _csv_values(row)])
            count += 1
            if count % rows_per_chunk == 0:
                yield _drain(buffer)
        yield _drain(buffer)
    finally:
        # A client that hangs up cancels the stream; the cursor and the connection must still
        # be released cleanly.
        with anyio.CancelScope(shield=True):
            if rows is not None:
                await rows.close()
            await session.close()


# Text a spreadsheet would run as a formula (model names and step ids come from tenants' data).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _drain(buffer: io.StringIO) -> str:
    chunk = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return chunk
