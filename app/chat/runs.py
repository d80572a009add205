"""Runs: replies produced independently of any HTTP connection, resumable from any worker.

Each worker keeps the runs it executes in memory (live followers read them at once) and a
background flusher writes their stream parts to `run_events` in batches, together with a
heartbeat, and picks up stop requests made on other workers. A sweeper ends runs whose worker
stopped heart-beating (crash, kill -9) through `recover_stale_runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.chat import stream
from app.db.driver import statement_driver, tenant_driver
from app.db.tenancy import set_tenant

log = logging.getLogger(__name__)
FINAL_STATUSES = frozenset({"complete", "stopped", "interrupted", "error"})
# Stored parts every local reader has passed leave memory in batches, but the newest stay: a
# long reply then holds a window of parts, not all of them. Readers joining later read the
# released ones from the database.
KEPT_PARTS = 16
StoredReader = Callable[[int, int], AsyncIterator[tuple[int, str]]]
_STORED_PARTS = text("SELECT seq, part::text FROM run_events WHERE run_id = :r"
                     " AND seq > :after AND seq <= :upto ORDER BY seq")
LAST_SEQ = 2**31 - 1  # no upper bound (seq is an int column)


# Parts ($1 runs, $2 seqs, $3 JSON texts) stored once each: the leading CTE of a reply's
# ending (a flush stores them the same way, in `flush_run_events`). Both take the rows in
# (run, seq) order: a flush and an ending storing the same parts in two orders deadlock
# (migration 0014).
_ADD_PARTS = """
WITH added AS (
  INSERT INTO run_events (run_id, seq, tenant_id, part)
  SELECT r, s, current_setting('app.tenant_id')::uuid, p::jsonb
  FROM unnest($1::uuid[], $2::int[], $3::text[]) AS x(r, s, p)
  ORDER BY r, s
  ON CONFLICT DO NOTHING RETURNING run_id
)"""
# A reply's ending, as the leading CTEs of the statement that makes its message final: the
# run's last parts ($1-$3), the wake-up of followers elsewhere and the run's end ($4 run, $5
# status, $6 last part, $7 error). The one-time filters order them: the parts go in before the
# run's row is locked, as in a flush (the other order deadlocks with a flush writing the same
# parts), and the statement's own UPDATE can wait for `ended` the same way.
ENDING_CTES = _ADD_PARTS + """, woken AS (
  SELECT pg_notify('chatbranch_runs', $4::uuid::text) WHERE (SELECT count(*) FROM added) >= 0
), ended AS (
  UPDATE thread_runs SET status = $5, finished_at = now(), last_event_seq = $6, error_message = $7
  WHERE id = $4 AND (SELECT count(*) FROM woken) >= 0 RETURNING 1
)
"""
# The flusher's one statement (migrations 0013-0015): in its own transaction, scoped to the tenant
# inside, it stores new parts (idempotent), wakes readers on other workers, records the runs'
# heartbeat and last stored part, and says which runs were asked to stop.
_FLUSH = "SELECT id, stop_requested FROM flush_run_events($1, $2, $3, $4, $5, $6)"
# Why a run whose ending failed was ended by recovery; readers are told it (migration 0017).
ENDING_NOT_SAVED = "its ending could not be saved"


@dataclass
class RunHandle:
    """A run executing in this worker: its parts so far and how to stop it."""

    run_id: uuid.UUID
    thread_id: uuid.UUID
    tenant_id: uuid.UUID
    order: int = 0  # the user message's sequence number: runs of a thread go in this order
    parts: list[str] = field(default_factory=list)  # JSON of parts base+1.., encoded at emit
    base: int = 0  # parts released from memory (all stored); parts[0] is part base + 1
    flushed: int = 0
    done: bool = False
    status: str = "queued"
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    consumer: asyncio.Task[None] | None = None  # the provider call being read, if any
    heartbeat_at: float = 0.0
    claimed: Any = None  # set when the post transaction already started the run (first in line)
    followers: int = 0  # live readers of this run here (SSE clients)
    born: float = field(default_factory=time.monotonic)
    on_emit: Callable[[], None] | None = None  # asks the flusher to store parts now
    wants_payload: bool = False  # a JSON client waits here: the ending builds its answer
    ending: bool = False  # its ending is storing its last parts itself: the flusher keeps off
    payload: dict[str, Any] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _positions: list[list[int]] = field(default_factory=list)  # each local reader's last seq

    @property
    def count(self) -> int:
        """How many parts the run has emitted (its last sequence number)."""
        return self.base + len(self.parts)

    def part(self, seq: int) -> str:
        """The JSON of part `seq`, still in memory."""
        return self.parts[seq - 1 - self.base]

    def emit(self, part: dict[str, Any]) -> int:
        """Append a part; followers see it once it is stored. Returns its sequence number.

        The part is encoded here, once: the flusher stores that text and every reader sends
        it, and a short string takes a third of the memory of the dict it came from.
        """
        return self.emit_text(stream.encode(part))

    def emit_text(self, text: str) -> int:
        """Append a part already encoded (see `emit`)."""
        self.parts.append(text)
        if len(self.parts) >= 2 * KEPT_PARTS:
            self._release()
        if self.followers and self.on_emit is not None:
            self.on_emit()  # someone is reading: store it now, not at the next tick
        return self.count

    def _release(self) -> None:
        """Drop stored parts every local reader has passed, keeping the newest KEPT_PARTS."""
        keep_from = min([self.flushed, self.count - KEPT_PARTS]
                        + [position[0] for position in self._positions])
        if keep_from > self.base:
            del self.parts[:keep_from - self.base]
            self.base = keep_from

    def request_stop(self) -> None:
        """Stop the reply: its provider call now, or before its next one."""
        self.stop.set()
        if self.consumer is not None:
            self.consumer.cancel()

    def mark_stored(self, upto: int) -> None:
        """Parts up to `upto` are in the database: release them to followers."""
        if upto > self.flushed:
            self.flushed = upto
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self, status: str) -> None:
        """No more parts will come."""
        self.done, self.status = True, status
        self._wake()
        self.finished.set()

    async def follow(self, after: int = 0, stored: StoredReader | None = None
                     ) -> AsyncIterator[tuple[int, str]]:
        """Yield (seq, part JSON) after `after` as they are stored, until the run is done.

        Only stored parts are released: a crash can then never take back a part a client saw,
        and recovery's closing parts never reuse a sequence number a client already has.
        Parts already gone from memory come from `stored(after, upto)` (the database).
        """
        position = [after]  # registered first: nothing this reader still needs is released
        self._positions.append(position)
        self.followers += 1
        if self.count > self.flushed and self.on_emit is not None:
            self.on_emit()
        try:
            if position[0] < self.base:
                if stored is None:
                    raise RuntimeError("earlier parts left memory and no reader of them was given")
                async for seq, part in stored(position[0], self.base):
                    position[0] = seq
                    yield seq, part
                if position[0] < self.base:
                    raise RuntimeError(f"parts {position[0] + 1}..{self.base} are not stored")
            while True:
                while position[0] < self.flushed:
                    position[0] += 1
                    yield position[0], self.part(position[0])
                if self.done and position[0] >= self.flushed:
                    return
                await self._changed.wait()
        finally:
            self.followers -= 1
            self._positions.remove(position)


def due_for_flush(handle: RunHandle, now: float, young: float) -> bool:
    """Whether a flush should store this run's new parts or beat its heart now.

    Not while the run's ending stores its last parts: until that commits they are not final
    (a failed ending takes them back). New parts go out at once, except for a run born after
    `young` that nobody here reads: a JSON reply of a fast model ends (and stores its parts
    itself) before a tick or two has passed, and a flush of it first would be a transaction for
    nothing. An idle run only needs its heartbeat now and then.
    """
    if handle.ending or (handle.followers == 0 and handle.born > young):
        return False
    return handle.count > handle.flushed or now - handle.heartbeat_at > 1.0


def _unstored(handles: list[RunHandle]) -> tuple[list[uuid.UUID], list[int], list[str],
                                                 list[tuple[RunHandle, int]]]:
    """(run ids, sequence numbers, texts) of the parts not yet stored; each handle's end."""
    runs: list[uuid.UUID] = []
    seqs: list[int] = []
    texts: list[str] = []
    marks: list[tuple[RunHandle, int]] = []
    for handle in handles:
        end = handle.count
        for seq in range(handle.flushed + 1, end + 1):
            runs.append(handle.run_id)
            seqs.append(seq)
            texts.append(handle.part(seq))
        marks.append((handle, end))
    return runs, seqs, texts, marks


