"""Map every exception to RFC 9457 problem details (`application/problem+json`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import sqlalchemy.exc
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


# The database is away (restarting, shutting down, its socket gone), or ended the session (a
# crashed backend's restart, an idle timeout): not the request at fault. Not all of SQLSTATE
# class 57: a statement timeout (57014) is the request's own.
_UNAVAILABLE = (asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError,
                asyncpg.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
                asyncpg.exceptions.IdleSessionTimeoutError,
                asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
                sqlalchemy.exc.TimeoutError, ConnectionError, FileNotFoundError, TimeoutError)


def _error_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: SQLAlchemy's `orig` first, else its cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (
            current.__cause__ or current.__context__)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached right now (a retry may succeed)."""
    for current in _error_chain(exc):
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE) and (
                not isinstance(current, OSError | TimeoutError) or _raised_by_driver(current)):
            return True
        if _connection_gone(current):
            return True
    return False


def rolled_back_by_server(exc: BaseException) -> bool:
    """True when the server rolled the transaction back to let others on: a deadlock (40P01)
    or a serialization failure (40001). Running it again is the prescribed answer."""
    return any(getattr(current, "sqlstate", None) in ("40001", "40P01")
               for current in _error_chain(exc))


def _connection_gone(exc: BaseException) -> bool:
    """asyncpg's own words for a connection that is gone (connection.py, protocol/*.pyx).

    By exact class: a subclass such as DataError can quote a caller's value, and asyncpg's
    other internal errors are bugs, not outages.
    """
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    if type(exc) is asyncpg.InterfaceError:
        return message in ("connection is closed", "cannot perform operation: connection is closed")
    if type(exc) is asyncpg.InternalClientError:
        # "failed": connection_lost() has run. State 2 (ERROR_CONSUME) with nothing running: an
        # error arrived unasked, which the server only sends as it ends the session.
        return message == "not connected" or message.endswith(
            ('protocol is in the "failed" state', "another operation (2) is in progress"))
    return False


def _raised_by_driver(exc: BaseException) -> bool:
    """An OS-level error raised while the driver connected (not, say, a missing chart file)."""
    tb = exc.__traceback__
    while tb is not None:
        if "asyncpg" in tb.tb_frame.f_code.co_filename or "sqlalchemy/pool" in \
                tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _unavailable(request: Request[Any, Any, Any]) -> Response[Any]:
    log.warning("database unavailable on %s", request.url.path)
    return problem(503, "Service unavailable",
                   "the database is briefly unavailable; retry in a moment",
                   instance=request.url.path, headers={"retry-after": "1"})


def _db_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if database_unavailable(exc):
        return _unavailable(request)
    if rolled_back_by_server(exc):  # whole transaction undone: the same request may succeed
        log.warning("transaction rolled back by the server on %s: %s", request.url.path,
                    getattr(exc, "sqlstate", None) or type(exc).__name__)
        return problem(503, "Service unavailable",
                       "the request met a concurrent change and was rolled back; nothing of it"
                       " was applied, so it can be sent again", instance=request.url.path,
                       headers={"retry-after": "1"})
    # Never echo SQL or driver text to clients; it can carry other rows' data.
    log.exception("database error on %s", request.url.path)
    return problem(
        500,
        "Database error",
        "the database could not complete the request",
        instance=request.url.path,
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if database_unavailable(exc):
        return _unavailable(request)
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
    # What SQLAlchemy's asyncpg dialect wraps in a DBAPIError, raised bare on the driver path.
    asyncpg.PostgresError: _db_error,
    asyncpg.InterfaceError: _db_error,
    asyncpg.InternalClientError: _db_error,
    Exception: _unexpected,
}
