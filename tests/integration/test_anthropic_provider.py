"""The Anthropic provider driving the real SDK against a fake Messages server over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from app.llm.anthropic_provider import AnthropicProvider
from app.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolSpec,
    Usage,
)
from app.llm.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from app.llm.tokens import count_text
from tests.fakes import (
    AbortReply,
    ErrorReply,
    FakeToolCall,
    FakeUsage,
    StallReply,
    text_reply,
    tool_call_reply,
)
from tests.fakes.anthropic_server import FakeAnthropic

SEARCH_TOOL = ToolSpec(
    name="rag_search",
    description="Search the knowledge base.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
    },
)


@pytest.fixture(scope="module")
def served_fake() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture
def fake(served_fake: tuple[FakeAnthropic, str]) -> FakeAnthropic:
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
async def provider(served_fake: tuple[FakeAnthropic, str]) -> AsyncIterator[AnthropicProvider]:
    instance = AnthropicProvider(make_config(served_fake[1]))
    yield instance
    await instance.aclose()


def ask(text: str, **options: object) -> ChatRequest:
    messages = [ChatMessage("system", "Cite sources."), ChatMessage("user", text)]
    return ChatRequest(model="claude-test-1", messages=messages, **options)  # type: ignore[arg-type]


async def collect(provider: AnthropicProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


async def collect_until_error(
    provider: AnthropicProvider, request: ChatRequest
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


async def test_streamed_text_concatenates_and_usage_counts_cache_as_input(fake, provider):
    usage = FakeUsage(input_tokens=20, output_tokens=9, cached_tokens=5, cache_creation_tokens=3)
    reply = text_reply("The QBR notes a delayed SSO rollout.", usage=usage)
    fake.enqueue(reply)

    events = await collect(provider, ask("What did the QBR say?"))

    assert text_of(events) == reply.text
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.usage == Usage(20 + 3 + 5, 9, cached_tokens=5, source="provider")
    assert finish.finish_reason == "stop"
    assert finish.model == "claude-test-1"
    sent = fake.requests[0]
    assert sent["system"] == "Cite sources."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What did the QBR say?"}]}
    ]
    assert sent["stream"] is True
    assert sent["max_tokens"] > 0


async def test_cumulative_output_tokens_take_the_last_report_not_the_sum(fake, provider):
    fake.enqueue(text_reply("One two three.", usage=FakeUsage(output_steps=(5, 12, 20))))

    events = await collect(provider, ask("Count"))

    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.usage.output_tokens == 20


async def test_tool_use_is_assembled_and_result_goes_back_as_tool_result_block(fake, provider):
    arguments = {"query": "renewal risk", "k": 5}
    fake.enqueue(
        tool_call_reply(
            FakeToolCall("rag_search", arguments, id="toolu_1", fragments=4),
            text="Let me search.",
        ),
        text_reply("According to [1] ..."),
    )
    request = ask("Any renewal risk?", tools=[SEARCH_TOOL])

    first = await collect(provider, request)

    assert text_of(first) == "Let me search."
    call = next(e.call for e in first if isinstance(e, ToolCallReady))
    assert call == ToolCall(id="toolu_1", name="rag_search", arguments=arguments)
    assert isinstance(first[-1], Finish)
    assert first[-1].finish_reason == "tool_calls"
    assert fake.requests[0]["tools"] == [
        {
            "name": "rag_search",
            "description": SEARCH_TOOL.description,
            "input_schema": SEARCH_TOOL.parameters,
        }
    ]

    request.messages.append(ChatMessage("assistant", "Let me search.", tool_calls=[call]))
    request.messages.append(
        ChatMessage("tool", '{"results": []}', tool_call_id="toolu_1", name="rag_search")
    )
    await collect(provider, request)

    assistant_sent, result_sent = fake.requests[1]["messages"][-2:]
    assert assistant_sent == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me search."},
            {"type": "tool_use", "id": "toolu_1", "name": "rag_search", "input": arguments},
        ],
    }
    assert result_sent == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"results": []}'}
        ],
    }


async def test_results_of_parallel_tool_calls_share_one_user_message(fake, provider):
    fake.enqueue(text_reply("Done."))
    calls = [
        ToolCall("t1", "rag_search", {"query": "a"}),
        ToolCall("t2", "rag_search", {"query": "b"}),
    ]
    request = ask("Search twice", tools=[SEARCH_TOOL])
    request.messages += [
        ChatMessage("assistant", "", tool_calls=calls),
        ChatMessage("tool", "A", tool_call_id="t1"),
        ChatMessage("tool", "B", tool_call_id="t2"),
    ]

    await collect(provider, request)

    last = fake.requests[0]["messages"][-1]
    assert last["role"] == "user"
    assert [block["tool_use_id"] for block in last["content"]] == ["t1", "t2"]


async def test_overloaded_before_content_is_retried_then_succeeds(fake, provider):
    fake.enqueue(ErrorReply(status=529, message="Overloaded"), text_reply("Recovered."))

    events = await collect(provider, ask("Hello"))

    assert text_of(events) == "Recovered."
    assert fake.request_count == 2


async def test_overloaded_exhausting_retries_raises_before_content(fake, provider):
    fake.enqueue(*[ErrorReply(status=529, message="Overloaded")] * 3)

    events, error = await collect_until_error(provider, ask("Hello"))

    assert events == []
    assert error.after_content is False
    assert error.status == 529
    assert fake.request_count == 3


async def test_error_event_after_content_is_not_retried_and_keeps_input_usage(fake, provider):
    fake.enqueue(
        AbortReply(chunks=("Partly",), how="error_event", usage=FakeUsage(input_tokens=40)),
        text_reply("must not be used"),
    )

    events, error = await collect_until_error(provider, ask("Hello"))

    assert text_of(events) == "Partly"
    assert error.after_content is True
    assert error.status == 529
    assert error.partial_usage is not None
    assert error.partial_usage.input_tokens == 40
    assert fake.request_count == 1


async def test_connection_cut_after_content_raises_after_content_without_retry(fake, provider):
    fake.enqueue(AbortReply(chunks=("Half", " an answer")), text_reply("must not be used"))

    events, error = await collect_until_error(provider, ask("Hello"))

    assert text_of(events) == "Half an answer"
    assert error.after_content is True
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


async def test_missing_usage_is_estimated_with_tiktoken(fake, provider):
    reply = text_reply("An answer without usage numbers.", usage=None)
    fake.enqueue(reply)

    events = await collect(provider, ask("Hello"))

    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.usage.source == "estimated"
    assert finish.usage.output_tokens == count_text(reply.text)
    assert finish.usage.input_tokens > 0


async def test_max_tokens_is_sent_and_temperature_is_not(fake, provider):
    fake.enqueue(text_reply("ok"))

    await collect(provider, ask("Hello", temperature=0.7, max_tokens=64))

    assert fake.requests[0]["max_tokens"] == 64
    assert "temperature" not in fake.requests[0]


async def test_missing_api_key_is_unavailable_without_a_request(fake):
    instance = AnthropicProvider(ProviderConfig(api_key=None))

    with pytest.raises(ProviderUnavailable):
        await collect(instance, ask("Hello"))

    assert fake.request_count == 0


async def test_fake_answers_non_streamed_requests_like_the_api(fake, served_fake):
    fake.enqueue(tool_call_reply(FakeToolCall("rag_search", {"query": "SSO"}), text="Searching."))
    client = anthropic.AsyncAnthropic(api_key="k", base_url=served_fake[1], max_retries=0)
    try:
        message = await client.messages.create(
            model="claude-test-1", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    finally:
        await client.close()

    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"query": "SSO"}
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens > 0
