"""The `create_chart` tool: chart type, title and data in; a stored, rendered chart out."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from app.charts.render import RenderError
from app.charts.service import ChartOwner, chart_urls, create_chart
from app.charts.spec import (
    DATA_SHAPES,
    MAX_LABEL_CHARS,
    MAX_POINTS,
    MAX_SERIES,
    MAX_SOURCES,
    MAX_TITLE_CHARS,
    ChartInputError,
    ChartType,
    build_chart,
    clean_sources,
)
from tools.base import Tool, ToolContext, ToolError, ToolResult

Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]


class CreateChartInput(msgspec.Struct, rename="camel"):
    """Input of create_chart."""

    type: Annotated[ChartType, msgspec.Meta(description="bar, line, area, pie or scatter")]
    title: Annotated[str, msgspec.Meta(max_length=MAX_TITLE_CHARS,
                                       description="What the chart shows, in plain text")]
    data: Annotated[
        list[dict[str, Any]] | dict[str, Any],
        msgspec.Meta(description=f"The numbers to plot: {DATA_SHAPES}. At most {MAX_POINTS} "
                                 f"points and {MAX_SERIES} series; values are numbers."),
    ]
    x_label: Annotated[Label | None, msgspec.Meta(description="Title of the x axis")] = None
    y_label: Annotated[Label | None, msgspec.Meta(description="Title of the y axis")] = None
    sources: Annotated[
        list[Label],
        msgspec.Meta(max_length=MAX_SOURCES,
                     description="Where the numbers came from, e.g. ['contracts_v']"),
    ] = msgspec.field(default_factory=list)


DESCRIPTION = (
    "Draw a chart from numbers you already have (e.g. rows from database_query) and show it in "
    "the conversation. Pass a chart type, a title and the data; the reply links the chart image."
)


async def run_create_chart(context: ToolContext, data: CreateChartInput) -> ToolResult:
    """Build and check the Vega-Lite spec, render SVG and PNG, store the chart, link it."""
    try:
        chart = build_chart(data.type, data.title, data.data,
                            x_label=data.x_label, y_label=data.y_label)
        sources = clean_sources(data.sources)
        sessionmaker = getattr(context.services, "sessionmaker", None)
        if sessionmaker is None:
            raise ToolError("charts cannot be stored here (no database session available)")
        # The runtime may name the tool call being served; older contexts do not.
        tool_call_id = getattr(context, "tool_call_id", None)
        owner = ChartOwner(
            tenant_id=context.tenant_id,
            user_id=context.user_id,
            thread_id=context.thread_id,
            tool_call_id=tool_call_id if isinstance(tool_call_id, uuid.UUID) else None,
        )
        chart_id = await create_chart(sessionmaker, owner, chart)
    except ChartInputError as exc:
        raise ToolError(f"invalid chart: {exc}") from exc
    except RenderError as exc:
        raise ToolError(f"the chart could not be drawn: {exc}") from exc
    urls = chart_urls(chart_id)
    return ToolResult(
        output={"chartId": str(chart_id), **urls},
        message_type="chart",
        message_metadata={
            "chartId": str(chart_id),
            "chartType": chart.chart_type,
            "title": chart.title,
            "chartData": chart.chart_data(),
            "sources": sources,
            "imageUrl": urls["imageUrl"],
        },
    )


TOOL = Tool(
    name="create_chart",
    description=DESCRIPTION,
    input_type=CreateChartInput,
    run=run_create_chart,
    timeout_s=20.0,
)
