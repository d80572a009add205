"""The usage-report benchmark still runs from scratch (its smoke mode), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_usage_report_bench_smoke_mode_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.usage_report", "--smoke", "--explain",
         "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["rows"] == 10_000 == sum(report["rowsPerTenant"].values())
    assert len(report["rowsPerTenant"]) >= 3
    # The report saw exactly the analyst's tenant's rows, in one bucket per day.
    assert report["requestsReported"] == report["rowsPerTenant"]["demo"]
    assert report["buckets"] == report["days"]
    assert report["runs"] == 3 and report["p95Ms"] >= report["p50Ms"] > 0
    # Whole days grouped by model: the hourly rollup answers, not the ledger rows.
    assert any("usage_hourly" in line for line in report["plan"])
