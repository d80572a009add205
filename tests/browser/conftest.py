"""Browser fixtures: the real app on a free port and Debian's headless Chromium driven by Playwright.

Playwright's own browser download is never used (`executable_path` points at /usr/bin/chromium).
Every test gets a fresh browser context (empty sessionStorage) and a log of the requests it made.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from playwright.async_api import expect

from app.main import create_app
from app.settings import Settings
from app.web import web_route_handlers
from tests.live import serve_app

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach outside hosts at start-up,
# which this machine's closed network refuses (and the request log would show).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Starting a workflow runs its entry analysis on the paced local model: a few seconds.
expect.set_options(timeout=20_000)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests that drive Chromium, and only them, when it is not installed."""
    if CHROMIUM.exists():
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: `apt-get install -y chromium` "
                                   "runs the browser tests")
    for item in items:
        if here in Path(str(item.path)).parents and "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


def ensure_web_routes(app: Litestar, settings: Settings) -> None:
    """Register the console on an app built before app/main.py wired it in (idempotent)."""
    paths = {route.path for route in app.routes}
    if "/console/{file_path:path}" not in paths:
        for handler in web_route_handlers(settings):
            app.register(handler)


@pytest.fixture(scope="session")
def console_settings(settings: Settings) -> Settings:
    """Dev mode (demo sign-in) and a paced local model, so a reply can be caught mid-stream."""
    return settings.model_copy(update={"dev_mode": True, "local_token_delay_ms": 45,
                                       "run_flush_interval_s": 0.05})


# Package scope: the console's server and its run manager stop when the browser tests end, so
# they never take part in the rest of the suite.
@pytest.fixture(scope="package")
def console(console_settings: Settings, database: Any) -> Iterator[tuple[Litestar, str]]:
    """The service with the console, over real HTTP: (app, base URL)."""
    app = create_app(console_settings, database=database)
    ensure_web_routes(app, console_settings)
    with serve_app(app) as base:
        yield app, base


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class BrowserSession:
    """One page in a fresh context: the URLs it requested (and why any failed), its JS errors."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.failures: dict[str, str] = {}
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failures.setdefault(
            request.url, request.failure or ""))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: Any) -> None:
        # A 404 from an endpoint still being built is reported by the test that needs it.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    async def sign_in(self, email: str) -> None:
        """Open the console and pick a demo user."""
        await self.page.goto(self.base + "/")
        await self.page.click(f'button.user-button[data-email="{email}"]')
        await self.page.wait_for_selector("#who .badge")

    async def start_execution(self, customer: str, workflow: str) -> str:
        """Start a customer's workflow from its row (the entry analysis runs); the execution id."""
        row = self.page.locator(f'tr[data-customer-key="{customer}"]')
        await expect(row).to_have_attribute("data-workflow", workflow)
        await row.locator("button.start-workflow").click()
        execution = self.page.locator('[data-testid="execution"][data-execution-id]')
        await expect(execution.get_by_test_id("current-step")).to_be_visible()
        execution_id = await execution.get_attribute("data-execution-id")
        assert execution_id
        return execution_id

    async def open_branch(self, branch_id: str) -> str:
        """Click an llm/rag branch; the id of the thread it opened (once its history is drawn)."""
        await self.page.click(f'button[data-branch-id="{branch_id}"]')
        thread = self.page.locator('[data-testid="thread"][data-thread-id]')
        await expect(thread).to_be_visible()
        thread_id = await thread.get_attribute("data-thread-id")
        assert thread_id
        return thread_id

    async def ask(self, question: str) -> None:
        """Type a question into the open conversation and send it with Enter."""
        box = self.page.get_by_label("message")
        await box.fill(question)
        await box.press("Enter")

    async def screenshot(self, name: str) -> Path:
        """Write test-artifacts/screenshots/<name>.png (a CI artifact; never a tracked file)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Remember each phase's outcome on the test item, so fixtures can see a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
async def ui(request: pytest.FixtureRequest, browser: Any,
             console: tuple[Litestar, str]) -> AsyncIterator[BrowserSession]:
    """A fresh browser context on the console; a failed test leaves a screenshot behind."""
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    browser_session = BrowserSession(page, console[1])
    yield browser_session
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        await browser_session.screenshot("failed-" + re.sub(r"[^\w.-]+", "_", request.node.name)[:120])
    await context.close()


def missing_routes(app: Litestar, *paths: str) -> list[str]:
    """The given route paths the app does not serve (yet)."""
    served = {route.path for route in app.routes}
    return [path for path in paths if path not in served]


@pytest.fixture
async def http(console: tuple[Litestar, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the same server, for arranging and checking through the API."""
    async with httpx.AsyncClient(base_url=console[1], timeout=30) as client:
        yield client
