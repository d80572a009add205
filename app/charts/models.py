"""The stored chart: its spec, its data and both renderings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Mapped, deferred, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Chart(Base):
    """One chart a tool created; immutable once written."""

    __tablename__ = "charts"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID]
    thread_id: Mapped[uuid.UUID | None]
    tool_call_id: Mapped[uuid.UUID | None]
    chart_type: Mapped[str]
    title: Mapped[str]
    data: Mapped[dict[str, Any]]
    spec: Mapped[dict[str, Any]]
    # The renderings are large and each request needs one of them at most.
    svg: Mapped[str] = deferred(mapped_column())
    png: Mapped[bytes] = deferred(mapped_column())
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = server_now()
