"""The tool registry: typed input, timeouts, capped output, never raising into the reply loop."""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from tools.base import Tool, ToolContext, ToolError, ToolRegistry, ToolResult, truncate_output


class EchoInput(msgspec.Struct):
    text: str
    times: int = 1


async def echo(context: ToolContext, data: EchoInput) -> ToolResult:
    return ToolResult(output={"echo": [data.text] * data.times})


async def sleepy(context: ToolContext, data: EchoInput) -> ToolResult:
    await asyncio.sleep(10)
    return ToolResult(output={})


async def refusing(context: ToolContext, data: EchoInput) -> ToolResult:
    raise ToolError("no rows match that customer")


def registry() -> ToolRegistry:
    tools = ToolRegistry()
    tools.register(Tool("echo", "Echo text.", EchoInput, echo))
    tools.register(Tool("sleepy", "Never answers.", EchoInput, sleepy, timeout_s=0.05))
    tools.register(Tool("refusing", "Always refuses.", EchoInput, refusing))
    return tools


CONTEXT = ToolContext(tenant_id=uuid.uuid4(), user_id=None)


def test_schema_comes_from_the_typed_input():
    (spec,) = registry().specs(["echo", "missing"])
    assert spec.name == "echo" and spec.description == "Echo text."
    assert spec.parameters["type"] == "object"
    assert spec.parameters["required"] == ["text"]
    assert set(spec.parameters["properties"]) == {"text", "times"}


async def test_valid_call_runs_and_reports_latency():
    outcome = await registry().execute("echo", {"text": "hi", "times": 2}, CONTEXT)
    assert outcome.success and outcome.output == {"echo": ["hi", "hi"]}
    assert outcome.latency_ms >= 0


async def test_unknown_tool_and_bad_input_are_errors_the_model_can_read():
    tools = registry()
    unknown = await tools.execute("drop_tables", {}, CONTEXT)
    assert not unknown.success and "unknown tool" in unknown.error
    bad = await tools.execute("echo", {"text": 5, "times": "x"}, CONTEXT)
    assert not bad.success and "invalid input" in bad.error
    broken_json = await tools.execute("echo", {"_invalid_json": "{oops"}, CONTEXT)
    assert not broken_json.success


async def test_slow_tool_is_cut_off_at_its_timeout():
    outcome = await registry().execute("sleepy", {"text": "x"}, CONTEXT)
    assert not outcome.success and "timed out" in outcome.error


async def test_tool_error_is_reported_not_raised():
    outcome = await registry().execute("refusing", {"text": "x"}, CONTEXT)
    assert (outcome.success, outcome.error) == (False, "no rows match that customer")


async def test_oversized_output_is_truncated_with_a_note():
    outcome = await registry().execute("echo", {"text": "y" * 100, "times": 1000}, CONTEXT,
                                       max_output_chars=5_000)
    assert outcome.success
    assert len(msgspec.json.encode(outcome.output)) <= 5_000
    assert "showing" in outcome.output["_truncated"]
    assert 0 < len(outcome.output["echo"]) < 1000


def test_truncation_of_output_without_lists_keeps_a_preview():
    output = truncate_output({"blob": "z" * 50_000}, 1_000)
    assert "exceeded" in output["_truncated"] and len(output["preview"]) <= 500
