"""Which runs a flush tick writes: new parts at once, except a young run nobody here reads."""

from __future__ import annotations

import time
import uuid

from app.chat import stream as parts
from app.chat.runs import RunHandle, due_for_flush


def handle(*, age_s: float, followers: int = 0, new_parts: int = 1) -> RunHandle:
    run = RunHandle(run_id=uuid.uuid4(), thread_id=uuid.uuid4(), tenant_id=uuid.uuid4())
    run.born = time.monotonic() - age_s
    run.heartbeat_at = 100.0
    run.followers = followers
    for _ in range(new_parts):
        run.emit(parts.simple("start-step"))
    return run


def test_a_young_run_nobody_reads_waits_for_its_own_ending() -> None:
    young = time.monotonic() - 0.04
    assert not due_for_flush(handle(age_s=0.01), 100.0, young)


def test_a_run_someone_reads_is_flushed_at_once() -> None:
    young = time.monotonic() - 0.04
    assert due_for_flush(handle(age_s=0.01, followers=1), 100.0, young)


def test_an_older_run_is_flushed_when_it_has_new_parts_or_needs_a_heartbeat() -> None:
    young = time.monotonic() - 0.04
    assert due_for_flush(handle(age_s=1.0), 100.0, young)
    assert not due_for_flush(handle(age_s=1.0, new_parts=0), 100.5, young)
    assert due_for_flush(handle(age_s=5.0, new_parts=0), 101.5, young)
