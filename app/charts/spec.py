"""Chart input → Vega-Lite v5 spec: normalise the model's data, enforce caps, compile to check.

The model's input is untrusted. The spec is assembled here from fixed field names and plain data
values only, so nothing the model sends can choose a mark, a transform, an expression or a URL.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import vl_convert

ChartType = Literal["bar", "line", "area", "pie", "scatter"]
CHART_TYPES: tuple[str, ...] = get_args(ChartType)

VEGA_LITE_VERSION = "5.21"
SCHEMA_URL = "https://vega.github.io/schema/vega-lite/v5.json"
MAX_POINTS = 500
MAX_SERIES = 20
MAX_TITLE_CHARS = 200
MAX_LABEL_CHARS = 100
MAX_SOURCES = 20
DATA_SHAPES = (
    "a list of {label, value, series?} objects, {labels: [...], values: [...]}, "
    "{labels: [...], series: [{name, values: [...]}]} or {x: [...], y: [...]}"
)

# Strings that a renderer or a browser could treat as a link or a resource to load.
_URL_LIKE = re.compile(
    r"^\s*(?://|[a-z][a-z0-9+.\-]*:\s*//|(?:data|javascript|vbscript|blob|file):(?!\s))",
    re.IGNORECASE,
)
# Spec keys through which Vega-Lite loads or links to something outside the spec.
_LINKING_KEYS = frozenset({"url", "href", "image", "src", "loader", "baseURL"})
_WHITESPACE = re.compile(r"\s+")


class ChartInputError(ValueError):
    """The chart input cannot become a chart; the message says what to change."""


@dataclass(frozen=True)
class BuiltChart:
    """A validated chart: its type and title, the normalised points and the Vega-Lite spec."""

    chart_type: str
    title: str
    points: list[dict[str, Any]]
    x_label: str | None
    y_label: str | None
    spec: dict[str, Any]

    def chart_data(self) -> dict[str, Any]:
        """The data as stored and put in the chart message's `chartData`."""
        data: dict[str, Any] = {"points": self.points}
        if self.x_label:
            data["xLabel"] = self.x_label
        if self.y_label:
            data["yLabel"] = self.y_label
        return data


def build_chart(
    chart_type: str,
    title: str,
    data: Any,
    *,
    x_label: str | None = None,
    y_label: str | None = None,
) -> BuiltChart:
    """Validate the input and assemble its Vega-Lite spec (compiled later by `validate_spec`)."""
    if chart_type not in CHART_TYPES:
        raise ChartInputError(f"type must be one of {', '.join(CHART_TYPES)}; got {chart_type!r}")
    clean_title = clean_text(title, "title", MAX_TITLE_CHARS)
    clean_x = clean_text(x_label, "xLabel", MAX_LABEL_CHARS) if x_label else None
    clean_y = clean_text(y_label, "yLabel", MAX_LABEL_CHARS) if y_label else None
    points = normalise_points(data)
    if chart_type == "pie":
        _check_pie(points)
    if chart_type == "scatter" and not _all_numeric(points):
        raise ChartInputError("a scatter chart needs numeric x values (label); use a bar or "
                              "line chart for named categories")
    spec = _spec(cast(ChartType, chart_type), clean_title, points, clean_x, clean_y)
    assert_no_external_references(spec)
    return BuiltChart(chart_type, clean_title, points, clean_x, clean_y, spec)


def clean_text(value: Any, name: str, max_chars: int) -> str:
    """A single-line, non-empty, control-free string of at most `max_chars` characters."""
    if not isinstance(value, str):
        raise ChartInputError(f"{name} must be a string; got {_kind(value)}")
    text = _WHITESPACE.sub(" ", value).strip()
    if not text:
        raise ChartInputError(f"{name} must not be empty")
    if len(text) > max_chars:
        raise ChartInputError(f"{name} is {len(text)} characters; the limit is {max_chars}")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise ChartInputError(f"{name} contains control characters; send plain text")
    if _URL_LIKE.match(text):
        raise ChartInputError(f"{name} looks like a URL ({text[:40]!r}); charts take plain "
                              "text labels, not links")
    return text


def clean_sources(sources: Sequence[Any] | None) -> list[str]:
    """The sources a chart cites (names of tables, documents...), checked like labels."""
    if not sources:
        return []
    if len(sources) > MAX_SOURCES:
        raise ChartInputError(f"sources has {len(sources)} entries; the limit is {MAX_SOURCES}")
    return [clean_text(s, f"sources[{i}]", MAX_LABEL_CHARS) for i, s in enumerate(sources)]


