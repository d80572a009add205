"""Executions and the four branch types over HTTP, with the local model."""

from __future__ import annotations

from typing import Any

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
