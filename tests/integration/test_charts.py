"""create_chart end to end: the tool stores a rendered chart; its endpoints serve it per tenant."""

from __future__ import annotations

import asyncio
import struct
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from sqlalchemy import text

from app.charts.controller import ChartController
from tools.base import ToolContext, ToolError
from tools.create_chart import TOOL, CreateChartInput

INJECTION = "</text><script>alert(1)</script>"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def chart_client(client: Any) -> Any:
    """The shared client, with the chart routes present even before app/main.py lists them."""
    if not any(route.path.startswith("/api/charts") for route in client.app.routes):
        client.app.register(ChartController)
    return client


def _context(client: Any, user: Any, thread_id: uuid.UUID | None = None) -> ToolContext:
    return ToolContext(tenant_id=user.tenant_id, user_id=user.id, thread_id=thread_id,
                       services=client.app.state)


async def _create(client: Any, user: Any, **fields: Any) -> Any:
    thread_id = fields.pop("thread_id", None)
    arguments = {"type": "bar", "title": "ARR by quarter",
                 "data": [{"label": "Q1", "value": 120}, {"label": "Q2", "value": 150}]}
    arguments.update(fields)
    # The app's engine lives on the test client's portal loop: run the tool there, as the
    # reply executor would, without blocking this test's loop.
    return await asyncio.to_thread(client.blocking_portal.call, TOOL.run,
                                   _context(client, user, thread_id),
                                   CreateChartInput(**arguments))


async def _chart_row(owner_engine: Any, chart_id: str) -> Any:
    async with owner_engine.connect() as conn:
        return (await conn.execute(text(
            "SELECT tenant_id, thread_id, created_by, chart_type, title, data, spec,"
            " length(svg) AS svg_chars, length(png) AS png_bytes FROM charts WHERE id = :id"),
            {"id": chart_id})).one_or_none()


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    length, chunk = struct.unpack(">I4s", png[8:16])
    assert (length, chunk) == (13, b"IHDR"), "the first chunk of a PNG is its 13-byte header"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_tool_stores_the_chart_and_answers_its_urls(
    chart_client: Any, users: dict[str, Any], owner_engine: Any
) -> None:
    user = users["csm@demo.example"]
    result = await _create(chart_client, user, type="line", title="Monthly ARR",
                           data={"labels": ["Jan", "Feb", "Mar"], "values": [1, 2, 3]},
                           x_label="Month", sources=["contracts_v"])
    chart_id = result.output["chartId"]
    assert result.output == {
        "chartId": chart_id, "imageUrl": f"/api/charts/{chart_id}.png",
        "svgUrl": f"/api/charts/{chart_id}.svg", "specUrl": f"/api/charts/{chart_id}.json",
    }
    assert result.message_type == "chart"
    assert result.message_metadata["chartType"] == "line"
    assert result.message_metadata["sources"] == ["contracts_v"]
    assert result.message_metadata["imageUrl"] == result.output["imageUrl"]
    assert result.message_metadata["title"] == "Monthly ARR"
    points = result.message_metadata["chartData"]["points"]
    assert [p["label"] for p in points] == ["Jan", "Feb", "Mar"]
    row = await _chart_row(owner_engine, chart_id)
    assert (row.tenant_id, row.created_by, row.chart_type) == (user.tenant_id, user.id, "line")
    assert row.data == result.message_metadata["chartData"]
    assert row.spec["data"]["values"] == points
    assert row.svg_chars > 0 and row.png_bytes > 0


