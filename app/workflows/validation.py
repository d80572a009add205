"""Workflow config validation: the spec's eight checks, then template grammar and references."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from app.templates.grammar import check_template

# The spec's eight checks in its order (template syntax is its sixth), then ours.
CHECK_NAMES = (
    "valid JSON", "required fields", "no UI artifacts", "no UI actions", "notifications present",
    "template syntax", "step structure", "notification structure", "unique step ids",
    "routing targets exist",
)
BRANCH_CHECK = "branch references"
REQUIRED_FIELDS = ("id", "name", "description", "version", "trigger", "context", "steps")
UI_ARTIFACT_KEYS = frozenset({"artifacts"})
UI_ACTION_KEYS = frozenset({"actions", "buttons", "button", "forms", "form", "modals", "modal"})
BRANCH_TYPES = ("fixed", "saved_action", "llm", "rag")
MAX_ERRORS_PER_CHECK = 50

_IDENTIFIER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class CheckResult:
    """The outcome of one named check."""

    name: str
    passed: bool
    errors: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Every check run on one workflow source."""

    source: str
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.passed for check in self.checks)

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed, in order."""
        return [check.name for check in self.checks if not check.passed]


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENTIFIER_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(str(key))}]"


def _walk(value: Any, path: str = "$") -> Iterator[tuple[str, Any, Any]]:
    """Yields (path, key, value) for every nested value; iterative, so deep input cannot recurse."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        current_path, current = stack.pop()
        if isinstance(current, dict):
            children: list[tuple[Any, Any]] = list(current.items())
        elif isinstance(current, list):
            children = list(enumerate(current))
        else:
            continue
        for key, child in children:
            child_path = _child_path(current_path, key)
            yield child_path, key, child
            stack.append((child_path, child))


def _result(name: str, errors: list[str]) -> CheckResult:
    if len(errors) > MAX_ERRORS_PER_CHECK:
        hidden = len(errors) - MAX_ERRORS_PER_CHECK
        errors = [*errors[:MAX_ERRORS_PER_CHECK], f"... and {hidden} more"]
    return CheckResult(name, not errors, errors)


def _cannot_run(name: str, reason: str) -> CheckResult:
    return CheckResult(name, False, [f"cannot run: {reason}"])


def _nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


@dataclass
class _Workflow:
    """The parts of a config that later checks read, or why they are unavailable."""

    config: Any
    steps: list[tuple[str, dict[str, Any]]] | None = None
    missing_steps_reason: str = ""

    @property
    def step_ids(self) -> set[str]:
        return {step["id"] for _, step in self.steps or [] if isinstance(step.get("id"), str)}


def _load_workflow(config: Any) -> _Workflow:
    workflow = _Workflow(config)
    if not isinstance(config, dict):
        workflow.missing_steps_reason = f"the workflow config is a JSON {_type_name(config)}"
    elif not isinstance(config.get("steps"), list):
        workflow.missing_steps_reason = "'steps' is missing or not an array"
    else:
        workflow.steps = [(f"$.steps[{index}]", step)
                          for index, step in enumerate(config["steps"]) if isinstance(step, dict)]
    return workflow


def _check_json(config: Any) -> CheckResult:
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return _result("valid JSON", [f"not representable as JSON: {error}"])
    return _result("valid JSON", [])


def _check_required_fields(workflow: _Workflow) -> CheckResult:
    config = workflow.config
    if not isinstance(config, dict):
        return _result("required fields", [f"the workflow config must be a JSON object, got "
                                           f"{_type_name(config)}"])
    errors = [f"missing required field '{name}'" for name in REQUIRED_FIELDS if name not in config]
    expected: dict[str, tuple[str, Callable[[Any], bool]]] = {
        "id": ("a non-empty string", _nonempty_string),
        "name": ("a non-empty string", _nonempty_string),
        "description": ("a string", lambda value: isinstance(value, str)),
        "version": ("a non-empty string", _nonempty_string),
        "trigger": ("an object", lambda value: isinstance(value, dict)),
        "context": ("an object", lambda value: isinstance(value, dict)),
        "steps": ("a non-empty array", lambda value: isinstance(value, list) and bool(value)),
    }
    for name, (wanted, accepts) in expected.items():
        if name in config and not accepts(config[name]):
            errors.append(f"'{name}' must be {wanted}, got {_type_name(config[name])}")
    return _result("required fields", errors)


