"""Request and response shapes of the workflow API (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Camel(msgspec.Struct, rename="camel", omit_defaults=False):
    """Base for wire structs: snake_case in Python, camelCase in JSON."""


class WorkflowSummary(Camel):
    """A workflow in a listing."""

    id: str
    workflow_id: str
    name: str
    description: str | None
    version: str | None
    is_core: bool


class WorkflowDetail(WorkflowSummary):
    """A workflow with its config."""

    config: dict[str, Any]


class WorkflowList(Camel):
    """GET /api/workflows."""

    success: bool
    workflows: list[WorkflowSummary]


class WorkflowEnvelope(Camel):
    """GET/POST/PUT of one workflow."""

    success: bool
    workflow: WorkflowDetail


class CreateWorkflow(Camel, forbid_unknown_fields=True):
    """POST /api/workflows."""

    workflow_id: str
    config: dict[str, Any]
    name: str | None = None
    description: str | None = None


class UpdateWorkflow(Camel, forbid_unknown_fields=True):
    """PUT /api/workflows/{workflowId}."""

    config: dict[str, Any]
    change_description: str | None = None


class VersionOut(Camel):
    """One entry of a workflow's history."""

    version: int
    changed_by: str | None
    changed_at: datetime
    change_description: str | None


class VersionList(Camel):
    """GET /api/workflows/{workflowId}/versions."""

    workflow_id: str
    versions: list[VersionOut]


class SavedActionOut(Camel):
    """A saved action."""

    action_id: str
    action_name: str
    action_type: str
    handler: str | None
    config: dict[str, Any] | None
    available_globally: bool


class SavedActionList(Camel):
    """GET /api/saved-actions."""

    saved_actions: list[SavedActionOut]
