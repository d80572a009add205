"""A fast mock model server speaking both wire protocols (OpenAI Chat Completions, Anthropic).

It is its own light process: a raw asyncio HTTP/1.1 server (keep-alive, chunked streaming) so
that the mock costs as little CPU per token as possible and never becomes the bottleneck.
Knobs: time to first token, per-token pacing and reply length, set at start, changed at run time
with `POST /_config`, or per request with `x-mock-ttft-ms`, `x-mock-pacing-ms`, `x-mock-tokens`.

    python -m bench.mock_provider --port 0 --ttft-ms 20 --pacing-ms 5 --tokens 16

prints `READY <port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.common import run_fast

# Every token carries this marker, and nothing else in any stream does: clients find token
# arrivals by counting it in raw bytes, whatever wire format the relay in front uses.
TOKEN_TEXT = " zq"
TOKEN_MARKER = b"zq"


@dataclass(frozen=True)
class Knobs:
    """How a reply is paced."""

    ttft_ms: float = 20.0
    pacing_ms: float = 5.0
    tokens: int = 16

    def with_headers(self, headers: dict[str, str]) -> Knobs:
        """These knobs, overridden by the request's x-mock-* headers."""
        changes: dict[str, Any] = {}
        for name, field_name, kind in (("x-mock-ttft-ms", "ttft_ms", float),
                                       ("x-mock-pacing-ms", "pacing_ms", float),
                                       ("x-mock-tokens", "tokens", int)):
            if name in headers:
                changes[field_name] = kind(headers[name])
        return replace(self, **changes) if changes else self


class Stats:
    """Counters the harness reads through `GET /_stats`."""

    def __init__(self) -> None:
        self.requests = 0
        self.active_streams = 0
        self.recent: deque[float] = deque(maxlen=2000)  # wall-clock receipt times


def _openai_chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
               "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]}
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _usage(tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": 50, "completion_tokens": tokens, "total_tokens": 50 + tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(
        data, separators=(",", ":")).encode() + b"\n\n"


