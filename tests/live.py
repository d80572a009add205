"""Serve the real app over real HTTP (uvicorn in a thread) and read its SSE streams."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from litestar import Litestar


@contextmanager
def serve_app(app: Litestar) -> Iterator[str]:
    """Run `app` with its lifespan on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class Event:
    """One SSE event."""

    id: str | None
    data: str

    @property
    def part(self) -> dict[str, Any] | None:
        """The JSON part, or None for [DONE]."""
        return None if self.data == "[DONE]" else json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse an SSE response as it arrives."""
    event_id, data = None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(event_id, "\n".join(data))
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


async def read_stream(client: httpx.AsyncClient, method: str, url: str, *, limit: int | None = None,
                      **kwargs: Any) -> tuple[httpx.Response, list[Event]]:
    """Read up to `limit` events (all when None), then drop the connection."""
    events: list[Event] = []
    headers = {"accept": "text/event-stream", **kwargs.pop("headers", {})}
    async with client.stream(method, url, headers=headers, **kwargs) as response:
        if response.status_code != 200:
            await response.aread()
            return response, events
        async for event in sse_events(response):
            events.append(event)
            if limit is not None and len(events) >= limit:
                break
    return response, events
