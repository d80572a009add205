"""Process-level faults at random times (the seed fixes them): kill -9 a worker, restart the DB.

Provider faults, client cuts, resumes and stops are chosen per turn by the load itself
(soak/conversation.py); this module schedules what hits whole processes. Worker kills happen in
the first part of the run so that the restarted worker has time to warm up before its memory is
judged; every kind happens at least once, even in the 60-second run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from soak.journal import Journal
from soak.stack import Stack


@dataclass(frozen=True)
class Fault:
    """One process-level fault and when it strikes (seconds after the load starts)."""

    at: float
    kind: str  # kill-worker | restart-database
    worker: int = 0
    down_s: float = 1.0


def schedule(seconds: float, rng: random.Random) -> list[Fault]:
    """The run's process faults: about one kill and one database restart per five minutes."""
    count = max(1, round(seconds / 300))
    faults = [Fault(rng.uniform(0.1, 0.35) * seconds, "kill-worker", rng.randrange(2),
                    rng.uniform(0.2, 1.5)) for _ in range(count)]
    faults += [Fault(rng.uniform(0.35, 0.8) * seconds, "restart-database",
                     down_s=rng.uniform(0.5, 2.0)) for _ in range(count)]
    faults.sort(key=lambda f: f.at)
    spaced: list[Fault] = []
    for fault in faults:  # keep faults apart so that each one's recovery is seen on its own
        at = max(fault.at, spaced[-1].at + 8.0) if spaced else fault.at
        spaced.append(Fault(at, fault.kind, fault.worker, fault.down_s))
    return spaced


Warm = Callable[[Any], Coroutine[Any, Any, None]]


async def inject(stack: Stack, journal: Journal, faults: list[Fault], started: float,
                 load_over: asyncio.Event, warm: Warm) -> None:
    """Strike each fault at its time; a killed worker is restarted (and warmed) at once."""
    warming: list[asyncio.Task[None]] = []
    for fault in faults:
        delay = started + fault.at - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(load_over.wait(), delay)
                return  # the load ended first
            except TimeoutError:
                pass
        if fault.kind == "kill-worker":
            worker = stack.workers[fault.worker]
            await asyncio.to_thread(stack.kill_worker, worker)
            journal.faults["kill -9 worker (and restart)"] += 1
            await asyncio.sleep(fault.down_s)
            await asyncio.to_thread(stack.start_worker, worker)
            stack.note(f"worker {worker.name} restarted (incarnation {worker.incarnation})")
            warming.append(asyncio.create_task(warm(worker)))  # the next fault keeps its time
        else:
            await asyncio.to_thread(stack.restart_database, fault.down_s)
            journal.faults["database restart"] += 1
    if warming:
        await asyncio.gather(*warming, return_exceptions=True)
