"""Map every exception to RFC 9457 problem details (`application/problem+json`)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import DBAPIError

from app.errors import AppError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

_TYPE_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "unprocessable-content",
    429: "too-many-requests",
    500: "internal-error",
    502: "bad-gateway",
    503: "service-unavailable",
}
_TITLES = {405: "Method not allowed", 415: "Unsupported media type", 500: "Internal error"}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[Any] | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """A problem-details response."""
    body: dict[str, Any] = {
        "type": f"https://chatbranch.dev/problems/{_TYPE_SLUGS.get(status, 'error')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if instance:
        body["instance"] = instance
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        errors=exc.errors,
        instance=request.url.path,
        headers=exc.headers,
    )


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = exc.extra if isinstance(exc.extra, list) else None
    return problem(
        400,
        "Bad request",
        exc.detail or "invalid request",
        errors=errors,
        instance=request.url.path,
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    title = _TITLES.get(status) or _TYPE_SLUGS.get(status, "error").replace("-", " ").capitalize()
    detail = exc.detail if status < 500 else "the server could not complete the request"
    return problem(status, title, detail, instance=request.url.path, headers=exc.headers)


def _db_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    # Never echo SQL or driver text to clients; it can carry other rows' data.
    log.exception("database error on %s", request.url.path)
    return problem(
        503 if exc.connection_invalidated else 500,
        "Database error",
        "the database could not complete the request",
        instance=request.url.path,
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s", request.url.path)
    return problem(
        500,
        "Internal error",
        "the server could not complete the request",
        instance=request.url.path,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    AppError: _app_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    DBAPIError: _db_error,
    Exception: _unexpected,
}
