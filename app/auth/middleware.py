"""Bearer-token authentication for every /api route."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.auth.tokens import TokenCodec
from app.errors import Unauthorized


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Reads `Authorization: Bearer <JWT>` and sets `request.user` to a Principal."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="chatbranch"'}
            )
        codec: TokenCodec = connection.app.state.token_codec
        principal = codec.decode(token.strip())
        return AuthenticationResult(user=principal, auth=token)
