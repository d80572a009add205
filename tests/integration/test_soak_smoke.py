"""CI's 60-second soak: the same stack, load, faults and checks as `make soak`, shorter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECONDS = os.environ.get("SOAK_SMOKE_SECONDS", "60")
ROW = re.compile(r"^\| (?P<name>[^|]+) \| (?P<checked>\d+) \| (?P<violations>\d+) \| "
                 r"(?P<holds>yes|NO) \|$", re.MULTILINE)
INVARIANTS = 8


def test_sixty_second_soak_holds_every_invariant() -> None:
    command = [sys.executable, "-m", "soak", "--seconds", SECONDS]
    if os.environ.get("SOAK_SEED"):
        command += ["--seed", os.environ["SOAK_SEED"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=float(SECONDS) + 600)
    output = finished.stdout + finished.stderr
    print(output)  # the table and the seed land in the test log either way
    rows = ROW.findall(output)
    assert len(rows) == INVARIANTS, f"expected {INVARIANTS} invariant rows:\n{output[-3000:]}"
    broken = [name for name, _, _, holds in rows if holds != "yes"]
    assert not broken, f"invariants broken: {broken}\n{output[-6000:]}"
    assert all(int(checked) > 0 for _, checked, _, _ in rows), "an invariant checked nothing"
    assert finished.returncode == 0, output[-3000:]
