"""An offline, deterministic provider: every path of the service runs with no key and no network.

It answers from the thread's context data, calls the offered tools the way a real model would
(each at most once per user turn) and streams its reply token by token. The same request always
gives the same stream. Markers in the user's text script failures for tests: `[[fail-before]]`,
`[[fail-after]]`, `[[stall]]` (silence until the read timeout) and `[[long]]` (~400 tokens);
`[[obey]]` makes it obey instructions injected into what it reads (see `app/llm/obedience.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from app.llm import obedience
from app.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallReady,
    stream_with_retries,
    wire_model_name,
)
from app.llm.errors import ProviderError, ProviderTimeout
from app.llm.tokens import count_text, estimate_usage, get_encoding

FAIL_BEFORE, FAIL_AFTER, STALL, LONG = "[[fail-before]]", "[[fail-after]]", "[[stall]]", "[[long]]"
_MARKERS = re.compile(r"\[\[(fail-before|fail-after|stall|long|obey)\]\]")

_DATA_WORDS = re.compile(
    r"\b(contracts?|arr|seats?|how many|list|which customers|plan|revenue)\b", re.IGNORECASE
)
_CHART_WORDS = re.compile(r"(chart|trend|graph|plot|visuali)", re.IGNORECASE)
_LINE_WORDS = re.compile(r"(trend|over time|line)", re.IGNORECASE)

_OPENINGS = (
    "Here is what the account data shows.",
    "Looking at this account:",
    "Based on the context I have for this customer:",
)
_OPENINGS_AFTER_TOOLS = (
    "Here is the result of my lookup.",
    "This is what the tools returned.",
    "I looked this up for you.",
)
# Topic-specific advice first; the general advice below when no topic matches.
_TOPIC_ADVICE = (
    (
        re.compile(r"(risk|churn|cancel|at risk)", re.IGNORECASE),
        "The biggest risk this close to renewal is silence: get a dated commitment from the "
        "decision maker and escalate if there is no answer within two business days.",
    ),
    (
        re.compile(r"(price|pricing|discount|budget|cost)", re.IGNORECASE),
        "Before discussing price, restate the value delivered this term and bring the account "
        "executive into the conversation.",
    ),
    (
        re.compile(r"(expan|upsell|grow|seats?)", re.IGNORECASE),
        "If usage is growing, propose the seat change as part of the renewal rather than after it.",
    ),
)
_ADVICE = (
    "Confirm renewal intent with the champion this week and agree on a signature date.",
    "Review open support issues before the renewal call so that no surprise derails it.",
    "Check that the economic buyer has seen the value summary from the last business review.",
    "Line up the account executive early if pricing or seat counts are going to change.",
    "Send a short written recap after each renewal conversation to keep the timeline visible.",
    "Map the decision makers and make sure each has a named owner on our side.",
)


class LocalProvider:
    """Deterministic offline model: grounded answers, tool calls, scripted failures."""

    name = "local"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply; see `Provider.stream`."""
        return stream_with_retries(lambda: self._attempt(request), self.config)

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        turn = _current_turn(request.messages)
        question = turn[0].content if turn and turn[0].role == "user" else ""
        markers = set(_MARKERS.findall(question))
        rng = random.Random(_request_digest(request))
        model = wire_model_name(request.model)
        if "fail-before" in markers:
            raise ProviderError("local: scripted failure before content", retryable=False)

        scripted_failure = markers & {"fail-after", "stall"}
        calls = [] if scripted_failure else _tool_calls(request, turn, question, markers)
        if calls:
            for call in calls:
                yield ToolCallReady(call)
            yield Finish(estimate_usage(request, "", calls, source="provider"), "tool_calls", model)
            return

        text = _compose_answer(request, turn, _clean(question), rng, long="long" in markers)
        if "obey" in markers and "reveal" in obedience.instructions(request, turn):
            text = obedience.revealed(request) + " " + text
        emitted: list[str] = []
        pieces = list(_token_pieces(text))
        cut = max(3, len(pieces) // 3) if scripted_failure else len(pieces)
        for piece in pieces[:cut]:
            await asyncio.sleep(self.config.token_delay_s)
            emitted.append(piece)
            yield TextDelta(piece)
        if "stall" in markers:
            await self._stall()
        if "fail-after" in markers:
            partial = estimate_usage(request, "".join(emitted), [], source="provider")
            raise ProviderError(
                "local: scripted failure after content", retryable=False, partial_usage=partial
            )
        yield Finish(estimate_usage(request, text, [], source="provider"), "stop", model)

    async def _stall(self) -> None:
        try:
            async with asyncio.timeout(self.config.read_timeout):
                await asyncio.Event().wait()
        except TimeoutError as exc:
            raise ProviderTimeout(
                f"local: no token for {self.config.read_timeout:g}s", retryable=False
            ) from exc


def _request_digest(request: ChatRequest, salt: str = "") -> str:
    payload = {
        "model": request.model,
        "messages": [
            [m.role, m.content, m.tool_call_id, [[c.id, c.name, c.arguments] for c in m.tool_calls]]
            for m in request.messages
        ],
        "tools": [t.name for t in request.tools],
        "context": request.context,
        "salt": salt,
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _current_turn(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The last user message and everything after it (tool calls and their results)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index:]
    return []


def _clean(question: str) -> str:
    return " ".join(_MARKERS.sub(" ", question).split())


def _token_pieces(text: str) -> Iterator[str]:
    """`text` token by token, holding back bytes until they form whole UTF-8 characters."""
    encoding = get_encoding()
    pending = b""
    for token in encoding.decode_tokens_bytes(encoding.encode(text, disallowed_special=())):
        pending += token
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        pending = b""
        yield piece
    if pending:
        yield pending.decode("utf-8", errors="replace")


# --- tool choice ------------------------------------------------------------------------------


def _tool_calls(
    request: ChatRequest, turn: list[ChatMessage], question: str, markers: set[str]
) -> list[ToolCall]:
    """This response's tool calls: every obedient attempt at once, else the plan's next tool."""
    if "obey" in markers:
        digest = _request_digest(request)[:12]
        return [ToolCall(id=f"call_local_obey_{digest}_{key}", name=tool, arguments=arguments)
                for key, tool, arguments in obedience.planned_calls(request, turn)]
    next_tool = _next_tool(request, turn, _clean(question))
    if next_tool is None:
        return []
    name, arguments = next_tool
    return [ToolCall(id="call_local_" + _request_digest(request, name)[:20], name=name,
                     arguments=arguments)]


def _next_tool(
    request: ChatRequest, turn: list[ChatMessage], question: str
) -> tuple[str, dict[str, Any]] | None:
    """The next tool of this turn's plan not yet called, with its arguments; None to answer."""
    if not question:
        return None
    offered = {tool.name for tool in request.tools}
    plan: list[str] = []
    wants_data = bool(_DATA_WORDS.search(question))
    wants_chart = bool(_CHART_WORDS.search(question))
    # A thread offering rag_search is a knowledge thread: search before anything else.
    if "rag_search" in offered:
        plan.append("rag_search")
    if wants_data and "database_query" in offered:
        plan.append("database_query")
    if wants_chart and "create_chart" in offered:
        plan.append("create_chart")
    called = {call.name for m in turn if m.role == "assistant" for call in m.tool_calls}
    for name in plan:
        if name in called:
            continue
        if name == "rag_search":
            return name, {"query": question, "k": 5}
        if name == "database_query":
            return name, {"query": _sql_for(question, request.context)}
        return name, _chart_arguments(question, request.context, _tool_outputs(turn))
    return None


def _sql_for(question: str, context: dict[str, Any]) -> str:
    """A SELECT over the curated views (tools/sql_guard.py) that answers the question's kind."""
    lowered = question.lower()
    customer_id = _section(context, "customer").get("id")
    where = ""
    # Only a well-formed UUID is ever written into the SQL text.
    if _is_uuid(customer_id) and "customers" not in lowered:
        where = f" WHERE customer_id = '{uuid.UUID(str(customer_id))}'"
    if "seat" in lowered:
        return (
            "SELECT contract_number, plan, seats, arr, end_date "
            f"FROM contracts_v{where} ORDER BY end_date"
        )
    if "how many" in lowered and "customer" in lowered:
        return "SELECT count(*) AS customers, sum(arr) AS total_arr FROM customers_v"
    if _TEAM_WORDS.search(lowered):
        return (
            "SELECT customer_name, role, member_name, member_email "
            f"FROM account_teams_v{where} ORDER BY customer_name, role"
        )
    if _WINDOW_WORDS.search(lowered):
        return (
            "SELECT customer_name, renewal_date, days_until_renewal, arr, contract_status, "
            "matching_workflow_id FROM renewals_v ORDER BY days_until_renewal LIMIT 20"
        )
    if "customers" in lowered or ("list" in lowered and not where):
        return "SELECT name, arr, renewal_date FROM customers_v ORDER BY renewal_date LIMIT 20"
    return (
        "SELECT contract_number, plan, arr, start_date, end_date, status "
        f"FROM contracts_v{where} ORDER BY end_date"
    )


_TEAM_WORDS = re.compile(r"\b(account team|team members?|account executive)\b")
_WINDOW_WORDS = re.compile(r"\b(overdue|lapsed|renewal windows?|workflow)\b")


def _chart_arguments(
    question: str, context: dict[str, Any], outputs: list[tuple[str, Any, dict[str, Any]]]
) -> dict[str, Any]:
    chart_type = "line" if _LINE_WORDS.search(question) else "bar"
    customer = _section(context, "customer").get("name") or "Portfolio"
    rows = next(
        (_row_dicts(o) for n, o, _ in outputs if n == "database_query" and o.get("rows")), None
    )
    data: list[dict[str, Any]] = []
    metric = "ARR"
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        columns = list(rows[0])
        label_column = columns[0]
        value_column = next((c for c in columns if _number(rows[0][c]) is not None), None)
        if value_column is not None:
            metric = "Seats" if value_column == "seats" else value_column.replace("_", " ").upper()
            data = [
                {"label": str(r.get(label_column)), "value": _number(r.get(value_column)) or 0}
                for r in rows[:20]
            ]
    if not data:
        arr = _number(_section(context, "customer").get("arr"))
        renewal = _number(_section(context, "workflow").get("renewalARR"))
        data = [
            {"label": label, "value": value}
            for label, value in (("Current ARR", arr), ("Renewal ARR", renewal))
            if value is not None
        ]
    return {"type": chart_type, "title": f"{customer} — {metric}", "data": data}


# --- answers ----------------------------------------------------------------------------------


def _tool_outputs(turn: list[ChatMessage]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(tool name, parsed output, call arguments) for every tool result of this turn."""
    calls = {c.id: c for m in turn if m.role == "assistant" for c in m.tool_calls}
    outputs: list[tuple[str, Any, dict[str, Any]]] = []
    for message in turn:
        if message.role != "tool":
            continue
        call = calls.get(message.tool_call_id or "")
        name = message.name or (call.name if call else "tool")
        try:
            parsed: Any = json.loads(message.content)
        except ValueError:
            parsed = {"text": message.content}
        outputs.append(
            (
                name,
                parsed if isinstance(parsed, dict) else {"value": parsed},
                call.arguments if call else {},
            )
        )
    return outputs


def _compose_answer(
    request: ChatRequest, turn: list[ChatMessage], question: str, rng: random.Random, *, long: bool
) -> str:
    outputs = _tool_outputs(turn)
    parts = [rng.choice(_OPENINGS_AFTER_TOOLS if outputs else _OPENINGS)]
    for name, output, arguments in outputs:
        parts.append(_describe_output(name, output, arguments))
    if question and not outputs:
        parts.append(f'You asked: "{question[:200]}".')
    parts.append(_facts(request.context))
    topical = [advice for pattern, advice in _TOPIC_ADVICE if pattern.search(question)]
    parts.append(topical[0] if topical else rng.choice(_ADVICE))
    text = " ".join(p for p in parts if p)
    if long:
        advice = list(_ADVICE)
        step = 1
        while count_text(text) < 400:
            rng.shuffle(advice)
            text += f"\n\n{step}. " + " ".join(advice[:3])
            step += 1
    return text


def _row_dicts(output: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a table output as dicts: the tool sends `columns` plus rows as lists."""
    columns = output.get("columns") or []
    rows = output.get("rows") or []
    return [dict(zip(columns, r, strict=False)) if isinstance(r, list) else r
            for r in rows if isinstance(r, list | dict)]


def _describe_output(name: str, output: dict[str, Any], arguments: dict[str, Any]) -> str:
    if "error" in output:
        return f"The {name} tool failed: {output['error']}."
    if name == "rag_search":
        results = [r for r in output.get("results") or [] if isinstance(r, dict)][:3]
        if not results:
            return "The knowledge base has nothing on this question."
        cited = [
            f'[{i}] {r.get("title", "Untitled")}: "{_shorten(_snippet(r), 160)}"'
            for i, r in enumerate(results, start=1)
        ]
        found = f"{len(results)} relevant passage{'s' if len(results) > 1 else ''}"
        return f"I found {found} in the knowledge base. " + " ".join(cited)
    if name == "database_query":
        rows = _row_dicts(output)
        if not rows:
            return "The query returned no rows."
        shown = "; ".join(
            ", ".join(f"{key} {value}" for key, value in row.items()) for row in rows[:5]
        )
        more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
        return f"The query returned {len(rows)} row{'s' if len(rows) > 1 else ''}: {shown}{more}."
    if name == "create_chart":
        title = arguments.get("title", "chart")
        location = output.get("imageUrl") or output.get("chartId") or ""
        chart_type = arguments.get("type", "bar")
        where = f" at {location}" if location else ""
        return f'I created a {chart_type} chart "{title}"{where}.'
    return f"The {name} tool answered: {_shorten(json.dumps(output, default=str), 200)}."


def _facts(context: dict[str, Any]) -> str:
    """One sentence with the customer, ARR, renewal timing and CSM from the context."""
    customer = _section(context, "customer")
    workflow = _section(context, "workflow")
    csm = _section(context, "csm")
    name = customer.get("name")
    if not name:
        return "I have no customer context for this thread."
    facts = [str(name)]
    arr = _number(customer.get("arr") or workflow.get("renewalARR"))
    if arr is not None:
        facts[0] += f" (${arr:,.0f} ARR)"
    days = _number(workflow.get("daysUntilRenewal"))
    if days is not None:
        timing = f"renews in {days:.0f} days" if days >= 0 else f"is {-days:.0f} days past renewal"
        facts.append(timing)
    if customer.get("renewalDate"):
        facts.append(f"on {customer['renewalDate']}")
    sentence = " ".join(facts) + "."
    if csm.get("name") or csm.get("email"):
        sentence += f" The CSM is {csm.get('name') or csm.get('email')}."
    return sentence


def _section(context: dict[str, Any], name: str) -> dict[str, Any]:
    value = context.get(name)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return value is not None


def _snippet(result: dict[str, Any]) -> str:
    return str(result.get("snippet") or result.get("content") or "")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
