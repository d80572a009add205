"""A fake OpenAI Chat Completions server: scripted replies over real HTTP, streamed like the API."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
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

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}
_ids = itertools.count(1)


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON body OpenAI answers errors with."""
    error_type = _ERROR_TYPES.get(status, "server_error")
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def usage_payload(usage: FakeUsage) -> dict[str, Any]:
    """A Chat Completions `usage` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _call_id(index: int, given: str) -> str:
    return given or f"call_fake{next(_ids):06d}_{index}"


class FakeOpenAI(ScriptedFake):
    """`POST /v1/chat/completions`, streamed (SSE) or not, answering from the script queue.

    Also `POST /v1/embeddings`: deterministic vectors (a text's hash picks them), with their own
    request log and error script so that chat scripts are never consumed by embedding calls.
    """

    def __init__(self, default: Reply | None = None) -> None:
        super().__init__(default)
        self.embedding_requests: list[dict[str, Any]] = []
        self.embedding_errors: list[ErrorReply] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"].endswith("/embeddings"):
            await self._answer_embeddings(receive, send)
            return
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            await send_json(send, 404, openai_error_body(404, f"no route {scope['path']}"))
            return
        body = await read_json_body(receive)
        reply = self.take(body, header_dict(scope), scope.get("client"))
        if reply is None:
            await send_json(send, 500, openai_error_body(500, "fake: no scripted reply"))
            return
        if isinstance(reply, ErrorReply):
            headers = {"retry-after": f"{reply.retry_after:g}"} if reply.retry_after else None
            await send_json(
                send, reply.status, openai_error_body(reply.status, reply.message), headers
            )
            return
        model = body.get("model", "gpt-fake")
        if not body.get("stream"):
            await self._answer_whole(send, reply, model)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await self._answer_streamed(receive, send, reply, model, include_usage)

    async def _answer_embeddings(self, receive: Receive, send: Send) -> None:
        body = await read_json_body(receive)
        self.embedding_requests.append(body)
        if self.embedding_errors:
            error = self.embedding_errors.pop(0)
            await send_json(send, error.status, openai_error_body(error.status, error.message))
            return
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = int(body.get("dimensions") or 1536)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(text, dims)}
            for i, text in enumerate(texts)
        ]
        # Reversed on purpose: the API does not promise order, clients must sort by index.
        tokens = sum(len(str(text).split()) for text in texts)
        await send_json(send, 200, {
            "object": "list", "data": data[::-1], "model": body.get("model", "fake-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve this fake; yields the base URL for the SDK (ending in /v1)."""
        with serve(self) as url:
            yield f"{url}/v1"

    async def _answer_whole(self, send: Send, reply: Reply, model: str) -> None:
        if not isinstance(reply, TextReply):
            await send_json(send, 500, openai_error_body(500, "fake: reply cannot be non-streamed"))
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(i, call.id),
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments_text(call.arguments)},
                }
                for i, call in enumerate(reply.tool_calls)
            ]
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": reply.effective_finish_reason}
            ],
        }
        if reply.usage is not None:
            payload["usage"] = usage_payload(reply.usage)
        await send_json(send, 200, payload)

    async def _answer_streamed(
        self, receive: Receive, send: Send, reply: Reply, model: str, include_usage: bool
    ) -> None:
        completion_id = f"chatcmpl-fake{next(_ids)}"
        created = int(time.time())
        reply_model = reply.model if isinstance(reply, TextReply) and reply.model else model

        async def chunk(choices: list[dict[str, Any]], usage: Any = None) -> None:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply_model,
                "choices": choices,
            }
            if include_usage:
                payload["usage"] = usage
            await send_bytes(send, f"data: {json.dumps(payload)}\n\n".encode())

        def delta(
            content: dict[str, Any], finish_reason: str | None = None
        ) -> list[dict[str, Any]]:
            return [
                {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}
            ]

        assert not isinstance(reply, ErrorReply)
        await start_event_stream(send)
        await chunk(delta({"role": "assistant", "content": "", "refusal": None}))
        chunk_delay = reply.chunk_delay if isinstance(reply, TextReply) else 0.0
        for piece in reply.chunks:
            if chunk_delay and await wait_for_disconnect(receive, chunk_delay):
                return  # the client went away: stop streaming to nobody
            await chunk(delta({"content": piece}))

        if isinstance(reply, AbortReply):
            if reply.how == "error_event":
                error = openai_error_body(500, "fake: stream failed")
                await send_bytes(send, f"data: {json.dumps(error)}\n\n".encode())
                await end_stream(send)
                return
            if reply.how == "malformed":
                await send_bytes(send, b'data: {"id": "chatcmpl-x", "choices": [{"delta": \n\n')
                await end_stream(send)
                return
            raise DeliberateAbort("fake: connection cut mid-stream")
        if isinstance(reply, StallReply):
            await stall(receive, send, reply.seconds, b": keep-alive\n\n", reply.ping_interval)
            return
        assert isinstance(reply, TextReply)

        for index, call in enumerate(reply.tool_calls):
            opening = {
                "index": index,
                "id": _call_id(index, call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await chunk(delta({"tool_calls": [opening]}))
            for fragment in split_evenly(_arguments_text(call.arguments), call.fragments):
                if chunk_delay and await wait_for_disconnect(receive, chunk_delay):
                    return  # the client went away: stop streaming to nobody
                piece = {"index": index, "function": {"arguments": fragment}}
                await chunk(delta({"tool_calls": [piece]}))
        await chunk(delta({}, reply.effective_finish_reason))
        if include_usage and reply.usage is not None:
            await chunk([], usage_payload(reply.usage))
        await send_bytes(send, b"data: [DONE]\n\n")
        await end_stream(send)


def fake_embedding(text: str, dims: int) -> list[float]:
    """A unit vector that depends only on the text (equal texts, equal vectors)."""
    seed = int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:8], "little")
    values = [((seed >> (i % 64)) & 0xFF) / 255.0 - 0.5 + (i % 7) * 0.01 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
