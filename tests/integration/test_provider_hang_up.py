"""Both providers, on their real SDKs, against a server that reads each request and closes the
connection without answering: a lost connection (retried), not a timeout."""

from __future__ import annotations

import time

import pytest

from app.llm.anthropic_provider import AnthropicProvider
from app.llm.base import ChatMessage, ChatRequest, ProviderConfig
from app.llm.errors import ProviderError, ProviderTimeout
from app.llm.openai_provider import OpenAIProvider
from tests.fakes.hang_up import hanging_up_server


async def first_event(provider, model: str) -> None:
    async for _ in provider.stream(ChatRequest(model=model,
                                               messages=[ChatMessage("user", "Hello")])):
        pytest.fail("the server never answered")


@pytest.mark.parametrize(("provider_class", "path", "model"), [
    (OpenAIProvider, "/v1", "gpt-4o-mini"),
    (AnthropicProvider, "", "claude-test-1"),
])
async def test_a_server_hanging_up_unanswered_is_a_lost_connection_not_a_timeout(
        provider_class, path, model) -> None:
    async with hanging_up_server() as server:
        provider = provider_class(ProviderConfig(
            api_key="test-key", base_url=server.url + path, read_timeout=0.5,
            connect_timeout=1.0, total_timeout=10.0, max_retries=1, retry_backoff_s=0.01))
        started = time.monotonic()
        try:
            with pytest.raises(ProviderError) as failed:
                await first_event(provider, model)
        finally:
            await provider.aclose()

    error = failed.value
    assert not isinstance(error, ProviderTimeout)
    assert "disconnected" in str(error).lower() and "timed out" not in str(error)
    assert error.retryable is True and error.after_content is False
    assert server.count == 2  # retried once, as configured
    assert time.monotonic() - started < 1.0  # no timeout was waited for
