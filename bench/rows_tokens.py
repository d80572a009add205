"""Row 6: token counting per turn on an 8,000-token thread, beyond the new message.

The real app runs in this process against the run's database and the mock, with the tokenizer
instrumented: every `encode` call of a measured turn is timed, and the ones that count the new
user message are set apart. The rest is what a turn pays for the thread it belongs to.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from bench.context import RunContext, figure
from bench.stack import BRANCH, CUSTOMER, SERVICE_MODEL, WORKFLOW, set_mock

WORDS = ["renewal", "pricing", "champion", "budget", "procurement", "timeline", "security",
         "review", "discount", "contract", "usage", "adoption", "onboarding", "escalation",
         "sponsor", "quarter", "forecast", "risk"]


def _paragraph(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3 + i // 5) % len(WORDS)] for i in range(words))


def _label(text: str, reply: str) -> str:
    if text == reply:
        return "reply text"
    if text.startswith("Customer context"):
        return "context snapshot"
    if text.startswith("[{"):
        return "tool definitions"
    return "system prompt and other"


async def row6_tokens(ctx: RunContext) -> dict[str, Any]:
    """Tokenizer time per turn beyond the new message, on a thread of ~8,000 tokens."""
    from litestar.testing import AsyncTestClient

    from app.db.engine import RUNTIME_ROLE, DatabaseUrls
    from app.llm.tokens import get_encoding
    from app.main import create_app
    from app.settings import Settings
    from bench.mock_provider import TOKEN_TEXT

    stack = ctx.stack
    assert stack.database is not None
    set_mock(stack, ttft_ms=0, pacing_ms=0, tokens=8)
    reply = TOKEN_TEXT * 8
    goal, measured = (1000, 3) if ctx.smoke else (8000, 30)
    settings = Settings(data_dir=stack.data_dir, openai_base_url=stack.mock_url,
                        openai_api_key="unused-by-the-mock", default_model=SERVICE_MODEL)
    app = create_app(settings, database=DatabaseUrls(owner_url=stack.database.url(),
                                                     app_url=stack.database.url(RUNTIME_ROLE)))
    encoding = get_encoding()
    original = encoding.encode
    calls: list[tuple[float, str]] = []

    def timed(text: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        tokens = original(text, *args, **kwargs)
        calls.append((time.perf_counter() - started, text))
        return tokens

    headers = {"authorization": f"Bearer {stack.token}"}
    per_turn: list[float] = []
    by_site: dict[str, float] = defaultdict(float)
    new_message_us: list[float] = []
    thread_tokens = 0
    async with AsyncTestClient(app) as client:
        started = await client.post("/api/executions", headers=headers,
                                    json={"workflowId": WORKFLOW, "customerId": CUSTOMER})
        execution = started.json()["execution"]["id"]
        opened = await client.post(f"/api/executions/{execution}/branches/{BRANCH}",
                                   headers=headers)
        thread = opened.json()["thread"]["id"]
        number = 0
        while thread_tokens < goal:  # turns of ~480 tokens until the thread holds the goal
            content = _paragraph(number, 470)
            answer = await client.post(f"/api/threads/{thread}/messages", headers=headers,
                                       json={"content": content}, timeout=60)
            answer.raise_for_status()
            thread_tokens += len(original(content)) + len(original(reply))
            number += 1
        encoding.encode = timed  # type: ignore[method-assign]
        try:
            for turn in range(measured):
                content = _paragraph(1000 + turn, 40) + f" (question {turn})"
                calls.clear()
                answer = await client.post(f"/api/threads/{thread}/messages", headers=headers,
                                           json={"content": content}, timeout=60)
                answer.raise_for_status()
                beyond = [(s, t) for s, t in calls if t != content]
                new_message_us.append(sum(s for s, t in calls if t == content) * 1e6)
                per_turn.append(sum(s for s, _ in beyond) * 1e6)
                for seconds, text in beyond:
                    by_site[_label(text, reply)] += seconds * 1e6 / measured
        finally:
            del encoding.encode
    ordered = sorted(per_turn)
    median = ordered[len(ordered) // 2]
    met = median <= 100
    sites = {name: round(us, 1) for name, us in sorted(by_site.items(), key=lambda i: -i[1])}
    cell = (f"{figure(median, 'µs')} per turn beyond the new message (" +
            ", ".join(f"{name} {us:g} µs" for name, us in sites.items()) + ")")
    return {"row": 6, "title": f"Token counting per turn on a {goal:,}-token thread, beyond the "
                               "new message",
            "target": "≤ 100 µs", "met": met,
            "figures": {"median_us": round(median, 1), "max_us": round(ordered[-1], 1),
                        "by_site_us": sites, "thread_tokens": thread_tokens,
                        "new_message_median_us": round(sorted(new_message_us)[
                            len(new_message_us) // 2], 1), "turns": measured},
            "cells": {"service": cell, "floor": "— (the floor counts no tokens)", "peer": "—"}}
