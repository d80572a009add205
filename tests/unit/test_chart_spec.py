"""Chart input → Vega-Lite spec: types, data shapes, caps, and untrusted text kept inert."""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from app.charts.render import RenderError, ensure_inert_svg, render_chart_sync
from app.charts.spec import (
    CHART_TYPES,
    MAX_POINTS,
    MAX_SERIES,
    ChartInputError,
    assert_no_external_references,
    build_chart,
    clean_sources,
    validate_spec,
)
from tools.base import ToolContext, ToolRegistry
from tools.create_chart import TOOL

SAMPLE_DATA: dict[str, Any] = {
    "bar": [{"label": "Q1", "value": 10}, {"label": "Q2", "value": 12.5}],
    "line": {"labels": ["Jan", "Feb", "Mar"], "values": [3, 5, 4]},
    "area": {"x": [2022, 2023, 2024], "y": [100, 140, 180]},
    "pie": [{"label": "Renewed", "value": 7}, {"label": "Churned", "value": 2}],
    "scatter": {"x": [1, 2.5, 4], "y": [10, 7, 12]},
}
INJECTION = "</text><script>alert(1)</script>"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _svg_elements(svg: str) -> list[ET.Element]:
    return list(ET.fromstring(svg).iter())


# --- types and shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("chart_type", CHART_TYPES)
def test_every_chart_type_builds_a_spec_that_compiles(chart_type: str) -> None:
    chart = build_chart(chart_type, "Renewals", SAMPLE_DATA[chart_type])
    vega = validate_spec(chart.spec)
    assert chart.spec["$schema"].endswith("/vega-lite/v5.json")
    assert chart.spec["data"] == {"values": chart.points}
    assert vega["marks"], "the compiled Vega spec draws something"


def test_pie_chart_is_an_arc_mark_with_value_as_angle() -> None:
    spec = build_chart("pie", "Outcomes", SAMPLE_DATA["pie"]).spec
    assert spec["mark"]["type"] == "arc"
    assert spec["encoding"]["theta"]["field"] == "value"
    assert spec["encoding"]["color"]["field"] == "label"


@pytest.mark.parametrize(
    "data",
    [
        [{"label": "Jan", "value": 1}, {"label": "Feb", "value": 2}],
        [{"x": "Jan", "y": 1}, {"x": "Feb", "y": 2}],
        {"labels": ["Jan", "Feb"], "values": [1, 2]},
        {"x": ["Jan", "Feb"], "y": [1, 2]},
    ],
    ids=["points", "xy-points", "labels-values", "x-y"],
)
def test_every_data_shape_normalises_to_the_same_points(data: Any) -> None:
    chart = build_chart("line", "Monthly ARR", data)
    assert chart.points == [{"label": "Jan", "value": 1}, {"label": "Feb", "value": 2}]


def test_series_from_points_and_from_columns_agree() -> None:
    from_points = build_chart("bar", "ARR by plan", [
        {"label": "2023", "value": 1, "series": "Pro"},
        {"label": "2024", "value": 2, "series": "Pro"},
        {"label": "2023", "value": 3, "series": "Team"},
        {"label": "2024", "value": 4, "series": "Team"},
    ])
    from_columns = build_chart("bar", "ARR by plan", {
        "labels": ["2023", "2024"],
        "series": [{"name": "Pro", "values": [1, 2]}, {"name": "Team", "values": [3, 4]}],
    })
    assert from_points.points == from_columns.points
    assert from_points.spec["encoding"]["color"]["field"] == "series"
    validate_spec(from_columns.spec)


def test_categories_keep_the_order_the_model_gave() -> None:
    spec = build_chart("bar", "By month", {"labels": ["Mar", "Jan", "Feb"],
                                           "values": [1, 2, 3]}).spec
    assert spec["encoding"]["x"]["type"] == "ordinal"
    assert spec["encoding"]["x"]["sort"] is None


def test_numeric_x_on_a_line_chart_is_a_quantitative_axis() -> None:
    spec = build_chart("line", "Growth", {"x": [1, 2, 3], "y": [1, 4, 9]}).spec
    assert spec["encoding"]["x"]["type"] == "quantitative"


def test_mixed_number_and_text_labels_become_text() -> None:
    chart = build_chart("bar", "Mixed", {"labels": [2024, "Next year"], "values": [1, 2]})
    assert [p["label"] for p in chart.points] == ["2024", "Next year"]


def test_axis_titles_and_chart_data_carry_the_labels() -> None:
    chart = build_chart("line", "ARR", SAMPLE_DATA["line"], x_label="Month", y_label="USD")
    assert chart.spec["encoding"]["x"]["title"] == "Month"
    assert chart.spec["encoding"]["y"]["title"] == "USD"
    assert chart.chart_data() == {"points": chart.points, "xLabel": "Month", "yLabel": "USD"}


