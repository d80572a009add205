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
    "SELECT a[:n], a[1:n] FROM t",                  # slices stay slices (a server error if meant)
    "SELECT 1 -- :x in a comment\n",                # comments
    "SELECT /* it's :x */ 1",                      # a block comment, with an apostrophe
    "SELECT $$ :x $$, $fn$ ':y' $fn$",              # dollar quotes
    "SELECT E'it\\'s :x', E'a\\\\'",                # E'' strings with backslash escapes
])
def test_nothing_but_a_parameter_is_touched(sql):
    assert numbered(sql) == (sql, ())


def test_parameters_after_comments_and_quotes_are_still_found():
    sql, names = numbered("SELECT /* ' */ :a, $$x$$, E'\\'' || :b -- :c\n, :c")
    assert sql == "SELECT /* ' */ $1, $$x$$, E'\\'' || $2 -- :c\n, $3"
    assert names == ("a", "b", "c")


def test_a_parameter_after_a_literal_and_a_cast_is_still_found():
    sql, names = numbered("SELECT ':x', CAST(:q AS text)::vector, \"c\" = :q")
    assert sql == "SELECT ':x', CAST($1 AS text)::vector, \"c\" = $1"
    assert names == ("q",)
