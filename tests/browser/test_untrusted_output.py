"""Model output is untrusted: markup in a reply is shown as text, outside images and links are not
loaded, and the page's Content-Security-Policy blocks what a renderer bug might let through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.async_api import expect
from sqlalchemy import text

from app.llm.base import ChatRequest, Finish, ProviderConfig, TextDelta, Usage
from tests.browser.conftest import BrowserSession
from tests.browser.test_csm_console import CSM, start_critical_execution

HOSTILE_REPLY = (
    "Here is the summary you asked for.\n\n"
    "<script>window.__pwned=1</script>\n"
    "<img src=https://elsewhere.example/x.png onerror=\"window.__pwned=2\">\n"
    "![x](https://elsewhere.example/y.png)\n"
    "[open me](javascript:window.__pwned=3) and [a site](https://elsewhere.example/page)\n\n"
    "- **bold** stays bold\n- `code` stays code\n"
)


class HostileProvider:
    """A provider whose every reply is HOSTILE_REPLY, streamed in small pieces."""

    name = "hostile"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def stream(self, request: ChatRequest) -> AsyncIterator[Any]:
        """Stream the scripted reply."""
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        for start in range(0, len(HOSTILE_REPLY), 7):
            await asyncio.sleep(0.005)
            yield TextDelta(HOSTILE_REPLY[start:start + 7])
        yield Finish(Usage(input_tokens=120, output_tokens=60), "stop", "hostile-1")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.fixture
def hostile_model(console: Any) -> str:
    """Register the hostile provider on the running app; the model name that reaches it."""
    app, _ = console
    app.state.providers.register("hostile", HostileProvider)
    return "hostile:scripted"


def outside_requests(ui: BrowserSession) -> list[str]:
    """Requests to any host but the console's own (127.0.0.1); blob: URLs are local."""
    return [url for url in ui.requests
            if urlparse(url).scheme not in ("blob", "data")
            and urlparse(url).hostname != "127.0.0.1"]


async def assert_reply_is_inert(ui: BrowserSession, reply: Any) -> None:
    page = ui.page
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert await reply.locator("script").count() == 0
    scripts = await page.evaluate(
        "Array.from(document.scripts, s => s.getAttribute('src') || 'inline')")
    assert scripts == ["/console/app.js"], scripts
    images = await page.evaluate("Array.from(document.images, i => i.getAttribute('src') || '')")
    assert all(src.startswith(("blob:", "/")) for src in images), images
    await expect(reply).to_contain_text("<script>window.__pwned=1</script>")
    await expect(reply).to_contain_text("image: x — elsewhere.example")
    hrefs = await reply.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert not any("javascript:" in h or "elsewhere.example" in h for h in hrefs), hrefs
    await expect(reply.locator("strong")).to_have_text("bold")
    await expect(reply.locator("code")).to_have_text("code")
    assert outside_requests(ui) == []


async def test_hostile_reply_is_shown_inertly_live_and_after_reload(
        ui: BrowserSession, hostile_model: str, owner_engine: Any) -> None:
    await ui.sign_in(CSM)
    await start_critical_execution(ui)
    thread_id = await ui.open_branch("ask-about-risk")
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            "UPDATE workflow_llm_context SET model_used = :m, provider = 'hostile',"
            " tools_available = '{}' WHERE thread_id = :t"), {"m": hostile_model, "t": thread_id})

    await ui.ask("Summarise the account")

    reply = ui.page.locator(".message.assistant").last
    await expect(reply).to_have_attribute("data-state", "done")
    await assert_reply_is_inert(ui, reply)
    await ui.screenshot("console-untrusted-reply")

    await ui.page.reload()  # the stored message is rendered by the same rules

    stored = ui.page.locator(".message.assistant").last
    await expect(stored).to_contain_text("Here is the summary you asked for.")
    await assert_reply_is_inert(ui, stored)
    assert not ui.errors


async def test_content_security_policy_blocks_markup_that_bypasses_the_renderer(
        ui: BrowserSession, http: Any) -> None:
    page = ui.page
    response = await page.goto(ui.base + "/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'",
                      "base-uri 'none'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    for asset in ("/console/app.js", "/console/styles.css"):
        assert (await http.get(asset)).headers["x-content-type-options"] == "nosniff"

    violations = await page.evaluate("""() => new Promise(resolve => {
        const seen = [];
        document.addEventListener('securitypolicyviolation', e => seen.push(e.violatedDirective));
        const box = document.createElement('div');
        box.innerHTML = '<img src="https://elsewhere.example/z.png">'
            + '<img src="x" onerror="window.__pwned = 4">';
        document.body.append(box);
        const script = document.createElement('script');
        script.textContent = 'window.__pwned = 5';
        document.body.append(script);
        setTimeout(() => resolve(seen), 500);
    })""")

    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert any(v.startswith("img-src") for v in violations), violations
    assert any(v.startswith("script-src") for v in violations), violations
    blocked = outside_requests(ui)
    assert blocked, "the injected outside image was attempted"
    # The browser refused it before any connection: blocked by the policy, not by the network.
    assert all(ui.failures.get(url) == "csp" for url in blocked), (
        ui.failures)


CHART = "/api/charts/0b7d7e9e-1111-4222-8333-444455556666.png"
RENDER = """async (source) => {
    const { renderMarkdown } = await import('/console/markdown.js');
    const box = document.createElement('div');
    box.append(renderMarkdown(source));
    return {
        links: Array.from(box.querySelectorAll('a'), a => a.getAttribute('href')),
        images: Array.from(box.querySelectorAll('img'), i => i.getAttribute('alt')),
        elements: Array.from(box.querySelectorAll('*'), e => e.tagName.toLowerCase()),
        text: box.textContent,
    };
}"""


@pytest.mark.parametrize(("source", "links", "images"), [
    ("[a](javascript:alert(1))", [], []),
    ("[a](JaVaScRiPt:alert(1))", [], []),
    ("[a](data:text/html,<script>alert(1)</script>)", [], []),
    ("[a](//elsewhere.example/x)", [], []),
    ("[a](https://elsewhere.example/x)", [], []),
    ("[a](/#token=stolen)", [], []),
    ("[a](/api/threads?x=1)", ["/api/threads?x=1"], []),
    (f"![c]({CHART})", [], ["c"]),
    ("![c](/api/charts/../usage/export.png)", [], []),
    ("![c](https://elsewhere.example/a.png)", [], []),
    (f"![c](https://elsewhere.example{CHART})", [], []),
])
async def test_markdown_links_and_images_follow_the_allow_list(
        ui: BrowserSession, source: str, links: list[str], images: list[str]) -> None:
    await ui.page.goto(ui.base + "/")

    rendered = await ui.page.evaluate(RENDER, source)

    assert rendered["links"] == links
    assert rendered["images"] == images
    assert outside_requests(ui) == []


@pytest.mark.parametrize("source", [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "**<i>x</i>**",
    "<a href=javascript:alert(1)>x</a>", "<svg onload=alert(1)>", "`<b>code</b>`",
])
async def test_markdown_shows_html_as_text(ui: BrowserSession, source: str) -> None:
    await ui.page.goto(ui.base + "/")

    rendered = await ui.page.evaluate(RENDER, source)

    assert set(rendered["elements"]) <= {"p", "strong", "em", "code", "br"}
    assert "<" in rendered["text"] and ">" in rendered["text"]
