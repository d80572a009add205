"""The stream as the AI SDK itself reads it: what `readUIMessageStream` assembles was persisted."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.fakes import FakeToolCall, FakeUsage, text_reply, tool_call_reply
from tests.integration.conftest import thread_rows

JS_DIR = Path(__file__).resolve().parents[1] / "js"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "ai").exists(),
    reason="Node.js and the npm package `ai` are needed (make test installs them)")


async def read_with_ai_sdk(url: str, body: dict, token: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / "read_stream.mjs"), url, json.dumps(body), token,
        cwd=JS_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_ai_sdk_assembles_exactly_what_was_persisted(
        live_app, token_for, new_thread, owner_engine, fake_openai):
    fake = fake_openai[0]
    fake.reset()
    fake.enqueue(tool_call_reply(FakeToolCall("lookup_renewal", {"customer": "Acme"}),
                                 text="Let me check. ",
                                 usage=FakeUsage(input_tokens=40, output_tokens=12)),
                 text_reply("Acme renews in 10 days, so start the signature process today.",
                            usage=FakeUsage(input_tokens=90, output_tokens=15, cached_tokens=30)))
    thread = await new_thread("openai", tools=["lookup_renewal"])
    message = await read_with_ai_sdk(f"{live_app[1]}/api/threads/{thread}/messages",
                                     {"content": "When does Acme renew?"},
                                     token_for("csm@demo.example"))
    rows = await thread_rows(owner_engine, thread)
    reply = rows["messages"][-1]
    assert message["id"] == str(reply.id) and message["role"] == "assistant"
    text = "".join(p["text"] for p in message["parts"] if p["type"] == "text")
    assert text == reply.content
    (tool_part,) = [p for p in message["parts"] if p["type"] == "tool-lookup_renewal"]
    (call,) = rows["calls"]
    assert tool_part["toolCallId"] == str(call.id)
    assert tool_part["state"] == "output-available"
    assert tool_part["input"] == call.tool_input and tool_part["output"] == call.tool_output
    usage = next(p["data"] for p in message["parts"] if p["type"] == "data-usage")
    assert usage["promptTokens"] == sum(r.input_tokens for r in rows["ledger"]) == 130
    assert usage["completionTokens"] == sum(r.output_tokens for r in rows["ledger"]) == 27
    assert usage["cachedTokens"] == 30
    user = next(p["data"] for p in message["parts"] if p["type"] == "data-message")
    assert user["sequenceNumber"] == rows["messages"][-2].sequence_number
    assert message["metadata"] == {"status": "complete"}
