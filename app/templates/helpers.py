"""The nine template helpers (eq, gte, lte, gt, lt, and, or, not, abs) in pybars' convention."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

_NUMERIC_TEXT = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")
# Long digit strings are not amounts; int() also refuses more than 4300 digits.
_MAX_NUMERIC_TEXT = 40

Number = int | float


def to_number(value: Any) -> Number | None:
    """Returns value as a number if it is one or a numeric string; None otherwise (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if (
        isinstance(value, str)
        and len(value) <= _MAX_NUMERIC_TEXT
        and _NUMERIC_TEXT.fullmatch(value)
    ):
        text = value.strip()
        return float(text) if "." in text else int(text)
    return None


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any, Any], bool]:
    """Builds an ordering helper: numbers (or numeric strings) numerically, two texts as text."""

    def helper(this: Any, left: Any, right: Any) -> bool:
        left_number, right_number = to_number(left), to_number(right)
        if left_number is not None and right_number is not None:
            return bool(compare(left_number, right_number))
        if isinstance(left, str) and isinstance(right, str):
            # ISO dates and similar keys order correctly as text.
            return bool(compare(left, right))
        return False

    return helper


gte = _ordered(operator.ge)
lte = _ordered(operator.le)
gt = _ordered(operator.gt)
lt = _ordered(operator.lt)


def eq(this: Any, left: Any, right: Any) -> bool:
    """True when both values are equal; numbers and numeric strings compare by value."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) or isinstance(right, bool):
        # Python would say True == 1; templates mean booleans only equal booleans.
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    left_number, right_number = to_number(left), to_number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number
    return bool(left == right)


def all_of(this: Any, *values: Any) -> bool:
    """Handlebars `and`: true when every value is truthy."""
    return all(bool(value) for value in values)


def any_of(this: Any, *values: Any) -> bool:
    """Handlebars `or`: true when any value is truthy."""
    return any(bool(value) for value in values)


def negate(this: Any, value: Any) -> bool:
    """Handlebars `not`."""
    return not value


def absolute(this: Any, value: Any) -> Number | str:
    """Absolute value of a number or numeric string; "" for anything else."""
    number = to_number(value)
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        return ""
    result = abs(number)
    # Print 3 rather than 3.0, as Handlebars (JavaScript numbers) would.
    if isinstance(result, float) and result.is_integer():
        return int(result)
    return result


HELPERS: dict[str, Callable[..., Any]] = {
    "eq": eq,
    "gte": gte,
    "lte": lte,
    "gt": gt,
    "lt": lt,
    "and": all_of,
    "or": any_of,
    "not": negate,
    "abs": absolute,
}
