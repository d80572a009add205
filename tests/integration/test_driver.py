"""The turn's statements on the driver: tenant scope, all-or-nothing, pooled connections left
clean, and a reply's ending that cannot deadlock with the flusher."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text

from app.chat import stream as parts
from app.chat.executor import _END_REPLY
from app.chat.models import Thread
from app.chat.runs import _FLUSH, RunHandle, RunManager, _unstored
from app.db.driver import (
    detached,
    driver_of,
    row,
    select_list,
    statement_driver,
    tenant_driver,
)
from app.db.engine import create_engine, create_sessionmaker
from app.db.tenancy import tenant_transaction
from tests.integration.conftest import running_run


@pytest.fixture
async def one_connection(database):
    """A runtime-role engine whose pool holds a single connection."""
    engine = create_engine(database.app_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def insert_refusal(db, tenant: uuid.UUID, thread_id: uuid.UUID) -> None:
    """A row any tenant may write (a refused turn's), to see whether a transaction kept it."""
    await db.execute("INSERT INTO usage_refusals (tenant_id, thread_id, scope, limit_kind)"
                     " VALUES ($1, $2, 'thread', 'tokens')", tenant, thread_id)


async def refusals_stored(owner_engine, thread_id: uuid.UUID) -> int:
    async with owner_engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM usage_refusals"
                                        " WHERE thread_id = :t"), {"t": thread_id})).scalar()


async def customer_ids(db) -> set[uuid.UUID]:
    return {r["id"] for r in await db.fetch("SELECT id FROM customers")}


async def test_each_transaction_sees_only_its_tenant_through_one_pooled_connection(
        one_connection, owner_engine, demo, other) -> None:
    async with owner_engine.connect() as conn:
        owned = {t: set((await conn.execute(text("SELECT id FROM customers WHERE tenant_id = :t"),
                                            {"t": t})).scalars()) for t in (demo, other)}
    assert owned[demo] and owned[other]
    for tenant in (demo, other, demo, other):
        async with tenant_driver(one_connection, tenant) as db:
            assert await customer_ids(db) == owned[tenant]
    async with one_connection.connect() as conn:  # the scope ended with its transaction
        left = (await conn.execute(text("SELECT current_setting('app.tenant_id', true)"))).scalar()
        assert not left
        assert await customer_ids((await conn.get_raw_connection()).driver_connection) == set()


async def test_a_failed_transaction_writes_nothing_and_leaves_the_connection_clean(
        one_connection, owner_engine, demo) -> None:
    thread_id = uuid.uuid4()

    async def insert_then_fail() -> None:
        async with tenant_driver(one_connection, demo) as db:
            await insert_refusal(db, demo, thread_id)
            raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError, match="after the insert"):
        await insert_then_fail()
    assert await refusals_stored(owner_engine, thread_id) == 0
    async with tenant_driver(one_connection, demo) as db:  # the same connection, usable again
        assert not await db.fetchval("SELECT 1 FROM usage_refusals WHERE thread_id = $1",
                                     thread_id)


@pytest.mark.parametrize("hostile", [
    "00000000-0000-0000-0000-000000000000', true); DROP TABLE customers; --",
    "' OR 1=1 --",
    "",
])
async def test_ids_that_are_not_uuids_never_reach_the_database(
        one_connection, owner_engine, demo, hostile) -> None:
    with pytest.raises(ValueError):
        async with tenant_driver(one_connection, hostile):
            pass
    with pytest.raises(ValueError):
        async with tenant_driver(one_connection, demo, user_id=hostile or "x"):
            pass
    async with owner_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM customers"))).scalar()


async def test_a_connection_killed_mid_transaction_is_not_handed_out_again(
        one_connection, owner_engine, demo) -> None:
    killed: list[int] = []

    async def kill_own_backend() -> None:
        async with tenant_driver(one_connection, demo) as db:
            killed.append(await db.fetchval("SELECT pg_backend_pid()"))
            async with owner_engine.connect() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": killed[0]})
            await db.fetchval("SELECT 1")

    # Which error the driver raises depends on when it notices the server went away.
    with pytest.raises(Exception):  # noqa: B017
        await kill_own_backend()
    async with tenant_driver(one_connection, demo) as db:
        assert await db.fetchval("SELECT pg_backend_pid()") != killed[0]
        assert await customer_ids(db)


