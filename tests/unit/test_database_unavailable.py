"""Which failures answer 503 (the database is briefly away) and which stay 500 (a bug)."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy.exc import DBAPIError

from app.problems import database_unavailable


def _wrapped(orig: BaseException) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, orig)


@pytest.mark.parametrize("orig", [
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
])
def test_a_database_that_is_away_is_unavailable(orig: BaseException) -> None:
    assert database_unavailable(_wrapped(orig))
    assert database_unavailable(orig)


def test_pool_exhaustion_is_unavailable() -> None:
    assert database_unavailable(sqlalchemy.exc.TimeoutError("QueuePool limit reached"))


@pytest.mark.parametrize("orig", [
    asyncpg.UniqueViolationError("duplicate key value"),
    asyncpg.InsufficientPrivilegeError("permission denied for table idempotency_keys"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
])
def test_a_statement_that_fails_is_a_server_error(orig: BaseException) -> None:
    assert not database_unavailable(_wrapped(orig))


def test_an_os_error_outside_the_driver_is_not_a_database_outage() -> None:
    try:
        open("/nonexistent/chart.svg")  # noqa: SIM115 - the error is the point
    except FileNotFoundError as exc:
        assert not database_unavailable(exc)
