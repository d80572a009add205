"""OpenAI Chat Completions (and OpenAI-compatible servers) behind the provider interface."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import openai

from app.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallReady,
    Usage,
    parse_tool_arguments,
    stream_with_retries,
    untransformed,
    wire_model_name,
)
from app.llm.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    connection_failure_behind,
    error_for_status,
    innermost_reason,
    parse_retry_after,
    transport_error_types,
)
from app.llm.tokens import estimate_usage

_TIMEOUT_ERRORS, _TRANSPORT_ERRORS = transport_error_types()
_TRANSLATED: tuple[type[Exception], ...] = (openai.APIError, *_TIMEOUT_ERRORS, *_TRANSPORT_ERRORS)

# Reasoning models accept only the default temperature and answer 400 to any other.
_NO_TEMPERATURE_PREFIXES = ("o1", "o3", "o4", "gpt-5")

_FINISH_REASONS = {"function_call": "tool_calls"}
DRAIN_AFTER_DONE_S = 0.2  # how long the rest of a body may take to arrive after [DONE]


def to_openai_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Chat Completions messages, including assistant tool calls and tool results."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            converted.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
            continue
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.name and message.role in ("user", "system"):
            item["name"] = message.name
        if message.role == "assistant" and message.tool_calls:
            item["content"] = message.content or None
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ]
        converted.append(item)
    return converted


def usage_from_openai(usage: Any) -> Usage:
    """Normalised usage from a Chat Completions `usage` object."""
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
        source="provider",
    )


def translate_openai_error(exc: Exception) -> ProviderError:
    """The app error for an exception raised by the OpenAI SDK or its HTTP library."""
    if isinstance(exc, (openai.APITimeoutError, *_TIMEOUT_ERRORS)):
        if (failure := connection_failure_behind(exc)) is not None:
            return ProviderError(f"openai: connection failed ({failure})", retryable=True)
        return ProviderTimeout(f"openai: timed out ({type(exc).__name__})", retryable=True)
    if isinstance(exc, (openai.APIConnectionError, *_TRANSPORT_ERRORS)):
        return ProviderError(f"openai: connection failed ({innermost_reason(exc)})",
                             retryable=True)
    if isinstance(exc, openai.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return error_for_status(exc.status_code, f"openai: {exc.message}", retry_after=retry_after)
    # An `error` event inside the stream: the request was accepted, the service then failed.
    return ProviderError(f"openai: {exc}", retryable=True)


@dataclass
class _ToolCallBuilder:
    """Fragments of one streamed tool call, keyed by its index."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def build(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, arguments=parse_tool_arguments(self.arguments))


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolFragment(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolFragment] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Chunk(msgspec.Struct):
    """The fields of a `chat.completion.chunk` the service reads; others are skipped unread."""

    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


async def _chunks(body: AsyncIterator[bytes]) -> AsyncIterator[_Chunk]:
    """Chunks of a Chat Completions event stream (`data:` lines) until `[DONE]`.

    An error event or an undecodable chunk raises ProviderError, as the SDK's own stream would.
    """
    buffer = b""
    event = b""
    async for data in body:
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    # Read the body to its end: a response closed early takes its
                    # connection with it, and the next call would connect (and handshake)
                    # again. A server that keeps the body open after [DONE] only costs
                    # that connection, not the reply.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(DRAIN_AFTER_DONE_S):
                            async for _ in body:
                                pass
                    return
                try:
                    chunk = _decode_chunk(payload)
                except msgspec.DecodeError as exc:
                    raise ProviderError(f"openai: malformed stream chunk ({exc})",
                                        retryable=True) from exc
                if chunk.error is not None or event == b"error":
                    message = (chunk.error or {}).get("message", "error event in the stream")
                    raise ProviderError(f"openai: {message}", retryable=True)
                yield chunk
            elif not line:
                event = b""


class OpenAIProvider:
    """Streams Chat Completions with usage; any OpenAI-compatible server via `base_url`."""

    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        # The official API needs a key; compatible servers (vLLM, Ollama) usually ignore it.
        api_key = config.api_key or ("unused" if config.base_url else None)
        self._official_api = config.base_url is None
        self._client: openai.AsyncOpenAI | None = None
        if api_key is not None:
            self._client = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=config.base_url,
                max_retries=0,  # retries happen in stream_with_retries, before content only
                timeout=openai.Timeout(
                    connect=config.connect_timeout,
                    read=config.read_timeout,
                    write=config.read_timeout,
                    pool=config.connect_timeout,
                ),
                # aiohttp's C parser reads the stream: a quarter less CPU per relayed token
                # than the default pure-Python HTTP/1.1 stack (bench row 2).
                http_client=openai.DefaultAioHttpClient(),
            )

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply; see `Provider.stream`."""
        return stream_with_retries(lambda: self._attempt(request), self.config)

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        if self._client is not None:
            await self._client.close()

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        model = wire_model_name(request.model)
        params: dict[str, Any] = {
            "model": model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
        if request.temperature is not None and not model.startswith(_NO_TEMPERATURE_PREFIXES):
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            # The official API deprecated max_tokens; compatible servers often know only it.
            key = "max_completion_tokens" if self._official_api else "max_tokens"
            params[key] = request.max_tokens
        return params

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        if self._client is None:
            raise ProviderUnavailable("openai: no API key configured", retryable=False)
        model = wire_model_name(request.model)
        text: list[str] = []
        calls: list[ToolCall] = []
        builders: dict[int, _ToolCallBuilder] = {}
        usage: Usage | None = None
        finish_reason: str | None = None
        try:
            # The SDK sends the request (auth, headers, status errors); the stream's chunks are
            # decoded here with msgspec, not into a pydantic model per token (its main CPU cost).
            async with self._client.chat.completions.with_streaming_response.create(
                    **untransformed(self._params(request), ("messages", "tools"))) as response:
                async for chunk in _chunks(response.iter_bytes()):
                    model = chunk.model or model
                    if chunk.usage is not None:
                        usage = usage_from_openai(chunk.usage)
                    for choice in (chunk.choices or ())[:1]:
                        delta = choice.delta
                        if delta is not None and delta.content:
                            text.append(delta.content)
                            yield TextDelta(delta.content)
                        for fragment in (delta.tool_calls if delta is not None else None) or []:
                            builder = builders.setdefault(fragment.index, _ToolCallBuilder())
                            builder.id = fragment.id or builder.id
                            if fragment.function is not None:
                                builder.name = fragment.function.name or builder.name
                                builder.arguments += fragment.function.arguments or ""
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                            for index in sorted(builders):
                                calls.append(builders.pop(index).build())
                                yield ToolCallReady(calls[-1])
        except _TRANSLATED as exc:
            raise translate_openai_error(exc) from exc
        if finish_reason is None:
            raise ProviderError("openai: stream ended without a finish reason", retryable=True)
        if usage is None:
            usage = estimate_usage(request, "".join(text), calls)
        yield Finish(
            usage=usage,
            finish_reason=_FINISH_REASONS.get(finish_reason, finish_reason),
            model=model,
        )
