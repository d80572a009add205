"""The terminal usage report: one row per group with its totals, cost share and a sparkline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.table import Table
from rich.text import Text

from app.usage.schemas import GROUP_KEYS, UsageBucket

SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
BAR_WIDTH = 12


@dataclass
class GroupLine:
    """One group's totals over the period and its tokens per bucket."""

    key: tuple[Any, ...]
    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    per_bucket: list[int] = field(default_factory=list)


def sparkline(values: Sequence[int]) -> str:
    """Values as block characters scaled to their own maximum; zero is a dot."""
    top = max(values, default=0)
    if top <= 0:
        return "·" * len(values)
    steps = len(SPARKS)
    return "".join("·" if v <= 0 else SPARKS[max(0, (v * steps + top - 1) // top - 1)]
                   for v in values)


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `share` (0..1) in eighth-block steps."""
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[rest] if rest else "")).ljust(width)


def group_lines(buckets: Sequence[UsageBucket], group_by: Sequence[str]) -> list[GroupLine]:
    """Fold bucket results into one line per group, costliest first."""
    keys = [GROUP_KEYS[name].result_key for name in group_by]
    lines: dict[tuple[Any, ...], GroupLine] = {}
    for index, bucket in enumerate(buckets):
        for result in bucket.results:
            key = tuple(result.get(k) for k in keys)
            line = lines.setdefault(key, GroupLine(key=key, per_bucket=[0] * len(buckets)))
            line.requests += result["numModelRequests"]
            line.input_tokens += result["inputTokens"]
            line.cached_tokens += result["cachedTokens"]
            line.output_tokens += result["outputTokens"]
            line.cost += Decimal(str(result["costUsd"]))
            line.per_bucket[index] += result["inputTokens"] + result["outputTokens"]
    return sorted(lines.values(), key=lambda g: (-g.cost, -sum(g.per_bucket), str(g.key)))


def _when(seconds: int, bucket_width: str) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d" if bucket_width == "1d" else "%Y-%m-%d %H:00")


def usage_table(buckets: Sequence[UsageBucket], group_by: Sequence[str], *, bucket_width: str,
                tenant: str) -> Table:
    """A rich table of the period: groups, requests, tokens, cost, share of cost, trend."""
    lines = group_lines(buckets, group_by)
    total_cost = sum((line.cost for line in lines), Decimal(0))
    total_tokens = sum(sum(line.per_bucket) for line in lines)
    period = (f"{_when(buckets[0].start_time, bucket_width)} → "
              f"{_when(buckets[-1].end_time, bucket_width)}" if buckets else "empty period")
    caption = "trend: input+output tokens per bucket, scaled to the row's own peak"
    if "tool" in group_by:
        caption += "; a call that used several tools counts under each of them"
    table = Table(title=f"Token usage of {tenant}, {period}, per {bucket_width} bucket",
                  caption=caption, show_footer=True)
    names = list(group_by) or ["all"]
    for i, name in enumerate(names):
        table.add_column(name, footer="total" if i == 0 else "")
    table.add_column("requests", justify="right", footer=f"{sum(x.requests for x in lines):,}")
    table.add_column("input", justify="right", footer=f"{sum(x.input_tokens for x in lines):,}")
    table.add_column("cached", justify="right", footer=f"{sum(x.cached_tokens for x in lines):,}")
    table.add_column("output", justify="right", footer=f"{sum(x.output_tokens for x in lines):,}")
    table.add_column("cost USD", justify="right", footer=f"{total_cost:,.4f}")
    table.add_column("share", footer="")
    table.add_column("trend", footer="")
    for line in lines:
        tokens = sum(line.per_bucket)
        share = (float(line.cost / total_cost) if total_cost
                 else tokens / total_tokens if total_tokens else 0.0)
        labels = [("∅" if v is None else str(v)) for v in line.key] or ["all"]
        table.add_row(
            *labels, f"{line.requests:,}", f"{line.input_tokens:,}", f"{line.cached_tokens:,}",
            f"{line.output_tokens:,}", f"{line.cost:,.4f}",
            Text(f"{bar(share)} {share:6.1%}", style="cyan"),
            Text(sparkline(line.per_bucket), style="green"),
        )
    return table
