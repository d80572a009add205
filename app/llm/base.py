"""The provider interface: requests, stream events, normalised usage and the retry policy."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.llm.errors import ProviderError, ProviderTimeout

UsageSource = Literal["provider", "estimated", "unavailable"]


@dataclass(frozen=True)
class Usage:
    """Tokens of one provider call; input includes cached tokens (OpenAI's convention)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "provider"

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """A tool offered to the model; parameters is a JSON schema object.

    Compared and hashed by identity: a registry hands out one spec per tool, so per-turn work
    on the same specs (their token count) can be cached by the objects themselves.
    """

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model made, with its arguments parsed."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatMessage:
    """One message of the conversation sent to a provider."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class ChatRequest:
    """One provider call: model, messages, tools offered and the thread's context data."""

    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextDelta:
    """A piece of the assistant's text."""

    text: str


@dataclass
class ToolCallReady:
    """A tool call whose arguments are complete."""

    call: ToolCall


@dataclass
class Finish:
    """Always the last event of a successful stream."""

    usage: Usage
    finish_reason: str  # normalised: "stop", "tool_calls", "length", or the provider's own word
    model: str


StreamEvent = TextDelta | ToolCallReady | Finish


class Provider(Protocol):
    """A language model service; one `stream` call is one provider call."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply to `request`, ending with `Finish` or raising `ProviderError`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class ProviderConfig:
    """Connection settings of one provider; timeouts in seconds."""

    api_key: str | None = None
    base_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    total_timeout: float = 300.0
    max_retries: int = 2  # attempts after the first, and only before any content
    retry_backoff_s: float = 0.5
    token_delay_s: float = 0.0  # local provider only: pause between streamed tokens


PROVIDER_PREFIXES = ("openai:", "anthropic:", "local:")


def wire_model_name(model: str) -> str:
    """The model name to send: without a forcing `openai:`/`anthropic:` prefix."""
    for prefix in PROVIDER_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def untransformed(params: dict[str, Any], wire_ready: tuple[str, ...]) -> dict[str, Any]:
    """SDK call parameters with the `wire_ready` ones moved to `extra_body`, sent as given.

    Both SDKs walk every named parameter through a TypedDict-driven transform (aliases, dates):
    for a conversation's messages and tool schemas, already in wire form, that walk cost a
    third of a turn's CPU. `messages` stays named (both require it) but empty; the body on the
    wire is the same because `extra_body` is merged over the named parameters.
    """
    moved = {key: params[key] for key in wire_ready if key in params}
    kept = {key: value for key, value in params.items() if key not in moved}
    return {**kept, "messages": [], "extra_body": moved}


def parse_tool_arguments(raw: str) -> dict[str, Any]:
    """Parse streamed tool arguments.

    Arguments that are not a JSON object come back as `{"_invalid_json": raw}`: the tool's schema
    check then rejects the call with an error the model can see, and the raw text stays on record.
    """
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"_invalid_json": raw}
    return parsed if isinstance(parsed, dict) else {"_invalid_json": raw}


def _backoff_delay(error: ProviderError, retries_done: int, base: float) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, 20.0)
    # Full jitter keeps many simultaneous runs from retrying in lockstep.
    return base * (2**retries_done) * (0.5 + random.random() / 2)


async def stream_with_retries(
    attempt: Callable[[], AsyncGenerator[StreamEvent, None]], config: ProviderConfig
) -> AsyncGenerator[StreamEvent, None]:
    """Run `attempt()` under the total deadline, retrying only before any content.

    The deadline is applied to each await inside this generator (not around its yields), so a slow
    consumer is never cancelled by it. Closing this generator closes the attempt and its response.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.total_timeout
    retries_done = 0
    while True:
        emitted_content = False
        events = attempt()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise ProviderTimeout(
                        f"no complete reply within {config.total_timeout:g}s", retryable=False
                    ) from exc
                if not isinstance(event, Finish):
                    emitted_content = True
                yield event
        except ProviderError as error:
            error.after_content = emitted_content
            if emitted_content or not error.retryable or retries_done >= config.max_retries:
                raise
            delay = _backoff_delay(error, retries_done, config.retry_backoff_s)
            if loop.time() + delay >= deadline:
                raise
            await asyncio.sleep(delay)
            retries_done += 1
        finally:
            await events.aclose()
