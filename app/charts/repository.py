"""Chart queries; every one runs in a tenant-scoped session, so RLS hides other tenants' charts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.charts.models import Chart


async def add(session: AsyncSession, chart: Chart) -> Chart:
    """Insert a chart and return it with its id."""
    session.add(chart)
    await session.flush()
    return chart


async def get_svg(session: AsyncSession, chart_id: uuid.UUID) -> str | None:
    """The SVG rendering of a visible chart."""
    svg: str | None = await session.scalar(select(Chart.svg).where(Chart.id == chart_id))
    return svg


async def get_png(session: AsyncSession, chart_id: uuid.UUID) -> bytes | None:
    """The PNG rendering of a visible chart."""
    png: bytes | None = await session.scalar(select(Chart.png).where(Chart.id == chart_id))
    return png


async def get_spec(session: AsyncSession, chart_id: uuid.UUID) -> dict[str, Any] | None:
    """The Vega-Lite spec of a visible chart."""
    spec: dict[str, Any] | None = await session.scalar(
        select(Chart.spec).where(Chart.id == chart_id))
    return spec
