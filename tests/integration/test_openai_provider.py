"""The OpenAI provider driving the real SDK against a fake Chat Completions server over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from app.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    ToolCallReady,
    ToolSpec,
    Usage,
)
from app.llm.errors import ProviderError, ProviderRateLimited, ProviderTimeout, ProviderUnavailable
from app.llm.openai_provider import OpenAIProvider
from app.llm.tokens import count_text
from tests.fakes import (
    AbortReply,
    ErrorReply,
    FakeToolCall,
    FakeUsage,
    StallReply,
    TextReply,
    text_reply,
    tool_call_reply,
)
from tests.fakes.openai_server import FakeOpenAI

QUERY_TOOL = ToolSpec(
    name="database_query",
    description="Run one SELECT over the curated views.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


@pytest.fixture(scope="module")
def served_fake() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture
def fake(served_fake: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    served_fake[0].reset()
    return served_fake[0]


def make_config(base_url: str, **overrides: float) -> ProviderConfig:
    options = {
        "read_timeout": 0.5,
        "connect_timeout": 1.0,
        "total_timeout": 10.0,
        "max_retries": 2,
        "retry_backoff_s": 0.01,
        **overrides,
    }
    return ProviderConfig(api_key="test-key", base_url=base_url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def provider(served_fake: tuple[FakeOpenAI, str]) -> AsyncIterator[OpenAIProvider]:
    instance = OpenAIProvider(make_config(served_fake[1]))
    yield instance
    await instance.aclose()


def ask(text: str, **options: object) -> ChatRequest:
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", text)]
    return ChatRequest(model="gpt-4o-mini", messages=messages, **options)  # type: ignore[arg-type]


async def collect(provider: OpenAIProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


async def collect_until_error(
    provider: OpenAIProvider, request: ChatRequest
) -> tuple[list[StreamEvent], ProviderError]:
    events: list[StreamEvent] = []
    try:
        async for event in provider.stream(request):
            events.append(event)
    except ProviderError as error:
        return events, error
    pytest.fail(f"stream ended without a ProviderError: {events}")


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_consecutive_streams_reuse_one_connection(fake, provider):
    """A connection closed before its body ended cannot be reused: each call would connect
    (and, against the real API, do a TLS handshake) again before its first token."""
    fake.enqueue(*(text_reply(f"answer {n}") for n in range(4)))
    for n in range(4):
        assert text_of(await collect(provider, ask(f"question {n}"))) == f"answer {n}"
    assert len(fake.client_ports) == 4
    assert len(set(fake.client_ports)) == 1, fake.client_ports


async def test_streamed_text_concatenates_and_finish_carries_reported_usage(fake, provider):
    reply = text_reply(
        "Acme renews in ten days.",
        usage=FakeUsage(input_tokens=31, output_tokens=9, cached_tokens=4, reasoning_tokens=2),
    )
    fake.enqueue(reply)

    events = await collect(provider, ask("When does Acme renew?"))

    assert text_of(events) == reply.text
    assert sum(isinstance(e, TextDelta) for e in events) == len(reply.chunks)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.usage == Usage(31, 9, cached_tokens=4, reasoning_tokens=2, source="provider")
    assert finish.finish_reason == "stop"
    assert finish.model == "gpt-4o-mini"
    sent = fake.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}


async def test_tool_call_fragments_are_assembled_and_result_goes_back_as_tool_message(
    fake, provider
):
    arguments = {"query": "SELECT contract_number, arr FROM contracts_v ORDER BY end_date"}
    fake.enqueue(
        tool_call_reply(FakeToolCall("database_query", arguments, id="call_abc", fragments=5)),
        text_reply("Two contracts."),
    )
    request = ask("List the contracts", tools=[QUERY_TOOL])

    first = await collect(provider, request)

    ready = [e for e in first if isinstance(e, ToolCallReady)]
    assert len(ready) == 1
    call = ready[0].call
    assert (call.id, call.name, call.arguments) == ("call_abc", "database_query", arguments)
    assert isinstance(first[-1], Finish)
    assert first[-1].finish_reason == "tool_calls"
    assert fake.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "database_query",
                "description": QUERY_TOOL.description,
                "parameters": QUERY_TOOL.parameters,
            },
        }
    ]

    request.messages.append(ChatMessage("assistant", "", tool_calls=[call]))
    request.messages.append(
        ChatMessage("tool", '{"rows": [{"arr": 1}]}', tool_call_id=call.id, name=call.name)
    )
    second = await collect(provider, request)

    assert text_of(second) == "Two contracts."
    assistant_sent, tool_sent = fake.requests[1]["messages"][-2:]
    assert assistant_sent["role"] == "assistant"
    assert assistant_sent["content"] is None
    assert assistant_sent["tool_calls"][0]["id"] == "call_abc"
    assert assistant_sent["tool_calls"][0]["type"] == "function"
    assert json.loads(assistant_sent["tool_calls"][0]["function"]["arguments"]) == arguments
    assert tool_sent == {
        "role": "tool",
        "tool_call_id": "call_abc",
        "content": '{"rows": [{"arr": 1}]}',
    }


async def test_tool_arguments_that_are_not_json_are_kept_raw(fake, provider):
    fake.enqueue(tool_call_reply(FakeToolCall("database_query", '{"query": "SELECT', id="c1")))

    events = await collect(provider, ask("List", tools=[QUERY_TOOL]))

    call = next(e.call for e in events if isinstance(e, ToolCallReady))
    assert call.arguments == {"_invalid_json": '{"query": "SELECT'}


async def test_error_before_content_is_retried_then_succeeds(fake, provider):
    fake.enqueue(ErrorReply(status=500), text_reply("Recovered."))

    events = await collect(provider, ask("Hello"))

    assert text_of(events) == "Recovered."
    assert fake.request_count == 2


async def test_errors_before_content_exhausting_retries_raise_before_content(fake, provider):
    fake.enqueue(*[ErrorReply(status=503)] * 3)

    events, error = await collect_until_error(provider, ask("Hello"))

    assert events == []
    assert error.after_content is False
    assert error.status == 503
    assert fake.request_count == 3  # the first attempt and max_retries=2


async def test_rate_limit_is_reported_as_rate_limited_after_retries(fake, provider):
    fake.enqueue(*[ErrorReply(status=429, message="slow down", retry_after=0.01)] * 3)

    _, error = await collect_until_error(provider, ask("Hello"))

    assert isinstance(error, ProviderRateLimited)
    assert error.status == 429
    assert fake.request_count == 3


async def test_client_error_is_not_retried(fake, provider):
    fake.enqueue(ErrorReply(status=400, message="bad request"), text_reply("unused"))

    _, error = await collect_until_error(provider, ask("Hello"))

    assert error.retryable is False
    assert error.status == 400
    assert fake.request_count == 1


async def test_connection_cut_after_content_raises_after_content_without_retry(fake, provider):
    fake.enqueue(AbortReply(chunks=("Half", " an answer")), text_reply("must not be used"))

    events, error = await collect_until_error(provider, ask("Hello"))

    assert text_of(events) == "Half an answer"
    assert error.after_content is True
    assert error.partial_usage is None
    assert fake.request_count == 1


async def test_error_event_after_content_raises_after_content(fake, provider):
    fake.enqueue(AbortReply(chunks=("Half",), how="error_event"))

    events, error = await collect_until_error(provider, ask("Hello"))

    assert text_of(events) == "Half"
    assert error.after_content is True
    assert fake.request_count == 1


async def test_malformed_chunk_after_content_is_a_provider_error(fake, provider):
    fake.enqueue(AbortReply(chunks=("Half",), how="malformed"))

    events, error = await collect_until_error(provider, ask("Hello"))

    assert text_of(events) == "Half"
    assert "malformed" in str(error) and error.after_content is True
    assert fake.request_count == 1


async def test_stall_after_content_ends_with_timeout_within_read_timeout(fake, provider):
    fake.enqueue(StallReply(chunks=("Thinking",), seconds=30))
    started = time.monotonic()

    events, error = await collect_until_error(provider, ask("Hello"))

    assert isinstance(error, ProviderTimeout)
    assert error.after_content is True
    assert text_of(events) == "Thinking"
    assert time.monotonic() - started < 5
    assert fake.request_count == 1


async def test_stall_before_content_is_retried(fake, served_fake):
    fake.enqueue(StallReply(chunks=(), seconds=30), text_reply("Second try."))
    instance = OpenAIProvider(make_config(served_fake[1], max_retries=1))
    try:
        events = await collect(instance, ask("Hello"))
    finally:
        await instance.aclose()

    assert text_of(events) == "Second try."
    assert fake.request_count == 2


async def test_total_timeout_ends_a_stream_kept_alive_by_pings(fake, served_fake):
    fake.enqueue(StallReply(chunks=("Still",), seconds=30, ping_interval=0.1))
    instance = OpenAIProvider(make_config(served_fake[1], total_timeout=1.0))
    started = time.monotonic()
    try:
        _, error = await collect_until_error(instance, ask("Hello"))
    finally:
        await instance.aclose()

    assert isinstance(error, ProviderTimeout)
    assert error.after_content is True
    assert 0.9 < time.monotonic() - started < 5


async def test_missing_usage_is_estimated_with_tiktoken(fake, provider):
    reply = text_reply("An answer without usage numbers.", usage=None)
    fake.enqueue(reply)

    events = await collect(provider, ask("Hello"))

    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.usage.source == "estimated"
    assert finish.usage.output_tokens == count_text(reply.text)
    assert finish.usage.input_tokens > count_text("You are terse.Hello")


async def test_prefixed_model_is_sent_without_prefix_to_compatible_server(fake, provider):
    fake.enqueue(text_reply("ok"))

    request = ChatRequest(
        model="openai:llama3.1",
        messages=[ChatMessage("user", "Hi")],
        max_tokens=50,
        temperature=0.2,
    )

    events = await collect(provider, request)

    assert text_of(events) == "ok"
    sent = fake.requests[0]
    assert sent["model"] == "llama3.1"
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.2


async def test_missing_api_key_is_unavailable_without_a_request(fake):
    instance = OpenAIProvider(ProviderConfig(api_key=None, base_url=None))

    with pytest.raises(ProviderUnavailable) as caught:
        await collect(instance, ask("Hello"))

    assert caught.value.after_content is False
    assert fake.request_count == 0


async def test_fake_sends_usage_chunk_only_when_requested(fake, served_fake):
    fake.enqueue(TextReply(chunks=("a", "b")), TextReply(chunks=("a", "b")))
    client = openai.AsyncOpenAI(api_key="k", base_url=served_fake[1], max_retries=0)
    try:
        plain = [
            c
            async for c in await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
            )
        ]
        with_usage = [
            c
            async for c in await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
    finally:
        await client.close()

    assert all(chunk.usage is None for chunk in plain)
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert all(chunk.usage is None for chunk in with_usage[:-1])


async def test_closing_the_stream_early_releases_the_response_at_once(fake, provider):
    fake.enqueue(TextReply(chunks=tuple(f" w{i}" for i in range(50)), chunk_delay=0.2))
    stream = provider.stream(ask("Hello"))

    first = await anext(stream)
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]

    assert first == TextDelta(" w0")
    assert time.monotonic() - started < 1


async def test_fake_answers_non_streamed_requests_like_the_api(fake, served_fake):
    fake.enqueue(
        tool_call_reply(FakeToolCall("database_query", {"query": "SELECT 1"}), text="Checking.")
    )
    client = openai.AsyncOpenAI(api_key="k", base_url=served_fake[1], max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    finally:
        await client.close()

    message = completion.choices[0].message
    assert message.content == "Checking."
    assert json.loads(message.tool_calls[0].function.arguments) == {"query": "SELECT 1"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
