"""Rendering checked templates: helpers, plain-text output, data-only lookups, caching, threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pybars
import pytest

from app.templates import TemplateEngine, TemplateError, render_deep
from app.templates import engine as engine_module
from app.templates.engine import arender_deep

STRATEGIC = (
    "{{#if (and customer.hasAccountPlan (gte workflow.renewalARR 100000))}}"
    "Strategic account war room required.{{else}}Standard follow-up.{{/if}}"
)


def context(**overrides: Any) -> dict[str, Any]:
    """A context shaped like the Context API's."""
    base: dict[str, Any] = {
        "customer": {"name": "Acme & Sons <EU>", "arr": 100000, "hasAccountPlan": True},
        "csm": {"email": "csm@company.com", "name": "John Doe"},
        "workflow": {"daysUntilRenewal": 10, "renewalARR": 150000, "daysOverdue": -12},
        "accountTeam": {"members": [{"email": "ae@company.com"}, {"email": "sa@company.com"}]},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return base


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine()


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Thread ids of every real pybars compile."""
    calls: list[int] = []
    real_compile = pybars.Compiler.compile

    def spy(self: pybars.Compiler, source: str, path: str | None = None) -> Any:
        calls.append(threading.get_ident())
        return real_compile(self, source, path)

    monkeypatch.setattr(pybars.Compiler, "compile", spy)
    return calls


def test_strategic_condition_takes_the_if_branch(engine: TemplateEngine) -> None:
    assert engine.render(STRATEGIC, context()) == "Strategic account war room required."


def test_strategic_condition_takes_the_else_branch_below_threshold(engine: TemplateEngine) -> None:
    rendered = engine.render(STRATEGIC, context(workflow={"renewalARR": 99999}))
    assert rendered == "Standard follow-up."


def test_strategic_condition_takes_the_else_branch_without_plan(engine: TemplateEngine) -> None:
    rendered = engine.render(STRATEGIC, context(customer={"hasAccountPlan": False}))
    assert rendered == "Standard follow-up."


def test_abs_prints_days_overdue(engine: TemplateEngine) -> None:
    template = "Renewal is {{abs workflow.daysOverdue}} days overdue."
    assert engine.render(template, context()) == "Renewal is 12 days overdue."


@pytest.mark.parametrize(("value", "expected"), [("-7", "7"), (-2.5, "2.5"), ("soon", ""),
                                                 (None, ""), (True, "")])
def test_abs_of_strings_and_non_numbers(engine: TemplateEngine, value: Any, expected: str) -> None:
    assert engine.render("{{abs v}}", {"v": value}) == expected


def test_each_iterates_and_falls_back_to_else(engine: TemplateEngine) -> None:
    template = "{{#each accountTeam.members}}{{email}};{{else}}nobody{{/each}}"
    assert engine.render(template, context()) == "ae@company.com;sa@company.com;"
    assert engine.render(template, context(accountTeam={"members": []})) == "nobody"


@pytest.mark.parametrize(("plan", "expected"), [(True, "Plan"), (False, "No plan")])
def test_unless_renders_its_else_part(engine: TemplateEngine, plan: bool, expected: str) -> None:
    template = "{{#unless customer.hasAccountPlan}}No plan{{else}}Plan{{/unless}}"
    assert engine.render(template, context(customer={"hasAccountPlan": plan})) == expected


def test_missing_variables_render_empty(engine: TemplateEngine) -> None:
    template = "[{{nothing}}|{{customer.nothing}}|{{nothing.at.all}}]"
    assert engine.render(template, context()) == "[||]"


def test_output_is_not_html_escaped(engine: TemplateEngine) -> None:
    rendered = engine.render("{{customer.name}} \"{{q}}\" {{eq q q}}", {**context(), "q": "'`<>"})
    assert rendered == "Acme & Sons <EU> \"'`<>\" true"


def test_helper_booleans_render_as_words(engine: TemplateEngine) -> None:
    template = "{{gte workflow.renewalARR 100000}} {{not customer.hasAccountPlan}}"
    assert engine.render(template, context()) == "true false"


def test_false_helper_result_selects_else(engine: TemplateEngine) -> None:
    template = "{{#if (lt workflow.daysUntilRenewal 5)}}urgent{{else}}calm{{/if}}"
    assert engine.render(template, context()) == "calm"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{gte ratio 1.5}}", "true"),
        ("{{gt ratio 2.5}}", "false"),
        ("{{eq ratio 2.5}}", "true"),
        ("{{eq count '3'}}", "true"),
        ("{{gt count -1}}", "true"),
        ("{{gte missing 0}}", "false"),
        ("{{lte missing 0}}", "false"),
        ("{{eq missing other}}", "true"),
        ("{{eq flag 1}}", "false"),
        ("{{eq flag true}}", "true"),
        ("{{lt day '2025-12-31'}}", "true"),
        ("{{or missing flag}}", "true"),
        ("{{and flag missing}}", "false"),
    ],
)
def test_helpers_coerce_numbers_and_tolerate_missing_values(
    engine: TemplateEngine, template: str, expected: str
) -> None:
    values = {"ratio": "2.5", "count": 3, "flag": True, "day": "2025-01-15"}
    assert engine.render(template, values) == expected


def test_list_length_is_available(engine: TemplateEngine) -> None:
    assert engine.render("{{accountTeam.members.length}}", context()) == "2"


def test_methods_of_context_values_are_never_reached(engine: TemplateEngine) -> None:
    members: list[Any] = [1]
    values = {"customer": {"name": "A"}, "members": members, "word": "abc"}
    template = "{{customer.keys}}{{customer.items}}{{members.append}}{{word.upper}}{{members.pop}}"
    assert engine.render(template, values) == ""
    assert members == [1]


def test_callables_and_objects_in_the_context_are_not_called(engine: TemplateEngine) -> None:
    calls: list[str] = []

    class Account:
        secret = "hidden"

    values = {"run": lambda *args: calls.append("called"), "account": Account()}
    assert engine.render("{{run}}{{account.secret}}{{#if run}}yes{{/if}}", values) == ""
    assert calls == []


def test_comment_and_standalone_block_lines_leave_no_blank_lines(engine: TemplateEngine) -> None:
    template = "{{! note }}\nStart\n{{#if customer.hasAccountPlan}}\n  Plan\n{{/if}}\nEnd"
    assert engine.render(template, context()) == "Start\n  Plan\nEnd"


def test_invalid_template_raises_template_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match="never closed"):
        engine.render("{{#if a}}unclosed", {})


def test_same_source_compiles_once(engine: TemplateEngine, compile_calls: list[int]) -> None:
    first = engine.compile("Hi {{customer.name}}")
    second = engine.compile("Hi {{customer.name}}")
    assert first is second
    engine.render("Hi {{customer.name}}", context())
    assert len(compile_calls) == 1
    engine.compile("Bye {{customer.name}}")
    assert len(compile_calls) == 2


def test_least_recently_used_template_is_evicted(compile_calls: list[int]) -> None:
    engine = TemplateEngine(max_cache=2)
    for source in ("{{a}}", "{{b}}", "{{a}}", "{{c}}"):
        engine.compile(source)
    assert len(compile_calls) == 3
    engine.compile("{{a}}")
    assert len(compile_calls) == 3
    engine.compile("{{b}}")
    assert len(compile_calls) == 4


async def test_acompile_compiles_off_the_event_loop_thread(
    engine: TemplateEngine, compile_calls: list[int]
) -> None:
    template = await engine.acompile("Hello {{csm.name}}")
    assert template(context()) == "Hello John Doe"
    assert len(compile_calls) == 1
    assert compile_calls[0] != threading.get_ident()


async def test_arender_of_a_cached_template_stays_on_the_loop(
    engine: TemplateEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.compile("Hello {{csm.name}}")

    async def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached template must not be sent to a thread")

    monkeypatch.setattr(engine_module.asyncio, "to_thread", no_threads)
    assert await engine.arender("Hello {{csm.name}}", context()) == "Hello John Doe"


async def test_concurrent_compiles_each_get_their_own_template(engine: TemplateEngine) -> None:
    # pybars shares one code builder between threads; long templates make overlapping compiles
    # likely, so a missing lock shows up here as errors or crossed output.
    def source(index: int) -> str:
        return "".join(f"<{index}:{{{{#if a}}}}{part}{{{{/if}}}}>" for part in range(30))

    templates = await asyncio.gather(*(engine.acompile(source(index)) for index in range(24)))
    rendered = [template({"a": True}) for template in templates]
    expected = ["".join(f"<{index}:{part}>" for part in range(30)) for index in range(24)]
    assert rendered == expected


@pytest.mark.parametrize(
    ("template", "values", "holds"),
    [
        ("{{gte workflow.renewalARR 250000}}", context(), False),
        ("{{gte workflow.renewalARR 100000}}", context(), True),
        ("{{#if customer.hasAccountPlan}} Yes {{/if}}", context(), True),
        ("{{customer.nothing}}", context(), False),
        ("  FALSE ", {}, False),
        ("0", {}, False),
        ("no", {}, False),
        ("None", {}, False),
        ("null", {}, False),
        ("{{csm.name}}", context(), True),
    ],
)
async def test_conditions_evaluate_rendered_text(
    engine: TemplateEngine, template: str, values: dict[str, Any], holds: bool
) -> None:
    assert engine.evaluate_condition(template, values) is holds
    assert await engine.aevaluate_condition(template, values) is holds


def test_render_deep_renders_nested_strings_only(engine: TemplateEngine) -> None:
    value = {
        "title": "{{customer.name}} renews",
        "recipients": ["{{csm.email}}", "static@company.com"],
        "meta": {"priority": 1, "flag": None, "{{key}}": "kept"},
    }
    assert render_deep(engine, value, context()) == {
        "title": "Acme & Sons <EU> renews",
        "recipients": ["csm@company.com", "static@company.com"],
        "meta": {"priority": 1, "flag": None, "{{key}}": "kept"},
    }


async def test_arender_deep_matches_render_deep(engine: TemplateEngine) -> None:
    value = [{"message": "{{abs workflow.daysOverdue}} days"}, "plain", 3]
    assert await arender_deep(engine, value, context()) == render_deep(engine, value, context())
