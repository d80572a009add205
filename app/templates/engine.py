"""Compiles grammar-checked templates with pybars, caches them by content hash, renders text."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pybars

from app.templates.expressions import (
    BoolLiteral,
    Expr,
    HelperCall,
    NumberLiteral,
    PathExpr,
    StringLiteral,
)
from app.templates.grammar import BlockNode, CommentNode, Node, OutputNode, TextNode, parse_template
from app.templates.helpers import HELPERS

FALSY_CONDITION_RESULTS = frozenset({"", "false", "0", "no", "none", "null"})

# pybars keeps its code builder on the Compiler class: two threads compiling at once corrupt it.
_PYBARS_COMPILE_LOCK = threading.Lock()
_PLAIN_LEAF_TYPES = (str, int, float, bool, Decimal, datetime, date, UUID)


def _resolve_data_only(context: Any, *segments: str) -> Any:
    """Replaces pybars' resolve(): follows mapping keys only, never attributes or methods."""
    value = context
    for segment in segments:
        if segment == "":
            continue
        while isinstance(value, pybars.Scope):
            value = value.context
        if isinstance(value, Mapping):
            value = value.get(segment)
        elif isinstance(value, list | tuple) and segment == "length":
            value = len(value)
        else:
            return None
    while isinstance(value, pybars.Scope):
        value = value.context
    if value is None or isinstance(value, (Mapping, list, tuple, *_PLAIN_LEAF_TYPES)):
        return value
    # Any other object (callables included) could run code when pybars touches it.
    return None


def _expression_source(expr: Expr) -> str:
    if isinstance(expr, PathExpr):
        return ".".join(expr.segments)
    if isinstance(expr, StringLiteral):
        # The grammar guarantees a string never holds both quote characters.
        quote = "'" if '"' in expr.value else '"'
        return f"{quote}{expr.value}{quote}"
    if isinstance(expr, NumberLiteral):
        if "." in expr.text:
            # pybars only parses integers; the helpers read numeric strings as numbers.
            return f'"{expr.text}"'
        return str(int(expr.text))
    if isinstance(expr, BoolLiteral):
        return "true" if expr.value else "false"
    arguments = " ".join(_expression_source(argument) for argument in expr.arguments)
    return f"({expr.name} {arguments})"


def _head_source(expr: PathExpr | HelperCall) -> str:
    if isinstance(expr, HelperCall):
        return _expression_source(expr)[1:-1]
    return _expression_source(expr)


def to_pybars_source(nodes: tuple[Node, ...]) -> str:
    """Writes a checked node tree back as canonical Handlebars; pybars only ever compiles this."""
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, TextNode):
            parts.append(node.text)
        elif isinstance(node, CommentNode):
            # Kept as an empty comment so a comment alone on a line still vanishes with its line.
            parts.append("{{! }}")
        elif isinstance(node, OutputNode):
            # Triple-stash: output is plain text for prompts and notifications, never HTML.
            parts.append("{{{" + _head_source(node.expr) + "}}}")
        elif isinstance(node, BlockNode):
            name, body, inverse = node.name, node.body, node.inverse
            if name == "unless" and inverse is not None:
                # pybars' unless helper drops its {{else}} part; an if with swapped parts does not.
                name, body, inverse = "if", inverse, body
            parts.append("{{#" + name + " " + _expression_source(node.argument) + "}}")
            parts.append(to_pybars_source(body))
            if inverse is not None:
                parts.append("{{else}}")
                parts.append(to_pybars_source(inverse))
            parts.append("{{/" + name + "}}")
    return "".join(parts)


def _compile_with_pybars(compiler: pybars.Compiler, pybars_source: str) -> Callable[..., str]:
    with _PYBARS_COMPILE_LOCK:
        render = compiler.compile(pybars_source)
        # pybars registers one module per template in sys.modules; dropping it lets the LRU cache
        # bound memory.
        sys.modules.pop(render.__module__, None)
    # Every path lookup in the generated code goes through this global: data keys only, no getattr.
    render.__globals__["resolve"] = _resolve_data_only
    return render


class CompiledTemplate:
    """A compiled template: call it with a context dict to get text."""

    def __init__(self, digest: str, render: Callable[..., str]) -> None:
        self.digest = digest
        self._render = render

    def __call__(self, context: Mapping[str, Any]) -> str:
        """Renders the template; missing values print as ""."""
        return str(self._render(dict(context or {}), helpers=HELPERS))


class TemplateEngine:
    """Grammar check, then pybars compile (cached by sha256, LRU), then render."""

    def __init__(self, max_cache: int = 2048) -> None:
        self._max_cache = max(1, max_cache)
        self._cache: OrderedDict[str, CompiledTemplate] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._compiler = pybars.Compiler()

    @staticmethod
    def _digest(source: str) -> str:
        return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()

    def _cached(self, digest: str) -> CompiledTemplate | None:
        with self._cache_lock:
            template = self._cache.get(digest)
            if template is not None:
                self._cache.move_to_end(digest)
            return template

    def is_cached(self, source: str) -> bool:
        """True when the template is already compiled."""
        return isinstance(source, str) and self._cached(self._digest(source)) is not None

    def compile(self, source: str) -> CompiledTemplate:
        """Checks the grammar (TemplateError if broken), then compiles once per distinct source."""
        if isinstance(source, str):
            cached = self._cached(self._digest(source))
            if cached is not None:
                return cached
        nodes = parse_template(source)
        digest = self._digest(source)
        template = CompiledTemplate(
            digest, _compile_with_pybars(self._compiler, to_pybars_source(nodes))
        )
        with self._cache_lock:
            self._cache[digest] = template
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max_cache:
                self._cache.popitem(last=False)
        return template

    async def acompile(self, source: str) -> CompiledTemplate:
        """Like compile, but an uncached template is checked and compiled in a worker thread."""
        if isinstance(source, str):
            cached = self._cached(self._digest(source))
            if cached is not None:
                return cached
        return await asyncio.to_thread(self.compile, source)

    def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Renders a template with the context."""
        return self.compile(source)(context)

    async def arender(self, source: str, context: Mapping[str, Any]) -> str:
        """Renders without blocking the event loop on a first-time compile."""
        template = await self.acompile(source)
        return template(context)

    def evaluate_condition(self, source: str, context: Mapping[str, Any]) -> bool:
        """Renders a condition; "", "false", "0", "no", "none" and "null" count as false."""
        return _condition_holds(self.render(source, context))

    async def aevaluate_condition(self, source: str, context: Mapping[str, Any]) -> bool:
        """Async evaluate_condition."""
        return _condition_holds(await self.arender(source, context))


def _condition_holds(rendered: str) -> bool:
    return rendered.strip().lower() not in FALSY_CONDITION_RESULTS


def _needs_rendering(text: str) -> bool:
    return "{{" in text or "}}" in text


def render_deep(engine: TemplateEngine, value: Any, context: Mapping[str, Any]) -> Any:
    """Renders every string inside nested dicts and lists; keys and other values are kept."""
    if isinstance(value, str):
        return engine.render(value, context) if _needs_rendering(value) else value
    if isinstance(value, Mapping):
        return {key: render_deep(engine, item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_deep(engine, item, context) for item in value]
    return value


async def arender_deep(engine: TemplateEngine, value: Any, context: Mapping[str, Any]) -> Any:
    """render_deep that compiles uncached templates off the event loop."""
    if isinstance(value, str):
        return await engine.arender(value, context) if _needs_rendering(value) else value
    if isinstance(value, Mapping):
        return {key: await arender_deep(engine, item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [await arender_deep(engine, item, context) for item in value]
    return value
