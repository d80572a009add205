"""A turn's own statements, straight on asyncpg, in a tenant-scoped transaction.

A statement through `Session.execute` costs about 80 µs of CPU (compiled-cache lookup,
parameter and result processing, two greenlet switches) where asyncpg alone costs about 15 µs,
and a session's begin and commit add about 180 µs more. A turn makes some twenty statements,
so the turn's path (post, load, finish) runs here, while SQLAlchemy keeps the pool, the schema
and every path that is not per-token or per-turn.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import asyncpg
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

Db: TypeAlias = "asyncpg.Connection[Row]"
M = TypeVar("M")


class Row(asyncpg.Record):
    """A record whose columns also read as attributes, as SQLAlchemy's rows do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@asynccontextmanager
async def tenant_driver(engine: AsyncEngine, tenant_id: uuid.UUID | str,
                        user_id: uuid.UUID | str | None = None) -> AsyncIterator[Db]:
    """A pooled connection in one transaction scoped to `tenant_id`; commits on success.

    Begin and scope go in one simple query: the ids are written into it as the text of
    parsed UUIDs, which cannot carry anything else.
    """
    settings = f"set_config('app.tenant_id', '{uuid.UUID(str(tenant_id))}', true)"
    if user_id:
        settings += f", set_config('app.user_id', '{uuid.UUID(str(user_id))}', true)"
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        db = pooled.driver_connection
        assert db is not None
        try:
            await db.execute(f"BEGIN; SELECT {settings}")
            yield db
            await db.execute("COMMIT")
        except BaseException as exc:
            # Whatever stopped it (an error, a cancellation, even during BEGIN or COMMIT), the
            # connection goes back clean or not at all: SQLAlchemy cannot roll back a
            # transaction it did not begin.
            try:
                if db.is_closed():
                    raise ConnectionError("the connection closed inside the transaction")
                await db.execute("ROLLBACK")
            except BaseException:
                await _discard(engine, connection, pooled, exc)
            raise


@asynccontextmanager
async def statement_driver(engine: AsyncEngine) -> AsyncIterator[Db]:
    """A pooled connection for statements that are each their own transaction (no BEGIN).

    For a call that scopes itself (`flush_run_events` sets its tenant locally): one round trip
    where `tenant_driver` takes three. A server error rolls the statement back by itself; a
    cancellation or a lost connection discards the connection.
    """
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        db = pooled.driver_connection
        assert db is not None
        try:
            yield db
        except BaseException as exc:
            if db.is_closed() or not isinstance(exc, Exception):
                await _discard(engine, connection, pooled, exc)
            raise


async def _discard(engine: AsyncEngine, connection: AsyncConnection, pooled: Any,
                   exc: BaseException) -> None:
    """Keep a connection the pool cannot trust from being handed out again."""
    if pooled.driver_connection.is_closed() and isinstance(exc, Exception):
        # Lost: the server likely restarted, taking the pool's other connections too. Mark
        # every one made before now stale, to be replaced at checkout, as SQLAlchemy does on a
        # disconnect (never on a cancellation), by this same private call; the public dispose()
        # would replace the pool per failure.
        engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
    await connection.invalidate()


async def driver_of(session: AsyncSession | AsyncConnection) -> Db:
    """The driver connection under a session (or connection) whose transaction has begun
    (set_tenant did)."""
    connection = await session.connection() if isinstance(session, AsyncSession) else session
    db = (await connection.get_raw_connection()).driver_connection
    if db is None or not db.is_in_transaction():
        raise RuntimeError("the session's transaction has not begun; scope it first")
    return db


async def rows(db: Db, sql: str, *args: Any) -> list[Row]:
    """Every row of a statement."""
    return await db.fetch(sql, *args, record_class=Row)


async def row(db: Db, sql: str, *args: Any) -> Row | None:
    """The first row of a statement, or None."""
    return await db.fetchrow(sql, *args, record_class=Row)


_COLUMNS: dict[type[Any], tuple[tuple[str, str], ...]] = {}


def mapped_columns(model: type[Any]) -> tuple[tuple[str, str], ...]:
    """(attribute, column) pairs of an ORM model, to read its rows on the driver."""
    known = _COLUMNS.get(model)
    if known is None:
        known = _COLUMNS[model] = tuple((attr.key, attr.columns[0].name)
                                        for attr in sa_inspect(model).column_attrs)
    return known


def select_list(model: type[Any], alias: str, prefix: str = "") -> str:
    """`alias.column AS prefix+attribute, ...` for every column of `model`."""
    return ", ".join(f"{alias}.{column} AS {prefix}{attr}"
                     for attr, column in mapped_columns(model))


def detached(model: type[M], found: Row, prefix: str = "") -> M:
    """An ORM object, in no session, from a row read with `select_list(model, _, prefix)`."""
    return model(**{attr: found[prefix + attr] for attr, _ in mapped_columns(model)})
