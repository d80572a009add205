"""GET /health: database reachability and migration status."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Response
from sqlalchemy import text

from app.db.migrate import head_revision


@get("/health", exclude_from_auth=True, tags=["operations"])
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """200 when the database answers and the schema is at the newest revision, else 503."""
    state = request.app.state
    expected = head_revision()
    database: dict[str, Any] = {"ok": False, "embedded": state.database.embedded is not None}
    try:
        async with state.engine.connect() as conn:
            revision = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar()
        database.update(
            ok=True, revision=revision, expectedRevision=expected, migrated=revision == expected
        )
    except Exception as exc:  # health must report, never raise
        database["error"] = type(exc).__name__
    healthy = database["ok"] and database.get("migrated", False)
    body = {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "models": {"default": state.settings.default_model},
        "embedder": _embedder(state),
    }
    return Response(body, status_code=200 if healthy else 503)


def _embedder(state: Any) -> dict[str, Any]:
    """Which embedder serves knowledge search (the lexical fallback says it is one)."""
    embedder = getattr(state, "embedder", None)
    if embedder is None:
        return {"name": None, "note": "no embedder on app state"}
    describe = getattr(embedder, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"name": embedder.name, "model": embedder.model, "dims": embedder.dims}
