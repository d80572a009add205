"""Alembic environment: runs revisions on an async engine as the schema owner."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _owner_url() -> str:
    url = config.attributes.get("owner_url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from app.db.engine import resolve_database
    from app.settings import get_settings

    return resolve_database(get_settings()).owner_url


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_owner_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `chatbranch migrate`")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
