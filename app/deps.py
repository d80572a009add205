"""Request-scoped dependencies: the caller and a tenant-scoped database session."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.db.tenancy import set_tenant


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller."""
    user = request.user
    assert isinstance(user, Principal)
    return user


async def provide_db_session(request: Request[Any, Any, Any]) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request, scoped to the caller's tenant.

    Litestar throws a handler's exception into this generator, so the transaction rolls back on any
    error and commits only after the handler succeeded (before the response is sent).
    """
    principal = request.user
    assert isinstance(principal, Principal)
    async with request.app.state.sessionmaker() as session, session.begin():
        await set_tenant(session, principal.tenant_id, principal.user_id)
        yield session


DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "db_session": Provide(provide_db_session),
}

# Explicit markers for handler signatures (Litestar 3 drops inferred dependencies).
DbSession = NamedDependency[AsyncSession]
CurrentUser = NamedDependency[Principal]
