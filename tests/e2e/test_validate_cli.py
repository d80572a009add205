"""`chatbranch validate` on the seeds and on a corpus of broken workflows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "fixtures" / "broken_workflows"
EXPECTED = json.loads((BROKEN / "expected.json").read_text())


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "validate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_seed_workflows_pass_every_check() -> None:
    files = sorted(str(p) for p in (ROOT / "seeds" / "workflows").glob("*.json"))
    out = validate(*files)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    total = int(next(line for line in lines if line.startswith("Total tests:")).split(":")[1])
    assert total >= 3 * 11
    assert f"Passed: {total}" in lines and "Failed: 0" in lines


def test_broken_corpus_is_large_enough() -> None:
    assert len(EXPECTED) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_broken_workflow_fails_naming_its_check(name: str) -> None:
    args = [str(BROKEN / name)]
    companion = BROKEN / name.replace(".json", ".branches.json")
    if companion.exists():
        args += ["--branches", str(companion)]
    out = validate(*args)
    assert out.returncode != 0
    failed = [line for line in out.stdout.splitlines() if line.startswith("✗")]
    assert any(line.endswith(f": {EXPECTED[name]}") for line in failed), out.stdout
    assert "Failed: 0" not in out.stdout
