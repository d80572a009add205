"""Small helpers shared by the harness modules: fast event loop, quantiles, free ports."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when available (the load generator and mocks stay cheap)."""
    try:
        import uvloop
    except ImportError:  # plain asyncio works too, only slower
        return asyncio.run(main)
    return uvloop.run(main)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
