"""Threads, messages, LLM context and tool calls (the spec's tables 5-8), runs and their events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, server_now, uuid_pk


class Thread(Base):
    """A multi-turn conversation opened from a workflow step."""

    __tablename__ = "workflow_chat_threads"

    id: Mapped[uuid.UUID] = uuid_pk()
    workflow_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflow_executions.id")
    )
    step_id: Mapped[str]
    thread_type: Mapped[str]
    started_by: Mapped[uuid.UUID | None]
    started_at: Mapped[datetime] = server_now()
    ended_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(default="active")
    return_to_step: Mapped[str | None]
    total_messages: Mapped[int] = mapped_column(default=0)
    total_tokens: Mapped[int] = mapped_column(default=0)
    tenant_id: Mapped[uuid.UUID]
    customer_id: Mapped[uuid.UUID | None]
    branch_id: Mapped[str | None]
    last_sequence_number: Mapped[int] = mapped_column(default=0)


class Message(Base):
    """One message of a thread; an assistant message records the tokens that produced it."""

    __tablename__ = "workflow_chat_messages"

    id: Mapped[uuid.UUID] = uuid_pk()
    thread_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_chat_threads.id"))
    role: Mapped[str]
    content: Mapped[str]
    message_type: Mapped[str] = mapped_column(default="text")
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    tokens_used: Mapped[int | None]
    created_at: Mapped[datetime] = server_now()
    sequence_number: Mapped[int]
    tenant_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(default="complete")


class LlmContext(Base):
    """The model configuration and context snapshot of a thread."""

    __tablename__ = "workflow_llm_context"

    id: Mapped[uuid.UUID] = uuid_pk()
    thread_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_chat_threads.id"))
    system_prompt: Mapped[str]
    tools_available: Mapped[list[str] | None] = mapped_column(ARRAY(String))
    context_data: Mapped[dict[str, Any]]
    model_used: Mapped[str | None]
    temperature: Mapped[float | None]
    max_tokens: Mapped[int | None]
    total_tokens_used: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = server_now()
    updated_at: Mapped[datetime] = server_now()
    tenant_id: Mapped[uuid.UUID]
    context_as_of: Mapped[datetime] = server_now()
    provider: Mapped[str | None]


class ToolCallRecord(Base):
    """One tool execution requested by the model."""

    __tablename__ = "workflow_llm_tool_calls"

    id: Mapped[uuid.UUID] = uuid_pk()
    thread_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_chat_threads.id"))
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workflow_chat_messages.id"))
    tool_name: Mapped[str]
    tool_input: Mapped[dict[str, Any]]
    tool_output: Mapped[dict[str, Any] | None]
    success: Mapped[bool | None]
    error_message: Mapped[str | None]
    created_at: Mapped[datetime] = server_now()
    tenant_id: Mapped[uuid.UUID]
    provider_call_id: Mapped[str | None]
    latency_ms: Mapped[int | None]


class Run(Base):
    """The production of one assistant reply, independent of any HTTP connection."""

    __tablename__ = "thread_runs"

    id: Mapped[uuid.UUID] = uuid_pk()
    tenant_id: Mapped[uuid.UUID]
    thread_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_chat_threads.id"))
    user_message_id: Mapped[uuid.UUID | None]
    assistant_message_id: Mapped[uuid.UUID | None]
    user_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(default="queued")
    stop_requested: Mapped[bool] = mapped_column(default=False)
    worker_id: Mapped[str | None]
    heartbeat_at: Mapped[datetime] = server_now()
    last_event_seq: Mapped[int] = mapped_column(default=0)
    error_message: Mapped[str | None]
    created_at: Mapped[datetime] = server_now()
    finished_at: Mapped[datetime | None]
