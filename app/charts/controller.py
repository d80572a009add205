"""HTTP endpoints serving a chart as SVG, PNG or its Vega-Lite spec, to its own tenant only."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, Response, get
from litestar.params import FromPath

from app.charts import repository
from app.charts.service import CHARTS_PATH, MEDIA_TYPES
from app.deps import DbSession
from app.errors import NotFound

# A chart never changes once written; only its own tenant may see it, so no shared caches.
CACHE_CONTROL = "private, max-age=86400, immutable"
# Opened directly in a browser, the SVG may load nothing and run nothing.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def parse_chart_file(chart_file: str) -> tuple[uuid.UUID, str]:
    """`<uuid>.svg|png|json` → (chart id, format); anything else is NotFound."""
    stem, _, extension = chart_file.rpartition(".")
    if extension not in MEDIA_TYPES:
        raise NotFound(f"chart '{chart_file}' not found (use .svg, .png or .json)")
    try:
        return uuid.UUID(stem), extension
    except ValueError:
        raise NotFound(f"chart '{chart_file}' not found") from None


class ChartController(Controller):
    """Charts created by the create_chart tool."""

    path = CHARTS_PATH
    tags = ["charts"]

    @get("/{chart_file:str}")
    async def get_chart(self, db_session: DbSession, chart_file: FromPath[str]) -> Response[bytes]:
        """A chart as `.svg`, `.png` or `.json` (its Vega-Lite spec); another tenant's is 404."""
        chart_id, extension = parse_chart_file(chart_file)
        body: bytes | None
        if extension == "svg":
            svg = await repository.get_svg(db_session, chart_id)
            body = svg.encode() if svg is not None else None
        elif extension == "png":
            body = await repository.get_png(db_session, chart_id)
        else:
            spec = await repository.get_spec(db_session, chart_id)
            body = msgspec.json.encode(spec) if spec is not None else None
        if body is None:
            raise NotFound(f"chart '{chart_id}' not found")
        headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        if extension == "svg":
            headers["Content-Security-Policy"] = SVG_CSP
        return Response(body, media_type=MEDIA_TYPES[extension], headers=headers)