def normalise_points(data: Any) -> list[dict[str, Any]]:
    """Any accepted data shape → [{label, value, series?}], capped and checked."""
    if isinstance(data, Mapping):
        rows = _rows_from_columns(data)
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        rows = [_row_from_item(i, item) for i, item in enumerate(data)]
    else:
        raise ChartInputError(f"data must be {DATA_SHAPES}; got {_kind(data)}")
    if not rows:
        raise ChartInputError("data has no points; send at least one")
    if len(rows) > MAX_POINTS:
        raise ChartInputError(f"data has {len(rows)} points; the limit is {MAX_POINTS} "
                              "(aggregate or sample first)")
    series = {row["series"] for row in rows if "series" in row}
    if len(series) > MAX_SERIES:
        raise ChartInputError(f"data has {len(series)} series; the limit is {MAX_SERIES}")
    named = sum("series" in row for row in rows)
    if 0 < named < len(rows):
        raise ChartInputError("either every point names its series or none does")
    if not _all_numeric(rows):
        # One axis holds one kind of value: mixed numbers and names become names.
        for row in rows:
            row["label"] = _label_text(row["label"])
    return rows


def assert_no_external_references(spec: Any, path: str = "spec") -> None:
    """Refuse any spec part that could make a renderer fetch or link to something."""
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key in _LINKING_KEYS:
                raise ChartInputError(f"{path}.{key}: charts never load or link to resources")
            if key != "$schema":
                assert_no_external_references(value, f"{path}.{key}")
    elif isinstance(spec, list):
        for index, item in enumerate(spec):
            assert_no_external_references(item, f"{path}[{index}]")
    elif isinstance(spec, str) and _URL_LIKE.match(spec):
        raise ChartInputError(f"{path}: {spec[:40]!r} looks like a URL; charts take plain text")


def validate_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Compile the spec with Vega-Lite (blocking, a few ms once warm); returns the Vega spec."""
    try:
        return cast(dict[str, Any], vl_convert.vegalite_to_vega(spec, vl_version=VEGA_LITE_VERSION))
    except ValueError as exc:
        raise ChartInputError(f"the chart does not compile: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """The message of a vl-convert error without its JavaScript stack trace."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    meaningful = [ln for ln in lines if not ln.startswith("at ") and "conversion failed" not in ln]
    return (meaningful or lines or ["unknown error"])[0][:300]


# --- data shapes ------------------------------------------------------------------------------


