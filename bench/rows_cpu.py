"""Rows 3 and 7: server CPU per non-streamed turn and the highest rate under 50 ms p99;
throughput with two worker processes against one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import context as targets
from bench.common import quantile
from bench.context import RunContext, figure, ms
from bench.load import Outcome, Target, closed_loop, open_loop, send
from bench.procs import Proc, cpu_seconds, tree_cpu_seconds
from bench.stack import postmaster_pid, set_mock


async def _numbered(target: Target, offset: int, number: int) -> Outcome:
    return await send(target, offset + number)


def set_affinity_all_threads(pid: int, cpus: set[int]) -> None:
    """Pin (or unpin) every thread of a process, not only its main one."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


async def _cpu_block(target: Target, proc: Proc, pg_pid: int, turns: int, concurrency: int,
                     offset: int) -> tuple[float, float, int]:
    """(server CPU s, PostgreSQL CPU s, ok turns) for `turns` turns."""
    cpu0, pg0 = cpu_seconds(proc.pid), tree_cpu_seconds(pg_pid)
    outcomes = await closed_loop(lambda n: send(target, offset + n), total=turns,
                                 concurrency=concurrency, deadline_s=120)
    await asyncio.sleep(0.3)  # the last turns' flush and bookkeeping land in the window
    return (cpu_seconds(proc.pid) - cpu0, tree_cpu_seconds(pg_pid) - pg0,
            sum(1 for o in outcomes if o.ok))


async def _max_rate(target: Target, rates: list[float], block_s: float) -> dict[str, Any]:
    """The highest arrival rate whose latency p99 stays under 50 ms (ladder, stops at a miss)."""
    best, steps = 0.0, []
    for index, rate in enumerate(rates):

        async def launch(n: int, index: int = index) -> Outcome:
            return await send(target, 500_000 + index * 10_000 + n, limit_s=10)

        outcomes, dropped = await open_loop(launch, rate=rate, duration_s=block_s,
                                            max_inflight=int(rate) + 20, drain_s=15)
        latencies = [o.latency for o in outcomes if o.ok]
        failed = dropped + sum(1 for o in outcomes if not o.ok)
        p99 = quantile(latencies, 0.99)
        steps.append({"rate": rate, "p99_ms": ms(p99), "failed": failed})
        await asyncio.sleep(0.5)
        if failed or not latencies or p99 >= 0.050:
            break
        best = rate
    return {"best_rate_per_s": best, "steps": steps}


async def row3_cpu(ctx: RunContext) -> dict[str, Any]:
    """Server CPU per non-streamed turn (0 ms mock) against the floor; highest rate < 50 ms."""
    set_mock(ctx.stack, ttft_ms=0, pacing_ms=0, tokens=8)
    stack = ctx.stack
    assert stack.service is not None
    assert stack.floor is not None
    pg_pid = postmaster_pid(stack.data_dir)
    systems: list[tuple[str, Target, Proc]] = [
        ("service", targets.service(ctx, stream=False), stack.service),
        ("floor", targets.floor(ctx, stream=False), stack.floor),
        ("floor_relay_only", targets.floor(ctx, stream=False, persistence=False,
                                           name="floor_relay_only"), stack.floor)]
    if ctx.peer_available and stack.peer is not None:
        systems.append(("peer", targets.peer(ctx, stream=False), stack.peer))
    turns, rounds = (10, 1) if ctx.smoke else (60, 2)
    totals = {name: [0.0, 0.0, 0] for name, _, _ in systems}
    for _, target, _ in systems:  # warm-up
        await closed_loop(partial(_numbered, target, 800_000), total=4, concurrency=2,
                          deadline_s=30)
    for number in range(rounds):
        order = systems if number % 2 == 0 else systems[::-1]
        for name, target, proc in order:
            cpu, pg, ok = await _cpu_block(target, proc, pg_pid, turns, 2, number * 1000)
            totals[name][0] += cpu
            totals[name][1] += pg
            totals[name][2] += ok
    per_turn = {name: {"server_cpu_ms": round(cpu * 1000 / max(1, ok), 3),
                       "postgres_cpu_ms": round(pg * 1000 / max(1, ok), 3), "turns": ok}
                for name, (cpu, pg, ok) in totals.items()}
    rates = [5.0, 10.0] if ctx.smoke else [5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0,
                                           300.0]
    block_s = 1.0 if ctx.smoke else 3.0
    highest = {"service": await _max_rate(systems[0][1], rates, block_s),
               "floor": await _max_rate(systems[1][1], rates, block_s)}
    service_cpu = per_turn["service"]["server_cpu_ms"]
    floor_cpu = per_turn["floor"]["server_cpu_ms"]
    met = service_cpu <= 2 * floor_cpu
    before, after, tx_before, tx_after = ctx.round_trips()

    def cell(name: str) -> str:
        if name not in per_turn:
            return f"unavailable ({ctx.peer_reason})"
        text = f"{figure(per_turn[name]['server_cpu_ms'])} CPU/turn"
        if name in highest:
            text += f"; {highest[name]['best_rate_per_s']:g}/s under 50 ms p99"
        return text

    floor_cell = (cell("floor") + f" ({before}+{after} round trips in {tx_before}+{tx_after} "
                  "commits; relay alone "
                  f"{figure(per_turn['floor_relay_only']['server_cpu_ms'])})")
    return {"row": 3, "title": "Server CPU per non-streamed turn (0 ms mock); highest rate with "
                               "p99 < 50 ms",
            "target": "≤ 2 x the floor's CPU per turn",
            "figures": {"per_turn": per_turn, "highest_rate": highest,
                        "round_trips": {"before_call": before, "after_call": after,
                                        "transactions_before": tx_before,
                                        "transactions_after": tx_after},
                        "ratio_to_floor": round(service_cpu / floor_cpu, 2) if floor_cpu else None},
            "met": met,
            "cells": {"service": cell("service") + (f" ({service_cpu / floor_cpu:.1f}x floor)"
                                                    if floor_cpu else ""),
                      "floor": floor_cell, "peer": cell("peer")}}


