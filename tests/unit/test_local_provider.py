"""The offline local provider: deterministic, grounded, tool-calling; and routing models to it."""

from __future__ import annotations

import json
import time

import pytest

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
)
from app.llm.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from app.llm.local_provider import LocalProvider
from app.llm.openai_provider import OpenAIProvider
from app.llm.registry import ProviderRegistry, provider_name_for_model
from app.llm.tokens import count_text

CONTEXT = {
    "customer": {
        "id": "0b9a1c52-6f0e-4d1c-9a57-3f2e8c1d4b61",
        "name": "Globex Industries",
        "arr": 184000,
        "renewalDate": "2026-01-15",
    },
    "csm": {"name": "Dana Whitfield", "email": "dana@demo.example"},
    "workflow": {"daysUntilRenewal": 12, "renewalARR": 190000},
}


def tool(name: str) -> ToolSpec:
    return ToolSpec(name, f"The {name} tool.", {"type": "object"})


RAG_TOOLS = [tool("rag_search"), tool("database_query")]
LLM_TOOLS = [tool("database_query"), tool("create_chart")]


def ask(question: str, tools: list[ToolSpec] | None = None, **context_overrides) -> ChatRequest:
    messages = [ChatMessage("system", "You help CSMs."), ChatMessage("user", question)]
    return ChatRequest(
        "local", messages, tools=tools or [], context={**CONTEXT, **context_overrides}
    )


async def collect(request: ChatRequest, **config) -> list[StreamEvent]:
    provider = LocalProvider(ProviderConfig(**config))
    return [event async for event in provider.stream(request)]


async def collect_until_error(request: ChatRequest, **config):
    events: list[StreamEvent] = []
    try:
        async for event in LocalProvider(ProviderConfig(**config)).stream(request):
            events.append(event)
    except ProviderError as error:
        return events, error
    pytest.fail(f"stream ended without a ProviderError: {events}")


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def only_call(events: list[StreamEvent]) -> ToolCall:
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    assert len(calls) == 1, events
    return calls[0]


def answer_tools(request: ChatRequest, call: ToolCall, output: dict) -> None:
    request.messages.append(ChatMessage("assistant", "", tool_calls=[call]))
    request.messages.append(
        ChatMessage("tool", json.dumps(output), tool_call_id=call.id, name=call.name)
    )


async def test_same_request_streams_identically_twice():
    first = await collect(ask("What should I prepare for the renewal call?"))
    second = await collect(ask("What should I prepare for the renewal call?"))

    assert first == second


async def test_answer_is_grounded_in_the_thread_context():
    events = await collect(ask("Give me a quick summary of this account."))

    text = text_of(events)
    assert "Globex Industries" in text
    assert "$184,000" in text
    assert "12 days" in text
    assert "Dana Whitfield" in text


async def test_reply_streams_token_by_token_and_reports_its_own_count():
    events = await collect(ask("Summarise the account."))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert len(deltas) == finish.usage.output_tokens == count_text(text_of(events))
    assert finish.usage.source == "provider"
    assert finish.usage.input_tokens > 0
    assert finish.finish_reason == "stop"


async def test_token_delay_paces_the_stream():
    started = time.monotonic()
    events = await collect(ask("Summarise the account."), token_delay_s=0.01)

    deltas = sum(isinstance(e, TextDelta) for e in events)
    assert time.monotonic() - started >= deltas * 0.01 * 0.9


async def test_rag_thread_searches_the_knowledge_base_first():
    events = await collect(ask("What did the last QBR say about SSO?", RAG_TOOLS))

    call = only_call(events)
    assert call.name == "rag_search"
    assert call.arguments == {"query": "What did the last QBR say about SSO?", "k": 5}
    assert events[-1].finish_reason == "tool_calls"
    assert text_of(events) == ""


async def test_contract_question_queries_the_contracts_view_for_this_customer():
    events = await collect(ask("Which contracts renew first and at what ARR?", LLM_TOOLS))

    call = only_call(events)
    assert call.name == "database_query"
    query = call.arguments["query"]
    assert query.startswith("SELECT ")
    assert "FROM contracts_v" in query
    assert CONTEXT["customer"]["id"] in query


async def test_portfolio_question_queries_the_customers_view():
    events = await collect(ask("Which customers renew next?", LLM_TOOLS))

    assert "FROM customers_v" in only_call(events).arguments["query"]


@pytest.mark.parametrize(
    ("question", "chart_type"),
    [("Plot the renewal numbers", "bar"), ("Show the trend as a graph", "line")],
)
async def test_chart_question_creates_a_chart_from_the_context(question, chart_type):
    events = await collect(ask(question, [tool("create_chart")]))

    call = only_call(events)
    assert call.name == "create_chart"
    assert call.arguments["type"] == chart_type
    assert "Globex Industries" in call.arguments["title"]
    assert {"label": "Current ARR", "value": 184000.0} in call.arguments["data"]


