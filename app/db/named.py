"""Statements written with `:name` parameters, run on the driver (asyncpg numbers them: $1, $2).

Search builds its SQL from parts (scope, model filter, legs) that each name their parameters;
numbering them by hand would tie every part to the others' positions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from app.db.driver import Db, Row

# A quoted literal or identifier (left as it is), or `:name` — but not the second half of a
# `::type` cast nor a colon inside a word. Dollar-quoted strings are not recognised.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with each distinct `:name` replaced by `$n`, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # inside quotes
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _TOKEN.sub(number, sql), tuple(names)


async def named_rows(db: Db, sql: str, params: dict[str, Any]) -> list[Row]:
    """Every row of `sql`, its `:name` parameters taken from `params` (a missing one raises)."""
    statement, names = numbered(sql)
    return await db.fetch(statement, *(params[name] for name in names), record_class=Row)
