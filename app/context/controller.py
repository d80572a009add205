"""GET /api/workflows/context/{customerId}."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from sqlalchemy.ext.asyncio import AsyncSession

from app.context.service import build_context, find_customer


class ContextController(Controller):
    """The Context API of the spec."""

    path = "/api/workflows/context"
    tags = ["workflows"]

    @get("/{customer_id:str}")
    async def get_context(self, db_session: AsyncSession, customer_id: str) -> dict[str, Any]:
        """Template variables for a customer (by id or key) with computed renewal fields."""
        customer = await find_customer(db_session, customer_id)
        return {"success": True, "context": await build_context(db_session, customer)}
