"""Run an LLM tool outside a conversation, through exactly the code path a model's call takes."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import text

from app.db.engine import create_engine, create_sessionmaker, resolve_database
from app.db.tenancy import tenant_transaction
from app.settings import Settings
from app.templates.engine import TemplateEngine
from app.wiring import attach_tool_services, build_tools
from tools.base import ToolContext


def describe_tools(settings: Settings) -> list[dict[str, Any]]:
    """Every tool's name, description and input schema."""
    registry = build_tools(SimpleNamespace(settings=settings))
    return [{"name": s.name, "description": s.description, "inputSchema": s.parameters}
            for s in registry.specs(registry.names)]


async def run_tool(settings: Settings, name: str, email: str, arguments: dict[str, Any],
                   customer_ref: str | None) -> dict[str, Any]:
    """The tool's output, or {"error": ...}; scoped to the user's tenant as the runtime role."""
    db = resolve_database(settings)
    owner = create_engine(db.owner_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            user = (await conn.execute(text(
                "SELECT id, tenant_id FROM users WHERE lower(email) = lower(:e)"),
                {"e": email})).one_or_none()
    finally:
        await owner.dispose()
    if user is None:
        return {"error": f"no user with e-mail {email}"}
    engine = create_engine(db.app_url, pool_size=2,
                           statement_timeout_ms=settings.statement_timeout_ms)
    state = SimpleNamespace(settings=settings, database=db, engine=engine,
                            sessionmaker=create_sessionmaker(engine), templates=TemplateEngine())
    try:
        attach_tool_services(state, settings)
        customer_id = await _customer(state, user.tenant_id, customer_ref)
        if customer_ref and customer_id is None:
            return {"error": f"customer {customer_ref!r} not found"}
        context = ToolContext(tenant_id=user.tenant_id, user_id=user.id, customer_id=customer_id,
                              services=state)
        outcome = await state.tools.execute(name, arguments, context,
                                            max_output_chars=settings.max_tool_output_chars)
    finally:
        await engine.dispose()
    if not outcome.success:
        return {"error": outcome.error, "latencyMs": outcome.latency_ms}
    return {"output": outcome.output, "latencyMs": outcome.latency_ms}


async def _customer(state: Any, tenant_id: uuid.UUID, ref: str | None) -> uuid.UUID | None:
    if not ref:
        return None
    from app.context.service import find_customer
    from app.errors import NotFound

    async with tenant_transaction(state.sessionmaker, tenant_id) as session:
        try:
            return (await find_customer(session, ref)).id
        except NotFound:
            return None
