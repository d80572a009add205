"""Render a Vega-Lite spec to SVG and PNG with vl-convert, off the event loop, with no network."""

from __future__ import annotations

import asyncio
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import vl_convert

from app.charts.spec import VEGA_LITE_VERSION, first_line, validate_spec

# Twice the CSS size: sharp on high-density screens, still small enough for a chat bubble.
PNG_SCALE = 2.0
# An empty allow-list: the renderer may load no data, image or font from any URL.
NO_EXTERNAL_URLS: list[str] = []
# Elements and attributes that could run script, embed a document or follow a link.
_ACTIVE_ELEMENTS = frozenset({"script", "foreignObject", "iframe", "object", "embed", "use",
                              "image", "a", "animate", "set", "handler", "listener"})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_warm_lock = threading.Lock()
_warmed = False


class RenderError(RuntimeError):
    """The renderer failed or produced something we refuse to serve."""


@dataclass(frozen=True)
class RenderedChart:
    """Both renderings of one chart."""

    svg: str
    png: bytes


async def render_chart(spec: dict[str, Any]) -> RenderedChart:
    """Validate and render a spec in a worker thread (vl-convert blocks for a few ms)."""
    return await asyncio.to_thread(render_chart_sync, spec)


def render_chart_sync(spec: dict[str, Any]) -> RenderedChart:
    """Compile (raising ChartInputError), then render and check both images (blocking)."""
    validate_spec(spec)
    try:
        svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE_VERSION,
                                         allowed_base_urls=NO_EXTERNAL_URLS)
        png = vl_convert.vegalite_to_png(spec, vl_version=VEGA_LITE_VERSION, scale=PNG_SCALE,
                                         allowed_base_urls=NO_EXTERNAL_URLS)
    except ValueError as exc:
        raise RenderError(f"rendering failed: {first_line(exc)}") from exc
    ensure_inert_svg(svg)
    if not png.startswith(PNG_MAGIC):
        raise RenderError("the renderer did not produce a PNG")
    return RenderedChart(svg=svg, png=png)


def ensure_inert_svg(svg: str) -> None:
    """Refuse an SVG that could run script, load a resource or link anywhere (defence in depth)."""
    if "<!DOCTYPE" in svg or "<!ENTITY" in svg:
        raise RenderError("the SVG carries a DTD")
    try:
        root = ET.fromstring(svg)  # noqa: S314 - no DTD (checked above), so no entity expansion
    except ET.ParseError as exc:
        raise RenderError(f"the SVG is not well-formed XML: {exc}") from exc
    for element in root.iter():
        tag = _local(element.tag)
        if tag in _ACTIVE_ELEMENTS:
            raise RenderError(f"the SVG contains a <{tag}> element")
        for attribute, value in element.attrib.items():
            name = _local(attribute).lower()
            if name.startswith("on") or name in ("href", "src"):
                raise RenderError(f"the SVG has a {name} attribute on <{tag}>")
            if "url(" in value and not value.strip().startswith("url(#"):
                raise RenderError(f"the SVG references an external resource in {name}")


def warm_up() -> None:
    """Start vl-convert's JavaScript engine now (~0.6 s) so the first chart is fast; idempotent."""
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        render_chart_sync({"data": {"values": [{"label": "a", "value": 1}]}, "mark": "bar",
                           "encoding": {"x": {"field": "label", "type": "nominal"},
                                        "y": {"field": "value", "type": "quantitative"}}})
        _warmed = True


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]
