"""The database_query tool: one validated SELECT over the curated views, run in a sandbox.

Defence in depth: the validator (tools/sql_guard.py) admits one plain SELECT over the curated
views; the execution wrapper then runs it in a read-only transaction, as `chatbranch_query` (which
may read those views only), under the caller's tenant, with statement and lock timeouts, through
the extended protocol (a prepared statement holds exactly one command), inside a subquery that
caps rows and bytes, and always rolls back. Either layer alone must hold.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.engine import QUERY_ROLE
from tools.base import Tool, ToolContext, ToolError, ToolResult
from tools.sql_guard import ALLOWED_FUNCTIONS, VIEW_CATALOGUE, ensure_safe_sql


@dataclass(frozen=True)
class SandboxLimits:
    """How long and how much one query may take."""

    statement_timeout_ms: int = 3_000
    lock_timeout_ms: int = 1_000
    idle_in_transaction_timeout_ms: int = 10_000
    max_rows: int = 200
    max_bytes: int = 64_000
    max_columns: int = 60


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class QueryTable:
    """A query's result: column names, rows of JSON-safe values, and whether it was cut."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    sql: str
    elapsed_ms: int


class QueryInput(msgspec.Struct):
    """Input of database_query."""

    query: Annotated[str, msgspec.Meta(
        description="One PostgreSQL SELECT over the views listed in the description."
    )]


_SCOPE = text("SELECT set_config('app.tenant_id', :tenant_id, true)")
_SCOPE_PROBE = (
    "SELECT current_setting('app.tenant_id', true) AS tenant, current_user AS role,"
    " current_setting('transaction_read_only') AS read_only"
)


async def run_sandboxed(
    engine: AsyncEngine,
    tenant_id: uuid.UUID | str,
    sql: str,
    *,
    validate: bool = True,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> QueryTable:
    """Run `sql` in the sandbox for `tenant_id`; `validate=False` tests the wrapper alone."""
    statement = ensure_safe_sql(sql) if validate else sql
    tenant = str(uuid.UUID(str(tenant_id)))
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            try:
                await conn.begin()
                # First statement of the transaction, so nothing can have written before it.
                await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                await conn.execute(_SCOPE, {"tenant_id": tenant})
                driver = await _driver(conn)
                if not driver.is_in_transaction():
                    raise ToolError("database_query could not open its sandbox")
                await driver.execute(_sandbox_settings(limits))
                columns, rows, truncated = await _fetch_capped(driver, statement, limits)
                await _ensure_scope_intact(driver, tenant, limits)
            finally:
                await _close_sandbox(conn)
    except asyncpg.PostgresError as exc:
        raise ToolError(_explain(exc, limits)) from exc
    except TimeoutError as exc:
        raise ToolError(_too_slow(limits)) from exc
    except (asyncpg.InterfaceError, DBAPIError, OSError) as exc:
        raise ToolError("the database could not run the query right now; try again") from exc
    elapsed = int((time.perf_counter() - started) * 1000)
    return QueryTable(columns, rows, truncated, statement, elapsed)


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise ToolError("database_query needs the asyncpg driver")
    return driver


def _sandbox_settings(limits: SandboxLimits) -> str:
    """SET LOCAL script (integers only: no caller text reaches it); the role switch comes last."""
    return (
        f"SET LOCAL statement_timeout = {int(limits.statement_timeout_ms)};"
        f" SET LOCAL lock_timeout = {int(limits.lock_timeout_ms)};"
        " SET LOCAL idle_in_transaction_session_timeout ="
        f" {int(limits.idle_in_transaction_timeout_ms)};"
        f" SET LOCAL ROLE {QUERY_ROLE};"
    )


async def _fetch_capped(
    driver: asyncpg.Connection, statement: str, limits: SandboxLimits
) -> tuple[list[str], list[list[Any]], bool]:
    """Describe the query's columns, then fetch at most max_rows + 1 rows as JSON arrays.

    The server converts each row to JSON (JSON-safe by construction) and stops sending cells
    once a running total of row sizes passes max_bytes, so a huge result never crosses the wire.
    The newlines keep a trailing `--` comment from swallowing the wrapper.
    """
    timeout = limits.statement_timeout_ms / 1000 + 1
    described = await driver.prepare(f"SELECT * FROM (\n{statement}\n) AS q", timeout=timeout)
    if described.get_parameters():
        raise ToolError("the query must not use $n parameters; write the values inline")
    columns = [attribute.name for attribute in described.get_attributes()]
    if len(columns) > limits.max_columns:
        raise ToolError(f"the query returns {len(columns)} columns; select at most "
                        f"{limits.max_columns}")
    # Positional aliases: user column names may repeat or need quoting.
    aliases = [f"c{i}" for i in range(1, len(columns) + 1)]
    alias_list = f"({', '.join(aliases)})" if aliases else ""
    cells = ", ".join(f"s.{alias}" for alias in aliases)
    capped = (
        f"SELECT CASE WHEN s.running_bytes <= {int(limits.max_bytes)}"
        f" THEN json_build_array({cells})::text END AS cells"
        " FROM (SELECT q.*, sum(pg_column_size(q.*)) OVER (ROWS UNBOUNDED PRECEDING)"
        f" AS running_bytes FROM (\n{statement}\n) AS q{alias_list}"
        f" LIMIT {int(limits.max_rows) + 1}) AS s"
    )
    prepared = await driver.prepare(capped, timeout=timeout)
    records = await prepared.fetch(timeout=timeout)
    rows: list[list[Any]] = []
    used = 2
    truncated = len(records) > limits.max_rows
    for record in records[: limits.max_rows]:
        if record[0] is None:
            truncated = True
            break
        row = json.loads(record[0], parse_float=_json_number)
        size = len(json.dumps(row)) + 1
        if used + size > limits.max_bytes:
            truncated = True
            break
        used += size
        rows.append(row)
    return columns, rows, truncated


def _json_number(literal: str) -> float | str:
    """JSON numbers become floats (Decimal → float); ones too large for a float stay text."""
    value = float(literal)
    return value if math.isfinite(value) else literal


async def _ensure_scope_intact(
    driver: asyncpg.Connection, tenant: str, limits: SandboxLimits
) -> None:
    """Refuse the result if the query managed to change its own tenant, role or access mode."""
    probe = await driver.fetchrow(_SCOPE_PROBE, timeout=limits.statement_timeout_ms / 1000 + 1)
    if probe is None or (probe["tenant"], probe["role"], probe["read_only"]) != (
        tenant, QUERY_ROLE, "on"
    ):
        raise ToolError("query refused: it changed its own sandbox settings")


async def _close_sandbox(conn: AsyncConnection) -> None:
    """Always roll back, then drop any session-level advisory lock a query slipped through."""
    try:
        await conn.rollback()
        await conn.execute(text("SELECT pg_advisory_unlock_all()"))
        await conn.rollback()
    except Exception:
        # A connection we cannot clean is never reused.
        await conn.invalidate()


def _explain(exc: asyncpg.PostgresError, limits: SandboxLimits) -> str:
    """A message the model can act on, without server internals."""
    state = getattr(exc, "sqlstate", "") or ""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return _too_slow(limits)
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return "the data is being changed right now; try again shortly"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"permission denied: query only {', '.join(v.name for v in VIEW_CATALOGUE)}"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError) or state.startswith("25"):
        return "only reading is allowed"
    if state[:2] in ("42", "22", "21"):
        # Syntax, undefined names, bad casts: the server's one-line message helps the model
        # fix its SQL and can only mention the caller's own rows (the views filter first).
        return f"the query failed: {exc.args[0] if exc.args else type(exc).__name__}"
    return "the query failed in the database; simplify it and try again"