def test_whitespace_in_titles_collapses_to_one_line() -> None:
    assert build_chart("bar", "  ARR\n by\tquarter ", SAMPLE_DATA["bar"]).title == "ARR by quarter"


# --- caps and bad values -------------------------------------------------------------------


def test_the_point_cap_is_inclusive() -> None:
    values = list(range(MAX_POINTS))
    assert len(build_chart("line", "Many", {"x": values, "y": values}).points) == MAX_POINTS
    with pytest.raises(ChartInputError, match=f"limit is {MAX_POINTS}"):
        build_chart("line", "Too many", {"x": [*values, 1], "y": [*values, 1]})


def test_too_many_series_is_rejected() -> None:
    points = [{"label": "a", "value": 1, "series": f"s{i}"} for i in range(MAX_SERIES + 1)]
    with pytest.raises(ChartInputError, match=f"limit is {MAX_SERIES}"):
        build_chart("bar", "Series", points)
    build_chart("bar", "Series", points[:MAX_SERIES])


@pytest.mark.parametrize(
    ("title", "message"),
    [("x" * 201, "limit is 200"), ("   ", "must not be empty"), (42, "must be a string"),
     ("bell\x07", "control characters")],
)
def test_bad_titles_are_rejected(title: Any, message: str) -> None:
    with pytest.raises(ChartInputError, match=message):
        build_chart("bar", title, SAMPLE_DATA["bar"])


def test_a_title_of_exactly_the_limit_is_accepted() -> None:
    assert len(build_chart("bar", "t" * 200, SAMPLE_DATA["bar"]).title) == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [(math.nan, "finite"), (math.inf, "finite"), (-math.inf, "finite"), (10**400, "finite"),
     (True, "must be a number"), ("12.5", "without quotes"), (None, "needs a 'value'"),
     ([1], "must be a number"), ({"v": 1}, "must be a number")],
)
def test_values_must_be_finite_numbers(value: Any, message: str) -> None:
    with pytest.raises(ChartInputError, match=message):
        build_chart("bar", "Bad", [{"label": "a", "value": value}])


def test_long_labels_are_rejected() -> None:
    with pytest.raises(ChartInputError, match=r"data\[0\].label is 101 characters"):
        build_chart("bar", "Long", [{"label": "l" * 101, "value": 1}])
    with pytest.raises(ChartInputError, match="xLabel"):
        build_chart("bar", "Long", SAMPLE_DATA["bar"], x_label="l" * 101)


@pytest.mark.parametrize(
    ("chart_type", "data", "message"),
    [
        ("bar", [], "no points"),
        ("bar", "1,2,3", "data must be"),
        ("bar", {"rows": [1, 2]}, "data must be"),
        ("bar", [3, 4], r"data\[0\] must be an object"),
        ("bar", [{"value": 1}], "needs a 'label'"),
        ("bar", [{"label": {"x": 1}, "value": 1}], "text or a number"),
        ("line", {"labels": ["a", "b"], "values": [1]}, "pair up"),
        ("line", {"x": "abc", "y": [1]}, "x must be a list"),
        ("line", {"labels": ["a"], "series": []}, "non-empty list"),
        ("line", {"labels": ["a"], "series": [{"values": [1]}]}, r"series\[0\] must be"),
        ("bar", [{"label": "a", "value": 1, "series": "s"}, {"label": "b", "value": 2}],
         "every point names its series"),
        ("pie", [{"label": "a", "value": -1}], "negative"),
        ("pie", [{"label": "a", "value": 0}], "above zero"),
        ("pie", [{"label": "a", "value": 1, "series": "s"}], "one series"),
        ("scatter", {"x": ["a", "b"], "y": [1, 2]}, "numeric x"),
        ("donut", [{"label": "a", "value": 1}], "type must be one of"),
    ],
)
def test_unusable_data_is_rejected_with_a_clear_message(
    chart_type: str, data: Any, message: str
) -> None:
    with pytest.raises(ChartInputError, match=message):
        build_chart(chart_type, "Chart", data)


def test_sources_are_capped_and_checked() -> None:
    assert clean_sources(["contracts_v", " renewal history "]) == ["contracts_v",
                                                                   "renewal history"]
    with pytest.raises(ChartInputError, match="limit is 20"):
        clean_sources([f"s{i}" for i in range(21)])
    with pytest.raises(ChartInputError, match="URL"):
        clean_sources(["https://evil.example/"])


