"""Statements written with `:name` parameters, run on the driver (asyncpg numbers them: $1, $2).

Search builds its SQL from parts (scope, model filter, legs) that each name their parameters;
numbering them by hand would tie every part to the others' positions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from app.db.driver import Db, Row

# Left as they are: string literals (E'' ones with backslash escapes too), quoted identifiers,
# comments and dollar-quoted strings. Numbered: `:name`, but not the second half of a `::type`
# cast, a colon inside a word, nor the colon of an array slice (`a[:n]`, which a parameter there
# would silently turn into a subscript).
_TOKEN = re.compile(
    r"[Ee]'(?:[^'\\]|\\.|'')*'"
    r"|'(?:[^']|'')*'"
    r'|"(?:[^"]|"")*"'
    r"|--[^\n]*"
    r"|/\*.*?\*/"
    r"|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$"
    r"|(?<![:\w\[]):(?P<name>[A-Za-z_]\w*)",
    re.DOTALL,
)


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with each distinct `:name` replaced by `$n`, and the names in their order."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:  # quoted or commented
            return match.group(0)
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    return _TOKEN.sub(number, sql), tuple(numbers)


async def named_rows(db: Db, sql: str, params: dict[str, Any]) -> list[Row]:
    """Every row of `sql`, its `:name` parameters taken from `params` (a missing one raises)."""
    statement, names = numbered(sql)
    return await db.fetch(statement, *(params[name] for name in names), record_class=Row)