async def test_the_driver_of_a_session_needs_its_transaction_begun(app_engine, demo) -> None:
    sessions = create_sessionmaker(app_engine)
    async with sessions() as session:
        with pytest.raises(RuntimeError, match="has not begun"):
            await driver_of(session)
    async with tenant_transaction(sessions, demo) as session:
        assert await customer_ids(await driver_of(session))


async def test_rows_read_on_the_driver_build_the_same_objects_as_the_orm(
        app_engine, demo, new_thread) -> None:
    thread_id = uuid.UUID(await new_thread())
    sessions = create_sessionmaker(app_engine)
    async with tenant_transaction(sessions, demo) as session:
        loaded = (await session.scalars(select(Thread).where(Thread.id == thread_id))).one()
        found = await row(await driver_of(session),
                          f"SELECT {select_list(Thread, 't')} FROM workflow_chat_threads t"
                          " WHERE t.id = $1", thread_id)
    assert found is not None
    assert found.step_id == loaded.step_id
    with pytest.raises(AttributeError):
        _ = found.no_such_column
    built = detached(Thread, found)
    for column in Thread.__table__.columns:
        assert getattr(built, column.key) == getattr(loaded, column.key), column.key


async def test_a_replys_ending_waits_for_a_flush_of_the_same_parts_without_deadlock(
        app_engine, owner_engine, demo, new_thread) -> None:
    """The flusher and a reply's ending both store parts, then touch the run's row. Were the
    ending to lock the run first, a flush holding the same parts would deadlock with it."""
    thread_id = uuid.UUID(await new_thread())
    run_id, reply_id = await running_run(owner_engine, demo, thread_id)
    handle = RunHandle(run_id=run_id, thread_id=thread_id, tenant_id=demo)
    for name in ("start", "finish-step", "finish"):
        handle.emit(parts.simple(name))
    async with owner_engine.connect() as owner:
        flusher = (await owner.get_raw_connection()).driver_connection
        flush = flusher.transaction()
        await flush.start()
        await flusher.execute(
            "INSERT INTO run_events (run_id, seq, tenant_id, part) VALUES ($1, 1, $2, '{}'),"
            " ($1, 2, $2, '{}')", run_id, demo)

        async def end_the_reply() -> None:
            async with tenant_driver(app_engine, demo) as db:
                ended = await row(db, _END_REPLY,
                                  *RunManager.ending_args(handle, "complete", None),
                                  reply_id, "the answer", "text", "{}")
                assert ended is not None and ended.content == "the answer"

        ending = asyncio.create_task(end_the_reply())
        await asyncio.sleep(0.3)  # the ending now waits on the flush's uncommitted parts
        assert not ending.done()
        await flusher.execute("SET LOCAL lock_timeout = '3s'")
        await flusher.execute("UPDATE thread_runs SET heartbeat_at = now() WHERE id = $1", run_id)
        await flush.commit()
        await asyncio.wait_for(ending, 10)
    async with owner_engine.connect() as conn:
        status, last = (await conn.execute(text(
            "SELECT status, last_event_seq FROM thread_runs WHERE id = :r"), {"r": run_id})).one()
        stored = (await conn.execute(text(
            "SELECT count(*) FROM run_events WHERE run_id = :r"), {"r": run_id})).scalar()
        message = (await conn.execute(text(
            "SELECT status, content FROM workflow_chat_messages WHERE id = :m"),
            {"m": reply_id})).one()
    assert (status, last, stored) == ("complete", 3, 3)
    assert tuple(message) == ("complete", "the answer")


async def flush_in_given_order(engine, *args: Any) -> list:
    """`flush_run_events(*args)` under a plan that keeps its arrays' order (a nested loop, no
    hash or merge join): only an explicit sort in the function can change it."""
    async with statement_driver(engine) as db:
        # DISCARD PLANS: the function's generic plan, once made on this connection, would not
        # be made again under the new settings.
        await db.execute("SET enable_hashjoin = off; SET enable_mergejoin = off; DISCARD PLANS")
        try:
            return await db.fetch(_FLUSH, *args)
        finally:
            await db.execute("RESET enable_hashjoin; RESET enable_mergejoin")


