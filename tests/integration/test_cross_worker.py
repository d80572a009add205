"""A stream resumed on another worker process reads the same parts from the database."""

from __future__ import annotations

import httpx

from app.main import create_app
from tests.integration.conftest import thread_rows
from tests.live import read_stream, serve_app


async def test_resume_on_another_worker_continues_the_reply_exactly_once(
        live_settings, database, auth, new_thread, http, owner_engine):
    other_worker = create_app(live_settings.model_copy(update={"local_token_delay_ms": 5}),
                              database=database)
    thread = await new_thread("local")
    with serve_app(other_worker) as other_base:
        _, first = await read_stream(http, "POST", f"/api/threads/{thread}/messages", limit=4,
                                     headers=auth(), json={"content": "[[long]] Full history"})
        async with httpx.AsyncClient(base_url=other_base, timeout=30) as other:
            _, rest = await read_stream(other, "GET", f"/api/threads/{thread}/stream",
                                        headers={**auth(), "last-event-id": first[-1].id})
    seqs = [int(e.id.rsplit(":", 1)[1]) for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1].data == "[DONE]"
    text = "".join(e.part["delta"] for e in first + rest[:-1] if e.part["type"] == "text-delta")
    rows = await thread_rows(owner_engine, thread)
    assert rows["messages"][-1].status == "complete"
    assert text == rows["messages"][-1].content
