"""The strict template grammar: what it accepts, what it rejects, and that pybars never sees a reject."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pybars
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.templates import TemplateEngine, TemplateError, assert_valid_template, check_template
from app.templates.grammar import MAX_MUSTACHES, MAX_TEMPLATE_CHARS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SENTINEL = Path("/tmp/chatbranch-template-pwned")


def _malicious_entries() -> list[dict[str, Any]]:
    entries = json.loads((FIXTURES / "malicious_templates.json").read_text())
    for entry in entries:
        # "repeat" keeps the 1 MB case out of the repository as a 1 MB file.
        entry["template"] = entry["template"] * entry.get("repeat", 1)
    return entries


MALICIOUS = _malicious_entries()

VALID_TEMPLATES = [
    "",
    "Plain text with { single braces } and $100,000.",
    "{{customer.name}} renewal is {{workflow.daysUntilRenewal}} days away.",
    "{{#if (gte workflow.renewalARR 250000)}}\n  High-value renewal detected!\n{{/if}}",
    "{{#if (and customer.hasAccountPlan (gte workflow.renewalARR 100000))}}War room{{/if}}",
    "Renewal is {{abs workflow.daysOverdue}} days overdue.",
    "{{#unless customer.hasAccountPlan}}No plan{{else}}Plan{{/unless}}",
    "{{#each accountTeam.members}}{{email}}, {{else}}nobody{{/each}}",
    "{{eq customer.tier 'gold'}} {{eq customer.tier \"it's\"}} {{lt workflow.ratio -1.5}}",
    "{{or (not a) (eq b true) (lte c 0)}}",
    "{{!-- a comment --}}{{! another }}text",
    "{{ customer.name }}",
    "{{a.b.c.d.e.f}}",
    "{{#if (and (or (not a) b) c)}}x{{/if}}",
]


@pytest.mark.parametrize("template", VALID_TEMPLATES)
def test_valid_template_is_accepted(template: str) -> None:
    assert check_template(template) == []
    assert_valid_template(template)


@pytest.mark.parametrize("entry", MALICIOUS, ids=[entry["name"] for entry in MALICIOUS])
def test_malicious_template_is_rejected_by_the_grammar(entry: dict[str, Any]) -> None:
    errors = check_template(entry["template"])
    assert errors, entry["why"]
    with pytest.raises(TemplateError):
        assert_valid_template(entry["template"])


def test_malicious_fixture_has_enough_cases() -> None:
    assert len(MALICIOUS) >= 25


@pytest.fixture
def pybars_compiler_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every source handed to pybars; the real compiler still runs for valid input."""
    calls: list[str] = []
    real_compile = pybars.Compiler.compile

    def spy(self: pybars.Compiler, source: str, path: str | None = None) -> Any:
        calls.append(source)
        return real_compile(self, source, path)

    def refuse(self: pybars.Compiler, source: str) -> Any:
        calls.append(source)
        raise AssertionError("pybars code generation reached outside Compiler.compile")

    monkeypatch.setattr(pybars.Compiler, "compile", spy)
    monkeypatch.setattr(pybars.Compiler, "precompile", refuse)
    return calls


def test_engine_never_hands_a_malicious_template_to_pybars(pybars_compiler_spy: list[str]) -> None:
    if SENTINEL.exists():
        SENTINEL.unlink()
    engine = TemplateEngine()
    for entry in MALICIOUS:
        with pytest.raises(TemplateError):
            engine.compile(entry["template"])
    assert pybars_compiler_spy == []
    assert not SENTINEL.exists()


async def test_async_compile_never_hands_a_malicious_template_to_pybars(
    pybars_compiler_spy: list[str],
) -> None:
    engine = TemplateEngine()
    for entry in MALICIOUS:
        with pytest.raises(TemplateError):
            await engine.acompile(entry["template"])
    assert pybars_compiler_spy == []
    assert not await asyncio.to_thread(SENTINEL.exists)


def test_compiler_spy_sees_valid_templates(pybars_compiler_spy: list[str]) -> None:
    TemplateEngine().compile("Hello {{customer.name}}")
    assert len(pybars_compiler_spy) == 1


