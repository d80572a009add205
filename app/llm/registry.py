"""Model name → provider, and the per-app registry that creates each provider once."""

from __future__ import annotations

from collections.abc import Callable

from app.llm.anthropic_provider import AnthropicProvider
from app.llm.base import Provider, ProviderConfig
from app.llm.errors import ProviderUnavailable
from app.llm.local_provider import LocalProvider
from app.llm.openai_provider import OpenAIProvider

ProviderFactory = Callable[[ProviderConfig], Provider]

_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-")
_FORCED_PREFIXES = {"openai:": "openai", "anthropic:": "anthropic", "local:": "local"}


def provider_name_for_model(model: str) -> str:
    """The provider serving `model`; `openai:<name>` forces OpenAI (for compatible servers)."""
    for prefix, provider in _FORCED_PREFIXES.items():
        if model.startswith(prefix) and len(model) > len(prefix):
            return provider
    if model.startswith(_OPENAI_PREFIXES):
        return "openai"
    if model.startswith("claude-"):
        return "anthropic"
    if model.startswith("local"):
        return "local"
    raise ProviderUnavailable(f"no provider serves model {model!r}", retryable=False)


class ProviderRegistry:
    """Providers by name, each created once on first use and closed together."""

    def __init__(self, configs: dict[str, ProviderConfig]) -> None:
        self._configs = dict(configs)
        self._factories: dict[str, ProviderFactory] = {
            "openai": OpenAIProvider,
            "anthropic": AnthropicProvider,
            "local": LocalProvider,
        }
        self._instances: dict[str, Provider] = {}

    def register(self, name: str, factory: ProviderFactory) -> None:
        """Add or replace a provider factory (tests, plugins); drops a cached instance of it."""
        self._factories[name] = factory
        self._instances.pop(name, None)

    def get(self, model: str) -> Provider:
        """The provider for `model`, created on first use; `<registered name>:` prefixes win."""
        prefix, separator, _ = model.partition(":")
        if separator and prefix in self._factories:
            return self.get_by_name(prefix)
        return self.get_by_name(provider_name_for_model(model))

    def get_by_name(self, name: str) -> Provider:
        """The provider registered as `name`, created on first use."""
        if name not in self._instances:
            factory = self._factories.get(name)
            if factory is None:
                raise ProviderUnavailable(f"no provider named {name!r}", retryable=False)
            self._instances[name] = factory(self._configs.get(name, ProviderConfig()))
        return self._instances[name]

    async def aclose(self) -> None:
        """Close every provider created so far."""
        instances, self._instances = list(self._instances.values()), {}
        for provider in instances:
            await provider.aclose()
