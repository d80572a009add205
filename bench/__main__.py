"""`make bench`: the seven benchmark rows against the floor and the peer, in one interleaved run.

    python -m bench            # full run (< 10 min on 2 cores), results in bench/results/
    python -m bench --smoke    # tiny sizes, seconds; results in a temporary folder
    python -m bench --rows 3,6 --no-peer --out /tmp/b   # a few rows while optimising

Everything runs on loopback, bounded in count and time; every process it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import peer as peer_module
from bench import report, rows_chat, rows_cpu, rows_rag, rows_tokens, rows_usage
from bench.common import run_fast
from bench.context import RunContext
from bench.peer import PeerInstall
from bench.procs import cpu_layout, machine
from bench.stack import (
    ROOT,
    Stack,
    cli_token,
    launch_service,
    open_threads,
    restore_seeded,
    save_seeded,
    set_mock,
    start_database,
    start_floor,
    start_mock,
    statement_census,
    wait_service,
)

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    """Progress on stderr, with the time since start."""
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


async def _seed(stack: Stack) -> None:
    """Migrate and seed once, before any server starts (so servers start in parallel)."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.cli", "seed"], env=stack.env(), cwd=ROOT,
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"chatbranch seed failed:\n{done.stdout}\n{done.stderr}")


async def setup(ctx: RunContext, want_peer: bool, wanted: set[int] | None = None
                ) -> dict[str, Any]:
    """Start everything; returns the prepared row-4 database (built meanwhile)."""
    with_rag = wanted is None or 4 in wanted
    stack = ctx.stack
    _, load_cpus, _ = cpu_layout()
    install_log = stack.work / "litellm-install.log"
    install_started = time.monotonic()
    installing = None
    if want_peer:
        try:
            installing = peer_module.begin_install(install_log)
        except (OSError, RuntimeError) as exc:
            ctx.peer_install = PeerInstall(False, reason=str(exc))
            want_peer = False
        if installing is not None:
            log("installing litellm[proxy] into bench/.litellm-venv (first run only)")
    restored = await asyncio.to_thread(restore_seeded, stack)
    await asyncio.to_thread(start_database, stack)
    start_mock(stack, load_cpus)
    ctx.phases["database_s"] = round(time.monotonic() - STARTED, 1)

    def bring_up_peer() -> None:
        ctx.peer_install = peer_module.finish_install(installing, install_started, install_log)
        if ctx.peer_install.available:
            try:
                stack.peer = peer_module.start_peer(_port(), stack.mock_url, stack.work,
                                                    stack.server_cpus)
            except RuntimeError as exc:
                ctx.peer_install = PeerInstall(False, reason=f"LiteLLM did not start: {exc}"[:300])

    peer_task = asyncio.create_task(asyncio.to_thread(bring_up_peer)) if want_peer else None
    # The full-size row-4 database has a server of its own: built while the service seeds.
    rag = None if ctx.smoke or not with_rag else asyncio.create_task(rows_rag.prepare(ctx))
    if restored:
        log("database (a copy of a cached migrated and seeded one) and mock up")
    else:
        log("database and mock up; migrating and seeding (kept for the next runs)")
        await _seed(stack)
        await asyncio.to_thread(save_seeded, stack)
    if rag is None and with_rag:
        rag = asyncio.create_task(rows_rag.prepare(ctx))
    ctx.phases["seeded_at_s"] = round(time.monotonic() - STARTED, 1)
    log("seeded; starting the service (1 and 2 workers) and the floor")
    stack.service = launch_service(stack, cpus=stack.server_cpus)
    ctx.service_2w = launch_service(stack, workers=2, name="service-2w")
    if not ctx.smoke:  # a fresh worker whose heap only row 2 grows (memory per stream)
        ctx.service_streams = launch_service(stack, cpus=stack.server_cpus,
                                             name="service-streams")
    stack.floor = await asyncio.to_thread(start_floor, stack, stack.server_cpus)
    ctx.floor_2w = await asyncio.to_thread(start_floor, stack, None, 2)
    await asyncio.to_thread(wait_service, stack.service)
    await asyncio.to_thread(wait_service, ctx.service_2w)
    if ctx.service_streams is not None:
        await asyncio.to_thread(wait_service, ctx.service_streams)
    ctx.phases["services_up_at_s"] = round(time.monotonic() - STARTED, 1)
    stack.token = await asyncio.to_thread(cli_token, stack)
    base = f"http://127.0.0.1:{stack.service.port}"
    stack.threads = await open_threads(base, stack.token, 14 if ctx.smoke else 120)
    log(f"{len(stack.threads)} threads open")
    ctx.phases["threads_open_at_s"] = round(time.monotonic() - STARTED, 1)
    if peer_task is not None:
        await peer_task
        log(f"peer: {'up' if stack.peer else ctx.peer_install.reason}")
    set_mock(stack, ttft_ms=0, pacing_ms=0, tokens=8)
    from bench import context as targets
    from bench.load import send

    json_turn = targets.service(ctx, stream=False)

    async def turn(number: int) -> None:
        await send(json_turn, 700_000 + number)

    ctx.census = await statement_census(stack, turn, 4 if ctx.smoke else 12)
    log(f"census: {ctx.census.per_turn} statements per turn, {ctx.census.before_call} before "
        f"the provider call (user message inserted first: {ctx.census.first_insert_before_call})")
    ctx.phases["census_done_at_s"] = round(time.monotonic() - STARTED, 1)
    if rag is None:
        return {}
    prepared = await rag
    ctx.phases["rag_ready_at_s"] = round(time.monotonic() - STARTED, 1)
    log(f"row-4 database ready ({prepared['built_seconds'] or 'cached'} s)")
    return prepared


