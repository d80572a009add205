"""An asyncio load generator on loopback: raw HTTP/1.1, fixed arrival rates, bounded.

It parses as little as it can (status, headers, then raw bytes) so one core can drive hundreds of
streams: token arrivals are found by counting the mock's token marker in the bytes received,
whichever relay (service, floor, peer) framed them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.mock_provider import TOKEN_MARKER

DONE_MARKER = b"[DONE]"
ANTHROPIC_DONE_MARKER = b"message_stop"


@dataclass
class Outcome:
    """One request as the client saw it; times are time.perf_counter() seconds."""

    status: int = 0
    sent: float = 0.0
    first_token: float | None = None
    done: float = 0.0
    tokens: int = 0
    token_times: list[float] = field(default_factory=list)
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer read to its end."""
        return self.error is None and 200 <= self.status < 300

    @property
    def ttft(self) -> float | None:
        """Seconds from sending to the first token."""
        return None if self.first_token is None else self.first_token - self.sent

    @property
    def latency(self) -> float:
        """Seconds from sending to the end of the answer."""
        return self.done - self.sent

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Target:
    """Where and how to send one kind of request."""

    name: str
    port: int
    path: Callable[[int], str]  # request number -> path (threads rotate)
    headers: dict[str, str]
    body: Callable[[int], bytes]  # request number -> body
    stream: bool = True
    done_marker: bytes = DONE_MARKER
    host: str = "127.0.0.1"


class _Exchange(asyncio.Protocol):
    """One request/response on its own connection, parsed in data_received (cheap per read)."""

    def __init__(self, outcome: Outcome, request: bytes, stream: bool, done_marker: bytes,
                 track_tokens: bool) -> None:
        self.outcome = outcome
        self.request = request
        self.stream = stream
        self.done_marker = done_marker
        self.track_tokens = track_tokens
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.head_done = False
        self.length: int | None = None
        self.chunked = False
        self.carry = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.outcome.sent = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.head_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(bytes(self.buffer[:end]))
            data = bytes(self.buffer[end + 4:])
            self.buffer = bytearray()
            self.head_done = True
        if self.stream and self.outcome.status == 200:
            self._stream_data(data, now)
        else:
            self.buffer += data
            self._check_body()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.outcome.status = int(lines[0].split(b" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True

    def _stream_data(self, data: bytes, now: float) -> None:
        window = self.carry + data
        found = data.count(TOKEN_MARKER) + (
            1 if self.carry[-1:] == TOKEN_MARKER[:1] and data[:1] == TOKEN_MARKER[1:2] else 0)
        outcome = self.outcome
        if found:
            if outcome.first_token is None:
                outcome.first_token = now
            outcome.tokens += found
            if self.track_tokens:
                outcome.token_times.extend([now] * found)
        if self.done_marker in window:
            self._finish(None)
            return
        self.carry = window[-(len(self.done_marker) - 1):]

    def _check_body(self) -> None:
        if self.length is not None and len(self.buffer) >= self.length:
            self.outcome.body = bytes(self.buffer[:self.length])
            self._finish(None)
        elif self.chunked and self.buffer.endswith(b"0\r\n\r\n"):
            self.outcome.body = _dechunk(bytes(self.buffer))
            self._finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            if not self.head_done:
                self._finish(f"connection closed before an answer ({exc})")
                return
            if not self.stream or self.outcome.status != 200:
                self.outcome.body = (_dechunk(bytes(self.buffer)) if self.chunked
                                     else bytes(self.buffer))
            self._finish(None)

    def _finish(self, error: str | None) -> None:
        if self.finished.done():
            return
        self.outcome.done = time.perf_counter()
        self.outcome.error = error
        self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()


def _dechunk(raw: bytes) -> bytes:
    parts, position = [], 0
    while position < len(raw):
        line_end = raw.find(b"\r\n", position)
        if line_end < 0:
            break
        size = int(raw[position:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        parts.append(raw[line_end + 2:line_end + 2 + size])
        position = line_end + 2 + size + 2
    return b"".join(parts)


async def send(target: Target, number: int, *, track_tokens: bool = False,
               limit_s: float = 60.0) -> Outcome:
    """One request on a fresh connection (closed afterwards): read until done, EOF or timeout."""
    outcome = Outcome()
    body = target.body(number)
    head = [f"POST {target.path(number)} HTTP/1.1", f"host: {target.host}:{target.port}",
            f"content-length: {len(body)}", "content-type: application/json",
            "connection: close"]
    head += [f"{name}: {value}" for name, value in target.headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    exchange = _Exchange(outcome, request, target.stream, target.done_marker, track_tokens)
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(limit_s):
            transport, _ = await loop.create_connection(lambda: exchange, target.host,
                                                        target.port)
            await exchange.finished
    except (TimeoutError, OSError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.done = time.perf_counter()
    finally:
        if transport is not None:
            transport.close()
    return outcome


Launch = Callable[[int], Coroutine[Any, Any, Outcome]]


async def closed_loop(launch: Launch, *, total: int, concurrency: int,
                      deadline_s: float) -> list[Outcome]:
    """`concurrency` clients, each sending its next request when the last one ends."""
    outcomes: list[Outcome] = []
    counter = iter(range(total))
    stop_at = time.perf_counter() + deadline_s

    async def client() -> None:
        for number in counter:
            if time.perf_counter() > stop_at:
                return
            outcomes.append(await launch(number))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return outcomes


async def open_loop(launch: Launch, *, rate: float, duration_s: float, max_inflight: int,
                    drain_s: float = 30.0) -> tuple[list[Outcome], int]:
    """Requests at a fixed arrival rate for `duration_s`; returns (outcomes, how many dropped).

    Arrivals follow the schedule whatever the answers do (no coordinated omission); an arrival
    that finds `max_inflight` requests open is dropped and counted, so the load stays bounded.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Outcome]] = []
    inflight = 0
    dropped = 0

    async def tracked(number: int) -> Outcome:
        nonlocal inflight
        try:
            return await launch(number)
        finally:
            inflight -= 1

    for number in range(int(rate * duration_s)):
        delay = start + number / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if inflight >= max_inflight:
            dropped += 1
            continue
        inflight += 1
        tasks.append(asyncio.create_task(tracked(number)))
    done, pending = await asyncio.wait(tasks, timeout=drain_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    return [task.result() for task in done if not task.cancelled()], dropped + len(pending)


async def hold_streams(launch: Launch, *, streams: int, ramp_s: float) -> list[Outcome]:
    """Open `streams` long streams spread evenly over `ramp_s`, and wait for all to end."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Outcome]] = []
    for number in range(streams):
        delay = start + number * ramp_s / max(1, streams) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(launch(number)))
    return list(await asyncio.gather(*tasks))


def gaps_after(outcomes: Sequence[Outcome], start: float, end: float) -> list[float]:
    """Inter-token gaps (seconds) of tokens that arrived inside [start, end]."""
    gaps: list[float] = []
    for outcome in outcomes:
        times = outcome.token_times
        gaps.extend(b - a for a, b in itertools.pairwise(times) if start <= b <= end)
    return gaps
