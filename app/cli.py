"""The `chatbranch` command: run, migrate, seed, validate, token, users."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import DatabaseUrls, create_engine, resolve_database
from app.settings import Settings, get_settings

cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="chatbranch: chat branches inside renewal workflows.",
)
console = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    """Settings, honouring the seed script's DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD."""
    settings = get_settings()
    if not settings.database_url and os.environ.get("DB_HOST"):
        user = os.environ.get("DB_USER", "postgres")
        password = os.environ.get("DB_PASSWORD", "")
        auth = f"{user}:{password}" if password else user
        url = (
            f"postgresql+asyncpg://{auth}@{os.environ['DB_HOST']}:"
            f"{os.environ.get('DB_PORT', '5432')}/{os.environ.get('DB_NAME', 'chatbranch')}"
        )
        settings = settings.model_copy(update={"database_url": url})
    return settings


def _with_owner(db: DatabaseUrls, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `work` in one owner transaction (all-or-nothing)."""

    async def main() -> T:
        engine = create_engine(db.owner_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _migrate(db: DatabaseUrls) -> None:
    from app.db.migrate import upgrade

    upgrade(db.owner_url)


def _seed(db: DatabaseUrls, *, only_if_empty: bool = False, refresh: bool = False) -> None:
    from datetime import UTC, datetime

    from app.seeding import load_seed_files, refresh_dates, seed

    data = load_seed_files()

    async def work(conn: AsyncConnection) -> None:
        if only_if_empty and (await conn.execute(text("SELECT count(*) FROM tenants"))).scalar():
            return
        report = await seed(conn, data)
        moved = await refresh_dates(conn, data, datetime.now(UTC).date()) if refresh else 0
        console.print(
            f"seed: {report.total} rows inserted or changed {report.changed or ''}"
            + (f", {moved} dates moved" if refresh else "")
        )

    _with_owner(db, work)


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    db = resolve_database(_settings())
    _migrate(db)
    console.print("schema is up to date")


@cli.command(name="seed")
def seed_command(
    refresh_dates: bool = typer.Option(
        False, "--refresh-dates", help="Move demo renewal dates back to their offsets from today."
    ),
) -> None:
    """Upsert the demo data and core workflows in one transaction (idempotent)."""
    from app.seeding import SeedError

    db = resolve_database(_settings())
    _migrate(db)
    try:
        _seed(db, refresh=refresh_dates)
    except SeedError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@cli.command()
def validate(
    files: list[Path] = typer.Argument(None, help="Workflow JSON files (default: seeds)"),
    branches: Path = typer.Option(None, help="Chat branches JSON (default: seeds')"),
    saved_actions: Path = typer.Option(None, help="Saved actions JSON (default: seeds')"),
) -> None:
    """Validate workflow files: the spec's eight checks plus grammar and references."""
    from app.seeding import SEEDS_DIR
    from app.workflows.validation import format_report, validate_workflow_text

    paths = files or sorted((SEEDS_DIR / "workflows").glob("*.json"))
    branch_file = _load_json(branches or SEEDS_DIR / "chat_branches.json", [])
    # A branches file is a list, or {"branches": [...], "savedActionIds": [...]}.
    branch_rows = branch_file.get("branches", []) if isinstance(branch_file, dict) else branch_file
    saved_ids = {str(a.get("actionId")) for a in
                 _load_json(saved_actions or SEEDS_DIR / "saved_actions.json", [])
                 if isinstance(a, dict)}
    if isinstance(branch_file, dict) and "savedActionIds" in branch_file:
        saved_ids = set(branch_file["savedActionIds"])
    reports = []
    for path in paths:
        raw = path.read_text(errors="replace") if path.exists() else ""
        workflow_id = _peek_id(raw)
        own = [b for b in branch_rows if isinstance(b, dict) and b.get("workflowId") == workflow_id]
        reports.append(
            validate_workflow_text(
                raw, branches=own or None, saved_action_ids=saved_ids, source=str(path)
            )
        )
    print(format_report(reports))
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def _load_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _peek_id(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value.get("id") if isinstance(value, dict) else None


@cli.command()
def ingest(paths: list[Path] = typer.Argument(..., help="Markdown or text files"),
           tenant: str = typer.Option("demo", help="Tenant slug or id"),
           customer: str = typer.Option(None, help="Only for this customer (key or id)")) -> None:
    """Add documents to the knowledge base (chunked, embedded, idempotent by content)."""
    from app.knowledge.cli import IngestError, ingest_command

    try:
        summary = ingest_command(paths, tenant, customer, settings=_settings())
    except IngestError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if not summary.ok:
        raise typer.Exit(1)


@cli.command()
def token(email: str = typer.Option(..., "--email", help="A seeded user's e-mail")) -> None:
    """Print a bearer token for a user (the token alone on stdout)."""
    from app.auth.tokens import TokenCodec

    settings = _settings()
    db = resolve_database(settings)

    async def lookup(conn: AsyncConnection) -> Any:
        return (
            await conn.execute(
                text("SELECT id, tenant_id, role, email FROM users WHERE lower(email) = lower(:e)"),
                {"e": email},
            )
        ).one_or_none()

    row = _with_owner(db, lookup)
    if row is None:
        console.print(f"[red]no user with e-mail {email}; `chatbranch users` lists them[/red]")
        raise typer.Exit(1)
    print(
        TokenCodec(settings).encode(
            user_id=row.id, tenant_id=row.tenant_id, role=row.role, email=row.email
        )
    )


@cli.command()
def users() -> None:
    """List users with their role and tenant."""
    db = resolve_database(_settings())

    async def rows(conn: AsyncConnection) -> Any:
        return (
            await conn.execute(
                text(
                    "SELECT u.email, u.name, u.role, t.name AS tenant FROM users u"
                    " JOIN tenants t ON t.id = u.tenant_id ORDER BY t.name, u.role, u.email"
                )
            )
        ).all()

    table = Table("email", "name", "role", "tenant")
    for row in _with_owner(db, rows):
        table.add_row(row.email, row.name, row.role, row.tenant)
    Console().print(table)


@cli.command()
def tool(name: str = typer.Argument(None, help="Tool name (see --list)"),
         as_email: str = typer.Option(None, "--as", help="Run as this user (tenant scope)"),
         input_json: str = typer.Option("{}", "--input", help="The tool input as JSON"),
         customer: str = typer.Option(None, help="The customer (id or key) of the call"),
         list_tools: bool = typer.Option(False, "--list", help="List tools and their schemas")
         ) -> None:
    """Run one LLM tool exactly as a model's call would (same sandbox, same tenant scoping)."""
    from app.tool_runner import describe_tools, run_tool

    if list_tools:
        print(json.dumps(describe_tools(_settings()), indent=2))
        return
    if not name or not as_email:
        console.print("[red]give a tool NAME and --as EMAIL (or --list)[/red]")
        raise typer.Exit(2)
    try:
        arguments = json.loads(input_json)
    except ValueError as exc:
        print(json.dumps({"error": f"--input is not JSON: {exc}"}))
        raise typer.Exit(2) from exc
    outcome = asyncio.run(run_tool(_settings(), name, as_email, arguments, customer))
    print(json.dumps(outcome, indent=2, default=str))
    if "error" in outcome:
        raise typer.Exit(1)


@cli.command()
def run(
    workers: int = typer.Option(1, help="Worker processes"),
    host: str = typer.Option(None),
    port: int = typer.Option(None),
) -> None:
    """Start the database (embedded unless DATABASE_URL), migrate, seed if empty, and serve."""
    import uvicorn

    settings = _settings()
    db = resolve_database(settings)
    _migrate(db)
    _seed(db, only_if_empty=True)
    host, port = host or settings.host, port or settings.port
    console.print(
        f"[bold green]chatbranch[/bold green] serving on http://{host}:{port}  "
        f"(API docs: http://{host}:{port}/schema)\n"
        "get a token:  .venv/bin/chatbranch token --email csm@demo.example\n"
        "users:        .venv/bin/chatbranch users"
    )
    if settings.database_url:
        os.environ.setdefault("DATABASE_URL", settings.database_url)
    uvicorn.run(
        "app.main:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )
    db.stop()


def _register_usage_commands() -> None:
    from app.usage.cli import audit_cli, usage_command

    cli.command(name="usage")(usage_command)
    cli.add_typer(audit_cli, name="audit")


_register_usage_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
