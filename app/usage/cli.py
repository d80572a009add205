"""`chatbranch usage` (terminal report) and `chatbranch audit verify` (the ledger's hash chain)."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import msgspec
import typer
from rich.console import Console
from sqlalchemy import text

from app.db.engine import DatabaseUrls, create_engine, create_sessionmaker, resolve_database
from app.db.tenancy import tenant_transaction
from app.errors import BadRequest
from app.usage import service
from app.usage.chain import TenantChain, find_tenant, verify_chains
from app.usage.report import usage_table
from app.usage.schemas import WIDTHS, UsageBucket, UsageParams

# The CLI is not paged like the API, but a range is still bounded.
MAX_REPORT_BUCKETS = 24 * 400
REPORT_ROLES = ("analyst", "admin")


class UsageCliError(Exception):
    """The report cannot run: unknown user, wrong role, bad period."""


def _database() -> DatabaseUrls:
    from app.cli import _settings  # late: app.cli imports this module's commands

    return resolve_database(_settings())


def _day(value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError as exc:
        raise UsageCliError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def report_window(days: int, since: str | None, until: str | None, bucket_width: str,
                  now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end): explicit dates, or the last `days` whole buckets up to now."""
    if bucket_width not in WIDTHS:
        raise UsageCliError("--bucket must be 1h or 1d")
    now = now or datetime.now(UTC)
    end = _day(until) if until else now
    if since:
        return _day(since), end
    if days < 1:
        raise UsageCliError("--days must be at least 1")
    width = WIDTHS[bucket_width]
    # Align to whole UTC days (or hours) so buckets are calendar days.
    floor = now.replace(minute=0, second=0, microsecond=0)
    if bucket_width == "1d":
        floor = floor.replace(hour=0)
    return floor + width - timedelta(days=days), end


async def usage_report(db: DatabaseUrls, as_email: str, *, start: datetime, end: datetime,
                       bucket_width: str, group_by: list[str]
                       ) -> tuple[str, UsageParams, list[UsageBucket]]:
    """(tenant slug, params, buckets) for an analyst's or admin's tenant, read under RLS."""
    owner = create_engine(db.owner_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            user = (await conn.execute(text(
                "SELECT u.id, u.role, u.tenant_id, t.slug FROM users u JOIN tenants t"
                " ON t.id = u.tenant_id WHERE lower(u.email) = lower(:e)"), {"e": as_email})
            ).one_or_none()
    finally:
        await owner.dispose()
    if user is None:
        raise UsageCliError(f"no user with e-mail {as_email}; `chatbranch users` lists them")
    if user.role not in REPORT_ROLES:
        raise UsageCliError(f"{as_email} is a {user.role}; usage is for analysts and admins")
    params = UsageParams(start_time=int(start.timestamp()), end_time=int(end.timestamp()),
                         bucket_width=bucket_width, group_by=group_by, limit=1)
    try:
        query = service.parse_usage_query(params)
    except BadRequest as exc:
        problems = "; ".join(f"{e['key']}: {e['message']}" for e in exc.errors or [])
        raise UsageCliError(problems or exc.detail) from exc
    buckets_needed = math.ceil((query.end - query.origin) / query.width)
    if buckets_needed > MAX_REPORT_BUCKETS:
        raise UsageCliError(f"{buckets_needed} buckets is too many; use 1d or a shorter period")
    query = replace(query, limit=buckets_needed)
    # The runtime role, scoped to the user's tenant: the same rules as the API.
    engine = create_engine(db.app_url, pool_size=1)
    try:
        async with tenant_transaction(create_sessionmaker(engine), user.tenant_id) as session:
            buckets = await service.usage_buckets(session, user.tenant_id, query)
    finally:
        await engine.dispose()
    return user.slug, params, buckets


def usage_command(
    as_email: str = typer.Option(..., "--as", help="An analyst or admin; reports their tenant."),
    days: int = typer.Option(30, help="The last N days, in whole buckets."),
    since: str = typer.Option(None, help="Start date, YYYY-MM-DD (UTC); overrides --days."),
    until: str = typer.Option(None, help="End date, YYYY-MM-DD (UTC, exclusive); default now."),
    bucket: str = typer.Option("1d", help="Bucket width: 1h or 1d."),
    group_by: str = typer.Option(
        "model", "--group-by",
        help="Comma-separated: model, provider, user, customer, workflow, step, branchType,"
             " thread, tool."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON buckets instead."),
) -> None:
    """Token usage for a period, grouped, with a sparkline per row (analysts and admins)."""
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    try:
        start, end = report_window(days, since, until, bucket)
        slug, _, buckets = asyncio.run(usage_report(
            _database(), as_email, start=start, end=end, bucket_width=bucket, group_by=groups))
    except UsageCliError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps({"object": "page", "data": msgspec.to_builtins(buckets)}, indent=2))
        return
    Console().print(usage_table(buckets, groups, bucket_width=bucket, tenant=slug))


async def audit_verify(db: DatabaseUrls, tenant: str | None = None) -> list[TenantChain]:
    """Verify every tenant's chain (or one tenant's) as the owner."""
    engine = create_engine(db.owner_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tenant_id = None
            if tenant:
                tenant_id = await find_tenant(conn, tenant)
                if tenant_id is None:
                    raise UsageCliError(f"no tenant {tenant!r} (give its slug or id)")
            return await verify_chains(conn, tenant_id)
    finally:
        await engine.dispose()


def print_chains(chains: list[TenantChain], console: Console) -> None:
    """One line per tenant: intact with its head, or the first broken row and why."""
    for chain in chains:
        if chain.broken is None:
            head = f"head #{chain.head_seq} {chain.head_hash}" if chain.head_seq else "empty"
            console.print(f"[green]ok[/green]     {chain.slug}: {chain.rows} rows, {head}")
        else:
            b = chain.broken
            console.print(f"[red]BROKEN[/red] {chain.slug}: first broken row {b.row_id}"
                          f" (#{b.chain_seq}): {b.reason}")


def audit_verify_command(
    tenant: str = typer.Option(None, "--tenant", help="A tenant slug or id; default: every one."),
) -> None:
    """Recompute the usage ledger's hash chain per tenant; exit 1 naming the first broken row."""
    try:
        chains = asyncio.run(audit_verify(_database(), tenant))
    except UsageCliError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    print_chains(chains, Console(highlight=False, soft_wrap=True))
    if not all(chain.ok for chain in chains):
        raise typer.Exit(1)


audit_cli = typer.Typer(no_args_is_help=True, add_completion=False)


@audit_cli.callback()
def audit() -> None:
    """Tamper evidence of the usage ledger."""


audit_cli.command(name="verify")(audit_verify_command)
