"""The prompt breakdown aggregates in the usage API to exactly the input tokens."""

from __future__ import annotations

import time

from tests.fakes import FakeToolCall, FakeUsage, text_reply, tool_call_reply
from tests.live import read_stream


async def test_usage_buckets_carry_the_prompt_breakdown_summing_to_input_tokens(
        http, auth, new_thread, fake_openai):
    fake = fake_openai[0]
    fake.reset()
    fake.enqueue(tool_call_reply(FakeToolCall("lookup_renewal", {"customer": "Acme"}),
                                 usage=FakeUsage(input_tokens=300, output_tokens=9)),
                 text_reply("Done.", usage=FakeUsage(input_tokens=420, output_tokens=4)))
    thread = await new_thread("openai", tools=["lookup_renewal"])
    started = int(time.time()) - 60
    await read_stream(http, "POST", f"/api/threads/{thread}/messages", headers=auth(),
                      json={"content": "When does Acme renew?"})
    response = await http.get("/api/usage", headers=auth("analyst@demo.example"), params={
        "startTime": started, "bucketWidth": "1d", "groupBy": "model", "threadIds": thread})
    assert response.status_code == 200, response.text
    (result,) = [r for bucket in response.json()["data"] for r in bucket["results"]]
    assert result["inputTokens"] == 720
    breakdown = result["promptBreakdown"]
    assert sum(breakdown.values()) == 720
    assert breakdown["toolResults"] > 0 and breakdown["context"] > 0
    by_tool = await http.get("/api/usage", headers=auth("analyst@demo.example"), params={
        "startTime": started, "bucketWidth": "1d", "groupBy": "tool", "threadIds": thread})
    results = {r["toolName"]: r for b in by_tool.json()["data"] for r in b["results"]}
    assert results["lookup_renewal"]["inputTokens"] == 300  # the call that asked for the tool
    assert results[None]["inputTokens"] == 420
