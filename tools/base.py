"""The LLM tool contract: a typed input, an executor, and a registry that runs them safely."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app.llm.base import ToolSpec


class ToolError(Exception):
    """A failure the model should see (bad input, nothing found, refused query)."""


@dataclass
class ToolContext:
    """Who is calling a tool, and with what: always one tenant."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    thread_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    services: Any = None  # app.state: engine, sessionmaker, settings, embedder, ...
    tool_call_id: uuid.UUID | None = None  # the recorded workflow_llm_tool_calls row


@dataclass
class ToolResult:
    """What a tool returns: JSON output for the model, and how the reply should show it."""

    output: dict[str, Any]
    message_type: str | None = None  # 'table' or 'chart' makes the reply a message of that type
    message_metadata: dict[str, Any] = field(default_factory=dict)
    citations: list[dict[str, Any]] = field(default_factory=list)


ToolRunner = Callable[[ToolContext, Any], Awaitable[ToolResult]]


@dataclass
class Tool:
    """A tool: its name, description (from the docstring), typed input and executor."""

    name: str
    description: str
    input_type: type[msgspec.Struct]
    run: ToolRunner
    timeout_s: float = 15.0

    def spec(self) -> ToolSpec:
        """The JSON schema the model sees, with definitions inlined (built once per tool)."""
        built = self.__dict__.get("_spec")
        if built is None:
            built = self.__dict__["_spec"] = ToolSpec(
                self.name, self.description, input_schema(self.input_type))
        return built


@dataclass
class ToolOutcome:
    """A finished tool call as recorded and fed back to the model."""

    output: dict[str, Any] | None
    success: bool
    error: str | None
    latency_ms: int
    result: ToolResult | None = None


def input_schema(input_type: type[msgspec.Struct]) -> dict[str, Any]:
    """msgspec's JSON schema for a struct, as one self-contained object schema."""
    schema = msgspec.json.schema(input_type)
    defs = schema.pop("$defs", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        schema = defs[ref.split("/")[-1]]
    schema.pop("title", None)
    return schema


class ToolRegistry:
    """Tools by name; the only way a model's tool call reaches code."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        """Add or replace a tool."""
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        """The tool called `name`, if registered."""
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """Every registered tool name."""
        return sorted(self._tools)

    def specs(self, names: list[str]) -> list[ToolSpec]:
        """Specs of the named tools that exist, in the order given."""
        return [self._tools[n].spec() for n in names if n in self._tools]

    async def execute(self, name: str, arguments: dict[str, Any], context: ToolContext,
                      *, max_output_chars: int = 20_000) -> ToolOutcome:
        """Validate the input, run the tool under its timeout, cap its output; never raises."""
        started = time.perf_counter()
        tool = self._tools.get(name)
        try:
            if tool is None:
                raise ToolError(f"unknown tool {name!r}")
            try:
                parsed = msgspec.convert(arguments, tool.input_type, strict=False)
            except msgspec.ValidationError as exc:
                raise ToolError(f"invalid input: {exc}") from exc
            async with asyncio.timeout(tool.timeout_s):
                result = await tool.run(context, parsed)
        except ToolError as exc:
            return ToolOutcome(None, False, str(exc), _ms(started))
        except TimeoutError:
            return ToolOutcome(None, False, f"{name} timed out after {tool.timeout_s:g}s"
                               if tool else "timed out", _ms(started))
        output = truncate_output(result.output, max_output_chars)
        return ToolOutcome(output, True, None, _ms(started), result)


def truncate_output(output: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """Keep tool output within budget: large lists are cut and the cut is stated."""
    text = json.dumps(output, default=str)
    if len(text) <= max_chars:
        return output
    trimmed = dict(output)
    for key, value in output.items():
        if isinstance(value, list) and value:
            keep = max(1, int(len(value) * max_chars / len(text) * 0.8))
            trimmed[key] = value[:keep]
            trimmed["_truncated"] = (f"{key}: showing {keep} of {len(value)} items; "
                                     "ask a narrower question for the rest")
    if len(json.dumps(trimmed, default=str)) > max_chars:
        return {"_truncated": f"output of {len(text)} characters exceeded {max_chars}",
                "preview": text[: max_chars // 2]}
    return trimmed


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
