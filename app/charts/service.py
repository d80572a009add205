"""Chart rules: render a validated chart and store it under its tenant; where clients fetch it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.charts import repository
from app.charts.models import Chart
from app.charts.render import render_chart
from app.charts.spec import BuiltChart
from app.db.tenancy import tenant_transaction

CHARTS_PATH = "/api/charts"
MEDIA_TYPES = {"svg": "image/svg+xml", "png": "image/png", "json": "application/json"}


@dataclass(frozen=True)
class ChartOwner:
    """Whose chart it is and what produced it."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID | None = None
    thread_id: uuid.UUID | None = None
    tool_call_id: uuid.UUID | None = None


def chart_urls(chart_id: uuid.UUID) -> dict[str, str]:
    """The chart's PNG (`imageUrl`), SVG and Vega-Lite spec addresses."""
    base = f"{CHARTS_PATH}/{chart_id}"
    return {"imageUrl": f"{base}.png", "svgUrl": f"{base}.svg", "specUrl": f"{base}.json"}


async def create_chart(
    sessionmaker: async_sessionmaker[AsyncSession], owner: ChartOwner, chart: BuiltChart
) -> uuid.UUID:
    """Render the chart (raises ChartInputError or RenderError), store it, return its id."""
    rendered = await render_chart(chart.spec)
    async with tenant_transaction(sessionmaker, owner.tenant_id, owner.user_id) as session:
        row = await repository.add(session, Chart(
            tenant_id=owner.tenant_id,
            thread_id=owner.thread_id,
            tool_call_id=owner.tool_call_id,
            chart_type=chart.chart_type,
            title=chart.title,
            data=chart.chart_data(),
            spec=chart.spec,
            svg=rendered.svg,
            png=rendered.png,
            created_by=owner.user_id,
        ))
        return row.id