async def _throughput(target: Target, seconds: float, concurrency: int, offset: int) -> float:
    started = time.perf_counter()
    outcomes = await closed_loop(lambda n: send(target, offset + n, limit_s=30), total=100_000,
                                 concurrency=concurrency, deadline_s=seconds)
    elapsed = time.perf_counter() - started
    return sum(1 for o in outcomes if o.ok) / elapsed


async def row7_workers(ctx: RunContext) -> dict[str, Any]:
    """Closed-loop throughput of non-streamed turns with 2 worker processes against 1."""
    set_mock(ctx.stack, ttft_ms=0, pacing_ms=0, tokens=8)
    stack = ctx.stack
    assert stack.service is not None
    assert stack.floor is not None
    assert ctx.service_2w is not None
    assert ctx.floor_2w is not None
    everyone = set(range(os.cpu_count() or 1))
    # Both configurations may use every core here (one worker cannot use two anyway).
    for proc in (stack.service, stack.floor):
        set_affinity_all_threads(proc.pid, everyone)
    seconds, rounds, concurrency = (1.0, 1, 4) if ctx.smoke else (4.0, 2, 16)
    pairs = {
        "service": (targets.service(ctx, stream=False),
                    targets.service(ctx, stream=False, port=ctx.service_2w.port,
                                    threads=stack.threads[::-1], name="service_2w")),
        "floor": (targets.floor(ctx, stream=False),
                  targets.floor(ctx, stream=False, port=ctx.floor_2w.port, name="floor_2w")),
    }
    figures: dict[str, Any] = {}
    try:
        for one, two in pairs.values():  # every worker process warm (imports, pools, caches)
            for target in (one, two):
                await closed_loop(partial(_numbered, target, 900_000),
                                  total=8 if ctx.smoke else 40, concurrency=8, deadline_s=30)
        for name, (one, two) in pairs.items():
            rates: dict[str, list[float]] = {"1": [], "2": []}
            for number in range(rounds):
                order = [("1", one), ("2", two)] if number % 2 == 0 else [("2", two), ("1", one)]
                for workers, target in order:
                    rates[workers].append(await _throughput(target, seconds, concurrency,
                                                            number * 100_000))
                    await asyncio.sleep(0.5)
            one_rate = sum(rates["1"]) / len(rates["1"])
            two_rate = sum(rates["2"]) / len(rates["2"])
            figures[name] = {"one_worker_per_s": round(one_rate, 1),
                             "two_workers_per_s": round(two_rate, 1),
                             "ratio": round(two_rate / one_rate, 2) if one_rate else None}
    finally:
        if stack.server_cpus:
            for proc in (stack.service, stack.floor):
                set_affinity_all_threads(proc.pid, stack.server_cpus)
    ratio = figures["service"]["ratio"]
    met = ratio is not None and ratio >= 1.7

    def cell(name: str) -> str:
        item = figures[name]
        return (f"{figure(item['ratio'], 'x')} ({item['one_worker_per_s']:g}/s → "
                f"{item['two_workers_per_s']:g}/s)")

    return {"row": 7, "title": "Throughput with 2 worker processes against 1",
            "target": "≥ 1.7 x", "figures": {**figures, "concurrency": concurrency},
            "met": met,
            "cells": {"service": cell("service"), "floor": cell("floor"),
                      "peer": "not measured (LiteLLM's own worker scaling is not the question)"}}
