"""Serve an ASGI app with uvicorn in a background thread on a free loopback port; ASGI helpers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class DeliberateAbort(Exception):
    """Raised by a fake after a partial response so that uvicorn cuts the connection."""


class _HideDeliberateAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateAbort))


@contextmanager
def serve(app: ASGIApp, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 for the duration of the block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # After Config: its logging set-up would otherwise reset the filter.
    error_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateAborts) for f in error_logger.filters):
        error_logger.addFilter(_HideDeliberateAborts())
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-server-{port}", daemon=True
    )
    thread.start()
    started_by = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > started_by:
            raise RuntimeError(f"fake server on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def read_json_body(receive: Receive) -> dict[str, Any]:
    """The request body parsed as JSON ({} when empty)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    return json.loads(raw) if raw else {}


def header_dict(scope: Scope) -> dict[str, str]:
    """Request headers as a lower-case dict."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def send_json(
    send: Send, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    """A complete JSON response."""
    body = json.dumps(payload).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def start_event_stream(send: Send) -> None:
    """Begin a 200 text/event-stream response."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )


async def send_bytes(send: Send, data: bytes) -> None:
    """One piece of a streamed body."""
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def end_stream(send: Send) -> None:
    """Finish a streamed body cleanly."""
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_for_disconnect(receive: Receive, seconds: float) -> bool:
    """Wait up to `seconds`; True when the client went away meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return True
    except TimeoutError:
        return False


async def stall(
    receive: Receive, send: Send, seconds: float, ping: bytes | None, ping_interval: float | None
) -> None:
    """Say nothing (or only `ping`) for `seconds` or until the client leaves, then cut the line."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        wait = min(remaining, ping_interval) if ping and ping_interval else remaining
        if await wait_for_disconnect(receive, wait):
            return
        if ping and ping_interval:
            await send_bytes(send, ping)
    raise DeliberateAbort("stall ended")
