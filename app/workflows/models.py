"""Workflows, their version history, saved actions and chat branches (the spec's tables 1-4)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Workflow(Base):
    """A workflow config; core ones (tenant_id NULL) are shared read-only by every tenant."""

    __tablename__ = "workflows"

    id: Mapped[uuid.UUID] = uuid_pk()
    workflow_id: Mapped[str]
    name: Mapped[str]
    description: Mapped[str | None]
    version: Mapped[str | None] = mapped_column(default="1.0.0")
    config: Mapped[dict[str, Any]]
    is_core: Mapped[bool] = mapped_column(default=False)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id"))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = server_now()
    updated_at: Mapped[datetime] = server_now()


class WorkflowVersion(Base):
    """One entry of a workflow's config history, written by a database trigger."""

    __tablename__ = "workflow_versions"

    id: Mapped[uuid.UUID] = uuid_pk()
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id"))
    version: Mapped[int]
    config: Mapped[dict[str, Any]]
    changed_by: Mapped[uuid.UUID | None]
    changed_at: Mapped[datetime] = server_now()
    change_description: Mapped[str | None]
    tenant_id: Mapped[uuid.UUID | None]


class SavedAction(Base):
    """A reusable action (snooze, skip, escalate, script) run through a registered handler."""

    __tablename__ = "saved_actions"

    id: Mapped[uuid.UUID] = uuid_pk()
    action_id: Mapped[str]
    action_name: Mapped[str]
    action_type: Mapped[str]
    handler: Mapped[str | None]
    config: Mapped[dict[str, Any] | None]
    available_globally: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = server_now()
    tenant_id: Mapped[uuid.UUID | None]


class ChatBranch(Base):
    """A path a CSM can take from a step: fixed, saved_action, llm or rag."""

    __tablename__ = "workflow_chat_branches"

    id: Mapped[uuid.UUID] = uuid_pk()
    workflow_id: Mapped[str]
    from_step_id: Mapped[str]
    branch_id: Mapped[str]
    branch_label: Mapped[str]
    branch_type: Mapped[str]
    user_prompts: Mapped[list[str] | None] = mapped_column(ARRAY(String))
    response_text: Mapped[str | None]
    next_step_id: Mapped[str | None]
    saved_action_id: Mapped[str | None]
    llm_handler: Mapped[str | None]
    allow_off_script: Mapped[bool] = mapped_column(default=False)
    return_to_step: Mapped[str | None]
    created_at: Mapped[datetime] = server_now()
    tenant_id: Mapped[uuid.UUID | None]
    llm_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