def _check_forbidden_keys(name: str, config: Any, keys: frozenset[str], what: str) -> CheckResult:
    errors = [
        f"{path}: {what} do not belong in a workflow config"
        for path, key, _ in _walk(config)
        if isinstance(key, str) and key.lower() in keys
    ]
    return _result(name, sorted(errors))


def _notifications(workflow: _Workflow) -> tuple[list[tuple[str, Any]], list[str]]:
    """Every item of every `notifications` array inside the steps, plus misshapen arrays."""
    found: list[tuple[str, Any]] = []
    problems: list[str] = []
    for step_path, step in workflow.steps or []:
        for path, key, value in _walk(step, step_path):
            if key != "notifications":
                continue
            if isinstance(value, list):
                found.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
            else:
                problems.append(f"{path} must be an array, got {_type_name(value)}")
    return sorted(found, key=lambda entry: entry[0]), problems


def _check_notifications_present(workflow: _Workflow) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run("notifications present", workflow.missing_steps_reason)
    found, _ = _notifications(workflow)
    return _result("notifications present", [] if found else ["no step has any notification"])


def _routes(workflow: _Workflow) -> Iterator[tuple[str, dict[str, Any]]]:
    for step_path, step in workflow.steps or []:
        routing = step.get("routing")
        routes = routing.get("routes") if isinstance(routing, dict) else None
        for index, route in enumerate(routes if isinstance(routes, list) else []):
            if isinstance(route, dict):
                yield f"{step_path}.routing.routes[{index}]", route


