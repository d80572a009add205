"""The terminal usage report: sparklines, bars and one line per group."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console

from app.usage.report import bar, group_lines, sparkline, usage_table
from app.usage.schemas import UsageBucket


def result(model: str, tokens: int, cost: float) -> dict:
    return {"model": model, "inputTokens": tokens, "outputTokens": 0, "cachedTokens": 0,
            "reasoningTokens": 0, "numModelRequests": 1, "costUsd": cost}


BUCKETS = [
    UsageBucket(start_time=0, end_time=86400, results=[result("a", 10, 0.5)]),
    UsageBucket(start_time=86400, end_time=172800, results=[]),
    UsageBucket(start_time=172800, end_time=259200,
                results=[result("a", 80, 0.25), result("b", 5, 2.25)]),
]


def test_sparkline_scales_to_its_peak_and_marks_empty_buckets() -> None:
    assert sparkline([10, 0, 80]) == "▁·█"
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 0]) == "··"


def test_bar_fills_its_width_in_eighths() -> None:
    assert bar(1.0, 4) == "████"
    assert bar(0.5, 4) == "██  "
    assert bar(1 / 32, 4) == "▏   "
    assert bar(0.0, 4) == "    "


def test_groups_are_folded_across_buckets_costliest_first() -> None:
    lines = group_lines(BUCKETS, ["model"])
    assert [(g.key, g.requests, g.cost, g.per_bucket) for g in lines] == [
        (("b",), 1, Decimal("2.25"), [0, 0, 5]),
        (("a",), 2, Decimal("0.75"), [10, 0, 80]),
    ]


def test_the_table_shows_each_group_with_its_share_trend_and_the_total() -> None:
    console = Console(record=True, width=160)
    console.print(usage_table(BUCKETS, ["model"], bucket_width="1d", tenant="demo"))
    out = console.export_text()
    assert "1970-01-01 → 1970-01-04" in out
    line_b = next(line for line in out.splitlines() if "│ b " in line)
    assert "2.2500" in line_b and "75.0%" in line_b and "··█" in line_b
    line_a = next(line for line in out.splitlines() if "│ a " in line)
    assert "0.7500" in line_a and "25.0%" in line_a and "▁·█" in line_a
    assert "3.0000" in next(line for line in out.splitlines() if "total" in line)
