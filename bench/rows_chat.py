"""Rows 1 and 2: added time-to-first-token of a streamed turn, and streams held by one worker."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx

from bench import context as targets
from bench.common import quantile
from bench.context import RunContext, figure, ms
from bench.load import Outcome, Target, closed_loop, gaps_after, hold_streams, open_loop, send
from bench.procs import rss_bytes
from bench.stack import open_threads, set_mock


def _systems(ctx: RunContext) -> list[Target]:
    systems = [targets.direct(ctx), targets.floor(ctx), targets.service(ctx)]
    if ctx.peer_available:
        systems.append(targets.peer(ctx))
    return systems


def _ttfts(outcomes: list[Outcome]) -> list[float]:
    return [o.ttft for o in outcomes if o.ok and o.ttft is not None]


def _added(samples: dict[str, list[float]], name: str) -> dict[str, Any]:
    """p50/p99 of a system minus the same quantiles of direct-to-mock, in ms."""
    mine, base = samples.get(name, []), samples["direct"]
    if not mine or not base:
        return {"p50_ms": None, "p99_ms": None, "n": len(mine)}
    return {"p50_ms": ms(quantile(mine, 0.5) - quantile(base, 0.5)),
            "p99_ms": ms(quantile(mine, 0.99) - quantile(base, 0.99)),
            "raw_p50_ms": ms(quantile(mine, 0.5)), "raw_p99_ms": ms(quantile(mine, 0.99)),
            "n": len(mine)}


async def _one_client(ctx: RunContext, systems: list[Target], rounds: int
                      ) -> dict[str, list[float]]:
    """A B C D, D C B A, ...: one turn each, so drift hits every system alike."""
    samples: dict[str, list[float]] = {t.name: [] for t in systems}
    for number in range(rounds):
        order = systems if number % 2 == 0 else systems[::-1]
        for target in order:
            outcome = await send(target, number)
            samples[target.name].extend(_ttfts([outcome]))
    return samples


async def _fixed_rate(ctx: RunContext, systems: list[Target], rate: float, block_s: float,
                      rounds: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    samples: dict[str, list[float]] = {t.name: [] for t in systems}
    failed: dict[str, int] = dict.fromkeys(samples, 0)
    for number in range(rounds):
        order = systems if number % 2 == 0 else systems[::-1]
        for target in order:
            offset = number * 100_000

            async def launch(n: int, target: Target = target, offset: int = offset) -> Outcome:
                return await send(target, offset + n)

            # Bounded: an overloaded system sheds arrivals and its stragglers count as failed.
            outcomes, dropped = await open_loop(launch, rate=rate, duration_s=block_s,
                                                max_inflight=int(rate * 2) + 10, drain_s=6.0)
            samples[target.name].extend(_ttfts(outcomes))
            failed[target.name] += dropped + sum(1 for o in outcomes if not o.ok)
            await asyncio.sleep(0.5)
    return samples, failed


async def row1_ttft(ctx: RunContext) -> dict[str, Any]:
    """Added TTFT (system minus direct-to-mock), p50 and p99, at 1 client and at 50 turns/s."""
    set_mock(ctx.stack, ttft_ms=20, pacing_ms=5, tokens=8)
    systems = _systems(ctx)
    rounds = 8 if ctx.smoke else 100
    rate, block_s, blocks = (10.0, 1.0, 1) if ctx.smoke else (50.0, 4.0, 2)
    for target in systems:  # warm every path (connections, caches) outside the figures
        for number in range(3):
            await send(target, 900_000 + number)
    one, _ = await _one_client(ctx, systems, rounds), None
    loaded, failed = await _fixed_rate(ctx, systems, rate, block_s, blocks)
    result: dict[str, Any] = {"mock": {"ttft_ms": 20, "pacing_ms": 5, "tokens": 8},
                              "rate_per_s": rate, "failed": failed,
                              "direct": {"one_client_p50_ms": ms(quantile(one["direct"], 0.5)),
                                         "rate_p50_ms": ms(quantile(loaded["direct"], 0.5))}}
    for name in ("service", "floor", "peer"):
        if name in one:
            result[name] = {"one_client": _added(one, name), "at_rate": _added(loaded, name)}
    census = ctx.census
    result["commit_before_call"] = {
        "statements_before_call": census.before_call if census else None,
        "user_message_inserted_before_call": census.first_insert_before_call if census else None}
    service, peer = result["service"], result.get("peer")
    met: bool | None = None
    if peer is not None:
        met = bool(census and census.first_insert_before_call)
        for level in ("one_client", "at_rate"):
            mine, theirs = service[level], peer[level]
            if None in (mine["p50_ms"], mine["p99_ms"], theirs["p50_ms"], theirs["p99_ms"]):
                met = False
                continue
            met = met and mine["p50_ms"] <= 0.5 * theirs["p50_ms"] \
                and mine["p99_ms"] <= theirs["p99_ms"]

    def cell(name: str) -> str:
        if name not in result:
            return f"unavailable ({ctx.peer_reason})" if name == "peer" else "—"
        one_c, at = result[name]["one_client"], result[name]["at_rate"]
        return (f"1 client: p50 {figure(one_c['p50_ms'])}, p99 {figure(one_c['p99_ms'])}; "
                f"{rate:g}/s: p50 {figure(at['p50_ms'])}, p99 {figure(at['p99_ms'])}")

    return {"row": 1, "title": "Added time-to-first-token of a streamed turn",
            "target": "p50 ≤ 0.5 x LiteLLM's, p99 ≤ LiteLLM's; user message committed first",
            "figures": result, "met": met,
            "cells": {"service": cell("service"), "floor": cell("floor"), "peer": cell("peer")}}


async def _stream_level(ctx: RunContext, target: Target, pid: int | None, streams: int,
                        ramp_s: float, window_s: float, idle_rss: int | None = None
                        ) -> dict[str, Any]:
    """Hold `streams` streams; inter-token gaps inside the window when all are open; RSS.

    Memory per stream is the peak RSS while all are open minus the process's RSS when idle
    (`idle_rss`: measured once, warm but before any stream, so a heap grown by earlier levels
    does not hide what this level needs).
    """
    idle_rss = idle_rss if idle_rss is not None else (rss_bytes(pid) if pid else 0)
    peak_rss = idle_rss
    start = time.perf_counter()
    window = (start + ramp_s + 0.5, start + ramp_s + 0.5 + window_s)

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            if pid and window[0] <= now <= window[1]:
                peak_rss = max(peak_rss, rss_bytes(pid))

    sampler = asyncio.create_task(sample_rss())
    try:
        # Bounded: a stream not done 10 s after its last token was due counts as failed.
        limit_s = ramp_s + window_s + 12.0
        outcomes = await hold_streams(
            lambda n: send(target, n, track_tokens=True, limit_s=limit_s), streams=streams,
            ramp_s=ramp_s)
    finally:
        sampler.cancel()
    gaps = gaps_after(outcomes, *window)
    failed = sum(1 for o in outcomes if not o.ok)
    return {"streams": streams, "failed": failed, "gaps": len(gaps),
            "gap_p50_ms": ms(quantile(gaps, 0.5)), "gap_p99_ms": ms(quantile(gaps, 0.99)),
            "rss_per_stream_kib": round((peak_rss - idle_rss) / 1024 / streams, 1) if pid else None}


async def _fresh_threads(ctx: RunContext, count: int) -> list[str]:
    """`count` new threads (one stream per thread: a thread answers one turn at a time), opened
    through the run's main worker: in a full run the measured one is another, whose heap this
    leaves alone (a smoke run measures the main worker itself)."""
    assert ctx.stack.service is not None
    return await open_threads(f"http://127.0.0.1:{ctx.stack.service.port}", ctx.stack.token,
                              count)


async def _settle(ctx: RunContext) -> None:
    """Wait until the mock streams nothing (every run finished), then a moment more."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            stats = (await client.get(f"http://127.0.0.1:{ctx.stack.mock_port}/_stats")).json()
            if stats["activeStreams"] == 0:
                break
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.3 if ctx.smoke else 1.0)


