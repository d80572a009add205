"""Tenant scoping: every transaction of the runtime role names its tenant (RLS reads it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

_SET_SCOPE = text(
    "SELECT set_config('app.tenant_id', :tenant_id, true),"
    " set_config('app.user_id', :user_id, true),"
    " set_config('app.change_description', :change_description, true)"
)


async def set_tenant(
    session: AsyncSession,
    tenant_id: UUID | str,
    user_id: UUID | str | None = None,
    change_description: str | None = None,
) -> None:
    """Scope the current transaction to a tenant (transaction-local: pools never leak it)."""
    await session.execute(
        _SET_SCOPE,
        {
            "tenant_id": str(tenant_id),
            "user_id": str(user_id) if user_id else "",
            "change_description": change_description or "",
        },
    )


@asynccontextmanager
async def tenant_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_id: UUID | str,
    user_id: UUID | str | None = None,
) -> AsyncIterator[AsyncSession]:
    """One transaction scoped to `tenant_id`; commits on success, rolls back on error."""
    async with sessionmaker() as session, session.begin():
        await set_tenant(session, tenant_id, user_id)
        yield session
