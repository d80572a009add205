"""Turn a run into an HTTP answer: the UI message stream (SSE) or JSON once it is final."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from sqlalchemy import select

from app.auth.principal import Principal
from app.chat import stream as parts
from app.chat.models import Run
from app.chat.runs import FINAL_STATUSES, RunManager
from app.chat.service import reply_payload
from app.db.driver import driver_of
from app.db.tenancy import tenant_transaction
from app.errors import ServiceUnavailable


class UIMessageStream(ServerSentEvent):
    """An SSE response that stays `text/event-stream` whatever the route's default media type.

    Litestar lets a handler's media type (JSON for routes that answer either way) override the
    response's own; a stream must never be labelled JSON.
    """

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


def wants_stream(request: Request[Any, Any, Any]) -> bool:
    """True when the client asked for Server-Sent Events."""
    return "text/event-stream" in request.headers.get("accept", "")


def _is_finish(part: str) -> bool:
    """True for the `finish` part (parsed only when the text could be one)."""
    return '"finish"' in part and json.loads(part).get("type") == "finish"


def sse(manager: RunManager, tenant_id: uuid.UUID, run_id: uuid.UUID, after: int = 0,
        status_code: int = 200) -> ServerSentEvent:
    """Stream a run's parts after `after`, each with its id, then `[DONE]`."""

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        last, finished = after, False
        async for seq, part in manager.follow(tenant_id, run_id, after):
            last, finished = seq, _is_finish(part)
            yield ServerSentEventMessage(data=part, id=parts.event_id(run_id, seq))
        if not finished:  # the run ended here abnormally: its ending comes from the database
            async for seq, part in manager._follow_stored(tenant_id, run_id, last):
                last = seq
                yield ServerSentEventMessage(data=part, id=parts.event_id(run_id, seq))
        yield ServerSentEventMessage(data=parts.DONE, id=parts.event_id(run_id, last + 1))

    return UIMessageStream(events(), headers=parts.STREAM_HEADERS, status_code=status_code)


async def wait_for_json(request: Request[Any, Any, Any], principal: Principal,
                        run_id: uuid.UUID, timeout_s: float) -> dict[str, Any]:
    """Wait for the run to end (here or on another worker) and answer with the reply."""
    manager: RunManager = request.app.state.run_manager
    sessionmaker = request.app.state.sessionmaker
    handle = manager.handles.get(run_id)
    if handle is not None:
        handle.wants_payload = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if handle is not None:
            try:
                async with asyncio.timeout_at(deadline):  # no task of its own, unlike wait_for
                    await handle.finished.wait()
            except TimeoutError:
                break
            if handle.payload is not None:
                return handle.payload
            handle = None
        async with tenant_transaction(sessionmaker, principal.tenant_id) as session:
            run = (await session.scalars(select(Run).where(Run.id == run_id))).one()
            if run.status in FINAL_STATUSES:
                return await reply_payload(await driver_of(session), run)
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.1)
    raise ServiceUnavailable("the reply is still running; read it with GET .../stream")
