"""The database_query validator: attacks are refused, ordinary analyst SQL is accepted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tools.database_query import describe_tool
from tools.sql_guard import (
    ALLOWED_FUNCTIONS,
    MAX_SQL_CHARS,
    VIEW_CATALOGUE,
    UnsafeQuery,
    check_sql,
    ensure_safe_sql,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATTACKS = json.loads((FIXTURES / "sql_attacks.json").read_text())
ORDINARY = json.loads((FIXTURES / "sql_ordinary.json").read_text())


def attack_sql(entry: dict[str, str]) -> str:
    return entry["sql"].replace("{other_tenant_id}", str(uuid.uuid4()))


def test_corpora_are_large_enough_and_uniquely_named():
    assert len(ATTACKS) >= 45
    assert len(ORDINARY) >= 55
    assert len({a["name"] for a in ATTACKS}) == len(ATTACKS)
    assert len({q["name"] for q in ORDINARY}) == len(ORDINARY)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a["name"] for a in ATTACKS])
def test_attack_is_rejected(attack):
    problems = check_sql(attack_sql(attack))

    assert problems, f"accepted: {attack['sql']}"
    with pytest.raises(UnsafeQuery):
        ensure_safe_sql(attack_sql(attack))


@pytest.mark.parametrize("question", ORDINARY, ids=[q["name"] for q in ORDINARY])
def test_ordinary_analyst_query_is_accepted(question):
    assert check_sql(question["sql"]) == []


def test_data_modifying_cte_is_rejected_as_such():
    problems = check_sql("WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d")

    assert "a WITH query must be a SELECT, not DELETE" in problems


def test_cte_cannot_read_the_base_table_it_is_named_after():
    problems = check_sql("WITH users AS (SELECT * FROM users) SELECT * FROM users")

    assert any("relation users is not allowed" in p for p in problems)


def test_cte_name_means_nothing_outside_its_scope():
    inner_only = "SELECT * FROM (WITH users AS (SELECT 1) SELECT * FROM users) x, users"
    in_scope = "WITH users AS (SELECT name FROM customers_v) SELECT * FROM users"

    assert check_sql(in_scope) == []
    assert any("relation users" in p for p in check_sql(inner_only))


def test_later_cte_may_read_an_earlier_one_but_not_the_reverse():
    forward = "WITH a AS (SELECT name FROM customers_v), b AS (SELECT * FROM a) SELECT * FROM b"
    backward = "WITH a AS (SELECT * FROM b), b AS (SELECT name FROM customers_v) SELECT * FROM a"

    assert check_sql(forward) == []
    assert any("relation b" in p for p in check_sql(backward))


def test_schema_qualified_view_must_be_in_public():
    assert check_sql("SELECT * FROM public.customers_v") == []
    assert check_sql("SELECT * FROM other.customers_v")
    assert check_sql("SELECT * FROM public.customers")


def test_parser_written_pg_catalog_calls_pass_but_written_ones_do_not():
    assert check_sql("SELECT extract(year FROM renewal_date), trim(name) FROM customers_v") == []
    assert check_sql("SELECT pg_catalog.lower(name) FROM customers_v")


def test_casts_are_limited_to_plain_types():
    assert check_sql("SELECT arr::int, renewal_date::text FROM customers_v") == []
    for target in ("regclass", "regproc", "oid", "xml", "int[]", "jsonb"):
        assert check_sql(f"SELECT name::{target} FROM customers_v"), target


def test_every_problem_is_reported_at_once():
    with pytest.raises(UnsafeQuery) as refused:
        ensure_safe_sql("SELECT pg_sleep(1), ctid FROM customers, pg_class FOR UPDATE")

    reasons = " | ".join(refused.value.problems)
    for expected in ("pg_sleep", "ctid", "relation customers", "relation pg_class", "FOR UPDATE"):
        assert expected in reasons
    assert str(refused.value).startswith("query refused: ")


def test_oversized_sql_is_rejected_before_parsing():
    huge = "SELECT name FROM customers_v WHERE name = '" + "x" * MAX_SQL_CHARS + "'"

    assert check_sql(huge) == [f"the query is longer than {MAX_SQL_CHARS} characters"]


def test_deeply_nested_expression_is_rejected_not_crashing():
    deep = "SELECT " + " + ".join(["1"] * 1500) + " FROM customers_v"

    assert check_sql(deep) == ["the query is too large or nested too deeply"]


def test_safe_sql_is_the_single_statement_without_trailing_semicolons():
    sql = "  -- weekly check\n  SELECT name, 'é;' AS mark FROM customers_v WHERE name <> 'Zé' ;  "

    assert ensure_safe_sql(sql) == "SELECT name, 'é;' AS mark FROM customers_v WHERE name <> 'Zé'"


def test_blank_input_is_rejected():
    assert check_sql("") == ["the query is empty"]
    assert check_sql("   \n ") == ["the query is empty"]


def test_tool_description_documents_every_view_column_and_function():
    description = describe_tool()

    for view in VIEW_CATALOGUE:
        assert view.name in description
        for column in view.columns:
            assert f"{column.name} {column.type}" in description
    for function in ALLOWED_FUNCTIONS:
        assert function in description


OFFLINE_QUESTIONS = [
    "List the contracts", "How many seats do they have?", "How many customers do we have?",
    "Which customers renew next?", "Who is on the account team?", "List overdue renewals",
    "Which workflow window is each customer in?", "What is the ARR trend?",
]


@pytest.mark.parametrize("question", OFFLINE_QUESTIONS)
@pytest.mark.parametrize("customer_id", [str(uuid.uuid4()), "x'; DELETE FROM customers; --", None])
def test_offline_model_sql_always_passes_the_validator(question, customer_id):
    from app.llm.local_provider import _sql_for

    sql = _sql_for(question, {"customer": {"id": customer_id}})

    assert check_sql(sql) == []
    assert "DELETE" not in sql
