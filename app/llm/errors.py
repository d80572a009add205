"""The provider layer's own errors; SDK exceptions are translated into these at the boundary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.llm.base import Usage

# Statuses worth another attempt: the request itself was fine, the service was not.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


class ProviderError(Exception):
    """A provider call failed; says whether a retry may help and whether content was sent."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        after_content: bool = False,
        partial_usage: Usage | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        # Set by the retry loop, which is the one place that knows what reached the caller.
        self.after_content = after_content
        self.partial_usage = partial_usage
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, retryable={self.retryable}, "
            f"after_content={self.after_content}, status={self.status})"
        )


class ProviderTimeout(ProviderError):
    """Connect, read or total deadline passed."""


class ProviderUnavailable(ProviderError):
    """The provider cannot be used as configured: no key, rejected key, unknown model."""


class ProviderRateLimited(ProviderError):
    """The provider answered 429."""


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None
) -> ProviderError:
    """The app error for an HTTP status the provider answered with."""
    if status == 429:
        return ProviderRateLimited(message, retryable=True, status=status, retry_after=retry_after)
    if status in (401, 403):
        return ProviderUnavailable(message, retryable=False, status=status)
    return ProviderError(
        message, retryable=status in RETRYABLE_STATUSES, status=status, retry_after=retry_after
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; HTTP dates are ignored."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def transport_error_types() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(timeout errors, other transport errors) of the HTTP libraries the SDKs may use.

    Recent SDKs run on `httpx2`, older ones on `httpx`; an SDK can let these escape while a
    stream is being read, so both are caught at the provider boundary.
    """
    timeouts: list[type[Exception]] = []
    transport: list[type[Exception]] = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
        transport.append(module.StreamError)
    try:  # the aiohttp transport maps its errors to httpx's; these are the ones it may miss
        import aiohttp
    except ImportError:
        pass
    else:
        timeouts.append(aiohttp.ServerTimeoutError)
        transport.append(aiohttp.ClientError)
    return tuple(timeouts), tuple(transport)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then each exception it was raised from (`raise ... from`), innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def connection_failure_behind(exc: BaseException) -> BaseException | None:
    """The connection failure (a server hanging up, a refused connection) behind an error
    reported as a timeout, or None when it was a timeout.

    The OpenAI SDK's aiohttp transport maps every aiohttp connection error to a connect
    timeout; the aiohttp error it was raised from says what happened.
    """
    try:
        import aiohttp
    except ImportError:
        return None
    for cause in _causes(exc):
        if isinstance(cause, aiohttp.ClientConnectionError):
            timed_out = isinstance(cause, asyncio.TimeoutError) or isinstance(
                getattr(cause, "os_error", None), TimeoutError)  # the kernel's ETIMEDOUT
            return None if timed_out else cause
    return None


def innermost_reason(exc: BaseException) -> str:
    """The text of the error at the bottom of `exc`'s causes ("Server disconnected"), else its own.

    The SDKs wrap transport errors in generic ones ("Connection error."); the user is better told
    what the connection did.
    """
    reason = ""
    for cause in _causes(exc):
        reason = str(cause) or reason
    return reason
