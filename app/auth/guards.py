"""Role guards for route handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.auth.principal import Principal
from app.errors import Forbidden

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def requires_role(*roles: str) -> Guard:
    """Allow only callers whose role is one of `roles`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = connection.user
        if not isinstance(user, Principal) or user.role not in roles:
            raise Forbidden(f"this action needs one of the roles: {', '.join(roles)}")

    return guard


admin_only = requires_role("admin")
analysts = requires_role("analyst", "admin")