WARM_CLIENTS = 30  # more than the worker's pool (10 + 10 overflow) can serve at once


async def row2_streams(ctx: RunContext) -> dict[str, Any]:
    """Streams one worker holds at 20 ms pacing with added inter-token p99 ≤ 2 ms; memory."""
    pacing_ms, ramp_s, window_s = 20.0, (0.3 if ctx.smoke else 2.0), (0.5 if ctx.smoke else 2.0)
    tokens = math.ceil((ramp_s + 0.5 + window_s + 0.5) * 1000 / pacing_ms)
    limit_ms = 2.0
    stack = ctx.stack
    worker = ctx.service_streams or stack.service
    assert worker is not None
    probes: list[dict[str, Any]] = []
    baselines: dict[int, dict[str, Any]] = {}
    warm_target = targets.service(ctx, port=worker.port, name="service")
    # Warm the fresh worker (imports, caches, and its whole database pool: connections are a
    # fixed cost, opened once, not memory per stream), then take its idle RSS as the baseline.
    set_mock(ctx.stack, ttft_ms=0, pacing_ms=0, tokens=8)
    for number in range(20):
        await send(warm_target, 950_000 + number)
    set_mock(ctx.stack, ttft_ms=50, pacing_ms=pacing_ms, tokens=5)
    await closed_loop(lambda n: send(warm_target, 960_000 + n), total=2 * WARM_CLIENTS,
                      concurrency=WARM_CLIENTS, deadline_s=30)
    await asyncio.sleep(1.0)
    fresh_rss = rss_bytes(worker.pid)
    set_mock(ctx.stack, ttft_ms=20, pacing_ms=pacing_ms, tokens=tokens)

    async def probe(streams: int) -> bool:
        if streams not in baselines:
            baselines[streams] = await _stream_level(ctx, targets.direct(ctx), None, streams,
                                                     ramp_s, window_s)
            await _settle(ctx)
        # Each level streams on threads of its own whose history is one question, as the floor
        # and LiteLLM are sent: the shared threads carry the earlier rows' turns, and a stream
        # holds its prompt, so their figures would depend on the order the rows ran in.
        threads = await _fresh_threads(ctx, streams)
        on_them = targets.service(ctx, port=worker.port, name="service", threads=threads)
        mine = await _stream_level(ctx, on_them, worker.pid, streams, ramp_s, window_s,
                                   idle_rss=fresh_rss)
        await _settle(ctx)
        mine["added_gap_p99_ms"] = round(mine["gap_p99_ms"] - baselines[streams]["gap_p99_ms"], 2)
        mine["ok"] = mine["failed"] == 0 and mine["added_gap_p99_ms"] <= limit_ms
        probes.append(mine)
        return bool(mine["ok"])

    # Up a ladder, stopping at the first level that misses: only one overloaded probe.
    ladder = [10] if ctx.smoke else [50, 100, 200, 350, 500, 750]
    held = 0
    for streams in ladder:
        if not await probe(streams):
            break
        held = streams
    level = 10 if ctx.smoke else 500
    if level not in baselines:
        baselines[level] = await _stream_level(ctx, targets.direct(ctx), None, level, ramp_s,
                                               window_s)
        await _settle(ctx)
    others: dict[str, Any] = {}
    candidates = [("floor", targets.floor(ctx), stack.floor)]
    if ctx.peer_available:
        candidates.append(("peer", targets.peer(ctx), stack.peer))
    for name, target, proc in candidates:
        figures = await _stream_level(ctx, target, proc.pid if proc else None, level, ramp_s,
                                      window_s)
        figures["added_gap_p99_ms"] = round(
            figures["gap_p99_ms"] - baselines[level]["gap_p99_ms"], 2)
        others[name] = figures
        await _settle(ctx)
    at_level = next((p for p in probes if p["streams"] == max(held, probes[0]["streams"])
                     ), probes[0]) if probes else {}
    memory = at_level.get("rss_per_stream_kib")
    target_streams = 10 if ctx.smoke else 500
    met = held >= target_streams and memory is not None and memory <= 64

    def cell(figures: dict[str, Any] | None, name: str) -> str:
        if figures is None:
            return f"unavailable ({ctx.peer_reason})" if name == "peer" else "—"
        return (f"at {figures['streams']}: added p99 {figure(figures['added_gap_p99_ms'])}, "
                f"{figure(figures['rss_per_stream_kib'], 'KiB')}/stream"
                + (f", {figures['failed']} failed" if figures["failed"] else ""))

    ctx.notes.append(
        "Row 2: each level streams on threads opened for it, whose history is one question (as"
        " the floor and LiteLLM are sent). The service's memory per stream is that of the"
        " highest level held, measured on a fresh worker (peak RSS with all streams open minus"
        " its warm idle RSS, taken after 30 concurrent turns have opened its whole database"
        " pool); the floor's and LiteLLM's against their idle RSS after earlier rows, whose"
        " grown heaps make their figures read low.")
    service_cell = (f"holds {held} (probes: " + ", ".join(
        f"{p['streams']}→{figure(p['added_gap_p99_ms'])}" for p in probes) + "); "
        f"{figure(memory, 'KiB')}/stream")
    return {"row": 2, "title": "Streams one worker holds at 20 ms pacing (added inter-token "
                               "p99 ≤ 2 ms); memory per stream",
            "target": "≥ 500 streams per worker; ≤ 64 KiB per stream",
            "figures": {"service_probes": probes, "held": held,
                        "direct": {str(k): v for k, v in baselines.items()}, **others,
                        "mock": {"pacing_ms": pacing_ms, "tokens": tokens}},
            "met": met,
            "cells": {"service": service_cell, "floor": cell(others.get("floor"), "floor"),
                      "peer": cell(others.get("peer"), "peer")}}
