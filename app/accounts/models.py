"""Tenants and their users."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Tenant(Base):
    """A customer-success organisation; every tenant-owned row points at one."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = uuid_pk()
    slug: Mapped[str]
    name: Mapped[str]
    company: Mapped[dict[str, Any]] = mapped_column(default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = server_now()


class User(Base):
    """A person who signs in: csm, manager, analyst or admin of one tenant."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    email: Mapped[str]
    name: Mapped[str]
    role: Mapped[str]
    manager_email: Mapped[str | None]
    created_at: Mapped[datetime] = server_now()
