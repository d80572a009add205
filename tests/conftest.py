"""Shared fixtures: one embedded PostgreSQL per run, migrated and seeded; the app over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.tokens import TokenCodec
from app.db.embedded import EmbeddedPostgres
from app.db.engine import RUNTIME_ROLE, DatabaseUrls, create_engine
from app.db.migrate import upgrade
from app.main import create_app
from app.settings import Settings

TEST_DB = "chatbranch_test"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data folder for this test run (database, dev secret, charts)."""
    return tmp_path_factory.mktemp("chatbranch")


@pytest.fixture(scope="session")
def embedded_pg(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """The real PostgreSQL + pgvector server, started once per run."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database(embedded_pg: EmbeddedPostgres) -> DatabaseUrls:
    """A migrated and seeded test database."""
    embedded_pg.create_database(TEST_DB)
    urls = DatabaseUrls(
        owner_url=embedded_pg.url(database=TEST_DB),
        app_url=embedded_pg.url(RUNTIME_ROLE, database=TEST_DB),
    )
    upgrade(urls.owner_url)
    asyncio.run(_seed(urls.owner_url))
    return urls


async def _seed(owner_url: str) -> None:
    from app.seeding import load_seed_files, seed

    engine = create_engine(owner_url, pool_size=1)
    async with engine.begin() as conn:
        await seed(conn, load_seed_files())
    await engine.dispose()


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    """Settings for tests: a fixed secret, the local model, no pacing."""
    return Settings(
        data_dir=data_dir,
        jwt_secret="test-secret-" + "x" * 32,
        default_model="local",
        local_token_delay_ms=0,
        cors_origins=[],
    )


@pytest.fixture(scope="session")
def app(settings: Settings, database: DatabaseUrls) -> Litestar:
    """The service wired to the test database."""
    return create_app(settings, database=database)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An HTTP client running the app's lifespan once for the whole run."""
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def owner_engine(database: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    """The schema owner's engine (bypasses RLS): for arranging and inspecting rows."""
    engine = create_engine(database.owner_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def app_engine(database: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    """The runtime role's engine (RLS applies), as the service connects."""
    engine = create_engine(database.app_url, pool_size=1)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def users(owner_engine: AsyncEngine) -> dict[str, Any]:
    """Seeded users by e-mail."""
    async with owner_engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, tenant_id, role, email FROM users"))).all()
    return {row.email: row for row in rows}


@pytest.fixture(scope="session")
def token_for(settings: Settings, users: dict[str, Any]) -> Any:
    """A function returning a valid bearer token for a seeded user."""
    codec = TokenCodec(settings)

    def make(email: str) -> str:
        row = users[email]
        return codec.encode(user_id=row.id, tenant_id=row.tenant_id, role=row.role, email=row.email)

    return make


@pytest.fixture(scope="session")
def auth(token_for: Any) -> Any:
    """A function returning the Authorization header for a seeded user."""

    def headers(email: str = "csm@demo.example") -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(email)}"}

    return headers


@pytest.fixture
def unique() -> str:
    """A short unique suffix for rows a test creates."""
    return uuid.uuid4().hex[:8]
