"""Live-server fixtures: the app on real HTTP with fake OpenAI/Anthropic behind it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import text

from app.db.engine import create_engine
from app.main import create_app
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.live import serve_app
from tools.base import Tool, ToolContext, ToolResult

MODELS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-test-1",
          "local": "local"}


class LookupInput(msgspec.Struct):
    """Input of the test tool."""

    customer: str


async def lookup_renewal(context: ToolContext, data: LookupInput) -> ToolResult:
    """Look up a renewal (a test tool)."""
    return ToolResult(output={"customer": data.customer, "renewsInDays": 10,
                              "tenant": str(context.tenant_id)})


LOOKUP_TOOL = Tool("lookup_renewal", "Look up a customer's renewal date.", LookupInput,
                   lookup_renewal)


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with fake.serve() as base:
        yield fake, base


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    with fake.serve() as base:
        yield fake, base


@pytest.fixture(scope="session")
def live_settings(settings, fake_openai, fake_anthropic):
    return settings.model_copy(update={
        "openai_api_key": "sk-test", "openai_base_url": f"{fake_openai[1]}/v1",
        "anthropic_api_key": "sk-ant-test", "anthropic_base_url": fake_anthropic[1],
        "provider_read_timeout_s": 1.0, "provider_max_retries": 1, "local_token_delay_ms": 1,
        "run_flush_interval_s": 0.05,
    })


@pytest.fixture(scope="session")
def live_app(live_settings, database):
    app = create_app(live_settings, database=database)
    with serve_app(app) as base:
        app.state.tools.register(LOOKUP_TOOL)
        yield app, base


@pytest.fixture
async def four_connections(database):
    """A runtime-role engine whose pool holds four connections."""
    engine = create_engine(database.app_url, pool_size=4, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def demo(users) -> uuid.UUID:
    """The Demo tenant's id."""
    return users["admin@demo.example"].tenant_id


@pytest.fixture(scope="module")
def other(users) -> uuid.UUID:
    """The Other tenant's id."""
    return users["admin@other.example"].tenant_id


@pytest.fixture
async def http(live_app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_app[1], timeout=30) as client:
        yield client


@pytest.fixture
def new_thread(http, auth, owner_engine):
    """Open an llm thread on a fresh critical execution, set to the given model and tools."""

    async def make(model: str = "local", tools: list[str] | None = None,
                   email: str = "csm@demo.example") -> str:
        customers = (await http.get("/api/customers", headers=auth(email))).json()["customers"]
        customer = next(c for c in customers if c["matchingWorkflowId"] == "critical")
        view = (await http.post("/api/executions", headers=auth(email), json={
            "workflowId": "critical", "customerId": customer["id"]})).json()
        branch = next(b for b in view["branches"] if b["branchType"] == "llm")
        opened = await http.post(
            f"/api/executions/{view['execution']['id']}/branches/{branch['branchId']}",
            headers=auth(email))
        thread_id = opened.json()["thread"]["id"]
        async with owner_engine.begin() as conn:
            await conn.execute(text(
                "UPDATE workflow_llm_context SET model_used = :m, provider = :p,"
                " tools_available = :t WHERE thread_id = :id"),
                {"m": MODELS.get(model, model), "p": model, "t": tools or [], "id": thread_id})
        return thread_id

    return make


async def running_run(owner_engine, tenant: uuid.UUID, thread_id: uuid.UUID
                      ) -> tuple[uuid.UUID, uuid.UUID]:
    """(run, its reply message): a run of `thread_id` in `tenant`, running, nothing stored."""
    run_id, reply_id = uuid.uuid4(), uuid.uuid4()
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO workflow_chat_messages (id, thread_id, tenant_id, role, content,"
            " sequence_number, status) VALUES (:m, :th, :t, 'assistant', '', 2000, 'streaming')"),
            {"m": reply_id, "t": tenant, "th": thread_id})
        await conn.execute(text(
            "INSERT INTO thread_runs (id, tenant_id, thread_id, assistant_message_id, status)"
            " VALUES (:r, :t, :th, :m, 'running')"),
            {"r": run_id, "t": tenant, "th": thread_id, "m": reply_id})
    return run_id, reply_id


async def thread_rows(owner_engine, thread_id: str) -> dict[str, Any]:
    """Messages, ledger rows and tool calls of a thread, as stored."""
    async with owner_engine.connect() as conn:
        messages = (await conn.execute(text(
            "SELECT id, role, content, status, tokens_used, sequence_number"
            " FROM workflow_chat_messages WHERE thread_id = :t ORDER BY sequence_number"),
            {"t": thread_id})).all()
        ledger = (await conn.execute(text(
            "SELECT message_id, input_tokens, output_tokens, cached_tokens, reasoning_tokens,"
            " usage_source, status, provider, prompt_breakdown FROM usage_ledger"
            " WHERE thread_id = :t"
            " ORDER BY created_at"), {"t": thread_id})).all()
        calls = (await conn.execute(text(
            "SELECT id, tool_name, tool_input, tool_output, success, latency_ms, message_id"
            " FROM workflow_llm_tool_calls WHERE thread_id = :t ORDER BY created_at"),
            {"t": thread_id})).all()
        thread = (await conn.execute(text(
            "SELECT t.total_tokens, t.total_messages, c.total_tokens_used"
            " FROM workflow_chat_threads t JOIN workflow_llm_context c ON c.thread_id = t.id"
            " WHERE t.id = :t"), {"t": thread_id})).one()
    return {"messages": messages, "ledger": ledger, "calls": calls, "thread": thread}


def assert_token_invariants(rows: dict[str, Any]) -> None:
    """Σ ledger = thread total = context total = Σ assistant-message tokens."""
    ledger = sum(r.input_tokens + r.output_tokens for r in rows["ledger"])
    assistants = sum(m.tokens_used or 0 for m in rows["messages"] if m.role == "assistant")
    assert rows["thread"].total_tokens == ledger == assistants == rows["thread"].total_tokens_used
    assert rows["thread"].total_messages == len(rows["messages"])
