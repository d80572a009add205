"""The workflow validator: broken fixtures fail the right check, valid configs pass every check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.workflows.validation import (
    BRANCH_CHECK,
    CHECK_NAMES,
    ValidationReport,
    format_report,
    validate_workflow,
    validate_workflow_text,
)

BROKEN = Path(__file__).resolve().parents[1] / "fixtures" / "broken_workflows"
SEEDS = Path(__file__).resolve().parents[2] / "seeds"
EXPECTED: dict[str, str] = json.loads((BROKEN / "expected.json").read_text())

VALID: dict[str, Any] = {
    "id": "minimal",
    "name": "Minimal",
    "description": "One step with one notification",
    "version": "1.0.0",
    "trigger": {"daysUntilRenewal": {"min": 0, "max": 6}},
    "context": {"systemPrompt": "You help {{csm.name}}."},
    "steps": [
        {
            "id": "check",
            "name": "Check",
            "type": "conditional_routing",
            "routing": {
                "routes": [{"condition": "{{lt workflow.daysUntilRenewal 3}}", "nextStep": "push"}],
                "defaultRoute": "push",
            },
            "notifications": [
                {
                    "type": "slack",
                    "title": "{{customer.name}} renews in {{workflow.daysUntilRenewal}} days",
                    "recipients": "{{csm.email}}",
                    "condition": "{{gte workflow.renewalARR 250000}}",
                }
            ],
        },
        {"id": "push", "name": "Final push", "type": "action"},
    ],
}
VALID_BRANCHES: list[dict[str, Any]] = [
    {
        "workflowId": "minimal", "fromStepId": "check", "branchId": "go", "branchLabel": "Go",
        "branchType": "fixed", "userPrompts": ["Go"], "responseText": "On it, {{csm.name}}.",
        "nextStepId": "push", "allowOffScript": False,
    },
    {
        "workflowId": "minimal", "fromStepId": "check", "branchId": "snooze",
        "branchLabel": "Snooze", "branchType": "saved_action", "savedActionId": "snooze-1-day",
        "returnToStep": "check",
    },
    {
        "workflowId": "minimal", "fromStepId": "check", "branchId": "ask", "branchLabel": "Ask",
        "branchType": "llm", "llmHandler": "file:handlers/renewal_qa.py", "allowOffScript": True,
    },
    {"workflowId": "another-workflow", "fromStepId": "elsewhere", "branchId": "x",
     "branchLabel": "Not ours", "branchType": "fixed", "nextStepId": "nowhere"},
]


def _validate_fixture(name: str) -> ValidationReport:
    sidecar = BROKEN / name.replace(".json", ".branches.json")
    options: dict[str, Any] = {}
    if sidecar.exists():
        data = json.loads(sidecar.read_text())
        options = {"branches": data["branches"], "saved_action_ids": set(data["savedActionIds"])}
    return validate_workflow_text((BROKEN / name).read_text(), source=name, **options)


def test_every_broken_fixture_is_listed_in_expected() -> None:
    files = {path.name for path in BROKEN.glob("*.json")
             if path.name != "expected.json" and not path.name.endswith(".branches.json")}
    assert files == set(EXPECTED)
    assert len(files) >= 18


def test_broken_fixtures_cover_every_check() -> None:
    assert set(EXPECTED.values()) == {*CHECK_NAMES, BRANCH_CHECK}


@pytest.mark.parametrize(("name", "check"), sorted(EXPECTED.items()))
def test_broken_workflow_fails_exactly_its_check(name: str, check: str) -> None:
    report = _validate_fixture(name)
    assert not report.ok
    assert check in report.failed_checks
    # Other failures may only be checks that could not run because of this one defect.
    for result in report.checks:
        if not result.passed and result.name != check:
            assert all(error.startswith("cannot run:") for error in result.errors), result


def test_valid_workflow_passes_every_check() -> None:
    report = validate_workflow(copy.deepcopy(VALID), branches=VALID_BRANCHES,
                               saved_action_ids={"snooze-1-day"}, source="minimal")
    assert report.ok, format_report([report])
    assert [check.name for check in report.checks] == [*CHECK_NAMES, BRANCH_CHECK]


def test_valid_workflow_text_passes_without_branches() -> None:
    report = validate_workflow_text(json.dumps(VALID))
    assert report.ok
    assert [check.name for check in report.checks] == list(CHECK_NAMES)


def test_template_error_names_the_json_path() -> None:
    config = copy.deepcopy(VALID)
    config["steps"][0]["notifications"][0]["title"] = "{{#if a}}open"
    report = validate_workflow(config)
    assert report.failed_checks == ["template syntax"]
    (errors,) = [check.errors for check in report.checks if check.name == "template syntax"]
    assert errors[0].startswith("$.steps[0].notifications[0].title: ")


def test_branch_references_are_skipped_for_other_workflows() -> None:
    foreign = [{**VALID_BRANCHES[0], "workflowId": "other", "nextStepId": "missing"}]
    assert validate_workflow(VALID, branches=foreign).ok


def test_saved_action_branch_needs_a_saved_action_id() -> None:
    branch = {**VALID_BRANCHES[1], "savedActionId": None}
    report = validate_workflow(VALID, branches=[branch])
    assert report.failed_checks == [BRANCH_CHECK]


def test_duplicate_branch_ids_on_one_step_fail() -> None:
    report = validate_workflow(VALID, branches=[VALID_BRANCHES[0], dict(VALID_BRANCHES[0])])
    assert report.failed_checks == [BRANCH_CHECK]


@pytest.mark.parametrize(
    "config",
    [None, 0, 1.5, "text", [], [1, {"steps": 2}], {}, {"steps": None}, {"steps": [None, 1, "x"]},
     {"id": ["x"], "steps": [{"id": {"a": 1}, "routing": "r", "notifications": 3}]},
     {"steps": [{"id": "a", "routing": {"routes": [1, {"nextStep": ["a"]}], "defaultRoute": 5},
                 "notifications": [None, {"recipients": [1]}]}]}],
)
def test_arbitrary_json_never_crashes(config: Any) -> None:
    weird_branches: list[Any] = [None, 3, {"fromStepId": ["a"], "branchId": {}, "userPrompts": 1}]
    report = validate_workflow(config, branches=weird_branches, saved_action_ids={"x"})
    assert not report.ok
    assert report.checks[0].name == "valid JSON"
    text_report = validate_workflow_text(json.dumps(config), branches=weird_branches)
    assert [check.passed for check in text_report.checks] == [c.passed for c in report.checks]


def test_deeply_nested_json_is_reported_not_raised() -> None:
    report = validate_workflow_text("[" * 100_000 + "]" * 100_000)
    assert report.failed_checks[0] == "valid JSON"
    deep: Any = "{{#if a}}x"
    for _ in range(5_000):
        deep = {"nested": deep}
    deep_report = validate_workflow(deep)
    assert "template syntax" in deep_report.failed_checks


def test_non_json_values_fail_the_json_check() -> None:
    config = {**copy.deepcopy(VALID), "trigger": {"days": {1, 2}}}
    assert validate_workflow(config).failed_checks == ["valid JSON"]


def test_format_report_counts_every_check_of_every_file() -> None:
    reports = [_validate_fixture("duplicate-step-id.json"), _validate_fixture("missing-steps.json"),
               validate_workflow(VALID, source="valid.json")]
    text = format_report(reports)
    total = sum(len(report.checks) for report in reports)
    failed = sum(len(report.failed_checks) for report in reports)
    assert f"Total tests: {total}" in text
    assert f"Passed: {total - failed}" in text
    assert f"Failed: {failed}" in text
    assert "✗ duplicate-step-id.json: unique step ids" in text
    assert "✓ valid.json: routing targets exist" in text
    assert "\n    step id 'resolve' is used by" in text


def test_format_report_of_passing_files_says_so() -> None:
    text = format_report([validate_workflow(VALID, source="a"), validate_workflow(VALID, source="b")])
    assert text.splitlines()[-4:] == [
        f"Total tests: {2 * len(CHECK_NAMES)}", f"Passed: {2 * len(CHECK_NAMES)}", "Failed: 0",
        "✓ All validations passed!",
    ]


SEED_WORKFLOWS = sorted((SEEDS / "workflows").glob("*.json"))


@pytest.mark.skipif(not SEED_WORKFLOWS, reason="seeds/workflows/*.json not written yet")
@pytest.mark.parametrize("path", SEED_WORKFLOWS, ids=[path.name for path in SEED_WORKFLOWS])
def test_seed_workflow_passes_every_check(path: Path) -> None:
    branches = json.loads((SEEDS / "chat_branches.json").read_text())
    saved_ids = {action["actionId"] for action in json.loads(
        (SEEDS / "saved_actions.json").read_text())}
    report = validate_workflow_text(path.read_text(), branches=branches,
                                    saved_action_ids=saved_ids, source=path.name)
    assert report.ok, format_report([report])
    assert BRANCH_CHECK in [check.name for check in report.checks]
