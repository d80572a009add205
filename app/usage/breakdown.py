"""Why a prompt costs what it costs: input tokens split by segment, scaled to the reported total."""

from __future__ import annotations

from functools import lru_cache

from app.llm.tokens import count_text

SEGMENTS = ("system", "context", "history", "question", "retrieved", "toolResults", "tools",
            "overhead")


@lru_cache(maxsize=4096)
def count_cached(text: str) -> int:
    """Token count of text that repeats across calls (system prompts, context snapshots)."""
    return count_text(text)


def scale_to_reported(estimates: dict[str, int], reported: int) -> dict[str, int]:
    """Scale segment estimates so they sum exactly to the provider's input tokens.

    Largest-remainder rounding keeps every segment an integer and the sum exact, so breakdowns
    aggregate to the same totals as the ledger.
    """
    total = sum(estimates.values())
    if reported <= 0 or total <= 0:
        return dict.fromkeys(estimates, 0)
    shares = {name: value * reported / total for name, value in estimates.items()}
    scaled = {name: int(share) for name, share in shares.items()}
    leftover = reported - sum(scaled.values())
    by_remainder = sorted(shares, key=lambda n: shares[n] - scaled[n], reverse=True)
    for name in by_remainder[:leftover]:
        scaled[name] += 1
    return scaled