def _too_slow(limits: SandboxLimits) -> str:
    seconds = limits.statement_timeout_ms / 1000
    return f"the query ran longer than {seconds:g}s and was stopped; filter, aggregate or LIMIT it"


def _engine_of(context: ToolContext) -> AsyncEngine:
    sessionmaker = getattr(context.services, "sessionmaker", None)
    engine = getattr(sessionmaker, "kw", {}).get("bind")
    if not isinstance(engine, AsyncEngine):
        raise ToolError("database_query is not available: no database is configured")
    return engine


async def run_database_query(context: ToolContext, data: QueryInput) -> ToolResult:
    """Answer a data question with one SELECT over the curated views; the reply shows a table."""
    table = await run_sandboxed(_engine_of(context), context.tenant_id, data.query)
    output = {
        "columns": table.columns,
        "rows": table.rows,
        "rowCount": len(table.rows),
        "truncated": table.truncated,
        "sql": table.sql,
    }
    metadata = {"columns": table.columns, "rows": table.rows, "sql": table.sql,
                "truncated": table.truncated}
    return ToolResult(output=output, message_type="table", message_metadata=metadata)


def describe_tool(limits: SandboxLimits = DEFAULT_LIMITS) -> str:
    """The model-facing description, generated from the view catalogue and the allow-lists."""
    views = "\n".join(
        f"- {view.name} ({view.doc}): "
        + "; ".join(f"{c.name} {c.type} ({c.doc})" for c in view.columns)
        for view in VIEW_CATALOGUE
    )
    return (
        "Query your tenant's customer, contract, renewal and account-team data with one "
        "read-only PostgreSQL SELECT (WITH ... SELECT and UNION are fine; no RECURSIVE, no "
        "writes, no other tables, no system catalogs). Returns a table (columns, rows).\n"
        f"Views:\n{views}\n"
        f"Functions: {', '.join(sorted(ALLOWED_FUNCTIONS))}; plus CASE, COALESCE, NULLIF, "
        "GREATEST, LEAST, EXTRACT, CAST to basic types and current_date.\n"
        f"At most {limits.max_rows} rows and {limits.max_bytes // 1000} kB come back; queries "
        f"stop after {limits.statement_timeout_ms / 1000:g}s. Aggregate or LIMIT large results."
    )


TOOL = Tool(
    name="database_query",
    description=describe_tool(),
    input_type=QueryInput,
    run=run_database_query,
    timeout_s=15.0,
)
