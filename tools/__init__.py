"""LLM-callable tools: each module defines `TOOL` (schema + executor); `register_all` adds them."""

from __future__ import annotations

import importlib
import importlib.util

from tools.base import ToolRegistry

TOOL_MODULES = ("tools.rag_search", "tools.database_query", "tools.create_chart")


def register_all(registry: ToolRegistry) -> None:
    """Register every tool module's `TOOL`."""
    for name in TOOL_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        registry.register(importlib.import_module(name).TOOL)
