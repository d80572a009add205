"""LLM providers behind one interface: openai, anthropic and an offline local model."""

from app.llm.base import (
    ChatMessage,
    ChatRequest,
    Finish,
    Provider,
    ProviderConfig,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolSpec,
    Usage,
)
from app.llm.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from app.llm.registry import ProviderRegistry, provider_name_for_model

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Finish",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRegistry",
    "ProviderTimeout",
    "ProviderUnavailable",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallReady",
    "ToolSpec",
    "Usage",
    "provider_name_for_model",
]