def _row_from_item(index: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise ChartInputError(f"data[{index}] must be an object like "
                              f"{{\"label\": \"Q1\", \"value\": 10}}; got {_kind(item)}")
    label = item.get("label", item.get("x"))
    value = item.get("value", item.get("y"))
    if label is None:
        raise ChartInputError(f"data[{index}] needs a 'label' (or 'x')")
    if value is None:
        raise ChartInputError(f"data[{index}] needs a 'value' (or 'y')")
    row = {"label": _label(label, f"data[{index}].label"),
           "value": _number(value, f"data[{index}].value")}
    if item.get("series") is not None:
        row["series"] = _series_name(item["series"], f"data[{index}].series")
    return row


def _rows_from_columns(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "labels" in data and "series" in data:
        labels = _column(data, "labels")
        groups = data["series"]
        if not isinstance(groups, list) or not groups:
            raise ChartInputError("series must be a non-empty list of {name, values: [...]}")
        if len(groups) > MAX_SERIES:
            raise ChartInputError(f"data has {len(groups)} series; the limit is {MAX_SERIES}")
        rows = []
        for g, group in enumerate(groups):
            if not isinstance(group, Mapping) or "values" not in group or "name" not in group:
                raise ChartInputError(f"series[{g}] must be an object {{name, values: [...]}}")
            name = _series_name(group["name"], f"series[{g}].name")
            values = _column(group, "values", f"series[{g}].values")
            _same_length(labels, values, "labels", f"series[{g}].values")
            rows += [_pair(labels, values, i, "labels", f"series[{g}].values") | {"series": name}
                     for i in range(len(labels))]
        return rows
    for label_key, value_key in (("labels", "values"), ("x", "y")):
        if label_key in data and value_key in data:
            labels = _column(data, label_key)
            values = _column(data, value_key)
            _same_length(labels, values, label_key, value_key)
            return [_pair(labels, values, i, label_key, value_key) for i in range(len(labels))]
    raise ChartInputError(f"data must be {DATA_SHAPES}; got an object with keys "
                          f"{sorted(map(str, data))[:8]}")


def _column(data: Mapping[str, Any], key: str, name: str | None = None) -> list[Any]:
    column = data[key]
    if not isinstance(column, list):
        raise ChartInputError(f"{name or key} must be a list; got {_kind(column)}")
    if len(column) > MAX_POINTS:
        raise ChartInputError(f"{name or key} has {len(column)} entries; the limit is "
                              f"{MAX_POINTS} points (aggregate or sample first)")
    return column


def _same_length(labels: list[Any], values: list[Any], label_key: str, value_key: str) -> None:
    if len(labels) != len(values):
        raise ChartInputError(f"{label_key} has {len(labels)} entries but {value_key} has "
                              f"{len(values)}; they must pair up one to one")


def _pair(labels: list[Any], values: list[Any], i: int, label_key: str,
          value_key: str) -> dict[str, Any]:
    return {"label": _label(labels[i], f"{label_key}[{i}]"),
            "value": _number(values[i], f"{value_key}[{i}]")}


def _label(value: Any, name: str) -> str | int | float:
    if _is_number(value):
        return _number(value, name)
    if not isinstance(value, str):
        raise ChartInputError(f"{name} must be text or a number; got {_kind(value)}")
    return clean_text(value, name, MAX_LABEL_CHARS)


def _series_name(value: Any, name: str) -> str:
    return clean_text(_label_text(value) if _is_number(value) else value, name, MAX_LABEL_CHARS)


def _number(value: Any, name: str) -> int | float:
    if not _is_number(value):
        hint = " (send it as a number, without quotes)" if isinstance(value, str) else ""
        raise ChartInputError(f"{name} must be a number; got {_kind(value)}{hint}")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ChartInputError(f"{name} must be a finite number; got {value!r:.40}")
    if isinstance(value, int) and abs(value) <= 2**53:
        return value
    return as_float


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _all_numeric(rows: list[dict[str, Any]]) -> bool:
    return all(_is_number(row["label"]) for row in rows)


def _check_pie(rows: list[dict[str, Any]]) -> None:
    if any("series" in row for row in rows):
        raise ChartInputError("a pie chart shows one series; drop 'series' or use a bar chart")
    if any(row["value"] < 0 for row in rows):
        raise ChartInputError("a pie chart cannot show negative values; use a bar chart")
    if not any(row["value"] > 0 for row in rows):
        raise ChartInputError("a pie chart needs at least one value above zero")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string {value[:40]!r}"
    return f"a {type(value).__name__}"


# --- spec ---------------------------------------------------------------------------------------


def _spec(chart_type: ChartType, title: str, points: list[dict[str, Any]], x_label: str | None,
          y_label: str | None) -> dict[str, Any]:
    has_series = any("series" in p for p in points)
    spec: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "title": {"text": title, "anchor": "start"},
        "data": {"values": points},
        "width": 560,
        "height": 320,
    }
    tooltip = [{"field": "label", "title": x_label or "Label"},
               {"field": "value", "type": "quantitative", "title": y_label or "Value"}]
    if has_series:
        tooltip.insert(0, {"field": "series", "title": "Series"})
    if chart_type == "pie":
        spec.update(width=360, height=360)
        spec["mark"] = {"type": "arc", "tooltip": True}
        spec["encoding"] = {
            "theta": {"field": "value", "type": "quantitative", "stack": True},
            "color": {"field": "label", "type": "nominal", "sort": None,
                      "title": x_label or None},
            "order": {"field": "index", "type": "quantitative"},
            "tooltip": tooltip,
        }
        # Slices keep the order the model gave them.
        spec["transform"] = [{"window": [{"op": "row_number", "as": "index"}]}]
        return spec
    numeric_x = _all_numeric(points) and chart_type != "bar"
    x: dict[str, Any] = {"field": "label", "title": x_label or None}
    if numeric_x:
        x.update(type="quantitative", scale={"zero": False})
    else:
        short = len(points) <= 12 and all(len(str(p["label"])) <= 8 for p in points)
        x.update(type="ordinal", sort=None,
                 axis={"labelAngle": 0 if short else -40, "labelLimit": 160})
    encoding: dict[str, Any] = {
        "x": x,
        "y": {"field": "value", "type": "quantitative", "title": y_label or None},
        "tooltip": tooltip,
    }
    if has_series:
        encoding["color"] = {"field": "series", "type": "nominal", "sort": None, "title": None}
    marks: dict[str, dict[str, Any]] = {
        "bar": {"type": "bar"},
        "line": {"type": "line", "point": True},
        "area": {"type": "area", "line": True, "opacity": 0.7},
        "scatter": {"type": "point", "filled": True, "size": 60},
    }
    if chart_type == "bar" and has_series:
        # Side-by-side bars compare series at each label; stacked bars would hide that.
        encoding["xOffset"] = {"field": "series", "sort": None}
    spec["mark"] = marks[chart_type]
    spec["encoding"] = encoding
    return spec
