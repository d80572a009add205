"""What the load did and what the service acknowledged: the ground truth the checks compare with."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

UUID_PATTERN = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Post:
    """One user message sent (perhaps several attempts under one Idempotency-Key)."""

    tenant: str
    thread_id: str
    content: str
    key: str
    acked: bool = False
    attempts: int = 0


@dataclass
class StreamRead:
    """The parts a client received for one run, across its first connection and resumes."""

    tenant: str
    thread_id: str
    run_id: str | None = None
    parts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    connections: int = 0
    resumed_on_other_worker: bool = False
    done: bool = False  # [DONE] received
    abandoned: bool = False  # the client gave up on purpose (cut without resume)
    notes: list[str] = field(default_factory=list)

    @property
    def resumed(self) -> bool:
        """True when more than one connection carried this run's parts."""
        return self.connections > 1


@dataclass
class Action:
    """An idempotent POST that is not a message: execution start, branch, document."""

    tenant: str
    kind: str  # execution | branch:<type> | document
    key: str
    target: str  # execution id (branches), or "" before it is known
    acked: bool = False
    result_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Probe:
    """A prompt-injection conversation and who drove it."""

    tenant: str
    thread_id: str
    driver: str  # local | obedient-mock
    kinds: list[str]


class Journal:
    """Everything recorded during the load; shared by every actor of the soak process."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.streams: list[StreamRead] = []
        self.actions: list[Action] = []
        self.probes: list[Probe] = []
        self.threads: dict[str, str] = {}  # thread id -> tenant
        # (tenant, endpoint) -> the uuids that tenant's responses from that endpoint showed
        self.seen_ids: dict[tuple[str, str], set[bytes]] = defaultdict(set)
        self.foreign_text_hits: list[str] = []
        self.secret_hits: list[str] = []
        self.direct_cross_tenant: list[str] = []  # other-tenant ids that answered non-404
        self.cross_attempts = 0
        self.endpoints: Counter[str] = Counter()  # "METHOD template status" -> count
        self.faults: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def observe(self, tenant: str, endpoint: str, body: bytes, foreign_names: list[bytes],
                secrets: list[bytes], sent: bytes = b"") -> None:
        """Keep the ids a tenant's response showed; flag other tenants' names and any secret.

        Ids the request itself carried (in its path or body) are left out: a 404 that names
        the id it was asked for shows the caller nothing it did not already have.
        """
        found = set(UUID_PATTERN.findall(body)) - set(UUID_PATTERN.findall(sent))
        self.seen_ids[(tenant, endpoint)].update(found)
        lowered = body.lower()
        for name in foreign_names:
            if name in lowered:
                self.foreign_text_hits.append(f"{tenant} saw {name.decode()!r} via {endpoint}")
        for secret in secrets:
            if secret in body:
                self.secret_hits.append(f"{tenant} saw a service secret via {endpoint}")