async def test_bad_input_reaches_the_model_as_an_actionable_tool_error() -> None:
    registry = ToolRegistry()
    registry.register(TOOL)
    context = ToolContext(tenant_id=uuid.uuid4(), user_id=None)
    unknown_type = await registry.execute(
        "create_chart", {"type": "donut", "title": "x", "data": []}, context)
    bad_value = await registry.execute(
        "create_chart", {"type": "bar", "title": "ARR", "data": [{"label": "a", "value": "n/a"}]},
        context)
    assert not unknown_type.success and "type" in (unknown_type.error or "")
    assert not bad_value.success
    assert "data[0].value must be a number" in (bad_value.error or "")


# --- untrusted text stays text; nothing is fetched --------------------------------------------


@pytest.mark.parametrize("chart_type", CHART_TYPES)
def test_markup_in_titles_and_labels_cannot_become_svg_elements(chart_type: str) -> None:
    data = SAMPLE_DATA[chart_type]
    if chart_type in ("bar", "pie"):
        data = [{"label": f"{INJECTION}{i}", "value": i + 1} for i in range(2)]
    chart = build_chart(chart_type, INJECTION, data, x_label=INJECTION, y_label='" onload="x()')
    rendered = render_chart_sync(chart.spec)
    elements = _svg_elements(rendered.svg)
    tags = {_local(e.tag) for e in elements}
    attributes = {_local(a).lower() for e in elements for a in e.attrib}
    assert "script" not in tags
    assert not any(a.startswith("on") for a in attributes)
    texts = ["".join(e.itertext()) for e in elements if _local(e.tag) == "text"]
    assert INJECTION in texts, "the title is drawn as literal text"


def test_rendered_png_is_a_png_at_chat_scale() -> None:
    rendered = render_chart_sync(build_chart("bar", "ARR", SAMPLE_DATA["bar"]).spec)
    assert rendered.png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(rendered.png[16:20], "big")
    assert width > 560, "rendered above CSS size, so it stays sharp on dense screens"


@pytest.mark.parametrize(
    "label",
    ["http://127.0.0.1:9/x.csv", "HTTPS://evil.example", "//evil.example/a.png",
     "data:image/svg+xml;base64,PHN2Zz4=", "javascript:alert(1)", "file:///etc/passwd",
     "  ftp://host/file"],
)
def test_url_like_labels_and_titles_are_rejected(label: str) -> None:
    with pytest.raises(ChartInputError, match="URL"):
        build_chart("bar", "Links", [{"label": label, "value": 1}])
    with pytest.raises(ChartInputError, match="URL"):
        build_chart("bar", label, SAMPLE_DATA["bar"])
    with pytest.raises(ChartInputError, match="URL"):
        build_chart("bar", "Links", [{"label": "a", "value": 1, "series": label}])


@pytest.mark.parametrize("label", ["Q1: 2024", "Data: renewals", "JavaScript: adoption",
                                   "acme.example", "50% / 50%"])
def test_ordinary_labels_that_contain_colons_or_dots_are_accepted(label: str) -> None:
    assert build_chart("bar", label, [{"label": label, "value": 1}]).points[0]["label"] == label


@pytest.mark.parametrize(
    "spec",
    [
        {"data": {"url": "http://127.0.0.1:9/data.csv"}, "mark": "bar"},
        {"data": {"values": []}, "mark": {"type": "image"}, "encoding": {"url": {"value": "x"}}},
        {"data": {"values": []}, "mark": "bar", "encoding": {"href": {"field": "label"}}},
        {"data": {"values": [{"label": "data:text/html,<script>"}]}, "mark": "bar"},
    ],
)
def test_specs_that_load_or_link_anything_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ChartInputError):
        assert_no_external_references(spec)


def test_the_renderer_itself_refuses_to_fetch_a_url() -> None:
    # Even a spec that slipped past every check cannot make vl-convert fetch anything.
    spec = {"data": {"url": "http://127.0.0.1:9/data.csv"}, "mark": "bar",
            "encoding": {"x": {"field": "a", "type": "nominal"}}}
    with pytest.raises(RenderError, match="not allowed"):
        render_chart_sync(spec)


@pytest.mark.parametrize(
    "svg",
    [
        '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:x="http://www.w3.org/1999/xlink">'
        '<a x:href="https://evil.example"><text>x</text></a></svg>',
        '<svg xmlns="http://www.w3.org/2000/svg"><rect fill="url(https://evil/x)"/></svg>',
        '<!DOCTYPE svg [<!ENTITY e "x">]><svg xmlns="http://www.w3.org/2000/svg">&e;</svg>',
        "<svg",
    ],
    ids=["script", "onload", "link", "external-paint", "dtd", "malformed"],
)
def test_inert_svg_check_refuses_active_content(svg: str) -> None:
    with pytest.raises(RenderError):
        ensure_inert_svg(svg)


def test_inert_svg_check_accepts_real_renderings() -> None:
    rendered = render_chart_sync(build_chart("line", "ARR", SAMPLE_DATA["line"]).spec)
    ensure_inert_svg(rendered.svg)
