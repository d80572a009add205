"""The analyst page in a real browser: the usage chart, breakdowns, the drill-down from a row to its
threads and to one thread's provider calls, and the CSV export."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import BrowserSession, missing_routes

ANALYST = "analyst@demo.example"
CSM = "csm@demo.example"
USAGE_ROUTES = ("/api/usage", "/api/usage/threads/{thread_id:str}", "/api/usage/export")


@pytest.fixture
def usage_api(console: Any) -> None:
    """Skip until the usage endpoints are served."""
    missing = missing_routes(console[0], *USAGE_ROUTES)
    if missing:
        pytest.skip(f"waiting for: {', '.join(missing)}")


async def a_recorded_conversation(http: Any, auth: Any) -> dict[str, Any]:
    """A CSM's LLM thread with one finished reply, arranged through the API; its detail."""
    headers = auth(CSM)
    started = await http.post("/api/executions", headers=headers,
                              json={"workflowId": "critical", "customerId": "acme"})
    execution_id = started.json()["execution"]["id"]
    opened = await http.post(f"/api/executions/{execution_id}/branches/ask-about-risk",
                             headers=headers)
    thread_id = opened.json()["thread"]["id"]
    answered = await http.post(f"/api/threads/{thread_id}/messages", headers=headers,
                               json={"content": "What could derail this renewal?"})
    assert answered.status_code == 200, answered.text
    return (await http.get(f"/api/threads/{thread_id}", headers=headers)).json()


async def test_analyst_sees_the_chart_and_drills_down_to_a_threads_tokens(
        usage_api: None, ui: BrowserSession, http: Any, auth: Any, tmp_path: Any) -> None:
    detail = await a_recorded_conversation(http, auth)
    thread_id = detail["thread"]["id"]
    used = detail["thread"]["totalTokens"]
    assert used > 0
    page = ui.page

    await ui.sign_in(ANALYST)

    chart = page.get_by_test_id("usage-chart")
    await expect(chart).to_be_visible()
    heights = await chart.locator("rect.bar-input").evaluate_all(
        "bars => bars.map(b => Number(b.getAttribute('height')))")
    assert any(h > 0 for h in heights), "a bar shows the tokens of the last hours"
    total = await page.get_by_test_id("total-tokens").inner_text()
    assert int(total.split()[-1].replace(",", "")) >= used

    await page.click('button[data-dimension="workflow"]')
    await page.locator('[data-testid="breakdown"] tr[data-group="critical"]').click()
    thread_row = page.locator(f'[data-testid="threads"] tr[data-thread-id="{thread_id}"]')
    await thread_row.click()

    calls = page.get_by_test_id("thread-calls")
    await expect(calls).to_have_attribute("data-thread-id", thread_id)
    await expect(page.get_by_test_id("thread-total")).to_have_attribute("data-tokens", str(used))
    ledger = (await http.get(f"/api/usage/threads/{thread_id}", headers=auth(ANALYST))).json()
    await expect(calls.locator("tbody tr")).to_have_count(len(ledger["calls"]))
    await expect(page.get_by_test_id("segments")).to_contain_text("system")
    await ui.screenshot("console-analyst")

    async with page.expect_download() as waiting:
        await page.get_by_test_id("csv").click()
    download = await waiting.value
    saved = tmp_path / "usage.csv"
    await download.save_as(saved)
    content = saved.read_text()
    assert content.splitlines()[0].startswith("id,")
    assert thread_id in content
    assert not ui.errors


async def test_a_csm_cannot_read_usage_and_is_told_so(
        usage_api: None, ui: BrowserSession) -> None:
    await ui.sign_in(CSM)
    await ui.page.goto(ui.base + "/#/analyst")

    await expect(ui.page.locator(".notice-error").first).to_contain_text("analyst")
