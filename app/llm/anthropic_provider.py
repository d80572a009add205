"""Anthropic Messages behind the provider interface.

Usage: Anthropic reports `input_tokens` without the cached part, so the input we record is
`input_tokens + cache_creation_input_tokens + cache_read_input_tokens` (OpenAI's convention: input
includes cached) and `cached_tokens` is `cache_read_input_tokens`. Streamed usage is cumulative:
each `message_delta` repeats the running total, so the last value is taken, never a sum.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic

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
_TRANSLATED: tuple[type[Exception], ...] = (
    anthropic.APIError,
    *_TIMEOUT_ERRORS,
    *_TRANSPORT_ERRORS,
)

# Anthropic requires max_tokens; used when the request leaves it open.
DEFAULT_MAX_TOKENS = 4096

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}

# Error events inside a 200 stream carry only a type; these are the statuses it stands for.
_STATUS_OF_ERROR_TYPE = {
    "overloaded_error": 529,
    "api_error": 500,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "invalid_request_error": 400,
}


def to_anthropic_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages): tool results become user `tool_result` blocks.

    Consecutive messages of one role are merged, which puts all results of one assistant turn
    into the single user message that Anthropic expects after it.
    """
    system_parts: list[str] = []
    converted: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if converted and converted[-1]["role"] == role:
            converted[-1]["content"].extend(blocks)
        else:
            converted.append({"role": role, "content": blocks})

    for message in messages:
        text_blocks = [{"type": "text", "text": message.content}] if message.content else []
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
        elif message.role == "user":
            append("user", text_blocks)
        elif message.role == "assistant":
            tool_blocks = [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            ]
            append("assistant", text_blocks + tool_blocks)
        else:
            append(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id,
                        "content": message.content,
                    }
                ],
            )
    return "\n\n".join(system_parts), converted


@dataclass
class _UsageTally:
    """Running usage of one stream; every report replaces the previous one."""

    input_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    reported: bool = False

    def update(self, usage: Any) -> None:
        if usage is None:
            return
        for field_name, attribute in (
            ("input_tokens", "input_tokens"),
            ("cache_creation_tokens", "cache_creation_input_tokens"),
            ("cache_read_tokens", "cache_read_input_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            value = getattr(usage, attribute, None)
            if value is not None:
                setattr(self, field_name, value)
                self.reported = True
        thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
        if thinking is not None:
            self.thinking_tokens = thinking

    def to_usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cache_read_tokens,
            reasoning_tokens=self.thinking_tokens,
            source="provider",
        )


def translate_anthropic_error(exc: Exception) -> ProviderError:
    """The app error for an exception raised by the Anthropic SDK or its HTTP library."""
    if isinstance(exc, (anthropic.APITimeoutError, *_TIMEOUT_ERRORS)):
        if (failure := connection_failure_behind(exc)) is not None:
            return ProviderError(f"anthropic: connection failed ({failure})", retryable=True)
        return ProviderTimeout(f"anthropic: timed out ({type(exc).__name__})", retryable=True)
    if isinstance(exc, (anthropic.APIConnectionError, *_TRANSPORT_ERRORS)):
        return ProviderError(f"anthropic: connection failed ({innermost_reason(exc)})",
                             retryable=True)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status < 400:
            # An `error` event inside an accepted stream: its type says what went wrong.
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            status = _STATUS_OF_ERROR_TYPE.get(str(error_type), 500)
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return error_for_status(status, f"anthropic: {exc.message}", retry_after=retry_after)
    return ProviderError(f"anthropic: {exc}", retryable=True)


class AnthropicProvider:
    """Streams Anthropic Messages with tool use and cumulative usage."""

    name = "anthropic"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._client: anthropic.AsyncAnthropic | None = None
        if config.api_key is not None:
            self._client = anthropic.AsyncAnthropic(
                api_key=config.api_key,
                base_url=config.base_url,
                max_retries=0,  # retries happen in stream_with_retries, before content only
                timeout=anthropic.Timeout(
                    connect=config.connect_timeout,
                    read=config.read_timeout,
                    write=config.read_timeout,
                    pool=config.connect_timeout,
                ),
                # aiohttp's C parser reads the stream: a quarter less CPU per relayed token
                # than the default pure-Python HTTP/1.1 stack (bench row 2).
                http_client=anthropic.DefaultAioHttpClient(),
            )

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply; see `Provider.stream`."""
        return stream_with_retries(lambda: self._attempt(request), self.config)

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        if self._client is not None:
            await self._client.close()

    @staticmethod
    def _params(request: ChatRequest) -> dict[str, Any]:
        system, messages = to_anthropic_messages(request.messages)
        params: dict[str, Any] = {
            "model": wire_model_name(request.model),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        # No temperature: current Messages models and SDKs no longer take sampling parameters.
        return params

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        if self._client is None:
            raise ProviderUnavailable("anthropic: no API key configured", retryable=False)
        model = wire_model_name(request.model)
        tally = _UsageTally()
        text: list[str] = []
        calls: list[ToolCall] = []
        tool_blocks: dict[int, dict[str, str]] = {}
        stop_reason: str | None = None
        try:
            params = untransformed(self._params(request), ("messages", "system", "tools"))
            stream = await self._client.messages.create(**params)
            try:
                async for event in stream:
                    if event.type == "message_start":
                        model = event.message.model or model
                        tally.update(getattr(event.message, "usage", None))
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            tool_blocks[event.index] = {
                                "id": block.id,
                                "name": block.name,
                                "json": "",
                            }
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta" and delta.text:
                            text.append(delta.text)
                            yield TextDelta(delta.text)
                        elif delta.type == "input_json_delta" and event.index in tool_blocks:
                            tool_blocks[event.index]["json"] += delta.partial_json
                    elif event.type == "content_block_stop" and event.index in tool_blocks:
                        block_state = tool_blocks.pop(event.index)
                        calls.append(
                            ToolCall(
                                id=block_state["id"],
                                name=block_state["name"],
                                arguments=parse_tool_arguments(block_state["json"]),
                            )
                        )
                        yield ToolCallReady(calls[-1])
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        tally.update(getattr(event, "usage", None))
            finally:
                await stream.close()
        except _TRANSLATED as exc:
            error = translate_anthropic_error(exc)
            if tally.reported:
                error.partial_usage = tally.to_usage()
            raise error from exc
        if stop_reason is None:
            raise ProviderError(
                "anthropic: stream ended without a stop reason",
                retryable=True,
                partial_usage=tally.to_usage() if tally.reported else None,
            )
        usage = (
            tally.to_usage() if tally.reported else estimate_usage(request, "".join(text), calls)
        )
        yield Finish(
            usage=usage,
            finish_reason=_FINISH_REASONS.get(stop_reason, stop_reason),
            model=model,
        )
