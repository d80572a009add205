"""Row 5: the usage report over 1,000,000 ledger rows, measured by `bench/usage_report.py`.

That module is its own benchmark: it creates a dedicated database on the embedded server,
writes the ledger and times `GET /api/usage` through the app in-process. The harness runs it as
a subprocess on the run's data folder (its server is already up, so it attaches) and reads the
JSON it prints. When the module is missing or fails, the row says so instead of ending the run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.context import RunContext, figure
from bench.stack import ROOT

USAGE_REPORT = Path(__file__).resolve().parent / "usage_report.py"
TITLE = "Usage report over 1,000,000 ledger rows (30 days by model and day)"
TARGET = "p95 ≤ 100 ms"


def _unavailable(reason: str) -> dict[str, Any]:
    return {"row": 5, "title": TITLE, "target": TARGET, "met": None,
            "figures": {"status": "unavailable", "reason": reason},
            "cells": {"service": f"not measured: {reason}"[:300], "floor": "—", "peer": "—"}}


def _last_json_object(stdout: str) -> dict[str, Any]:
    start = stdout.rfind("\n{")
    text = stdout[start + 1:] if start >= 0 else stdout[stdout.find("{"):]
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


async def row5_usage(ctx: RunContext) -> dict[str, Any]:
    """Run `python -m bench.usage_report [--smoke] --data-dir <run's>` and report its p95."""
    if not USAGE_REPORT.exists():
        return _unavailable("bench/usage_report.py is not there yet")
    argv = [sys.executable, "-m", "bench.usage_report", "--data-dir", str(ctx.stack.data_dir)]
    if ctx.smoke:
        argv.append("--smoke")
    try:
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, env=ctx.stack.env(), capture_output=True,
            text=True, timeout=150 if ctx.smoke else 420)
    except subprocess.TimeoutExpired as exc:
        return _unavailable(f"bench.usage_report did not finish in {exc.timeout:.0f}s")
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return _unavailable(f"bench.usage_report exited {done.returncode}: {tail}")
    try:
        figures = _last_json_object(done.stdout)
    except ValueError as exc:
        return _unavailable(f"bench.usage_report printed no JSON result ({exc})")
    p95, p50, rows = figures.get("p95Ms"), figures.get("p50Ms"), figures.get("rows")
    met = None if p95 is None else float(p95) <= 100
    cell = f"p95 {figure(p95)}, p50 {figure(p50)}"
    if rows:
        cell += f" over {int(rows):,} rows"
    return {"row": 5, "title": TITLE if not ctx.smoke else TITLE.replace("1,000,000", f"{rows:,}"),
            "target": TARGET, "met": met, "figures": figures,
            "cells": {"service": cell, "floor": "—", "peer": "—"}}