def _template_errors(path: str, value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if not isinstance(value, str):
        return [f"{path}: must be a template string, got {_type_name(value)}"]
    return [f"{path}: {error}" for error in check_template(value)]


def _check_template_syntax(workflow: _Workflow) -> CheckResult:
    errors: list[str] = []
    checked: set[str] = set()
    for path, _, value in _walk(workflow.config):
        if isinstance(value, str) and ("{{" in value or "}}" in value):
            checked.add(path)
            errors.extend(_template_errors(path, value))
    conditions = [(f"{path}.condition", item.get("condition"))
                  for path, item in _notifications(workflow)[0] if isinstance(item, dict)]
    conditions += [(f"{path}.condition", route.get("condition"))
                   for path, route in _routes(workflow)]
    for path, condition in conditions:
        if path not in checked:
            errors.extend(_template_errors(path, condition))
    return _result("template syntax", sorted(errors))


def _check_step_structure(workflow: _Workflow) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run("step structure", workflow.missing_steps_reason)
    errors: list[str] = []
    for index, step in enumerate(workflow.config["steps"]):
        path = f"$.steps[{index}]"
        if not isinstance(step, dict):
            errors.append(f"{path} must be an object, got {_type_name(step)}")
            continue
        for name in ("id", "name", "type"):
            if name not in step:
                errors.append(f"{path} has no '{name}'")
            elif not _nonempty_string(step[name]):
                errors.append(f"{path}.{name} must be a non-empty string")
    return _result("step structure", errors)


def _check_notification_structure(workflow: _Workflow) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run("notification structure", workflow.missing_steps_reason)
    found, errors = _notifications(workflow)
    for path, item in found:
        if not isinstance(item, dict):
            errors.append(f"{path} must be an object, got {_type_name(item)}")
            continue
        for name in ("type", "title"):
            if not _nonempty_string(item.get(name)):
                errors.append(f"{path} needs a non-empty string '{name}'")
        recipients = item.get("recipients")
        if not (
            _nonempty_string(recipients)
            or (isinstance(recipients, list) and recipients
                and all(_nonempty_string(recipient) for recipient in recipients))
        ):
            errors.append(f"{path} needs 'recipients': a non-empty string or array of strings")
    return _result("notification structure", errors)


def _check_unique_step_ids(workflow: _Workflow) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run("unique step ids", workflow.missing_steps_reason)
    seen: dict[str, str] = {}
    errors: list[str] = []
    for path, step in workflow.steps:
        step_id = step.get("id")
        if not isinstance(step_id, str):
            continue
        if step_id in seen:
            errors.append(f"step id '{step_id}' is used by {seen[step_id]} and {path}")
        else:
            seen[step_id] = path
    return _result("unique step ids", errors)


def _check_routing_targets(workflow: _Workflow) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run("routing targets exist", workflow.missing_steps_reason)
    step_ids = workflow.step_ids
    errors: list[str] = []

    def check_target(path: str, target: Any) -> None:
        if not isinstance(target, str):
            errors.append(f"{path} must be a step id, got {_type_name(target)}")
        elif target not in step_ids:
            errors.append(f"{path} '{target}' is not a step of this workflow")

    for step_path, step in workflow.steps:
        routing = step.get("routing")
        if routing is None:
            continue
        if not isinstance(routing, dict):
            errors.append(f"{step_path}.routing must be an object, got {_type_name(routing)}")
            continue
        routes = routing.get("routes", [])
        if not isinstance(routes, list):
            errors.append(f"{step_path}.routing.routes must be an array")
            routes = []
        for index, route in enumerate(routes):
            route_path = f"{step_path}.routing.routes[{index}]"
            if not isinstance(route, dict):
                errors.append(f"{route_path} must be an object, got {_type_name(route)}")
            else:
                check_target(f"{route_path}.nextStep", route.get("nextStep"))
        if routing.get("defaultRoute") is not None:
            check_target(f"{step_path}.routing.defaultRoute", routing["defaultRoute"])
    return _result("routing targets exist", errors)


def _branch_errors(path: str, branch: dict[str, Any], step_ids: set[str],
                   saved_action_ids: set[str] | None) -> list[str]:
    errors: list[str] = []
    for name in ("fromStepId", "branchId", "branchLabel"):
        if not _nonempty_string(branch.get(name)):
            errors.append(f"{path} needs a non-empty string '{name}'")
    if _nonempty_string(branch.get("fromStepId")) and branch["fromStepId"] not in step_ids:
        errors.append(f"{path}.fromStepId '{branch['fromStepId']}' is not a step of this workflow")
    if branch.get("branchType") not in BRANCH_TYPES:
        errors.append(f"{path}.branchType must be one of {', '.join(BRANCH_TYPES)}, "
                      f"got {branch.get('branchType')!r}")
    for name in ("nextStepId", "returnToStep"):
        target = branch.get(name)
        if target is not None and (not isinstance(target, str) or target not in step_ids):
            errors.append(f"{path}.{name} {target!r} is not a step of this workflow")
    saved_action_id = branch.get("savedActionId")
    if branch.get("branchType") == "saved_action" and saved_action_id is None:
        errors.append(f"{path} is a saved_action branch without 'savedActionId'")
    if saved_action_id is not None and not (
        isinstance(saved_action_id, str)
        and (saved_action_ids is None or saved_action_id in saved_action_ids)
    ):
        errors.append(f"{path}.savedActionId {saved_action_id!r} is not a saved action")
    prompts = branch.get("userPrompts")
    if prompts is not None and not (
        isinstance(prompts, list) and all(isinstance(prompt, str) for prompt in prompts)
    ):
        errors.append(f"{path}.userPrompts must be an array of strings")
    for name, wanted in (("allowOffScript", bool), ("llmHandler", str)):
        if branch.get(name) is not None and not isinstance(branch[name], wanted):
            errors.append(f"{path}.{name} has the wrong type ({_type_name(branch[name])})")
    errors.extend(_template_errors(f"{path}.responseText", branch.get("responseText")))
    for text_path, _, value in _walk(branch, path):
        if not text_path.endswith(".responseText") and isinstance(value, str) and (
            "{{" in value or "}}" in value
        ):
            errors.extend(_template_errors(text_path, value))
    return errors


def _check_branches(workflow: _Workflow, branches: Any,
                    saved_action_ids: set[str] | None) -> CheckResult:
    if workflow.steps is None:
        return _cannot_run(BRANCH_CHECK, workflow.missing_steps_reason)
    if not isinstance(branches, list):
        return _result(BRANCH_CHECK, [f"branches must be an array, got {_type_name(branches)}"])
    workflow_id = workflow.config.get("id")
    step_ids = workflow.step_ids
    errors: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for index, branch in enumerate(branches):
        path = f"branches[{index}]"
        if not isinstance(branch, dict):
            errors.append(f"{path} must be an object, got {_type_name(branch)}")
            continue
        owner = branch.get("workflowId")
        if isinstance(workflow_id, str) and owner is not None and owner != workflow_id:
            continue  # another workflow's branch
        errors.extend(_branch_errors(path, branch, step_ids, saved_action_ids))
        step_id, branch_id = branch.get("fromStepId"), branch.get("branchId")
        if not (isinstance(step_id, str) and isinstance(branch_id, str)):
            continue
        if (step_id, branch_id) in seen:
            errors.append(f"{path} repeats branchId '{branch_id}' of "
                          f"{seen[step_id, branch_id]} on the same step")
        seen.setdefault((step_id, branch_id), path)
    return _result(BRANCH_CHECK, errors)


def _run_checks(config: Any, json_check: CheckResult, branches: Any,
                saved_action_ids: set[str] | None) -> list[CheckResult]:
    workflow = _load_workflow(config)
    checks = [
        json_check,
        _check_required_fields(workflow),
        _check_forbidden_keys("no UI artifacts", config, UI_ARTIFACT_KEYS, "UI artifacts"),
        _check_forbidden_keys("no UI actions", config, UI_ACTION_KEYS,
                              "UI actions (buttons, forms, modals)"),
        _check_notifications_present(workflow),
        _check_template_syntax(workflow),
        _check_step_structure(workflow),
        _check_notification_structure(workflow),
        _check_unique_step_ids(workflow),
        _check_routing_targets(workflow),
    ]
    if branches is not None:
        checks.append(_check_branches(workflow, branches, saved_action_ids))
    return checks


def validate_workflow(config: Any, *, branches: list[dict[str, Any]] | None = None,
                      saved_action_ids: set[str] | None = None,
                      source: str = "") -> ValidationReport:
    """Runs every check on an already-parsed config; never raises on malformed input."""
    checks = _run_checks(config, _check_json(config), branches, saved_action_ids)
    return ValidationReport(source, checks)


def validate_workflow_text(text: str, *, branches: list[dict[str, Any]] | None = None,
                           saved_action_ids: set[str] | None = None,
                           source: str = "") -> ValidationReport:
    """Parses JSON text (check 1), then runs the remaining checks on the parsed config."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"line {error.lineno}, column {error.colno}: {error.msg}"
    except (TypeError, ValueError, RecursionError) as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        checks = _run_checks(config, _result("valid JSON", []), branches, saved_action_ids)
        return ValidationReport(source, checks)
    names = [*CHECK_NAMES[1:], *([BRANCH_CHECK] if branches is not None else [])]
    failed = [_result("valid JSON", [problem])]
    failed += [_cannot_run(name, "the file is not valid JSON") for name in names]
    return ValidationReport(source, failed)


def format_report(reports: list[ValidationReport]) -> str:
    """Renders reports like the spec's validator: one ✓/✗ line per check, then the totals."""
    lines: list[str] = []
    for report in reports:
        for check in report.checks:
            mark = "✓" if check.passed else "✗"
            lines.append(f"{mark} {report.source or '<workflow>'}: {check.name}")
            lines.extend(f"    {error}" for error in check.errors)
    total = sum(len(report.checks) for report in reports)
    passed = sum(check.passed for report in reports for check in report.checks)
    lines += ["", f"Total tests: {total}", f"Passed: {passed}", f"Failed: {total - passed}"]
    lines.append("✓ All validations passed!" if passed == total else
                 f"✗ {total - passed} check(s) failed")
    return "\n".join(lines)
