"""Executions and the notifications they fired."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Execution(Base):
    """One customer's run through a workflow."""

    __tablename__ = "workflow_executions"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID]
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id"))
    workflow_key: Mapped[str]
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    current_step_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(default="active")
    snoozed_until: Mapped[datetime | None]
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = server_now()
    updated_at: Mapped[datetime] = server_now()
    completed_at: Mapped[datetime | None]


class NotificationLog(Base):
    """A notification rendered and fired for an execution."""

    __tablename__ = "notifications_log"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID]
    execution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_executions.id"))
    step_id: Mapped[str]
    notification_id: Mapped[str | None]
    type: Mapped[str]
    title: Mapped[str]
    message: Mapped[str | None]
    recipients: Mapped[list[str]] = mapped_column(ARRAY(String), default=list)
    priority: Mapped[str | None]
    fired_by: Mapped[str] = mapped_column(default="step_entry")
    action: Mapped[str | None]
    created_at: Mapped[datetime] = server_now()
