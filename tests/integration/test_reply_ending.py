"""A reply's ending (its last parts, usage row and final message, in one statement) meeting a
database that rolls it back: written again when retrying can help, taken back when it cannot."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text

from app.chat import executor
from tests.integration.conftest import assert_token_invariants, running_run, thread_rows
from tests.integration.test_driver_errors import DEADLOCK
from tests.live import read_stream

ENDINGS = (executor._END_REPLY, executor._END_WITH_ROW)


def ending_that_fails(monkeypatch, thread: str, failure: str, times: int) -> list[str]:
    """The ending of a reply in `thread` meets `failure` (real SQL, a real server error) its
    first `times` runs; returns the failures raised, to count them."""
    original = executor.row
    raised: list[str] = []

    async def row(db, sql, *args, **kwargs):
        if sql in ENDINGS and len(raised) < times and str(await db.fetchval(
                "SELECT thread_id FROM thread_runs WHERE id = $1", args[3])) == thread:
            raised.append(failure)
            await db.execute(failure)
        return await original(db, sql, *args, **kwargs)

    monkeypatch.setattr(executor, "row", row)
    return raised


async def stored_parts(owner_engine, run_id: str) -> list[dict]:
    async with owner_engine.connect() as conn:
        return list((await conn.execute(text(
            "SELECT part FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id})
        ).scalars())


async def test_an_ending_chosen_as_a_deadlock_victim_is_written_again(
        http, auth, new_thread, owner_engine, monkeypatch) -> None:
    thread = await new_thread("local")
    raised = ending_that_fails(monkeypatch, thread, DEADLOCK, times=1)

    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "When does Acme renew?"})

    assert raised == [DEADLOCK]
    received = [e.part for e in events if e.part is not None]
    kinds = [p["type"] for p in received]
    assert kinds.count("finish") == 1 and kinds.count("data-usage") == 1
    assert received[-1]["type"] == "finish"
    assert received[-1]["messageMetadata"]["status"] == "complete"
    run_id = events[0].id.rsplit(":", 1)[0]
    assert await stored_parts(owner_engine, run_id) == received
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].status == "complete" and rows["messages"][-1].content
    assert len(rows["ledger"]) == 1  # one usage row, not one per attempt
    assert_token_invariants(rows)


async def test_an_ending_that_fails_for_good_ends_the_run_as_interrupted_at_once(
        http, auth, new_thread, owner_engine, monkeypatch) -> None:
    """Readers are never told 'complete' by a reply whose ending was not written, and are not
    left waiting for the stale-run sweeper either: the run ends as a crash recovery ends it."""
    thread = await new_thread("local")
    raised = ending_that_fails(monkeypatch, thread, "SELECT 1 / 0", times=1)  # not retried

    _, events = await read_stream(http, "POST", f"/api/threads/{thread}/messages",
                                  headers=auth(), json={"content": "When does Acme renew?"})

    assert raised == ["SELECT 1 / 0"]
    streamed = [e.part for e in events if e.part is not None]
    run_id = events[0].id.rsplit(":", 1)[0]
    assert await stored_parts(owner_engine, run_id) == streamed
    kinds = [p["type"] for p in streamed]
    assert "text-delta" in kinds  # the text so far stays
    assert kinds[-3:] == ["error", "data-usage", "finish"] and kinds.count("finish") == 1
    assert streamed[-1]["messageMetadata"]["status"] == "interrupted"
    # Told why: the server did not stop, the reply could not be saved.
    assert streamed[-3]["errorText"] == ("The reply was interrupted because its ending could"
                                         " not be saved. Send it again.")
    async with owner_engine.connect() as conn:
        status, reason = (await conn.execute(text(
            "SELECT status, error_message FROM thread_runs WHERE id = :r"),
            {"r": uuid.UUID(run_id)})).one()
    assert (status, reason) == ("interrupted", "its ending could not be saved")


async def waiting_on_a_lock(owner_engine, timeout_s: float = 10.0) -> None:
    """Until some transaction waits for a row another holds (read afresh each time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with owner_engine.connect() as conn:
            if (await conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"))).scalar_one():
                return
        await asyncio.sleep(0.02)
    raise AssertionError("nothing waited for a lock")


async def test_closing_a_thread_while_its_reply_ends_waits_instead_of_deadlocking(
        http, auth, new_thread, owner_engine, demo) -> None:
    """An ending writes its run, then its thread's totals; a close used to lock the thread,
    then the run, and PostgreSQL failed one of the two. Now the close waits for the ending."""
    thread = await new_thread("local")
    run, _ = await running_run(owner_engine, demo, uuid.UUID(thread))  # ending elsewhere
    try:
        async with owner_engine.connect() as ending:  # the ending's order: run, then thread
            await ending.execute(text("UPDATE thread_runs SET last_event_seq = last_event_seq"
                                      " WHERE id = :r"), {"r": run})
            closing = asyncio.create_task(http.post(f"/api/threads/{thread}/abandon",
                                                    headers=auth()))
            await waiting_on_a_lock(owner_engine)
            await ending.execute(text("UPDATE workflow_chat_threads SET total_tokens ="
                                      " total_tokens WHERE id = :t"), {"t": thread})
            await ending.commit()
        closed = await closing
        assert closed.status_code == 200, closed.text
        assert closed.json()["thread"]["status"] == "abandoned"
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text("UPDATE thread_runs SET status = 'stopped',"
                                    " finished_at = now() WHERE id = :r"), {"r": run})


async def test_a_run_whose_worker_stopped_is_still_told_the_server_stopped(
        new_thread, owner_engine, demo) -> None:
    """Recovery keeps a reason a worker gave (above) and says 'the server stopped' otherwise."""
    run, _ = await running_run(owner_engine, demo, uuid.UUID(await new_thread("local")))
    async with owner_engine.begin() as conn:  # its worker died mid-reply
        await conn.execute(text("UPDATE thread_runs SET heartbeat_at = '-infinity'"
                                " WHERE id = :r"), {"r": run})
        assert (await conn.execute(text("SELECT recover_stale_runs(30)"))).scalar_one() >= 1
    parts = await stored_parts(owner_engine, str(run))
    assert parts[-3]["errorText"] == ("The reply was interrupted because the server stopped."
                                      " Send it again.")
    async with owner_engine.connect() as conn:
        reason = (await conn.execute(text("SELECT error_message FROM thread_runs WHERE id = :r"),
                                     {"r": run})).scalar_one()
    assert reason == "the worker stopped before the reply finished"
