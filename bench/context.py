"""What every row needs: the started stack, run sizes, and request targets for each system."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.load import Target
from bench.peer import MASTER_KEY, PeerInstall
from bench.procs import Proc
from bench.stack import Census, Stack

QUESTION = "How is the renewal going, and what should I do next?"


@dataclass
class RunContext:
    """One harness run."""

    stack: Stack
    smoke: bool
    peer_install: PeerInstall
    pinning: str
    census: Census | None = None
    service_2w: Proc | None = None
    service_streams: Proc | None = None  # a fresh worker for row 2 (its heap untouched)
    floor_2w: Proc | None = None
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def peer_available(self) -> bool:
        """True when LiteLLM is installed and running."""
        return self.stack.peer is not None

    @property
    def peer_reason(self) -> str:
        """Why there is no peer figure."""
        return self.peer_install.reason or "not started"

    def round_trips(self) -> tuple[int, int, int, int]:
        """The service's statements and transactions per turn, before and after the call."""
        census = self.census
        if census is None:
            return 0, 0, 0, 0
        before = round(census.before_call or 0)
        tx_before = round(census.transactions_before_call or 0)
        return (before, max(0, round(census.per_turn) - before), tx_before,
                max(0, round(census.transactions_per_turn) - tx_before))


def direct(ctx: RunContext, *, stream: bool = True) -> Target:
    """Straight to the mock: the baseline every added figure is measured against."""
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    return Target("direct", ctx.stack.mock_port, lambda _: "/v1/chat/completions", {},
                  lambda _: body, stream=stream)


def service(ctx: RunContext, *, stream: bool = True, port: int | None = None,
            threads: list[str] | None = None, name: str = "service") -> Target:
    """A turn of the service: POST /api/threads/{id}/messages, threads taken in rotation."""
    pool = threads or ctx.stack.threads
    headers = {"authorization": f"Bearer {ctx.stack.token}"}
    if stream:
        headers["accept"] = "text/event-stream"
    body = json.dumps({"content": QUESTION}).encode()
    assert ctx.stack.service is not None
    return Target(name, port or ctx.stack.service.port or 0,
                  lambda n: f"/api/threads/{pool[n % len(pool)]}/messages", headers,
                  lambda _: body, stream=stream)


def floor(ctx: RunContext, *, stream: bool = True, persistence: bool = True,
          port: int | None = None, name: str = "floor") -> Target:
    """The bare relay; with `persistence`, the service's round trips before and after the call."""
    before, after, tx_before, tx_after = ctx.round_trips() if persistence else (0, 0, 0, 0)
    headers = {"accept": "text/event-stream"} if stream else {}
    body = json.dumps({"content": QUESTION}).encode()
    assert ctx.stack.floor is not None
    return Target(name, port or ctx.stack.floor.port or 0,
                  lambda _: f"/relay?pre={before}&pre_tx={tx_before}&post={after}"
                            f"&post_tx={tx_after}", headers, lambda _: body,
                  stream=stream)


def peer(ctx: RunContext, *, stream: bool = True) -> Target:
    """LiteLLM's proxy in front of the same mock."""
    assert ctx.stack.peer is not None
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    return Target("peer", ctx.stack.peer.port or 0, lambda _: "/v1/chat/completions",
                  {"authorization": f"Bearer {MASTER_KEY}"}, lambda _: body, stream=stream)


def ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for the report."""
    return round(seconds * 1000, 2)


def figure(value: Any, unit: str = "ms") -> str:
    """A number for the table (— when missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()
