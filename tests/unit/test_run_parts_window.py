"""A run keeps a window of its parts in memory: stored parts every reader has passed leave it,
and a reader that joins later gets the released ones from storage, all in order, once."""

from __future__ import annotations

import asyncio
import json
import uuid

from app.chat.runs import KEPT_PARTS, RunHandle


def new_handle() -> RunHandle:
    return RunHandle(run_id=uuid.uuid4(), thread_id=uuid.uuid4(), tenant_id=uuid.uuid4())


def emit_stored(handle: RunHandle, count: int, store: dict[int, str]) -> None:
    """Emit `count` parts, storing each as a flush would."""
    for _ in range(count):
        seq = handle.emit({"type": "text-delta", "n": handle.count + 1})
        store[seq] = handle.part(seq)
        handle.mark_stored(seq)


def reader_of(store: dict[int, str]):
    async def stored(after: int, upto: int):
        for seq in range(after + 1, upto + 1):
            yield seq, store[seq]
    return stored


def test_a_long_stored_reply_holds_only_a_window_of_parts():
    handle, store = new_handle(), {}
    for _ in range(10):
        emit_stored(handle, 100, store)
        assert len(handle.parts) < 2 * KEPT_PARTS
    assert handle.count == 1000 and handle.base >= 1000 - 2 * KEPT_PARTS
    assert handle.part(1000) == store[1000]


def test_parts_not_yet_stored_never_leave_memory():
    handle = new_handle()
    for _ in range(500):
        handle.emit({"type": "text-delta"})
    assert handle.base == 0 and len(handle.parts) == 500


async def test_a_slow_reader_keeps_what_it_has_not_read_and_a_late_one_reads_storage():
    handle, store = new_handle(), {}
    emit_stored(handle, 10, store)
    slow = handle.follow(0, reader_of(store))
    assert (await anext(slow))[0] == 1  # registered, then stalls after part 1
    emit_stored(handle, 400, store)
    assert handle.base <= 1  # everything after what the slow reader saw is still here
    got = [1] + [seq async for seq, _ in _take(slow, 409)]
    assert got == list(range(1, 411))
    emit_stored(handle, 300, store)  # nobody holds them now: they leave memory
    assert handle.base > 400
    late = handle.follow(5, reader_of(store))
    handle.close("complete")
    received = [(seq, part) async for seq, part in late]
    assert [seq for seq, _ in received] == list(range(6, 711))
    assert all(part == store[seq] for seq, part in received)
    assert json.loads(received[-1][1])["n"] == 710


async def _take(iterator, count):
    for _ in range(count):
        yield await asyncio.wait_for(anext(iterator), 1)
