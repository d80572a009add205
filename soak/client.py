"""The load's HTTP client: any worker, retries under one Idempotency-Key, SSE with resume."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from soak.journal import Journal, StreamRead
from soak.stack import Worker

IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RETRYABLE = {500, 502, 503, 504}


@dataclass
class User:
    """A seeded user the load acts as."""

    email: str
    tenant: str  # tenant slug
    tenant_id: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Its Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


def template(path: str) -> str:
    """The endpoint of a path, ids replaced, for per-endpoint counts."""
    return IDS.sub("{id}", path.split("?", 1)[0])


class Api:
    """Requests to the two workers on behalf of seeded users; every answer is observed."""

    def __init__(self, workers: list[Worker], journal: Journal, rng: random.Random,
                 foreign_names: dict[str, list[bytes]], secrets: list[bytes]) -> None:
        self.workers = workers
        self.journal = journal
        self.rng = rng
        self.foreign_names = foreign_names  # tenant -> lowercase names of other tenants' rows
        self.secrets = secrets
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=3),
                                        limits=httpx.Limits(max_connections=64))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    def pick(self, avoid: Worker | None = None) -> Worker:
        """A worker at random (another one than `avoid` when asked)."""
        choices = [w for w in self.workers if w is not avoid] or self.workers
        return self.rng.choice(choices)

    def _observe(self, user: User, method: str, path: str, status: int, body: bytes,
                 sent: Any = None) -> None:
        endpoint = f"{method} {template(path)}"
        self.journal.endpoints[f"{endpoint} {status}"] += 1
        self.journal.observe(user.tenant, endpoint, body, self.foreign_names[user.tenant],
                             self.secrets, _sent(path, sent))

    async def call(self, method: str, path: str, user: User, *, body: Any = None,
                   key: str | None = None, worker: Worker | None = None, retries: int = 3,
                   headers: dict[str, str] | None = None) -> httpx.Response | None:
        """One request, retried on another worker on 5xx or a dropped connection (same key)."""
        target = worker or self.pick()
        extra = {**user.headers, **(headers or {})}
        if key:
            extra["Idempotency-Key"] = key
        for attempt in range(retries + 1):
            try:
                response = await self.client.request(method, target.base + path, json=body,
                                                     headers=extra)
            except httpx.HTTPError as exc:
                self.journal.errors[f"{method} {template(path)} {type(exc).__name__}"] += 1
                response = None
            if response is not None:
                self._observe(user, method, path, response.status_code, response.content,
                              body)
                if response.status_code not in RETRYABLE:
                    return response
            if attempt < retries:
                await asyncio.sleep(0.3 + attempt * 0.7)
                target = self.pick(avoid=target)
        return response

    async def stream(self, method: str, path: str, user: User, record: StreamRead, *,
                     worker: Worker, body: Any = None, headers: dict[str, str] | None = None,
                     cut_after: int | None = None) -> tuple[int | None, bool]:
        """Read an SSE answer into `record`; returns (HTTP status, cut by us)."""
        extra = {**user.headers, "accept": "text/event-stream", **(headers or {})}
        endpoint = f"{method} {template(path)}"
        try:
            async with self.client.stream(method, worker.base + path, json=body,
                                          headers=extra) as response:
                status = response.status_code
                if status != 200:
                    content = await response.aread()
                    self._observe(user, method, path, status, content, body)
                    return status, False
                self.journal.endpoints[f"{endpoint} 200"] += 1
                record.connections += 1
                received = 0
                async for event_id, data in _events(response.aiter_lines()):
                    self.journal.observe(user.tenant, endpoint, data.encode(),
                                         self.foreign_names[user.tenant], self.secrets,
                                         _sent(path, body))
                    if data == "[DONE]":
                        record.done = True
                        return status, False
                    run_id, _, seq = (event_id or "").rpartition(":")
                    if record.run_id is None:
                        record.run_id = run_id
                    elif run_id != record.run_id:
                        record.notes.append(f"a resume answered another run {run_id}, not "
                                            f"{record.run_id}")
                        return status, True
                    record.parts.append((int(seq), json.loads(data)))
                    received += 1
                    if cut_after is not None and received >= cut_after:
                        return status, True
                return status, False  # the server closed without [DONE] (e.g. killed)
        except (httpx.HTTPError, ValueError) as exc:
            self.journal.errors[f"{endpoint} {type(exc).__name__}"] += 1
            return None, False

    async def resume(self, user: User, record: StreamRead, worker: Worker) -> int | None:
        """GET .../stream with Last-Event-ID after the last part received."""
        last = record.parts[-1][0] if record.parts else 0
        headers = {"last-event-id": f"{record.run_id}:{last}"} if record.run_id else {}
        status, _ = await self.stream("GET", f"/api/threads/{record.thread_id}/stream", user,
                                      record, worker=worker, headers=headers)
        return status


def _sent(path: str, body: Any) -> bytes:
    """What a request carried: its path and JSON body."""
    return (path + (json.dumps(body) if body is not None else "")).encode()


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """(id, data) of each SSE event."""
    event_id: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
            continue
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event_id, "\n".join(data)