async def test_a_flush_and_a_replys_ending_storing_the_same_parts_never_deadlock(
        four_connections, owner_engine, demo, new_thread) -> None:
    """Both store a run's parts, each waiting on parts the other holds uncommitted. They take
    them in one order (run, then sequence number), so one waits for the other; in opposite
    orders each would hold a part the other needs, and PostgreSQL would kill one of them.

    The flush is handed its parts newest first, as a hash join in its plan once handed them
    back (the cause of a reply that never finished in CI): it must store them in order anyway.
    """
    thread_id = uuid.UUID(await new_thread())
    run_id, reply_id = await running_run(owner_engine, demo, thread_id)
    handle = RunHandle(run_id=run_id, thread_id=thread_id, tenant_id=demo)
    for name in ("start", "start-step", "finish-step", "finish"):
        handle.emit(parts.simple(name))
    runs, seqs, texts, _ = _unstored([handle])
    runs, seqs, texts = runs[::-1], seqs[::-1], texts[::-1]

    async def end_the_reply() -> None:
        async with tenant_driver(four_connections, demo) as db:
            await row(db, _END_REPLY, *RunManager.ending_args(handle, "complete", None),
                      reply_id, "the answer", "text", "{}")

    async def flush() -> None:
        await flush_in_given_order(four_connections, demo, runs, seqs, texts, [run_id],
                                   [len(seqs)])

    async with owner_engine.connect() as owner:
        # A third transaction holds part 3 uncommitted, so both writers stop mid-way: each
        # holding what it stored before reaching part 3, then both go on at once.
        blocker = (await owner.get_raw_connection()).driver_connection
        held = blocker.transaction()
        await held.start()
        await blocker.execute("INSERT INTO run_events (run_id, seq, tenant_id, part)"
                              " VALUES ($1, 3, $2, '{}')", run_id, demo)
        writers = [asyncio.create_task(end_the_reply()), asyncio.create_task(flush())]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in writers)
        await held.rollback()
        done, _ = await asyncio.wait(writers, timeout=10)
    assert len(done) == 2
    assert [w.exception() for w in writers] == [None, None]  # no DeadlockDetectedError
    async with owner_engine.connect() as conn:
        status, stored = (await conn.execute(text(
            "SELECT status, (SELECT count(*) FROM run_events WHERE run_id = :r)"
            " FROM thread_runs WHERE id = :r"), {"r": run_id})).one()
    assert (status, stored) == ("complete", 4)


async def test_a_flush_locks_the_runs_it_beats_in_the_order_a_stop_request_does(
        four_connections, owner_engine, demo, new_thread) -> None:
    """A stop request updates a thread's unfinished runs in id order (the ORM's order). A flush
    beating the same runs must lock them in that order too, or each holds a run the other
    needs. The flush is handed them in the other order, under a plan that keeps it."""
    low, high = sorted([(await running_run(owner_engine, demo, uuid.UUID(await new_thread())))[0]
                        for _ in range(2)])

    async with tenant_driver(four_connections, demo) as stop:
        await stop.execute("UPDATE thread_runs SET stop_requested = true WHERE id = $1", low)
        flushing = asyncio.create_task(
            flush_in_given_order(four_connections, demo, [], [], [], [high, low], [0, 0]))
        await asyncio.sleep(0.3)
        assert not flushing.done()  # it waits for `low`, which the stop holds
        await stop.execute("UPDATE thread_runs SET stop_requested = true WHERE id = $1", high)
    beaten = await asyncio.wait_for(flushing, 10)
    assert sorted(tuple(r) for r in beaten) == [(low, True), (high, True)]


async def test_a_transaction_cancelled_mid_statement_writes_nothing_and_frees_its_connection(
        one_connection, owner_engine, demo) -> None:
    thread_id = uuid.uuid4()
    started = asyncio.Event()

    async def slow_insert() -> None:
        async with tenant_driver(one_connection, demo) as db:
            await insert_refusal(db, demo, thread_id)
            started.set()
            await db.execute("SELECT pg_sleep(5)")

    task = asyncio.create_task(slow_insert())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with tenant_driver(one_connection, demo) as db:  # the pool's only connection
        assert not await db.fetchval("SELECT 1 FROM usage_refusals WHERE thread_id = $1",
                                     thread_id)
    assert await refusals_stored(owner_engine, thread_id) == 0


async def stored_state(owner_engine, run_id: uuid.UUID) -> tuple[int, int]:
    """(parts stored, the run's last stored part) as the schema owner sees them."""
    async with owner_engine.connect() as conn:
        return tuple((await conn.execute(text(
            "SELECT (SELECT count(*) FROM run_events e WHERE e.run_id = r.id), r.last_event_seq"
            " FROM thread_runs r WHERE r.id = :r"), {"r": run_id})).one())


