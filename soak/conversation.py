"""One chat turn under load: post (SSE or JSON), maybe cut, resume on either worker, or stop."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from soak.client import Api, User
from soak.journal import Journal, Post, StreamRead

# (weight, behaviour) of a turn's client.
BEHAVIOURS = ((45, "full"), (12, "cut-resume-same"), (14, "cut-resume-other"),
              (6, "cut-leave"), (11, "stop"), (12, "json"))
LOCAL_FAULTS = ((70, ""), (6, "[[fail-before]]"), (6, "[[fail-after]]"), (4, "[[stall]]"),
                (14, "[[long]]"))
MOCK_FAULTS = ((52, ""), (6, "[[soak:fail-before]]"), (6, "[[soak:fail-after]]"),
               (4, "[[soak:stall]]"), (7, "[[soak:malformed]]"), (15, "[[soak:tools]]"),
               (10, "[[soak:slow]]"))
QUESTIONS = ("What is the biggest risk for this renewal?", "list contracts and seats",
             "Show a chart of the ARR trend", "Which pricing or discount options do we have?",
             "Summarise the account for the renewal call", "how many seats and what plan?")
RESUME_PATIENCE_S = 60.0


def weighted(rng: random.Random, table: tuple[tuple[int, str], ...]) -> str:
    """A value drawn by weight."""
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


@dataclass
class Turn:
    """What one turn did, for counting faults."""

    behaviour: str
    fault: str


async def chat_turn(api: Api, journal: Journal, rng: random.Random, user: User, thread_id: str,
                    provider: str, question: str | None = None,
                    behaviour: str | None = None, fault: str | None = None,
                    worker: Any = None) -> Turn:
    """Send one message and read its reply the way the chosen client behaviour does."""
    if fault is None:
        fault = weighted(rng, LOCAL_FAULTS if provider == "local" else MOCK_FAULTS)
    behaviour = behaviour or weighted(rng, BEHAVIOURS)
    content = f"{question or rng.choice(QUESTIONS)} {fault} [soak {uuid.uuid4().hex[:12]}]"
    post = Post(user.tenant, thread_id, content, key=f"soak-msg-{uuid.uuid4().hex}")
    journal.posts.append(post)
    journal.faults[f"provider fault {fault.strip('[]') or 'none'}"] += 1
    journal.faults[f"client {behaviour}"] += 1
    path = f"/api/threads/{thread_id}/messages"
    if behaviour == "json":
        for _ in range(3):
            post.attempts += 1
            response = await api.call("POST", path, user, body={"content": content},
                                      key=post.key, retries=1)
            if response is not None and response.status_code == 200:
                post.acked = True
                return Turn(behaviour, fault)
            if response is not None and response.status_code < 500:
                return Turn(behaviour, fault)
        return Turn(behaviour, fault)
    record = StreamRead(user.tenant, thread_id)
    journal.streams.append(record)
    cut_after = rng.randint(2, 14) if behaviour != "full" else None
    worker = worker or api.pick()
    status: int | None = None
    cut = False
    for _ in range(3):  # the post itself, retried under its key when no answer came
        post.attempts += 1
        record.parts, record.connections, record.run_id = [], 0, None
        status, cut = await api.stream("POST", path, user, record, worker=worker,
                                       body={"content": content},
                                       headers={"Idempotency-Key": post.key}, cut_after=cut_after)
        if status == 200:
            post.acked = True
            break
        if status is not None and status < 500:
            break
        await asyncio.sleep(0.5)
        worker = api.pick(avoid=worker)
    if status != 200:
        record.abandoned = True
        return Turn(behaviour, fault)
    if behaviour == "stop":
        await api.call("POST", f"/api/threads/{thread_id}/stop", user, retries=2)
    if behaviour == "cut-leave" and cut:
        record.abandoned = True
        return Turn(behaviour, fault)
    await finish_reading(api, rng, user, record, worker,
                         other=behaviour in ("cut-resume-other", "stop") or not cut)
    return Turn(behaviour, fault)


async def finish_reading(api: Api, rng: random.Random, user: User, record: StreamRead,
                         last_worker: Any, other: bool) -> None:
    """Resume with Last-Event-ID until [DONE]; a dead worker's run ends once it is recovered."""
    deadline = time.monotonic() + RESUME_PATIENCE_S
    worker = api.pick(avoid=last_worker) if other else last_worker
    while not record.done and time.monotonic() < deadline:
        if any("another run" in note for note in record.notes):
            return  # the checks report the parts this run never delivered
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        if worker is not last_worker:
            record.resumed_on_other_worker = True
        status = await api.resume(user, record, worker)
        if status == 204:  # nothing left to send: the checks judge whether every part came
            record.notes.append("resume answered 204")
            return
        if not record.done:
            last_worker, worker = worker, api.pick(avoid=worker)
            await asyncio.sleep(0.5)