async def test_svg_endpoint_serves_well_formed_svg_with_the_title_as_text(
    chart_client: Any, users: dict[str, Any], auth: Any
) -> None:
    result = await _create(chart_client, users["csm@demo.example"], title=INJECTION)
    response = await chart_client.get(result.output["svgUrl"], headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    root = ET.fromstring(response.content)
    assert root.tag == f"{SVG_NS}svg"
    elements = list(root.iter())
    assert not [e for e in elements if e.tag.rsplit("}", 1)[-1] == "script"]
    assert INJECTION in ["".join(e.itertext()) for e in elements if e.tag == f"{SVG_NS}text"]


async def test_png_endpoint_serves_a_png_image(
    chart_client: Any, users: dict[str, Any], auth: Any
) -> None:
    result = await _create(chart_client, users["csm@demo.example"], type="pie")
    response = await chart_client.get(result.output["imageUrl"], headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "private" in response.headers["cache-control"]
    width, height = _png_size(response.content)
    assert width > 100 and height > 100


async def test_json_endpoint_serves_the_vega_lite_spec(
    chart_client: Any, users: dict[str, Any], auth: Any, owner_engine: Any
) -> None:
    result = await _create(chart_client, users["csm@demo.example"], type="scatter",
                           data={"x": [1, 2, 3], "y": [4, 5, 6]})
    response = await chart_client.get(result.output["specUrl"], headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    spec = response.json()
    assert spec["$schema"].endswith("/vega-lite/v5.json")
    assert spec == (await _chart_row(owner_engine, result.output["chartId"])).spec


async def test_another_tenants_chart_is_not_found(
    chart_client: Any, users: dict[str, Any], auth: Any
) -> None:
    result = await _create(chart_client, users["csm@demo.example"])
    other = auth("csm@other.example")
    for key in ("imageUrl", "svgUrl", "specUrl"):
        response = await chart_client.get(result.output[key], headers=other)
        assert response.status_code == 404, key
        assert (await chart_client.get(result.output[key], headers=auth())).status_code == 200


async def test_chart_endpoints_require_a_token(
    chart_client: Any, users: dict[str, Any]
) -> None:
    result = await _create(chart_client, users["csm@demo.example"])
    for key in ("imageUrl", "svgUrl", "specUrl"):
        assert (await chart_client.get(result.output[key])).status_code == 401


@pytest.mark.parametrize("name", [f"{uuid.uuid4()}.svg", f"{uuid.uuid4()}.gif", "abc.png",
                                  "x", "..png"])
async def test_unknown_or_malformed_chart_files_are_not_found(
    chart_client: Any, auth: Any, name: str
) -> None:
    assert (await chart_client.get(f"/api/charts/{name}", headers=auth())).status_code == 404


async def test_bad_input_stores_nothing_and_says_what_to_fix(
    chart_client: Any, users: dict[str, Any], owner_engine: Any
) -> None:
    async with owner_engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM charts"))).scalar_one()
    with pytest.raises(ToolError, match="limit is 500"):
        await _create(chart_client, users["csm@demo.example"],
                      data={"x": list(range(501)), "y": list(range(501))})
    async with owner_engine.connect() as conn:
        after = (await conn.execute(text("SELECT count(*) FROM charts"))).scalar_one()
    assert after == before


async def test_chart_belongs_to_its_thread_and_goes_with_it(
    chart_client: Any, users: dict[str, Any], auth: Any, owner_engine: Any
) -> None:
    headers = auth()
    customers = (await chart_client.get("/api/customers", headers=headers)).json()["customers"]
    customer = next(c for c in customers if c["matchingWorkflowId"] == "critical")
    view = (await chart_client.post("/api/executions", headers=headers, json={
        "workflowId": "critical", "customerId": customer["id"]})).json()
    branch = next(b for b in view["branches"] if b["branchType"] == "llm")
    opened = await chart_client.post(
        f"/api/executions/{view['execution']['id']}/branches/{branch['branchId']}",
        headers=headers)
    thread_id = uuid.UUID(opened.json()["thread"]["id"])
    result = await _create(chart_client, users["csm@demo.example"], thread_id=thread_id)
    assert (await _chart_row(owner_engine, result.output["chartId"])).thread_id == thread_id
    async with owner_engine.begin() as conn:
        await conn.execute(text("DELETE FROM workflow_chat_threads WHERE id = :id"),
                           {"id": thread_id})
    assert await _chart_row(owner_engine, result.output["chartId"]) is None


async def test_concurrent_charts_render_without_blocking_each_other(
    chart_client: Any, users: dict[str, Any]
) -> None:
    user = users["csm@demo.example"]
    results = await asyncio.gather(*(
        _create(chart_client, user, title=f"Chart {i}") for i in range(4)))
    assert len({r.output["chartId"] for r in results}) == 4
