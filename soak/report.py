"""The memory invariant and the printed table (markdown, so that it pastes into an issue note)."""

from __future__ import annotations

from collections import Counter

from soak.checks import Row
from soak.stack import Worker

MEMORY_TOLERANCE = 0.20


def memory(workers: list[Worker], grace_s: float, ended_at: float) -> Row:
    """Each worker's RSS at the end within 20% of its level after warm-up (per incarnation).

    Warm-up is the soak driving every kind of reply through the worker once, then `grace_s`
    of ordinary load; the baseline is the first sample after that.
    """
    row = Row("worker memory at the end within 20% of its level after warm-up")
    notes = []
    for worker in workers:
        samples = [s for s in worker.rss if s[1] == worker.incarnation and s[0] <= ended_at + 60]
        if not samples:
            row.fail(f"worker {worker.name}: no memory samples")
            continue
        warmed_at = worker.warmed_at or samples[0][0]
        warmed = [s for s in samples if s[0] >= warmed_at + grace_s]
        if len(warmed) < 2:  # restarted too late in a short run: nothing to compare
            notes.append(f"{worker.name}#{worker.incarnation} ran too briefly after warm-up "
                         "to judge")
            continue
        baseline, final = warmed[0][2], samples[-1][2]
        row.checked += 1
        growth = final / baseline - 1
        notes.append(f"{worker.name}#{worker.incarnation} {baseline / 2**20:.0f}→"
                     f"{final / 2**20:.0f} MiB ({growth:+.0%})")
        if growth > MEMORY_TOLERANCE:
            row.fail(f"worker {worker.name}: {baseline / 2**20:.0f} MiB after warm-up, "
                     f"{final / 2**20:.0f} MiB at the end ({growth:+.0%})")
    row.note = "; ".join(notes)
    return row


def table(rows: list[Row]) -> str:
    """The invariant table with counts."""
    lines = ["| invariant | checked | violations | holds |", "|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.checked} | {len(row.violations)} | "
                     f"{'yes' if row.holds else 'NO'} |")
    return "\n".join(lines)


def details(rows: list[Row], limit: int = 8) -> str:
    """Notes of every row and the first violations of those that broke."""
    out = []
    for row in rows:
        if row.note:
            out.append(f"- {row.name}: {row.note}")
        for violation in row.violations[:limit]:
            out.append(f"  - VIOLATION: {violation}")
        if len(row.violations) > limit:
            out.append(f"  - … {len(row.violations) - limit} more")
    return "\n".join(out)


def counts(title: str, counter: Counter[str]) -> str:
    """A counter as a sorted list."""
    if not counter:
        return f"{title}: none"
    return f"{title}:\n" + "\n".join(f"  {value:6d}  {key}" for key, value in
                                     sorted(counter.items()))
