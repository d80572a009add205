"""Types passed into and out of branch handlers: handlers return intents, never touch the DB."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

ProcessorResult = dict[str, Any]
"""Values a processor returns; the caller merges them into ``template_context["analysis"]``."""


class HandlerInputError(ValueError):
    """A handler was given configuration or input it cannot act on (maps to HTTP 422)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext:
    """Everything a saved action may read: execution, step, action config, template context."""

    execution_id: str
    workflow_id: str
    step_id: str
    step: dict[str, Any]
    steps: list[dict[str, Any]]
    action_config: dict[str, Any]
    template_context: dict[str, Any]
    now: datetime
    actor_email: str

    def __post_init__(self) -> None:
        """Refuse a naive clock: snooze deadlines are stored as absolute UTC instants."""
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise HandlerInputError("ActionContext.now must be timezone-aware")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResult:
    """What a saved action asks the execution service to do; the service applies it."""

    result: dict[str, Any]
    next_step_id: str | None = None
    """Step to move to; None keeps the execution on its current step (unless ``completed``)."""
    completed: bool = False
    """True when the action finished the workflow (skip at the last step)."""
    snoozed_until: datetime | None = None
    pause: bool = False
    fired_actions: list[str] = field(default_factory=list)
    """Action names whose action-triggered notifications must fire, e.g. ``["escalate"]``."""
    escalation: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmHandlerInput:
    """What an LLM/RAG branch handler sees when a thread is opened."""

    branch_type: Literal["llm", "rag"]
    system_prompt: str
    context_data: dict[str, Any]
    tools: list[str]
    """Names of the tools the service can offer this thread; a handler may only narrow them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmSetup:
    """How a handler shapes a thread: prompt suffix, tools by preference, context, sampling."""

    system_prompt_suffix: str
    tools: list[str]
    context_data: dict[str, Any]
    temperature: float | None = None
    max_tokens: int | None = None
