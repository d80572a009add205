"""Open a thread and its LLM context; model settings: branch, then workflow, tenant, service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.models import LlmContext, Thread
from app.llm.registry import provider_name_for_model
from app.settings import Settings


@dataclass(frozen=True)
class ModelSettings:
    """Model, temperature and max tokens of a thread."""

    model: str
    temperature: float
    max_tokens: int

    @property
    def provider(self) -> str:
        """The provider serving the model."""
        try:
            return provider_name_for_model(self.model)
        except Exception:
            return self.model.split(":", 1)[0]


def resolve_model_settings(settings: Settings, *layers: dict[str, Any] | None) -> ModelSettings:
    """The first layer that names each value wins (branch, workflow, tenant), else the service's."""

    def pick(key: str, default: Any) -> Any:
        for layer in layers:
            if layer and layer.get(key) is not None:
                return layer[key]
        return default

    return ModelSettings(
        model=str(pick("model", settings.default_model)),
        temperature=float(pick("temperature", settings.default_temperature)),
        max_tokens=int(pick("maxTokens", settings.default_max_tokens)),
    )


async def open_thread(session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID | None,
                      execution_id: uuid.UUID | None, customer_id: uuid.UUID | None,
                      step_id: str, thread_type: str, return_to_step: str | None,
                      branch_id: str | None, system_prompt: str, context_data: dict[str, Any],
                      tools: list[str], model: ModelSettings) -> Thread:
    """Create an active thread and its LLM context (with the as-of time of its data)."""
    thread = Thread(workflow_execution_id=execution_id, step_id=step_id, thread_type=thread_type,
                    started_by=user_id, status="active", return_to_step=return_to_step,
                    tenant_id=tenant_id, customer_id=customer_id, branch_id=branch_id,
                    total_messages=0, total_tokens=0, last_sequence_number=0)
    session.add(thread)
    await session.flush()
    session.add(LlmContext(
        thread_id=thread.id, system_prompt=system_prompt, tools_available=tools,
        context_data=context_data, model_used=model.model, temperature=model.temperature,
        max_tokens=model.max_tokens, total_tokens_used=0, tenant_id=tenant_id,
        context_as_of=datetime.now(UTC), provider=model.provider))
    await session.flush()
    return thread
