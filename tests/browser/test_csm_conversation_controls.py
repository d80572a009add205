"""The CSM's other ways through a step: free text at the step, stopping a reply, and a RAG branch
whose citations lead to their documents."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import BrowserSession, missing_routes
from tests.browser.test_csm_console import CSM, start_critical_execution


async def test_free_text_matching_a_branch_prompt_takes_that_branch(ui: BrowserSession) -> None:
    await ui.sign_in(CSM)
    await start_critical_execution(ui)

    await ui.page.get_by_label("step chat").fill("let's do it!")
    await ui.page.get_by_label("step chat").press("Enter")

    await expect(ui.page.get_by_test_id("current-step")).to_have_attribute(
        "data-step-id", "critical-emergency-resolution")
    assert not ui.errors


async def test_off_script_free_text_opens_a_conversation_and_streams_the_answer(
        ui: BrowserSession, http: Any, auth: Any) -> None:
    await ui.sign_in(CSM)
    await start_critical_execution(ui)

    await ui.page.get_by_label("step chat").fill("Who signs the renewal on their side?")
    await ui.page.get_by_label("step chat").press("Enter")

    thread = ui.page.locator('[data-testid="thread"][data-thread-id]')
    reply = thread.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    thread_id = await thread.get_attribute("data-thread-id")
    detail = (await http.get(f"/api/threads/{thread_id}", headers=auth(CSM))).json()
    assert [m["role"] for m in detail["messages"]][-2:] == ["user", "assistant"]
    assert detail["messages"][-2]["content"] == "Who signs the renewal on their side?"
    await expect(thread.locator(".message.user")).to_have_text(
        "you" + "Who signs the renewal on their side?")
    assert not ui.errors


async def test_stop_ends_the_reply_and_keeps_its_text(
        ui: BrowserSession, http: Any, auth: Any) -> None:
    await ui.sign_in(CSM)
    await start_critical_execution(ui)
    thread_id = await ui.open_branch("ask-about-risk")
    page = ui.page

    await ui.ask("Walk me through every risk in detail [[long]]")
    await expect(page.locator('.message.assistant[data-state="streaming"] .markdown')
                 ).not_to_have_text("")
    await page.click("button.stop")

    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    await expect(reply).to_have_attribute("data-status", "stopped")
    await expect(page.locator("button.stop")).to_be_hidden()
    detail = (await http.get(f"/api/threads/{thread_id}", headers=auth(CSM))).json()
    stored = detail["messages"][-1]
    assert stored["status"] == "stopped"
    assert stored["content"] and len(stored["content"]) < 1500
    assert not ui.errors


async def test_rag_reply_cites_documents_that_open_in_place(
        ui: BrowserSession, console: Any) -> None:
    missing = [] if "rag_search" in console[0].state.tools.names else ["rag_search"]
    missing += missing_routes(console[0], "/api/knowledge/search")
    if missing:
        pytest.skip(f"waiting for: {', '.join(missing)}")
    await ui.sign_in(CSM)
    await start_critical_execution(ui)
    await ui.open_branch("search-critical-playbook")
    page = ui.page

    await ui.ask("What does the playbook say about escalating a critical renewal?")

    reply = page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    citations = reply.locator(".tool-rag_search .citation")
    await expect(citations.first).to_be_visible()
    sources = reply.locator(".sources .source-link")
    await expect(sources.first).to_be_visible()
    title = (await sources.first.inner_text()).split(" (")[0]

    await sources.first.click()

    document = page.get_by_test_id("document")
    await expect(document).to_contain_text(title)
    await expect(document.locator("blockquote").first).to_be_visible()
    assert await document.get_attribute("data-document-id")
    await ui.screenshot("console-csm-rag")
    assert not ui.errors
