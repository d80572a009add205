"""Helpers shared by the LLM branch handlers (private: the registry never exposes this module)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The template-context sections a model may see; anything else a caller put in stays out.
CONTEXT_SECTIONS = ("customer", "csm", "workflow", "company", "accountTeam", "analysis")


def select_sections(context_data: dict[str, Any]) -> dict[str, Any]:
    """Return a copy holding only the known context sections that are objects."""
    return {
        name: dict(context_data[name])
        for name in CONTEXT_SECTIONS
        if isinstance(context_data.get(name), dict)
    }


def offered_in_preference_order(preferred: Iterable[str], offered: Iterable[str]) -> list[str]:
    """Return the preferred tools the service offers, in the handler's order of preference."""
    offered_names = set(offered)
    return [name for name in preferred if name in offered_names]
