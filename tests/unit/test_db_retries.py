"""A reply's closing write is retried when the server rolled it back, and only then."""

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from app.chat.executor import with_db_retries
from app.problems import rolled_back_by_server


async def test_an_ending_killed_to_break_a_deadlock_is_written_again() -> None:
    calls = []

    async def write() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    await with_db_retries(write)
    assert len(calls) == 2


async def test_a_constraint_violation_is_a_bug_and_is_not_retried() -> None:
    calls = []

    async def write() -> None:
        calls.append(1)
        raise asyncpg.exceptions.UniqueViolationError("duplicate key value")

    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await with_db_retries(write)
    assert len(calls) == 1


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    DBAPIError("UPDATE thread_runs", {}, asyncpg.exceptions.DeadlockDetectedError("deadlock")),
])
def test_deadlocks_and_serialization_failures_read_as_rolled_back_by_the_server(error) -> None:
    assert rolled_back_by_server(error)


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.UniqueViolationError("duplicate key value"),
    # Also class 40, but a constraint checked at commit: a bug, not a conflict.
    asyncpg.exceptions.TransactionIntegrityConstraintViolationError("violates constraint"),
    ValueError("40001 is not an SQLSTATE here"),
])
def test_other_errors_do_not(error) -> None:
    assert not rolled_back_by_server(error)
