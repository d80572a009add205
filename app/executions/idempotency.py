"""Idempotency-Key for action POSTs: a repeat returns the first result and acts only once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from sqlalchemy import text

from app.chat.service import request_hash
from app.db.tenancy import tenant_transaction
from app.errors import Conflict


async def idempotent(request: Request[Any, Any, Any], principal: Any, scope: str, body: str,
                     action: Callable[[], Awaitable[dict[str, Any]]]
                     ) -> tuple[dict[str, Any], bool]:
    """Run `action` once per key; returns (response body, replayed)."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await action(), False
    if len(key) > 200:
        raise Conflict("Idempotency-Key may have at most 200 characters")
    sessionmaker = request.app.state.sessionmaker
    fingerprint = request_hash(scope, body)
    async with tenant_transaction(sessionmaker, principal.tenant_id) as session:
        claimed = (await session.execute(text(
            "INSERT INTO idempotency_keys (tenant_id, key, user_id, scope, request_hash)"
            " VALUES (:t, :k, :u, :s, :h) ON CONFLICT DO NOTHING RETURNING key"),
            {"t": principal.tenant_id, "k": key, "u": principal.user_id, "s": scope,
             "h": fingerprint})).first()
    if claimed is None:
        return await _replay(sessionmaker, principal, key, scope, fingerprint), True
    try:
        result = await action()
    except BaseException:
        async with tenant_transaction(sessionmaker, principal.tenant_id) as session:
            await session.execute(text(
                "DELETE FROM idempotency_keys WHERE tenant_id = :t AND key = :k"),
                {"t": principal.tenant_id, "k": key})
        raise
    async with tenant_transaction(sessionmaker, principal.tenant_id) as session:
        await session.execute(text(
            "UPDATE idempotency_keys SET response = CAST(:r AS jsonb), status_code = 200"
            " WHERE tenant_id = :t AND key = :k"),
            {"r": json.dumps(result, default=str), "t": principal.tenant_id, "k": key})
    return result, False


async def _replay(sessionmaker: Any, principal: Any, key: str, scope: str,
                  fingerprint: str) -> dict[str, Any]:
    """The stored response; waits briefly while the first request is still running."""
    for _ in range(300):
        async with tenant_transaction(sessionmaker, principal.tenant_id) as session:
            row = (await session.execute(text(
                "SELECT scope, request_hash, response FROM idempotency_keys"
                " WHERE tenant_id = :t AND key = :k"), {"t": principal.tenant_id, "k": key})
                   ).first()
        if row is None or row.scope != scope or row.request_hash != fingerprint:
            raise Conflict("this Idempotency-Key was already used for a different request")
        if row.response is not None:
            return dict(row.response)
        await asyncio.sleep(0.1)
    raise Conflict("the first request with this Idempotency-Key is still running")
