"""Serves the console: `/` is the page, `/console/*` its scripts and styles, under a strict CSP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from litestar import Controller, Response, get
from litestar.params import FromPath

from app.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"

# Model output is untrusted: even if markup slipped through the renderer, nothing inline runs,
# nothing outside this origin loads, and the page cannot be framed. Charts are fetched with the
# bearer token and shown as blob: URLs, hence `blob:` in img-src.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The page is small and changes with the code; always revalidate.
    "Cache-Control": "no-cache",
}

MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def resolve_static(relative: str) -> Path:
    """The file under STATIC_DIR that `relative` names; NotFound for anything else."""
    root = STATIC_DIR.resolve()
    candidate = (root / relative.lstrip("/")).resolve()
    if not candidate.is_relative_to(root) or candidate.suffix not in MEDIA_TYPES \
            or not candidate.is_file():
        raise NotFound(f"no console file '{relative}'")
    return candidate


async def static_response(relative: str) -> Response[bytes]:
    """A console file with the security headers."""
    path = resolve_static(relative)
    body = await asyncio.to_thread(path.read_bytes)
    return Response(body, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


class ConsoleController(Controller):
    """The CSM and analyst console (no build step: ES modules served as they are)."""

    path = "/"
    tags = ["console"]
    include_in_schema = False
    opt = {"exclude_from_auth": True}

    @get("/")
    async def index(self) -> Response[bytes]:
        """The console page; it signs in and calls the API itself."""
        return await static_response("index.html")

    @get("/console/{file_path:path}")
    async def asset(self, file_path: FromPath[str]) -> Response[bytes]:
        """A script, stylesheet or image of the console."""
        return await static_response(file_path)
