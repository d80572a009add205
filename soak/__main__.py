"""`python -m soak [--seconds N] [--seed S]`: run the soak and print its invariant table.

Exits 0 when every invariant holds, 1 when one does not, 2 when the stack could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import sys
import time
from typing import Any

from sqlalchemy import text

from soak import actors, checks, report
from soak.client import Api
from soak.faults import inject, schedule
from soak.journal import Journal
from soak.setup import owner_engine, prepare
from soak.stack import SECRETS, STALE_AFTER_S, Canary, Stack

EXPECTED_ENDPOINTS = ("/api/usage", "/api/usage/export", "/api/usage/threads/{thread_id}",
                      "/api/knowledge/documents", "/api/knowledge/search")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SOAK_SECONDS", "600")),
                        help="how long the load runs (default: $SOAK_SECONDS or 600)")
    parser.add_argument("--seed", type=int, default=None, help="fixes faults and choices")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    print(f"soak: {args.seconds:.0f}s, seed {seed} (rerun with --seed {seed})", flush=True)
    return asyncio.run(soak(args.seconds, seed, args.keep))


async def soak(seconds: float, seed: int, keep: bool) -> int:
    """Start the stack, run the load with its faults, settle, check, report."""
    rng = random.Random(seed)
    canary = Canary()
    await canary.start()
    stack = Stack()
    engine = None
    api = None
    try:
        try:
            await asyncio.to_thread(stack.start)
        except Exception as exc:
            print(f"soak: the stack did not start: {exc}", file=sys.stderr)
            return 2
        stack.note(f"workers A :{stack.workers[0].port} and B :{stack.workers[1].port} up; "
                   f"data in {stack.work}")
        engine = owner_engine(stack)
        world = await prepare(stack, engine, canary.port)
        journal = Journal()
        api = Api(stack.workers, journal, random.Random(rng.random()), world.foreign_names,
                  [s.encode() for s in SECRETS])
        load = actors.Load(api, journal, world, engine, rng, canary.port)
        missing = await missing_endpoints(api, stack)
        stack.note("endpoints not served yet: " + (", ".join(missing) or "none"))
        await asyncio.gather(*(actors.warm_worker(load, w) for w in stack.workers))
        stack.note("both workers warmed up; load starts")
        started = time.monotonic()
        tasks = launch(load, world, stack, missing)
        faults = schedule(seconds, rng)
        stack.note("process faults: " + ", ".join(f"{f.kind}@{f.at:.0f}s" for f in faults))
        injector = asyncio.create_task(inject(stack, journal, faults, started, load.over,
                                               lambda worker: actors.warm_worker(load, worker)))
        await asyncio.sleep(seconds)
        load.over.set()
        stack.note("load over; letting clients finish")
        await asyncio.wait(tasks, timeout=90)
        for task in tasks:
            task.cancel()
        await injector
        await settle(engine)
        stack.sample_memory()
        ended_at = time.monotonic()
        rows = [
            await checks.messages_lost(engine, journal),
            await checks.sequences(engine),
            await checks.endings(engine),
            await checks.tokens(engine),
            await checks.tenancy(engine, journal, world),
            await checks.streams(engine, journal),
            report.memory(stack.workers, grace_s=max(5.0, 0.1 * seconds), ended_at=ended_at),
            await checks.probes(engine, journal, world, canary.hits, list(SECRETS)),
        ]
        print_report(seconds, seed, rows, journal, stack, missing)
        return 0 if all(row.holds for row in rows) else 1
    finally:
        if api is not None:
            await api.aclose()
        if engine is not None:
            await engine.dispose()
        await asyncio.to_thread(stack.stop, keep)
        await canary.stop()


def launch(load: actors.Load, world: Any, stack: Stack, missing: list[str]
           ) -> list[asyncio.Task[None]]:
    """Every actor of the load, each with its own random stream (≤ 20 concurrent clients)."""
    users = world.users

    def own(index: int) -> actors.Load:
        return dataclasses.replace(load, rng=random.Random(load.rng.random() + index))

    plan = [
        actors.csm(own(1), users["csm@demo.example"]),
        actors.csm(own(2), users["csm@demo.example"]),
        actors.csm(own(3), users["manager@demo.example"]),
        actors.csm(own(4), users["csm@other.example"]),
        actors.csm(own(5), users["csm@other.example"]),
    ]
    if "/api/usage" not in missing:  # analysts and admins need endpoints still being built
        plan += [actors.analyst(own(6), users["analyst@demo.example"]),
                 actors.analyst(own(7), users["analyst@other.example"])]
    if "/api/knowledge/documents" not in missing:
        plan += [actors.admin(own(8), users["admin@demo.example"]),
                 actors.admin(own(9), users["admin@other.example"])]
    plan += [
        actors.snoop(own(10), [users["csm@demo.example"], users["csm@other.example"],
                               users["analyst@demo.example"], users["analyst@other.example"]]),
        actors.prober(own(11), [users["csm@demo.example"], users["csm@other.example"]]),
        actors.memory_sampler(own(12), stack),
    ]
    return [asyncio.create_task(coroutine) for coroutine in plan]


async def missing_endpoints(api: Api, stack: Stack) -> list[str]:
    """The documented endpoints the load uses that the service does not serve (yet)."""
    response = await api.client.get(f"{stack.workers[0].base}/schema/openapi.json")
    paths = set(response.json().get("paths", {})) if response.status_code == 200 else set()
    return [p for p in EXPECTED_ENDPOINTS if p not in paths]


async def settle(engine: Any, within_s: float = STALE_AFTER_S * 4 + 60) -> None:
    """Wait until no run is queued or running (dead workers' runs are recovered by then)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            busy = (await conn.execute(text(
                "SELECT count(*) FROM thread_runs WHERE status IN ('queued', 'running')")
            )).scalar_one()
        if busy == 0:
            return
        await asyncio.sleep(1.0)


def print_report(seconds: float, seed: int, rows: list[checks.Row], journal: Journal,
                 stack: Stack, missing: list[str]) -> None:
    """The table first, then what was done and what broke."""
    acked = sum(p.acked for p in journal.posts)
    print(f"\n## Soak: {seconds:.0f}s, seed {seed}\n")
    print(report.table(rows))
    print()
    print(report.details(rows))
    print(f"\nmessages posted: {len(journal.posts)} ({acked} acknowledged); streams read: "
          f"{len(journal.streams)}; actions: {len(journal.actions)}; probes: "
          f"{len(journal.probes)}")
    print("endpoints not served: " + (", ".join(missing) or "none"))
    print(report.counts("faults injected", journal.faults))
    print(report.counts("requests by endpoint and status", journal.endpoints))
    print(report.counts("client-side errors", journal.errors))
    print("timeline:\n" + "\n".join(f"  {t:7.1f}s  {what}" for t, what in stack.events))


if __name__ == "__main__":
    sys.exit(main())