def test_error_names_the_line_and_column() -> None:
    errors = check_template("Hello\n  {{customer.[x]}}")
    assert len(errors) == 1
    assert "bracket" in errors[0]
    assert "line 2, column 14" in errors[0]


def test_unclosed_block_is_rejected() -> None:
    errors = check_template("{{#if customer.hasAccountPlan}}war room")
    assert any("never closed" in error for error in errors)


def test_mismatched_close_names_the_open_block() -> None:
    errors = check_template("{{#if a}}\nx{{/each}}")
    assert any("'{{/each}}' does not match '{{#if}}'" in error for error in errors)


def test_else_outside_a_block_is_rejected() -> None:
    assert check_template("a {{else}} b")


def test_second_else_in_one_block_is_rejected() -> None:
    assert check_template("{{#if a}}1{{else}}2{{else}}3{{/if}}")


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{not a b}}", "'not' takes 1 argument(s), got 2"),
        ("{{abs}}", "'abs' takes 1 argument(s), got 0"),
        ("{{eq a}}", "'eq' takes 2 argument(s), got 1"),
        ("{{gte a b c}}", "'gte' takes 2 argument(s), got 3"),
        ("{{and a}}", "'and' takes at least 2 argument(s), got 1"),
        ("{{#if (or a)}}x{{/if}}", "'or' takes at least 2 argument(s), got 1"),
        ("{{#if a b}}x{{/if}}", "'#if' takes exactly one argument, got 2"),
        ("{{#each (not a)}}x{{/each}}", "'#each' needs a path"),
        ("{{#if 'yes'}}x{{/if}}", "needs a path or a (helper ...) sub-expression"),
        ("{{customer.name extra}}", "unknown helper 'customer.name'"),
    ],
)
def test_wrong_arity_or_argument_is_named(template: str, fragment: str) -> None:
    errors = check_template(template)
    assert any(fragment in error for error in errors), errors


def test_path_depth_limit() -> None:
    assert check_template("{{a.b.c.d.e.f}}") == []
    assert check_template("{{a.b.c.d.e.f.g}}")


def test_block_nesting_limit() -> None:
    def nested(depth: int) -> str:
        return "{{#if a}}" * depth + "x" + "{{/if}}" * depth

    assert check_template(nested(8)) == []
    assert check_template(nested(9))


def test_subexpression_nesting_limit() -> None:
    def nested(depth: int) -> str:
        return "{{not " + "(not " * depth + "a" + ")" * depth + "}}"

    assert check_template(nested(4)) == []
    assert check_template(nested(5))


def test_mustache_count_limit() -> None:
    assert check_template("{{a}}" * MAX_MUSTACHES) == []
    assert check_template("{{a}}" * (MAX_MUSTACHES + 1))


def test_size_limit() -> None:
    assert check_template("x" * MAX_TEMPLATE_CHARS) == []
    assert check_template("x" * (MAX_TEMPLATE_CHARS + 1))


@pytest.mark.parametrize("value", [None, 42, b"{{a}}", ["{{a}}"]])
def test_non_string_template_is_rejected(value: Any) -> None:
    assert check_template(value) != []


def test_long_number_literal_is_rejected() -> None:
    assert check_template("{{gte a " + "9" * 5000 + "}}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_checking_arbitrary_text_never_raises(text: str) -> None:
    assert isinstance(check_template(text), list)


_FRAGMENTS = [
    "{{", "}}", "{{#if a}}", "{{/if}}", "{{else}}", "{{#each xs}}", "{{/each}}", "{{x.y}}",
    "{{gte n 1.5}}", "(", ")", "'", '"', "text ", "\n", "{", "}", "{{!c}}", "{{not (eq a 'b')}}",
    "[", "@", "~", "\\", "{{#unless a}}", "{{/unless}}",
]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_every_accepted_template_compiles_and_renders(fragments: list[str]) -> None:
    template = "".join(fragments)
    if check_template(template):
        return
    rendered = TemplateEngine().render(template, {"a": 1, "n": 2, "xs": [{"y": 1}], "x": {"y": "v"}})
    assert isinstance(rendered, str)