class Frames:
    """Pre-encoded stream frames per (protocol, model): nothing is serialised per token."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, bool, int], tuple[bytes, bytes, bytes]] = {}

    def openai(self, model: str, include_usage: bool, tokens: int) -> tuple[bytes, bytes, bytes]:
        """(opening, one token, closing) frames of a Chat Completions stream."""
        key = ("openai", model, include_usage, tokens)
        if key not in self._cache:
            opening = _openai_chunk(model, {"role": "assistant", "content": ""})
            token = _openai_chunk(model, {"content": TOKEN_TEXT})
            closing = _openai_chunk(model, {}, "stop")
            if include_usage:
                payload = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                           "created": 1, "model": model, "choices": [], "usage": _usage(tokens)}
                closing += b"data: " + json.dumps(payload).encode() + b"\n\n"
            self._cache[key] = (opening, token, closing + b"data: [DONE]\n\n")
        return self._cache[key]

    def anthropic(self, model: str, tokens: int) -> tuple[bytes, bytes, bytes]:
        """(opening, one token, closing) frames of a Messages stream."""
        key = ("anthropic", model, False, tokens)
        if key not in self._cache:
            message: dict[str, Any] = {
                "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 50, "output_tokens": 1}}
            opening = _anthropic_event("message_start", {"type": "message_start",
                                                         "message": message})
            opening += _anthropic_event("content_block_start", {
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})
            token = _anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": TOKEN_TEXT}})
            closing = _anthropic_event("content_block_stop", {"type": "content_block_stop",
                                                              "index": 0})
            closing += _anthropic_event("message_delta", {
                "type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                   "stop_sequence": None},
                "usage": {"output_tokens": tokens}})
            closing += _anthropic_event("message_stop", {"type": "message_stop"})
            self._cache[key] = (opening, token, closing)
        return self._cache[key]


def whole_openai(model: str, tokens: int) -> dict[str, Any]:
    """A non-streamed Chat Completions answer."""
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": TOKEN_TEXT * tokens}}],
            "usage": _usage(tokens)}


def whole_anthropic(model: str, tokens: int) -> dict[str, Any]:
    """A non-streamed Messages answer."""
    return {"id": "msg_bench", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": TOKEN_TEXT * tokens}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 50, "output_tokens": tokens}}


class MockServer:
    """The server's state: knobs, counters, frame cache."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.stats = Stats()
        self.frames = Frames()


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests one at a time and answers each in a task."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self.busy:
            return
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        lines = bytes(self.buffer[:head_end]).decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buffer) < head_end + 4 + length:
            return
        body = bytes(self.buffer[head_end + 4:head_end + 4 + length])
        del self.buffer[:head_end + 4 + length]
        self.busy = True
        asyncio.get_running_loop().create_task(self._answer(method, path, headers, body))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self._write(f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode() + body)

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%b\r\n" % (len(data), data))

    async def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        try:
            await self._route(method, path.split("?", 1)[0], headers, body)
        finally:
            self.busy = False
            if headers.get("connection", "").lower() == "close" and self.transport is not None:
                self.transport.close()
            elif not self.closed:
                self._next_request()

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        server = self.server
        if path == "/_config" and method == "POST":
            server.knobs = replace(server.knobs, **json.loads(body or b"{}"))
            self._send_json(200, asdict(server.knobs))
            return
        if path == "/_stats":
            self._send_json(200, {"requests": server.stats.requests,
                                  "activeStreams": server.stats.active_streams,
                                  "recentRequestTimes": list(server.stats.recent),
                                  "knobs": asdict(server.knobs)})
            return
        if path in ("/health", "/"):
            self._send_json(200, {"ok": True})
            return
        wire = ("openai" if path.endswith("/chat/completions")
                else "anthropic" if path.endswith("/messages") else None)
        if method != "POST" or wire is None:
            self._send_json(404, {"error": {"message": f"no route {path}"}})
            return
        server.stats.requests += 1
        server.stats.recent.append(time.time())
        request = json.loads(body or b"{}")
        knobs = server.knobs.with_headers(headers)
        model = str(request.get("model", "mock"))
        if not request.get("stream"):
            if knobs.ttft_ms:
                await asyncio.sleep(knobs.ttft_ms / 1000)
            whole = whole_openai if wire == "openai" else whole_anthropic
            self._send_json(200, whole(model, knobs.tokens))
            return
        if wire == "openai":
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            frames = server.frames.openai(model, include_usage, knobs.tokens)
        else:
            frames = server.frames.anthropic(model, knobs.tokens)
        await self._stream(knobs, *frames)

    async def _stream(self, knobs: Knobs, opening: bytes, token: bytes, closing: bytes) -> None:
        """Headers and the opening at once; tokens on an absolute schedule (no drift)."""
        stats = self.server.stats
        stats.active_streams += 1
        try:
            self._write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
            self._chunk(opening)
            loop = asyncio.get_running_loop()
            start = loop.time() + knobs.ttft_ms / 1000
            for index in range(knobs.tokens):
                delay = start + index * knobs.pacing_ms / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.closed:
                    return  # the client went away: stream to nobody no longer
                self._chunk(token)
            self._chunk(closing)
            self._write(b"0\r\n\r\n")
        finally:
            stats.active_streams -= 1


async def serve(host: str, port: int, knobs: Knobs) -> None:
    """Listen until cancelled; prints `READY <port>` once bound."""
    server = MockServer(knobs)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: HttpConnection(server), host, port,
                                        backlog=4096, reuse_address=True)
    bound = listener.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--pacing-ms", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    knobs = Knobs(args.ttft_ms, args.pacing_ms, args.tokens)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        run_fast(serve(args.host, args.port, knobs))
    print(f"mock stopped after {time.monotonic() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
