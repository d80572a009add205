"""The web console: static pages served by the service itself, and the dev-only demo sign-in."""

from __future__ import annotations

from litestar import Controller

from app.settings import Settings
from app.web.controller import ConsoleController
from app.web.dev_auth import DevAuthController

# Paths that answer without a bearer token (the handlers also carry `exclude_from_auth`).
PUBLIC_WEB_PATHS = ["^/$", "^/console/", "^/api/dev/"]


def web_route_handlers(settings: Settings) -> list[type[Controller]]:
    """The console's controllers; the demo sign-in exists only in dev mode."""
    handlers: list[type[Controller]] = [ConsoleController]
    if settings.dev_mode:
        handlers.append(DevAuthController)
    return handlers


__all__ = ["PUBLIC_WEB_PATHS", "ConsoleController", "DevAuthController", "web_route_handlers"]
