"""Workflow rules: visibility, validation before any write, and versioned updates."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.db.tenancy import set_tenant
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.workflows import repository
from app.workflows.models import ChatBranch, Workflow
from app.workflows.validation import validate_workflow

WORKFLOW_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")


async def get_visible(session: AsyncSession, principal: Principal, workflow_id: str) -> Workflow:
    """The workflow the caller sees under that id, or 404."""
    workflow = await repository.get_by_workflow_id(session, workflow_id, principal.tenant_id)
    if workflow is None:
        raise NotFound(f"workflow '{workflow_id}' not found")
    return workflow


def branch_dict(branch: ChatBranch) -> dict[str, Any]:
    """A branch in the camelCase shape the validator and the API use."""
    return {
        "workflowId": branch.workflow_id,
        "fromStepId": branch.from_step_id,
        "branchId": branch.branch_id,
        "branchLabel": branch.branch_label,
        "branchType": branch.branch_type,
        "userPrompts": list(branch.user_prompts or []),
        "responseText": branch.response_text,
        "nextStepId": branch.next_step_id,
        "savedActionId": branch.saved_action_id,
        "llmHandler": branch.llm_handler,
        "allowOffScript": branch.allow_off_script,
        "returnToStep": branch.return_to_step,
    }


async def _validate(session: AsyncSession, workflow_id: str, config: dict[str, Any]) -> None:
    if config.get("id") not in (None, workflow_id):
        raise Unprocessable(
            "config.id must equal workflowId",
            errors=[
                {
                    "check": "required fields",
                    "errors": [f"config.id is {config.get('id')!r}, expected {workflow_id!r}"],
                }
            ],
        )
    branches = [branch_dict(b) for b in await repository.list_branches_of(session, workflow_id)]
    saved_ids = {a.action_id for a in await repository.list_saved_actions(session)}
    report = validate_workflow(
        config, branches=branches or None, saved_action_ids=saved_ids, source=workflow_id
    )
    if not report.ok:
        failed = [{"check": c.name, "errors": c.errors} for c in report.checks if not c.passed]
        names = ", ".join(c.name for c in report.checks if not c.passed)
        raise Unprocessable(f"workflow config failed validation: {names}", errors=failed)


async def create(
    session: AsyncSession,
    principal: Principal,
    workflow_id: str,
    config: dict[str, Any],
    name: str | None,
    description: str | None,
) -> Workflow:
    """Create a tenant workflow (it may shadow a core one); the trigger records version 1."""
    if not WORKFLOW_ID.match(workflow_id):
        raise Unprocessable("workflowId must be 1-50 lower-case letters, digits, '-' or '_'")
    await _validate(session, workflow_id, config)
    if await repository.get_owned(session, workflow_id, principal.tenant_id) is not None:
        raise Conflict(f"workflow '{workflow_id}' already exists")
    workflow = Workflow(
        workflow_id=workflow_id,
        name=name or str(config.get("name") or workflow_id),
        description=description if description is not None else config.get("description"),
        version=str(config.get("version") or "1.0.0")[:20],
        config=config,
        is_core=False,
        tenant_id=principal.tenant_id,
        created_by=principal.user_id,
    )
    session.add(workflow)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"workflow '{workflow_id}' already exists") from exc
    await session.refresh(workflow)
    return workflow


async def update(
    session: AsyncSession,
    principal: Principal,
    workflow_id: str,
    config: dict[str, Any],
    change_description: str | None,
) -> Workflow:
    """Replace a tenant workflow's config; core workflows are read-only."""
    workflow = await repository.get_owned(
        session, workflow_id, principal.tenant_id, for_update=True
    )
    if workflow is None:
        if await repository.get_by_workflow_id(session, workflow_id, principal.tenant_id):
            raise Forbidden(
                f"'{workflow_id}' is a core workflow and read-only; "
                "create a tenant workflow with the same id to customise it"
            )
        raise NotFound(f"workflow '{workflow_id}' not found")
    await _validate(session, workflow_id, config)
    # The versioning trigger reads the author and description from the transaction.
    await set_tenant(session, principal.tenant_id, principal.user_id, change_description)
    workflow.config = config
    workflow.name = str(config.get("name") or workflow.name)
    if config.get("description") is not None:
        workflow.description = str(config["description"])
    if config.get("version"):
        workflow.version = str(config["version"])[:20]
    await session.flush()
    await session.refresh(workflow)
    return workflow