async def test_question_without_a_tool_need_is_answered_directly():
    events = await collect(ask("How should I open the renewal call?", LLM_TOOLS))

    assert not any(isinstance(e, ToolCallReady) for e in events)
    assert text_of(events)


async def test_answer_after_search_cites_the_passages():
    request = ask("What did the last QBR say about SSO?", [tool("rag_search")])
    call = only_call(await collect(request))
    answer_tools(
        request,
        call,
        {
            "results": [
                {"title": "Q3 business review", "snippet": "SSO rollout slipped to November."},
                {"title": "Support digest", "snippet": "Two SSO tickets remain open."},
            ]
        },
    )

    events = await collect(request)

    text = text_of(events)
    assert not any(isinstance(e, ToolCallReady) for e in events)  # each tool once per turn
    assert '[1] Q3 business review: "SSO rollout slipped to November."' in text
    assert "[2] Support digest" in text


async def test_chart_after_query_is_built_from_the_rows_then_both_are_summarised():
    request = ask("Chart the ARR of each contract", LLM_TOOLS)
    query_call = only_call(await collect(request))
    rows = [
        {"contract_number": "GX-7", "arr": "120000.00"},
        {"contract_number": "GX-9", "arr": "64000.00"},
    ]
    answer_tools(request, query_call, {"rows": rows})

    chart_call = only_call(await collect(request))
    answer_tools(request, chart_call, {"chartId": "c1", "imageUrl": "/api/charts/c1.svg"})
    final = text_of(await collect(request))

    assert chart_call.name == "create_chart"
    assert chart_call.arguments["data"] == [
        {"label": "GX-7", "value": 120000.0},
        {"label": "GX-9", "value": 64000.0},
    ]
    assert "GX-7" in final
    assert "/api/charts/c1.svg" in final


async def test_tool_failure_is_reported_in_the_answer():
    request = ask("List the contracts", [tool("database_query")])
    call = only_call(await collect(request))
    answer_tools(request, call, {"error": "relation contracts_v does not exist"})

    text = text_of(await collect(request))

    assert "database_query tool failed: relation contracts_v does not exist" in text


async def test_fail_before_marker_raises_before_any_content():
    events, error = await collect_until_error(ask("Hello [[fail-before]]"))

    assert events == []
    assert error.after_content is False


async def test_fail_after_marker_raises_after_some_text_with_partial_usage():
    events, error = await collect_until_error(ask("Hello [[fail-after]]", LLM_TOOLS))

    assert text_of(events)
    assert error.after_content is True
    assert error.partial_usage is not None
    assert error.partial_usage.output_tokens == count_text(text_of(events))


async def test_stall_marker_is_ended_by_the_read_timeout():
    started = time.monotonic()

    events, error = await collect_until_error(ask("Hello [[stall]]"), read_timeout=0.2)

    assert isinstance(error, ProviderTimeout)
    assert error.after_content is True
    assert text_of(events)
    assert time.monotonic() - started < 2


async def test_long_marker_produces_about_four_hundred_tokens():
    events = await collect(ask("Tell me everything [[long]]"))

    assert 400 <= events[-1].usage.output_tokens < 600


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("o3-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("claude-haiku-4-5", "anthropic"),
        ("local", "local"),
        ("local-fast", "local"),
        ("openai:llama3.1:8b", "openai"),
        ("anthropic:my-proxy-model", "anthropic"),
    ],
)
def test_model_names_choose_the_provider(model, provider):
    assert provider_name_for_model(model) == provider


def test_unknown_model_is_unavailable():
    with pytest.raises(ProviderUnavailable):
        provider_name_for_model("mistral-large")


async def test_registry_creates_each_provider_once_and_honours_registered_factories():
    registry = ProviderRegistry({"openai": ProviderConfig(api_key="k")})
    created: list[ProviderConfig] = []

    def fake_factory(config: ProviderConfig) -> LocalProvider:
        created.append(config)
        return LocalProvider(config)

    registry.register("fake", fake_factory)
    try:
        assert registry.get("local") is registry.get("local-2")
        assert isinstance(registry.get("gpt-4o"), OpenAIProvider)
        assert registry.get("fake:anything") is registry.get("fake:other")
        assert len(created) == 1
    finally:
        await registry.aclose()


def test_table_outputs_with_list_rows_are_read_by_column_name():
    from app.llm.local_provider import _describe_output

    text = _describe_output("database_query",
                            {"columns": ["name", "arr"], "rows": [["Acme Analytics", 185000]]},
                            {"query": "SELECT name, arr FROM customers_v"})
    assert "1 row" in text and "name Acme Analytics" in text and "arr 185000" in text
