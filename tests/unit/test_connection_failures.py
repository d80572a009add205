"""What an SDK reports as a timeout is told apart from a connection the server closed."""

from types import SimpleNamespace

import aiohttp
import httpx2
import openai
import pytest

from app.llm.errors import ProviderTimeout, connection_failure_behind
from app.llm.openai_provider import translate_openai_error


def reported_as_timeout(cause: BaseException) -> openai.APITimeoutError:
    """The chain the OpenAI SDK's aiohttp transport builds: SDK error <- httpx <- aiohttp."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    try:
        try:
            raise httpx2.ConnectTimeout(str(cause)) from cause
        except httpx2.ConnectTimeout as mapped:
            raise openai.APITimeoutError(request=request) from mapped
    except openai.APITimeoutError as reported:
        return reported


def test_a_server_closing_the_connection_is_a_connection_failure() -> None:
    error = translate_openai_error(reported_as_timeout(
        aiohttp.ServerDisconnectedError("Server disconnected")))
    assert not isinstance(error, ProviderTimeout)
    assert error.message == "openai: connection failed (Server disconnected)"
    assert error.retryable


@pytest.mark.parametrize("cause", [
    aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    aiohttp.ConnectionTimeoutError("Connection timeout to host"),
    aiohttp.ClientConnectorError(SimpleNamespace(host="10.0.0.1", port=443, ssl=True),
                                 TimeoutError(110, "Connection timed out")),  # ETIMEDOUT
])
def test_real_timeouts_stay_timeouts(cause) -> None:
    assert connection_failure_behind(reported_as_timeout(cause)) is None
    assert isinstance(translate_openai_error(reported_as_timeout(cause)), ProviderTimeout)
