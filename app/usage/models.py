"""The usage ledger: one row per provider call."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class LedgerRow(Base):
    """Tokens, latency and cost of one provider call, with who and what it served."""

    __tablename__ = "usage_ledger"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None]
    customer_id: Mapped[uuid.UUID | None]
    execution_id: Mapped[uuid.UUID | None]
    workflow_key: Mapped[str | None]
    step_id: Mapped[str | None]
    branch_type: Mapped[str | None]
    thread_id: Mapped[uuid.UUID | None]
    message_id: Mapped[uuid.UUID | None]
    call_kind: Mapped[str] = mapped_column(default="chat")
    provider: Mapped[str]
    model: Mapped[str]
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    reasoning_tokens: Mapped[int] = mapped_column(default=0)
    usage_source: Mapped[str]
    status: Mapped[str] = mapped_column(default="ok")
    latency_ms: Mapped[int | None]
    time_to_first_token_ms: Mapped[int | None]
    cost_usd: Mapped[Decimal] = mapped_column(default=Decimal(0))
    price_version: Mapped[str | None]
    prompt_breakdown: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tool_names: Mapped[list[str]] = mapped_column(ARRAY(String), default=list)
    created_at: Mapped[datetime] = server_now()
