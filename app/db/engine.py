"""Engines and session factories for the owner (migrations, seeds) and the runtime role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.embedded import EmbeddedPostgres
from app.settings import Settings

RUNTIME_ROLE = "chatbranch_app"
QUERY_ROLE = "chatbranch_query"


@dataclass
class DatabaseUrls:
    """Where the owner (schema, seeds) and the runtime role (the service) connect."""

    owner_url: str
    app_url: str
    embedded: EmbeddedPostgres | None = None

    def stop(self) -> None:
        """Stop the embedded server, if this process started it."""
        if self.embedded is not None:
            self.embedded.stop()


def resolve_database(settings: Settings) -> DatabaseUrls:
    """Use DATABASE_URL when set, else start (or reuse) the embedded PostgreSQL."""
    if settings.database_url:
        owner = _asyncpg_url(settings.database_url)
        app = settings.app_database_url or _with_user(owner, RUNTIME_ROLE, settings.app_db_password)
        return DatabaseUrls(owner_url=owner, app_url=_asyncpg_url(app))
    embedded = EmbeddedPostgres(settings.data_dir)
    embedded.start()
    return DatabaseUrls(
        owner_url=embedded.url(), app_url=embedded.url(RUNTIME_ROLE), embedded=embedded
    )


def _asyncpg_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _with_user(url: str, user: str, password: str | None) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 0,
    statement_timeout_ms: int | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """An asyncpg engine; a server-side statement timeout keeps any request from hanging."""
    server_settings = {"application_name": "chatbranch"}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        connect_args={"server_settings": server_settings},
        **kwargs,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)
