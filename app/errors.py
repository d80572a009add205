"""The application's small error tree; each maps to RFC 9457 problem details in one place."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error a client can act on; `status` and `title` become the problem details."""

    status: int = 500
    title: str = "Internal error"

    def __init__(
        self, detail: str, *, errors: list[Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class BadRequest(AppError):
    """The request is malformed."""

    status, title = 400, "Bad request"


class Unauthorized(AppError):
    """No valid credentials."""

    status, title = 401, "Unauthorized"


class Forbidden(AppError):
    """Valid credentials, but not allowed."""

    status, title = 403, "Forbidden"


class NotFound(AppError):
    """Missing, or another tenant's (indistinguishable on purpose)."""

    status, title = 404, "Not found"


class Conflict(AppError):
    """The request clashes with the current state."""

    status, title = 409, "Conflict"


class PayloadTooLarge(AppError):
    """The body exceeds a size limit."""

    status, title = 413, "Payload too large"


class Unprocessable(AppError):
    """Well-formed but invalid content (e.g. a workflow config failing validation)."""

    status, title = 422, "Unprocessable content"


class TooManyRequests(AppError):
    """A rate or budget limit refused the request."""

    status, title = 429, "Too many requests"


class BadGateway(AppError):
    """The model provider failed."""

    status, title = 502, "Bad gateway"


class ServiceUnavailable(AppError):
    """A dependency is down or not configured."""

    status, title = 503, "Service unavailable"
