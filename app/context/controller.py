"""GET /api/workflows/context/{customerId}."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromPath

from app.context.service import build_context, find_customer
from app.deps import DbSession


class ContextController(Controller):
    """The Context API of the spec."""

    path = "/api/workflows/context"
    tags = ["workflows"]

    @get("/{customer_id:str}")
    async def get_context(
        self, db_session: DbSession, customer_id: FromPath[str]
    ) -> dict[str, Any]:
        """Template variables for a customer (by id or key) with computed renewal fields."""
        customer = await find_customer(db_session, customer_id)
        return {"success": True, "context": await build_context(db_session, customer)}
