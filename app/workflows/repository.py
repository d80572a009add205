"""Workflow queries; row-level security already limits them to the caller's tenant plus core."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.workflows.models import ChatBranch, SavedAction, Workflow, WorkflowVersion


async def list_visible(session: AsyncSession, tenant_id: uuid.UUID) -> Sequence[Workflow]:
    """The tenant's workflows plus core ones, a tenant's shadowing a core one of the same id."""
    stmt = (
        select(Workflow)
        .from_statement(text("SELECT * FROM get_tenant_workflows(:tenant_id)"))
        .params(tenant_id=tenant_id)
    )
    return (await session.scalars(stmt)).all()


async def get_by_workflow_id(
    session: AsyncSession, workflow_id: str, tenant_id: uuid.UUID
) -> Workflow | None:
    """The tenant's workflow of that id, else the core one."""
    stmt = (
        select(Workflow)
        .from_statement(text("SELECT * FROM get_workflow(:workflow_id, :tenant_id)"))
        .params(workflow_id=workflow_id, tenant_id=tenant_id)
    )
    return (await session.scalars(stmt)).one_or_none()


async def get_owned(
    session: AsyncSession, workflow_id: str, tenant_id: uuid.UUID, *, for_update: bool = False
) -> Workflow | None:
    """The tenant's own workflow of that id (never a core one)."""
    stmt = select(Workflow).where(
        Workflow.workflow_id == workflow_id, Workflow.tenant_id == tenant_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).one_or_none()


async def list_versions(session: AsyncSession, workflow_pk: uuid.UUID) -> Sequence[WorkflowVersion]:
    """A workflow's history, newest first."""
    stmt = (
        select(WorkflowVersion)
        .where(WorkflowVersion.workflow_id == workflow_pk)
        .order_by(WorkflowVersion.version.desc())
    )
    return (await session.scalars(stmt)).all()


async def list_saved_actions(session: AsyncSession) -> Sequence[SavedAction]:
    """Saved actions visible to the tenant (global ones and its own)."""
    return (await session.scalars(select(SavedAction).order_by(SavedAction.action_id))).all()


async def get_saved_action(session: AsyncSession, action_id: str) -> SavedAction | None:
    """One visible saved action by its action id."""
    stmt = select(SavedAction).where(SavedAction.action_id == action_id)
    return (await session.scalars(stmt)).one_or_none()


async def get_step_branches(
    session: AsyncSession, workflow_id: str, step_id: str, tenant_id: uuid.UUID
) -> Sequence[ChatBranch]:
    """The branches offered at a step (a tenant's branch shadows a core one of the same id)."""
    stmt = (
        select(ChatBranch)
        .from_statement(
            text("SELECT * FROM get_step_chat_branches(:workflow_id, :step_id, :tenant_id)")
        )
        .params(workflow_id=workflow_id, step_id=step_id, tenant_id=tenant_id)
    )
    return (await session.scalars(stmt)).all()


async def list_branches_of(session: AsyncSession, workflow_id: str) -> Sequence[ChatBranch]:
    """Every visible branch of a workflow, for validating a config change against them."""
    stmt = select(ChatBranch).where(ChatBranch.workflow_id == workflow_id)
    return (await session.scalars(stmt)).all()
