"""Demo sign-in for dev mode only: list the seeded users and hand out a token for one of them.

Only registered when `settings.dev_mode` is true (the default for `make run`); in production the
console takes its token from the host app instead. Users of every tenant are listed, which the
runtime role cannot see through row-level security, so this reads them as the schema owner.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody
from sqlalchemy import text

from app.db.engine import create_engine
from app.errors import NotFound

_USERS_SQL = text(
    "SELECT u.id, u.tenant_id, u.email, u.name, u.role, t.name AS tenant"
    " FROM users u JOIN tenants t ON t.id = u.tenant_id"
    " ORDER BY t.name, u.role, u.email"
)


class DevUser(msgspec.Struct, rename="camel"):
    """A seeded user the demo can sign in as."""

    email: str
    name: str
    role: str
    tenant: str


class DevUserList(msgspec.Struct):
    """GET /api/dev/users."""

    users: list[DevUser]


class DevTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/dev/token."""

    email: str


class DevToken(msgspec.Struct):
    """A bearer token for the chosen user."""

    token: str
    user: DevUser


async def _seeded_users(state: Any) -> list[Any]:
    """Every user with its tenant, read as the owner over a short-lived connection."""
    engine = create_engine(state.database.owner_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(_USERS_SQL)).all())
    finally:
        await engine.dispose()


def _require_dev_mode(request: Request[Any, Any, Any]) -> None:
    """Belt and braces: even if registered by mistake, production answers as if absent."""
    if not request.app.state.settings.dev_mode:
        raise NotFound("not found")


class DevAuthController(Controller):
    """Dev-mode sign-in for the console's demo."""

    path = "/api/dev"
    tags = ["dev"]
    opt = {"exclude_from_auth": True}

    @get("/users")
    async def list_users(self, request: Request[Any, Any, Any]) -> DevUserList:
        """The seeded users, by tenant and role."""
        _require_dev_mode(request)
        rows = await _seeded_users(request.app.state)
        return DevUserList(users=[DevUser(email=r.email, name=r.name, role=r.role,
                                          tenant=r.tenant) for r in rows])

    @post("/token", status_code=200, response_headers={"Cache-Control": "no-store"})
    async def issue_token(self, request: Request[Any, Any, Any],
                          data: JSONBody[DevTokenRequest]) -> DevToken:
        """A bearer token for a seeded user (404 for an unknown e-mail)."""
        _require_dev_mode(request)
        wanted = data.email.strip().lower()
        row = next((r for r in await _seeded_users(request.app.state)
                    if r.email.lower() == wanted), None)
        if row is None:
            raise NotFound(f"no seeded user with e-mail '{data.email}'")
        token = request.app.state.token_codec.encode(
            user_id=row.id, tenant_id=row.tenant_id, role=row.role, email=row.email)
        return DevToken(token=token, user=DevUser(email=row.email, name=row.name, role=row.role,
                                                  tenant=row.tenant))