class RunManager:
    """This worker's runs, the event flusher and the stale-run sweeper."""

    def __init__(self, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], *,
                 flush_interval_s: float = 0.1, stale_after_s: float = 30.0) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.flush_interval_s = flush_interval_s
        self.stale_after_s = stale_after_s
        self.handles: dict[uuid.UUID, RunHandle] = {}
        self._thread_changed: dict[uuid.UUID, asyncio.Event] = {}
        self._background: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._flush_failure_logged_at = float("-inf")
        self._flush_wanted = asyncio.Event()

    async def start(self) -> None:
        """Recover runs left by dead workers, then start the flusher and sweeper."""
        await self.recover_stale()
        self._background = [asyncio.create_task(self._flush_loop(), name="run-flusher"),
                            asyncio.create_task(self._sweep_loop(), name="run-sweeper")]

    async def shutdown(self) -> None:
        """Stop local runs (each records its ending), flush, and stop background tasks."""
        for handle in list(self.handles.values()):
            if handle.task and not handle.task.done():
                handle.task.cancel()
        tasks = [h.task for h in self.handles.values() if h.task]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.flush()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def launch(self, handle: RunHandle, body: Callable[[RunHandle], Awaitable[None]]) -> None:
        """Run `body` as a task owned by the manager, not by any request."""
        self.handles[handle.run_id] = handle
        handle.on_emit = self._flush_wanted.set

        async def runner() -> None:
            failed = False
            try:
                if handle.claimed is None:  # a claimed run was first in line when posted
                    await self._wait_for_turn(handle)
                await body(handle)
            except Exception:  # its ending could not be written (the body ends all else)
                failed = True
                log.exception("reply of run %s failed before its ending", handle.run_id)
            finally:
                if not handle.done:
                    await self.flush()  # store what the reply produced before it ends
                    handle.close("interrupted")
                self.handles.pop(handle.run_id, None)
                self._wake_thread(handle.thread_id)
            if failed:
                await self._end_now(handle)

        handle.task = asyncio.create_task(runner(), name=f"run-{handle.run_id}")

    async def _end_now(self, handle: RunHandle) -> None:
        """End a run whose ending failed as crash recovery does (its text so far, an error and
        a finish part for its readers), now rather than once its heartbeat has gone stale."""
        try:
            async with tenant_driver(self.engine, handle.tenant_id) as db:
                await db.execute("UPDATE thread_runs SET heartbeat_at = '-infinity',"
                                 " error_message = $2"
                                 " WHERE id = $1 AND status IN ('queued', 'running')",
                                 handle.run_id, ENDING_NOT_SAVED)
            await self.recover_stale()
        except Exception:  # the database is away too: the sweeper ends it later
            log.exception("could not end run %s now; the stale-run sweeper will", handle.run_id)

    def _wake_thread(self, thread_id: uuid.UUID) -> None:
        """A run of the thread ended here: let the next one check whether it is its turn."""
        changed = self._thread_changed.pop(thread_id, None)
        if changed is not None:
            changed.set()

    async def _wait_for_turn(self, handle: RunHandle) -> None:
        """One reply at a time per thread, in creation order, also across workers.

        The database decides whose turn it is (runs are created under the thread's row lock, so
        their order is the order of the messages); a local run ending wakes the waiters at once,
        and a short poll covers runs on other workers.
        """
        while True:
            changed = self._thread_changed.setdefault(handle.thread_id, asyncio.Event())
            if any(h.thread_id == handle.thread_id and h.order < handle.order and not h.done
                   for h in self.handles.values()):
                await changed.wait()  # an earlier run of this thread runs here: no query needed
                continue
            async with self.sessionmaker() as session, session.begin():
                await set_tenant(session, handle.tenant_id)
                earlier = (await session.execute(text(
                    "SELECT 1 FROM thread_runs r, thread_runs mine WHERE mine.id = :run"
                    " AND r.thread_id = mine.thread_id AND r.status IN ('queued', 'running')"
                    " AND (r.created_at, r.id) < (mine.created_at, mine.id) LIMIT 1"),
                    {"run": handle.run_id})).first()
            if earlier is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=0.25)

    def request_local_stop(self, run_id: uuid.UUID) -> bool:
        """Stop a run of this worker at once; False when it runs elsewhere (or not at all)."""
        handle = self.handles.get(run_id)
        if handle is None:
            return False
        handle.request_stop()
        return True

    async def flush(self) -> None:
        """Write new parts and heartbeats of every local run; pick up remote stop requests."""
        async with self._flush_lock:
            by_tenant: dict[uuid.UUID, list[RunHandle]] = defaultdict(list)
            now = asyncio.get_running_loop().time()
            young = time.monotonic() - 2 * self.flush_interval_s
            for handle in list(self.handles.values()):
                if due_for_flush(handle, now, young):
                    handle.heartbeat_at = now
                    by_tenant[handle.tenant_id].append(handle)
            for tenant_id, handles in by_tenant.items():
                try:
                    await self._flush_tenant(tenant_id, handles)
                except Exception:  # the next tick retries; a run must not die of a flush
                    if now - self._flush_failure_logged_at > 5.0:  # not 50 tracebacks a second
                        self._flush_failure_logged_at = now
                        log.exception("flushing run events failed (retrying every tick)")

    async def _flush_tenant(self, tenant_id: uuid.UUID, handles: list[RunHandle]) -> None:
        """One tenant's new parts and heartbeats in one round trip on the driver itself.

        This sits between every token and its readers (they see only stored parts), so it
        skips the ORM and is one statement, its own transaction: `flush_run_events` scopes it
        to the tenant and lets its commit skip the wait for the disk. A worker crash cannot
        lose a committed part, and the reply's ending (its text, usage and last parts) is
        committed durably by `_finish`.
        """
        runs, seqs, payloads, marks = _unstored(handles)
        async with statement_driver(self.engine) as db:
            stopped = await db.fetch(_FLUSH, tenant_id, runs, seqs, payloads,
                                     [h.run_id for h, _ in marks], [end for _, end in marks])
        for handle, end in marks:
            handle.mark_stored(end)
        for run_id, stop_requested in stopped:
            if stop_requested and run_id in self.handles:
                self.handles[run_id].request_stop()

    @staticmethod
    def ending_args(handle: RunHandle, status: str, error: str | None) -> list[Any]:
        """The parameters $1-$7 of ENDING_CTES: the run's unstored parts and its end."""
        runs, seqs, payloads, _ = _unstored([handle])
        return [runs, seqs, payloads, handle.run_id, status, handle.count, error]

    async def _flush_loop(self) -> None:
        """Flush every tick, and at once when a run with live readers emits.

        Parts emitted during a flush go in the next one, so under load flushes batch themselves;
        a run nobody reads (a JSON reply) waits for the tick.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), self.flush_interval_s)
            self._flush_wanted.clear()
            if self.handles:
                await self.flush()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.stale_after_s / 3))
            try:
                await self.recover_stale()
            except Exception:
                log.exception("stale run recovery failed")

    async def recover_stale(self) -> int:
        """End runs whose worker stopped heart-beating; returns how many."""
        async with self.engine.begin() as conn:
            count = (await conn.execute(text("SELECT recover_stale_runs(:s)"),
                                        {"s": int(self.stale_after_s)})).scalar_one()
        if count:
            log.warning("recovered %d runs left by a stopped worker", count)
        return int(count)

    async def follow(self, tenant_id: uuid.UUID, run_id: uuid.UUID, after: int = 0
                     ) -> AsyncIterator[tuple[int, str]]:
        """Parts of a run after `after`: live from memory here, else from the database."""
        handle = self.handles.get(run_id)
        if handle is not None:
            async for item in handle.follow(after, self._stored_reader(tenant_id, run_id)):
                yield item
            return
        async for item in self._follow_stored(tenant_id, run_id, after):
            yield item

    def _stored_reader(self, tenant_id: uuid.UUID, run_id: uuid.UUID) -> StoredReader:
        """Reads a run's stored parts after one sequence number up to another."""
        async def stored(after: int, upto: int) -> AsyncIterator[tuple[int, str]]:
            async with self.sessionmaker() as session, session.begin():
                await set_tenant(session, tenant_id)
                rows = (await session.execute(
                    _STORED_PARTS, {"r": run_id, "after": after, "upto": upto})).all()
            for seq, part in rows:
                yield seq, part

        return stored

    async def _follow_stored(self, tenant_id: uuid.UUID, run_id: uuid.UUID, after: int
                             ) -> AsyncIterator[tuple[int, str]]:
        last = after
        while True:
            async with self.sessionmaker() as session, session.begin():
                await set_tenant(session, tenant_id)
                rows = (await session.execute(
                    _STORED_PARTS, {"r": run_id, "after": last, "upto": LAST_SEQ})).all()
                state = (await session.execute(text(
                    "SELECT status, last_event_seq FROM thread_runs WHERE id = :r"),
                    {"r": run_id})).first()
            for seq, part in rows:
                if seq != last + 1:
                    break  # a gap: the writer's batch is not committed yet; read again
                last = seq
                yield seq, part
            if state is None or (state.status in FINAL_STATUSES and last >= state.last_event_seq):
                return
            handle = self.handles.get(run_id)
            if handle is not None:  # the run moved here (cannot today, but stay correct)
                async for item in handle.follow(last, self._stored_reader(tenant_id, run_id)):
                    yield item
                return
            await asyncio.sleep(0.05 if rows else 0.1)
