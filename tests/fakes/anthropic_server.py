"""A fake Anthropic Messages server: scripted replies over real HTTP, streamed as the API does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.fakes import (
    AbortReply,
    ErrorReply,
    FakeUsage,
    Reply,
    ScriptedFake,
    StallReply,
    TextReply,
    split_evenly,
)
from tests.fakes.server_thread import (
    DeliberateAbort,
    Receive,
    Scope,
    Send,
    end_stream,
    header_dict,
    read_json_body,
    send_bytes,
    send_json,
    serve,
    stall,
    start_event_stream,
    wait_for_disconnect,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ids = itertools.count(1)


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON body Anthropic answers errors with (also the data of an in-stream error event)."""
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def start_usage_payload(usage: FakeUsage) -> dict[str, Any]:
    """The `usage` of message_start: input known, output just begun."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": 1,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(ScriptedFake):
    """`POST /v1/messages`, streamed (SSE) or not, answering from the script queue."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or not scope["path"].endswith("/v1/messages"):
            await send_json(send, 404, anthropic_error_body(404, f"no route {scope['path']}"))
            return
        body = await read_json_body(receive)
        reply = self.take(body, header_dict(scope))
        if reply is None:
            await send_json(send, 500, anthropic_error_body(500, "fake: no scripted reply"))
            return
        if isinstance(reply, ErrorReply):
            headers = {"retry-after": f"{reply.retry_after:g}"} if reply.retry_after else None
            error = anthropic_error_body(reply.status, reply.message)
            await send_json(send, reply.status, error, headers)
            return
        model = body.get("model", "claude-fake")
        if not body.get("stream"):
            await self._answer_whole(send, reply, model)
            return
        await self._answer_streamed(receive, send, reply, model)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve this fake; yields the base URL for the SDK."""
        with serve(self) as url:
            yield url

    async def _answer_whole(self, send: Send, reply: Reply, model: str) -> None:
        if not isinstance(reply, TextReply):
            error = anthropic_error_body(500, "fake: reply cannot be non-streamed")
            await send_json(send, 500, error)
            return
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for index, call in enumerate(reply.tool_calls):
            arguments = call.arguments if isinstance(call.arguments, dict) else {}
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(index, call.id),
                    "name": call.name,
                    "input": arguments,
                }
            )
        usage = reply.usage or FakeUsage()
        payload = {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or model,
            "content": content,
            "stop_reason": _STOP_REASONS[reply.effective_finish_reason],
            "stop_sequence": None,
            "usage": {**start_usage_payload(usage), "output_tokens": usage.output_tokens},
        }
        await send_json(send, 200, payload)

    async def _answer_streamed(
        self, receive: Receive, send: Send, reply: Reply, model: str
    ) -> None:
        assert not isinstance(reply, ErrorReply)
        usage = reply.usage if isinstance(reply, TextReply | AbortReply) else FakeUsage()
        message: dict[str, Any] = {
            "id": f"msg_fake{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": reply.model if isinstance(reply, TextReply) and reply.model else model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage is not None:
            message["usage"] = start_usage_payload(usage)
        chunk_delay = reply.chunk_delay if isinstance(reply, TextReply) else 0.0

        await start_event_stream(send)
        await send_bytes(
            send, _event("message_start", {"type": "message_start", "message": message})
        )
        index = 0
        if reply.chunks:
            block = {"type": "text", "text": ""}
            start = {"type": "content_block_start", "index": index, "content_block": block}
            await send_bytes(send, _event("content_block_start", start))
            await send_bytes(send, _event("ping", {"type": "ping"}))
            for piece in reply.chunks:
                if chunk_delay and await wait_for_disconnect(receive, chunk_delay):
                    return  # the client went away: stop streaming to nobody
                text_delta = {"type": "text_delta", "text": piece}
                data = {"type": "content_block_delta", "index": index, "delta": text_delta}
                await send_bytes(send, _event("content_block_delta", data))
        if isinstance(reply, AbortReply):
            await self._abort(send, reply)
            return
        if isinstance(reply, StallReply):
            ping = _event("ping", {"type": "ping"})
            await stall(receive, send, reply.seconds, ping, reply.ping_interval)
            return
        if reply.chunks:
            stop = {"type": "content_block_stop", "index": index}
            await send_bytes(send, _event("content_block_stop", stop))
            index += 1

        for call_number, call in enumerate(reply.tool_calls):
            block = {
                "type": "tool_use",
                "id": _tool_id(call_number, call.id),
                "name": call.name,
                "input": {},
            }
            start = {"type": "content_block_start", "index": index, "content_block": block}
            await send_bytes(send, _event("content_block_start", start))
            arguments = (
                call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            )
            for fragment in ["", *split_evenly(arguments, call.fragments)]:
                if chunk_delay and await wait_for_disconnect(receive, chunk_delay):
                    return  # the client went away: stop streaming to nobody
                json_delta = {"type": "input_json_delta", "partial_json": fragment}
                data = {"type": "content_block_delta", "index": index, "delta": json_delta}
                await send_bytes(send, _event("content_block_delta", data))
            await send_bytes(
                send, _event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
            index += 1

        stop_reason = _STOP_REASONS[reply.effective_finish_reason]
        steps = (usage.output_steps or (usage.output_tokens,)) if usage is not None else (None,)
        for output_tokens in steps:
            data: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            }
            if output_tokens is not None:
                data["usage"] = {"output_tokens": output_tokens}
            await send_bytes(send, _event("message_delta", data))
        await send_bytes(send, _event("message_stop", {"type": "message_stop"}))
        await end_stream(send)

    @staticmethod
    async def _abort(send: Send, reply: AbortReply) -> None:
        if reply.how == "error_event":
            error = anthropic_error_body(529, "Overloaded")
            await send_bytes(send, _event("error", error))
            await end_stream(send)
            return
        raise DeliberateAbort("fake: connection cut mid-stream")


def _tool_id(index: int, given: str) -> str:
    return given or f"toolu_fake{next(_ids):06d}_{index}"
