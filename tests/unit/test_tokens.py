"""Offline token counting: the bundled encoding, the chat-format rule, history fitting."""

from __future__ import annotations

import socket

from app.llm.base import ChatMessage, ChatRequest, ToolCall, ToolSpec
from app.llm.tokens import (
    ENCODING_NAME,
    count_message,
    count_messages,
    count_text,
    count_tools,
    estimate_usage,
    fit_history,
    get_encoding,
)

# The OpenAI cookbook's worked example, for which the API reports 129 prompt tokens (cl100k).
COOKBOOK_MESSAGES = [
    ChatMessage(
        "system",
        "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    ),
    ChatMessage("system", "New synergies will help drive top-line growth.", name="example_user"),
    ChatMessage(
        "system",
        "Things working well together will increase revenue.",
        name="example_assistant",
    ),
    ChatMessage(
        "system",
        "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
        name="example_user",
    ),
    ChatMessage(
        "system",
        "Let's talk later when we're less busy about how to do better.",
        name="example_assistant",
    ),
    ChatMessage(
        "user",
        "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]


def test_encoding_loads_without_any_network_connection(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("token counting tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: nothing to reuse
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    get_encoding.cache_clear()
    try:
        assert count_text("Acme renews in ten days.") > 0
        assert get_encoding().name == ENCODING_NAME
    finally:
        get_encoding.cache_clear()


def test_encoding_is_loaded_once_and_reused():
    assert get_encoding() is get_encoding()


def test_count_text_matches_the_encoding_and_treats_special_markers_as_text():
    text = "Renewal <|endoftext|> risk"
    assert count_text(text) == len(get_encoding().encode(text, disallowed_special=()))
    assert count_text("") == 0


def test_chat_format_rule_reproduces_the_cookbook_prompt_count():
    assert count_messages(COOKBOOK_MESSAGES) == 129


def test_tool_calls_and_their_ids_add_tokens():
    plain = ChatMessage("assistant", "")
    calling = ChatMessage(
        "assistant", "", tool_calls=[ToolCall("call_1", "rag_search", {"query": "SSO"})]
    )
    result = ChatMessage("tool", "", tool_call_id="call_1")

    assert count_message(calling) > count_message(plain)
    assert count_message(result) > count_message(ChatMessage("tool", ""))


def test_fit_history_keeps_system_and_newest_messages_within_budget():
    system = ChatMessage("system", "You help CSMs.")
    history = [
        ChatMessage("user" if i % 2 else "assistant", f"message number {i}") for i in range(20)
    ]
    messages = [system, *history]
    budget = count_messages([system, *history[-4:]])

    kept = fit_history(messages, budget)

    assert kept == [system, *history[-4:]]
    assert count_messages(kept) <= budget


def test_fit_history_never_starts_with_orphaned_tool_results():
    call = ToolCall("call_1", "database_query", {"query": "SELECT 1"})
    messages = [
        ChatMessage("system", "s"),
        ChatMessage("user", "old question " * 20),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", "rows " * 30, tool_call_id="call_1"),
        ChatMessage("user", "new question"),
    ]
    # Room for the tool result and the newest question, not for the assistant call before them.
    budget = count_messages([messages[0], messages[3], messages[4]])

    kept = fit_history(messages, budget)

    assert [m.role for m in kept] == ["system", "user"]
    assert kept[-1].content == "new question"


def test_fit_history_keeps_the_newest_message_even_over_budget():
    messages = [ChatMessage("system", "s"), ChatMessage("user", "long " * 500)]

    kept = fit_history(messages, budget=10)

    assert kept == messages


def test_estimate_usage_counts_prompt_tools_and_output_and_says_so():
    tool = ToolSpec("rag_search", "Search the knowledge base.", {"type": "object"})
    request = ChatRequest("gpt-4o", [ChatMessage("user", "Hello")], tools=[tool])

    usage = estimate_usage(request, "Hi there.", [])

    assert usage.source == "estimated"
    assert usage.input_tokens == count_messages(request.messages) + count_tools([tool])
    assert usage.output_tokens == count_text("Hi there.")
