"""Executions and the four branch types over HTTP, with the local model."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text


async def customer_in(client, auth, workflow: str, email: str = "csm@demo.example") -> dict:
    customers = (await client.get("/api/customers", headers=auth(email))).json()["customers"]
    return next(c for c in customers if c["matchingWorkflowId"] == workflow)


async def start(client, auth, workflow: str, **extra: Any) -> dict:
    customer = await customer_in(client, auth, workflow)
    response = await client.post("/api/executions", headers=auth(), json={
        "workflowId": workflow, "customerId": customer["id"], **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def test_start_runs_the_entry_analysis_and_recommends_a_route(client, auth, owner_engine):
    view = await start(client, auth, "critical")
    execution = view["execution"]
    assert execution["currentStepId"] == "critical-status-assessment"
    assert "riskScore" in execution["analysis"]
    assert execution["routing"]["nextStep"] in {"critical-escalation",
                                                "critical-emergency-resolution"}
    assert {b["branchType"] for b in view["branches"]} == {"fixed", "saved_action", "llm", "rag"}
    async with owner_engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT t.thread_type, t.total_tokens, count(l.*) AS calls,"
            " sum(l.input_tokens + l.output_tokens) AS ledger FROM workflow_chat_threads t"
            " JOIN usage_ledger l ON l.thread_id = t.id WHERE t.workflow_execution_id = :e"
            " GROUP BY t.id"), {"e": execution["id"]})).all()
    assert [r.thread_type for r in rows] == ["analysis"]
    assert rows[0].total_tokens == rows[0].ledger > 0


async def test_workflow_outside_the_customers_window_is_refused_unless_forced(client, auth):
    customer = await customer_in(client, auth, "overdue")
    refused = await client.post("/api/executions", headers=auth(), json={
        "workflowId": "critical", "customerId": customer["id"]})
    assert refused.status_code == 409
    assert "window" in refused.json()["detail"]
    forced = await client.post("/api/executions", headers=auth(), json={
        "workflowId": "critical", "customerId": customer["id"], "force": True})
    assert forced.status_code == 201


async def test_fixed_branch_moves_execution_to_next_step(client, auth):
    view = await start(client, auth, "critical")
    branch = next(b for b in view["branches"] if b["branchType"] == "fixed")
    response = await client.post(
        f"/api/executions/{view['execution']['id']}/branches/{branch['branchId']}",
        headers=auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "fixed" and body["nextStepId"] == branch["nextStepId"]
    assert "{{" not in body["responseText"]
    assert body["execution"]["currentStepId"] == branch["nextStepId"]


async def test_snooze_pauses_the_execution_until_its_date(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    response = await client.post(f"/api/executions/{execution_id}/branches/snooze-7-days",
                                 headers=auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["action"]["actionType"] == "snooze"
    assert body["execution"]["status"] == "snoozed" and body["execution"]["snoozedUntil"]


async def test_escalate_fires_its_action_triggered_notifications(client, auth, owner_engine):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    branch = next(b for b in view["branches"] if b["savedActionId"] == "escalate")
    response = await client.post(f"/api/executions/{execution_id}/branches/{branch['branchId']}",
                                 headers=auth())
    assert response.status_code == 200, response.text
    async with owner_engine.connect() as conn:
        fired = (await conn.execute(text(
            "SELECT notification_id, fired_by, action FROM notifications_log"
            " WHERE execution_id = :e AND fired_by = 'action'"), {"e": execution_id})).all()
    customer_arr = (await client.get(f"/api/executions/{execution_id}", headers=auth())).json()
    assert customer_arr["execution"]["escalations"]
    assert all(r.action == "escalate" for r in fired)


async def test_llm_branch_opens_a_thread_and_answers_with_recorded_usage(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    branch = next(b for b in view["branches"] if b["branchType"] == "llm")
    opened = await client.post(f"/api/executions/{execution_id}/branches/{branch['branchId']}",
                               headers=auth())
    assert opened.status_code == 201, opened.text
    thread = opened.json()["thread"]
    assert thread["status"] == "active" and thread["threadType"] == "llm"
    reply = await client.post(f"/api/threads/{thread['id']}/messages", headers=auth(),
                              json={"content": "What is the renewal date for this customer?"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["assistantMessage"]["status"] == "complete"
    assert body["assistantMessage"]["content"]
    assert body["usage"]["source"] == "provider"
    assert body["assistantMessage"]["tokensUsed"] == body["usage"]["totalTokens"] > 0
    detail = (await client.get(f"/api/threads/{thread['id']}", headers=auth())).json()
    assert detail["thread"]["totalTokens"] == body["usage"]["totalTokens"]
    assert detail["llmContext"]["totalTokensUsed"] == body["usage"]["totalTokens"]
    assert [m["sequenceNumber"] for m in detail["messages"]] == [1, 2]
    done = await client.post(f"/api/threads/{thread['id']}/complete", headers=auth())
    assert done.status_code == 200, done.text
    assert done.json()["execution"]["currentStepId"] == branch["returnToStep"]


async def test_advance_follows_the_route_the_analysis_matched(client, auth):
    view = await start(client, auth, "critical")
    expected = view["execution"]["routing"]["nextStep"]
    moved = await client.post(f"/api/executions/{view['execution']['id']}/advance",
                              headers=auth())
    assert moved.status_code == 200, moved.text
    assert moved.json()["execution"]["currentStepId"] == expected


async def test_skip_follows_the_steps_routing(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    moved = await client.post(f"/api/executions/{execution_id}/branches/prepare-escalation-brief",
                              headers=auth())
    at_escalation = (await client.get(f"/api/executions/{execution_id}", headers=auth())).json()
    assert at_escalation["execution"]["currentStepId"] == "critical-escalation", moved.text
    skip = next(b for b in at_escalation["branches"] if b["savedActionId"] == "skip-step")
    response = await client.post(f"/api/executions/{execution_id}/branches/{skip['branchId']}",
                                 headers=auth())
    assert response.status_code == 200, response.text
    routed = at_escalation["execution"]["routing"]["nextStep"]
    assert response.json()["execution"]["currentStepId"] == routed


async def test_approval_step_blocks_moving_on_until_a_manager_approves(client, auth):
    view = await start(client, auth, "emergency")
    execution_id = view["execution"]["id"]
    onward = next(b for b in view["branches"] if b["branchType"] == "fixed" and b["nextStepId"])
    moved = await client.post(f"/api/executions/{execution_id}/branches/{onward['branchId']}",
                              headers=auth())
    assert moved.status_code == 200, moved.text
    at_approval = moved.json()["execution"]
    assert at_approval["currentStepId"] == "emergency-team-escalation"
    assert at_approval["status"] == "awaiting_approval"
    step_view = (await client.get(f"/api/executions/{execution_id}", headers=auth())).json()
    proceed = next(b for b in step_view["branches"] if b["branchType"] == "fixed"
                   and b["nextStepId"] not in (None, "emergency-team-escalation"))
    refused = await client.post(f"/api/executions/{execution_id}/branches/{proceed['branchId']}",
                                headers=auth())
    assert refused.status_code == 409 and "approval" in refused.json()["detail"]
    assert (await client.post(f"/api/executions/{execution_id}/approve",
                              headers=auth())).status_code == 403
    approved = await client.post(f"/api/executions/{execution_id}/approve",
                                 headers=auth("manager@demo.example"))
    assert approved.status_code == 200
    assert approved.json()["execution"]["status"] == "active"
    allowed = await client.post(f"/api/executions/{execution_id}/branches/{proceed['branchId']}",
                                headers=auth())
    assert allowed.status_code == 200, allowed.text


async def test_free_text_matching_a_prompt_takes_that_branch(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    fixed = next(b for b in view["branches"] if b["branchType"] == "fixed")
    shouted = fixed["userPrompts"][0].upper() + "!!!"
    response = await client.post(f"/api/executions/{execution_id}/chat", headers=auth(),
                                 json={"text": shouted})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "fixed"
    assert response.json()["execution"]["currentStepId"] == fixed["nextStepId"]


async def test_free_text_off_script_opens_and_then_continues_one_thread(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    first = await client.post(f"/api/executions/{execution_id}/chat", headers=auth(),
                              json={"text": "How engaged is the champion lately?"})
    assert first.status_code == 200, first.text
    second = await client.post(f"/api/executions/{execution_id}/chat", headers=auth(),
                               json={"text": "And what about legal?"})
    assert second.status_code == 200, second.text
    assert first.json()["assistantMessage"]["content"]
    assert second.json()["userMessage"]["sequenceNumber"] == 3


async def test_abandon_closes_the_thread_and_keeps_the_step(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    branch = next(b for b in view["branches"] if b["branchType"] == "rag")
    thread = (await client.post(f"/api/executions/{execution_id}/branches/{branch['branchId']}",
                                headers=auth())).json()["thread"]
    abandoned = await client.post(f"/api/threads/{thread['id']}/abandon", headers=auth())
    assert abandoned.status_code == 200
    assert abandoned.json()["thread"]["status"] == "abandoned"
    assert abandoned.json()["execution"]["currentStepId"] == view["execution"]["currentStepId"]
    refused = await client.post(f"/api/threads/{thread['id']}/messages", headers=auth(),
                                json={"content": "still there?"})
    assert refused.status_code == 409


async def test_branch_idempotency_key_acts_once(client, auth, owner_engine):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    headers = {**auth(), "idempotency-key": f"esc-{execution_id}"}
    branch = next(b for b in view["branches"] if b["savedActionId"] == "escalate")
    url = f"/api/executions/{execution_id}/branches/{branch['branchId']}"
    first = await client.post(url, headers=headers)
    second = await client.post(url, headers=headers)
    assert first.status_code == 200 and second.status_code == 200
    assert first.json() == second.json()
    after = (await client.get(f"/api/executions/{execution_id}", headers=auth())).json()
    assert len(after["execution"]["escalations"]) == 1


async def test_a_failed_action_answers_its_own_error_and_frees_its_idempotency_key(client, auth):
    """Soak finding: releasing the key of a failed action needed a DELETE grant (500, then 409s)."""
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    headers = {**auth(), "idempotency-key": f"missing-{execution_id}"}
    url = f"/api/executions/{execution_id}/branches/no-such-branch"
    first = await client.post(url, headers=headers)
    assert first.status_code == 404, first.text
    again = await client.post(url, headers=headers)  # the key was released: it acts (and fails)
    assert again.status_code == 404, again.text
    branch = next(b for b in view["branches"] if b["savedActionId"] == "escalate")
    acted = await client.post(f"/api/executions/{execution_id}/branches/{branch['branchId']}",
                              headers={**auth(), "idempotency-key": f"missing-{execution_id}-2"})
    assert acted.status_code == 200


async def test_other_tenants_execution_and_thread_answer_404(client, auth):
    view = await start(client, auth, "critical")
    execution_id = view["execution"]["id"]
    other = auth("csm@other.example")
    assert (await client.get(f"/api/executions/{execution_id}", headers=other)).status_code == 404
    branch = next(b for b in view["branches"] if b["branchType"] == "llm")
    thread = (await client.post(f"/api/executions/{execution_id}/branches/{branch['branchId']}",
                                headers=auth())).json()["thread"]
    for method, path in (("GET", f"/api/threads/{thread['id']}"),
                         ("POST", f"/api/threads/{thread['id']}/stop"),
                         ("POST", f"/api/threads/{thread['id']}/complete"),
                         ("POST", f"/api/executions/{execution_id}/branches/x")):
        response = await client.request(method, path, headers=other)
        assert response.status_code == 404, (path, response.text)
    posted = await client.post(f"/api/threads/{thread['id']}/messages", headers=other,
                               json={"content": "let me in"})
    assert posted.status_code == 404


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "   "}, {"messages": []},
                                  {"content": "x" * 40_000}])
async def test_bad_message_bodies_are_refused_and_write_nothing(client, auth, owner_engine, body):
    view = await start(client, auth, "critical")
    branch = next(b for b in view["branches"] if b["branchType"] == "llm")
    thread = (await client.post(
        f"/api/executions/{view['execution']['id']}/branches/{branch['branchId']}",
        headers=auth())).json()["thread"]
    response = await client.post(f"/api/threads/{thread['id']}/messages", headers=auth(),
                                 json=body)
    assert response.status_code in (400, 413)
    async with owner_engine.connect() as conn:
        count = (await conn.execute(text(
            "SELECT count(*) FROM workflow_chat_messages WHERE thread_id = :t"),
            {"t": thread["id"]})).scalar_one()
    assert count == 0


async def test_ai_sdk_transport_body_is_accepted(client, auth):
    view = await start(client, auth, "critical")
    branch = next(b for b in view["branches"] if b["branchType"] == "llm")
    thread = (await client.post(
        f"/api/executions/{view['execution']['id']}/branches/{branch['branchId']}",
        headers=auth())).json()["thread"]
    body = {"id": thread["id"], "trigger": "submit-message", "messages": [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "First question"}]},
        {"id": "m2", "role": "assistant", "parts": [{"type": "text", "text": "An answer"}]},
        {"id": "m3", "role": "user", "parts": [{"type": "text", "text": "Second question"}]}]}
    response = await client.post(f"/api/threads/{thread['id']}/messages", headers=auth(),
                                 json=body)
    assert response.status_code == 200, response.text
    assert response.json()["userMessage"]["content"] == "Second question"