def _port() -> int:
    from bench.common import free_port

    return free_port()


async def _row(name: str, make: Callable[[], Awaitable[dict[str, Any]]], number: int
               ) -> dict[str, Any]:
    started = time.monotonic()
    log(f"row {number}: {name}")
    try:
        row = await make()
    except Exception as exc:  # one broken row must not hide the others
        traceback.print_exc()
        row = {"row": number, "title": name, "target": "", "met": None,
               "figures": {"error": f"{type(exc).__name__}: {exc}"},
               "cells": {"service": f"error: {type(exc).__name__}: {exc}"[:200]}}
    row["seconds"] = round(time.monotonic() - started, 1)
    log(f"row {number} done in {row['seconds']} s: met={row.get('met')}")
    return row


async def run(args: argparse.Namespace) -> Path:
    """The whole benchmark; returns the JSON path."""
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    work = Path(tempfile.mkdtemp(prefix="chatbranch-bench-"))
    server_cpus, load_cpus, pinning = cpu_layout()
    stack = Stack(work=work, data_dir=work / "data", server_cpus=server_cpus)
    want_peer = not args.no_peer and (not args.smoke or args.peer)
    ctx = RunContext(stack=stack, smoke=args.smoke, pinning=pinning,
                     peer_install=PeerInstall(False, reason="skipped in smoke mode (use --peer)"
                                              if args.smoke else "disabled with --no-peer"))
    rows: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    try:
        begun = time.monotonic()
        prepared = await setup(ctx, want_peer, args.rows)
        phases["setup_s"] = round(time.monotonic() - begun, 1)
        if load_cpus:  # the load generator (this thread) away from the server CPU
            os.sched_setaffinity(0, load_cpus)
        plan: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]], int]] = [
            ("token counting", lambda: rows_tokens.row6_tokens(ctx), 6),
            ("time to first token", lambda: rows_chat.row1_ttft(ctx), 1),
            ("CPU per turn", lambda: rows_cpu.row3_cpu(ctx), 3),
            ("2 workers against 1", lambda: rows_cpu.row7_workers(ctx), 7),
            ("concurrent streams", lambda: rows_chat.row2_streams(ctx), 2),
            ("rag_search", lambda: rows_rag.row4_rag(ctx, prepared), 4),
            ("usage report", lambda: rows_usage.row5_usage(ctx), 5),
        ]
        for name, make, number in plan:
            if args.rows is None or number in args.rows:
                rows.append(await _row(name, make, number))
    finally:
        for proc in (ctx.service_2w, ctx.floor_2w, ctx.service_streams):
            if proc is not None:
                stack.extra.append(proc)
        await asyncio.to_thread(stack.stop)
    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if max(load_before, load_after) > cores:
        ctx.notes.append(
            f"The machine was shared while this ran: load average {load_before:.1f} at the start"
            f" and {load_after:.1f} at the end on {cores} cores, so absolute figures are"
            " inflated and noisy; the interleaved ratios are the figures to read.")
    results = {
        "started_at": started_at, "smoke": args.smoke, "machine": machine(), "pinning": pinning,
        "load_average": {"start": round(load_before, 2), "end": round(load_after, 2)},
        "elapsed_s": round(time.monotonic() - STARTED, 1), "phases": phases | ctx.phases,
        "peer": asdict(ctx.peer_install) | {"available": ctx.peer_available
                                            or ctx.peer_install.available},
        "census": asdict(ctx.census) if ctx.census else None,
        "rows": rows, "notes": ctx.notes,
    }
    out_dir = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="chatbranch-bench-smoke-")) if args.smoke else RESULTS)
    json_path, md_path = report.write(results, out_dir)
    table = report.markdown(results)
    print(table)
    print(f"results: {json_path}\n         {md_path}")
    if not args.smoke and not args.out and args.rows is None and report.update_readme(table):
        print("README.md: benchmark table updated")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    return json_path


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds a row")
    parser.add_argument("--out", help="where to write <timestamp>.json and .md")
    parser.add_argument("--no-peer", action="store_true", help="skip LiteLLM")
    parser.add_argument("--peer", action="store_true", help="run LiteLLM in smoke mode too")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--rows", type=lambda v: {int(n) for n in v.split(",")}, default=None,
                        help="only these rows, e.g. 1,3 (a partial run leaves README.md alone)")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    run_fast(_until_terminated(run(args)))


async def _until_terminated(main: Awaitable[Path]) -> Path:
    """Run `main`; SIGTERM or SIGINT cancel it, so its cleanup still stops every process."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    return await task


if __name__ == "__main__":
    main()
