"""`:name` parameters numbered for the driver: casts, quotes and repeats left as they mean."""

from __future__ import annotations

import pytest

from app.db.named import numbered


def test_names_are_numbered_in_order_of_first_use_and_repeats_share_a_number():
    sql, names = numbered("SELECT :b, :a, :b WHERE x = :a_long")
    assert sql == "SELECT $1, $2, $1 WHERE x = $3"
    assert names == ("b", "a", "a_long")


@pytest.mark.parametrize("sql", [
    "SELECT x::uuid, CAST(y AS text)::int",        # casts
    "SELECT '12:30'::time, 'a :name in text'",     # string literals, time literals
    "SELECT 'it''s :not' AS \"odd :column\"",       # escaped quotes, quoted identifiers
    "SELECT a:b FROM t",                            # a colon inside a word (array slice)
])
def test_nothing_but_a_parameter_is_touched(sql):
    assert numbered(sql) == (sql, ())


def test_a_parameter_after_a_literal_and_a_cast_is_still_found():
    sql, names = numbered("SELECT ':x', CAST(:q AS text)::vector, \"c\" = :q")
    assert sql == "SELECT ':x', CAST($1 AS text)::vector, \"c\" = $1"
    assert names == ("q",)
