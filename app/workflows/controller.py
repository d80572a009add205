"""HTTP endpoints for workflows, their versions and saved actions."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from app.auth.guards import admin_only
from app.deps import CurrentUser, DbSession
from app.errors import NotFound
from app.workflows import repository, service
from app.workflows.models import Workflow
from app.workflows.schemas import (
    CreateWorkflow,
    SavedActionList,
    SavedActionOut,
    UpdateWorkflow,
    VersionList,
    VersionOut,
    WorkflowDetail,
    WorkflowEnvelope,
    WorkflowList,
    WorkflowSummary,
)


def _summary(w: Workflow) -> WorkflowSummary:
    return WorkflowSummary(
        id=str(w.id),
        workflow_id=w.workflow_id,
        name=w.name,
        description=w.description,
        version=w.version,
        is_core=bool(w.is_core),
    )


def _detail(w: Workflow) -> WorkflowDetail:
    return WorkflowDetail(
        id=str(w.id),
        workflow_id=w.workflow_id,
        name=w.name,
        description=w.description,
        version=w.version,
        is_core=bool(w.is_core),
        config=w.config,
    )


class WorkflowController(Controller):
    """Workflow configs: list, read, create, update, history."""

    path = "/api/workflows"
    tags = ["workflows"]

    @get("/")
    async def list_workflows(self, db_session: DbSession, principal: CurrentUser) -> WorkflowList:
        """Core workflows plus the caller's tenant workflows."""
        rows = await repository.list_visible(db_session, principal.tenant_id)
        return WorkflowList(success=True, workflows=[_summary(w) for w in rows])

    @get("/{workflow_id:str}")
    async def get_workflow(
        self,
        db_session: DbSession,
        principal: CurrentUser,
        workflow_id: FromPath[str],
        tenant_id: Annotated[str | None, QueryParameter(name="tenantId")] = None,
    ) -> WorkflowEnvelope:
        """One workflow; a tenant workflow shadows the core one of the same id."""
        if tenant_id is not None and tenant_id != str(principal.tenant_id):
            raise NotFound(f"workflow '{workflow_id}' not found")
        workflow = await service.get_visible(db_session, principal, workflow_id)
        return WorkflowEnvelope(success=True, workflow=_detail(workflow))

    @post("/", guards=[admin_only], status_code=201)
    async def create_workflow(
        self, db_session: DbSession, principal: CurrentUser, data: JSONBody[CreateWorkflow]
    ) -> WorkflowEnvelope:
        """Create a tenant workflow after validating its config (422 lists every failed check)."""
        workflow = await service.create(
            db_session, principal, data.workflow_id, data.config, data.name, data.description
        )
        return WorkflowEnvelope(success=True, workflow=_detail(workflow))

    @put("/{workflow_id:str}", guards=[admin_only])
    async def update_workflow(
        self,
        db_session: DbSession,
        principal: CurrentUser,
        workflow_id: FromPath[str],
        data: JSONBody[UpdateWorkflow],
    ) -> WorkflowEnvelope:
        """Replace a tenant workflow's config; the database records a new version."""
        workflow = await service.update(
            db_session, principal, workflow_id, data.config, data.change_description
        )
        return WorkflowEnvelope(success=True, workflow=_detail(workflow))

    @get("/{workflow_id:str}/versions")
    async def list_versions(
        self, db_session: DbSession, principal: CurrentUser, workflow_id: FromPath[str]
    ) -> VersionList:
        """The config history of the workflow the caller sees under that id."""
        workflow = await service.get_visible(db_session, principal, workflow_id)
        versions = await repository.list_versions(db_session, workflow.id)
        return VersionList(
            workflow_id=workflow_id,
            versions=[
                VersionOut(
                    version=v.version,
                    changed_by=_str(v.changed_by),
                    changed_at=v.changed_at,
                    change_description=v.change_description,
                )
                for v in versions
            ],
        )


class SavedActionController(Controller):
    """Reusable global actions."""

    path = "/api/saved-actions"
    tags = ["workflows"]

    @get("/")
    async def list_saved_actions(self, db_session: DbSession) -> SavedActionList:
        """Every saved action the caller's tenant can use."""
        rows = await repository.list_saved_actions(db_session)
        return SavedActionList(
            saved_actions=[
                SavedActionOut(
                    action_id=a.action_id,
                    action_name=a.action_name,
                    action_type=a.action_type,
                    handler=a.handler,
                    config=a.config,
                    available_globally=bool(a.available_globally),
                )
                for a in rows
            ]
        )


def _str(value: uuid.UUID | None) -> str | None:
    return str(value) if value else None