async def test_a_flush_in_one_tenants_name_cannot_touch_another_tenants_run(
        app_engine, owner_engine, demo, other, new_thread) -> None:
    run_id, _ = await running_run(owner_engine, demo, uuid.UUID(await new_thread()))
    part = parts.encode(parts.simple("start"))
    async with statement_driver(app_engine) as db:
        smuggled = await db.fetch(_FLUSH, other, [run_id], [1], [part], [run_id], [1])
    assert smuggled == []
    assert await stored_state(owner_engine, run_id) == (0, 0)

    async with statement_driver(app_engine) as db:
        flushed = await db.fetch(_FLUSH, demo, [run_id], [1], [part], [run_id], [1])
    assert [tuple(r) for r in flushed] == [(run_id, False)]
    assert await stored_state(owner_engine, run_id) == (1, 1)


async def test_a_flush_leaves_its_pooled_connection_unscoped(
        one_connection, owner_engine, demo, new_thread) -> None:
    """The tenant and the non-durable commit are the flush's own: the next user of the same
    connection has neither."""
    run_id, _ = await running_run(owner_engine, demo, uuid.UUID(await new_thread()))
    part = parts.encode(parts.simple("start"))
    async with statement_driver(one_connection) as db:
        await db.fetch(_FLUSH, demo, [run_id], [1], [part], [run_id], [1])
    async with statement_driver(one_connection) as db:
        tenant, commit = await db.fetchrow(
            "SELECT current_setting('app.tenant_id', true), current_setting('synchronous_commit')")
        visible = await db.fetchval("SELECT count(*) FROM run_events WHERE run_id = $1", run_id)
    assert (tenant or None, commit, visible) == (None, "on", 0)
    assert await stored_state(owner_engine, run_id) == (1, 1)


async def test_a_flush_without_a_tenant_is_refused_and_the_connection_stays_usable(
        one_connection) -> None:
    with pytest.raises(asyncpg.RaiseError, match="needs a tenant"):
        async with statement_driver(one_connection) as db:
            await db.fetch(_FLUSH, None, [], [], [], [], [])
    async with statement_driver(one_connection) as db:
        assert await db.fetchval("SELECT 1") == 1


async def test_a_flush_stamps_only_a_heartbeat_half_a_second_old_or_more(
        app_engine, owner_engine, demo, new_thread) -> None:
    """A flush stores its parts and last part every time, but rewrites the (indexed) heartbeat
    only when it is due: not one stamped within the half second, nor a run given up for
    recovery ('-infinity'). A heartbeat in the future stands for one just stamped, so the test
    does not depend on how fast the machine runs."""
    part = parts.encode(parts.simple("start"))
    beats = {"stale": "now() - interval '5 s'", "fresh": "now() + interval '1 hour'",
             "given up": "'-infinity'"}
    runs = {name: (await running_run(owner_engine, demo, uuid.UUID(await new_thread())))[0]
            for name in beats}

    async def heartbeats() -> dict[str, Any]:
        async with owner_engine.connect() as conn:
            return {name: (await conn.execute(text(
                "SELECT heartbeat_at FROM thread_runs WHERE id = :r"), {"r": run})).scalar_one()
                for name, run in runs.items()}

    async with owner_engine.begin() as conn:
        for name, beat in beats.items():
            await conn.execute(text(f"UPDATE thread_runs SET heartbeat_at = {beat}"
                                    " WHERE id = :r"), {"r": runs[name]})
    before = await heartbeats()
    ids = list(runs.values())
    async with statement_driver(app_engine) as db:
        await db.fetch(_FLUSH, demo, ids, [1] * 3, [part] * 3, ids, [1] * 3)
    after = await heartbeats()

    assert after["stale"] > before["stale"]
    assert (after["fresh"], after["given up"]) == (before["fresh"], before["given up"])
    assert [await stored_state(owner_engine, run) for run in ids] == [(1, 1)] * 3
    async with owner_engine.connect() as conn:
        config = (await conn.execute(text(
            "SELECT proconfig FROM pg_proc WHERE proname = 'flush_run_events'"))).scalar_one()
    # Planned once per connection: a flush of a few parts otherwise got a custom plan each time.
    assert "plan_cache_mode=force_generic_plan" in config
