"""The CSM page in a real browser: fixed branch, a streamed LLM reply that survives a reload,
tables and charts from tools, and returning to the step."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import BrowserSession, missing_routes

CSM = "csm@demo.example"
CHART_BLOB = re.compile(r"^blob:http://127\.0\.0\.1:\d+/")


async def start_critical_execution(ui: BrowserSession) -> str:
    """Acme renews in 10 days: the critical window; its first step is the status assessment."""
    execution_id = await ui.start_execution("acme", "critical")
    await expect(ui.page.get_by_test_id("current-step")).to_have_attribute(
        "data-step-id", "critical-status-assessment")
    return execution_id


def collapse(text: str) -> str:
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """The words of a reply, without list numbers (a [[long]] reply numbers its paragraphs)."""
    return [w for w in text.split() if not re.fullmatch(r"\d+\.", w)]


async def test_fixed_branch_moves_the_workflow_and_a_saved_action_reports_back(
        ui: BrowserSession, http: Any, auth: Any) -> None:
    await ui.sign_in(CSM)
    execution_id = await start_critical_execution(ui)
    page = ui.page

    await page.click('button[data-branch-id="work-renewal-directly"]')

    await expect(page.get_by_test_id("current-step")).to_have_attribute(
        "data-step-id", "critical-emergency-resolution")
    stored = (await http.get(f"/api/executions/{execution_id}", headers=auth(CSM))).json()
    assert stored["execution"]["currentStepId"] == "critical-emergency-resolution"
    outcome = page.locator(".log .outcome").first
    await expect(outcome).to_contain_text("Work the renewal directly", ignore_case=True)
    assert "{{" not in await outcome.inner_text()

    await page.click('button[data-branch-id="escalate"]')

    await expect(page.locator(".log .outcome").first).to_contain_text("escalat", ignore_case=True)
    await expect(page.locator(".log .outcome")).to_have_count(2)
    await expect(page.get_by_test_id("current-step")).to_have_attribute(
        "data-step-id", "critical-emergency-resolution")
    assert not ui.errors


async def test_step_shows_its_rendered_notifications(ui: BrowserSession) -> None:
    await ui.sign_in(CSM)
    page = ui.page
    await ui.start_execution("harborview", "emergency")  # renews today, ARR above 250k

    notifications = page.get_by_test_id("notifications")
    await expect(notifications.locator("li")).not_to_have_count(0)
    text = await notifications.inner_text()
    assert "Harborview Logistics" in text
    assert "{{" not in text
    assert not ui.errors


async def test_llm_reply_streams_survives_a_reload_and_returns_to_the_step(
        ui: BrowserSession, http: Any, auth: Any) -> None:
    await ui.sign_in(CSM)
    await start_critical_execution(ui)
    thread_id = await ui.open_branch("ask-about-risk")
    page = ui.page

    await ui.ask("What is the biggest risk for this renewal? [[long]]")
    streaming = page.locator('.message.assistant[data-state="streaming"] .markdown')
    await expect(streaming).not_to_have_text("")
    before_reload = collapse(await streaming.inner_text())
    saved = json.loads(await page.evaluate("sessionStorage.getItem('chatbranch.reply')"))
    assert saved["threadId"] == thread_id and not saved["finished"]
    assert saved["lastEventId"], "the page remembers where the stream was"

    await page.reload()

    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done", timeout=60_000)
    resumed = [url for url in ui.requests if url.endswith(f"/api/threads/{thread_id}/stream")]
    assert resumed, "the reloaded page resumed the stream"
    detail = (await http.get(f"/api/threads/{thread_id}", headers=auth(CSM))).json()
    stored = next(m for m in reversed(detail["messages"]) if m["role"] == "assistant")
    shown = collapse(await reply.locator(".markdown").inner_text())
    assert shown.startswith(before_reload[:40])
    # Exactly once: the text on screen is the stored reply, nothing lost or repeated.
    assert words(shown) == words(stored["content"])
    meter = page.get_by_test_id("meter-tokens")
    await expect(meter).to_have_attribute("data-tokens", str(detail["thread"]["totalTokens"]))
    assert detail["thread"]["totalTokens"] > 0
    await ui.screenshot("console-csm-conversation")

    await page.click("button.return")

    returned = page.get_by_test_id("returned-to")
    await expect(returned).to_have_attribute("data-step-id", "critical-status-assessment")
    await expect(page.get_by_test_id("current-step")).to_have_attribute(
        "data-step-id", "critical-status-assessment")
    await expect(page.get_by_test_id("thread")).to_have_count(0)
    closed = (await http.get(f"/api/threads/{thread_id}", headers=auth(CSM))).json()
    assert closed["thread"]["status"] == "completed"
    assert not ui.errors


async def test_llm_reply_shows_a_query_table_and_a_chart_and_finishes_after_reload(
        ui: BrowserSession, console: Any, http: Any, auth: Any) -> None:
    app, _ = console
    missing = [name for name in ("database_query", "create_chart")
               if name not in app.state.tools.names]
    missing += missing_routes(app, "/api/charts/{chart_file:str}")
    if missing:
        pytest.skip(f"waiting for: {', '.join(missing)}")
    await ui.sign_in(CSM)
    await start_critical_execution(ui)
    thread_id = await ui.open_branch("ask-about-risk")
    page = ui.page

    await ui.ask("List the contracts and chart the ARR trend [[long]]")

    table = page.locator(".tool-database_query table.query-result")
    await expect(table).to_be_visible(timeout=45_000)
    assert await table.locator("tbody tr").count() >= 1
    chart = page.locator(".tool-create_chart img.chart")
    await expect(chart).to_have_attribute("src", CHART_BLOB)
    await expect(page.locator('.message.assistant[data-state="streaming"] .markdown')
                 ).not_to_have_text("")
    await page.reload()

    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(reply.locator("table.query-result")).to_be_visible()
    await expect(reply.locator("img.chart")).to_have_attribute("src", CHART_BLOB)
    loaded = await reply.locator("img.chart").evaluate("img => img.complete && img.naturalWidth")
    assert loaded > 0, "the chart image decoded"
    await expect(page.get_by_test_id("meter-tokens")).not_to_have_attribute("data-tokens", "0")
    await ui.screenshot("console-csm")
    detail = (await http.get(f"/api/threads/{thread_id}", headers=auth(CSM))).json()
    assert {c["toolName"] for c in detail["toolCalls"]} >= {"database_query", "create_chart"}
    assert not ui.errors
