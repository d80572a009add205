"""Issue and verify JWTs: HS256 with a configured (or generated dev) secret, or a JWKS URL."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from app.auth.principal import ROLES, Principal
from app.errors import Unauthorized
from app.settings import Settings

ALGORITHM = "HS256"
# A client sends the same token with every request; its signature is checked once, and until the
# token expires the verified principal is reused. Bounded, least recently used first out.
VERIFIED_TOKENS = 4096


def load_secret(settings: Settings) -> str:
    """The configured secret, else a dev secret generated once into the data folder."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.data_dir).expanduser() / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers and CLI commands may start together on a fresh folder: the secret is written
    # whole to a private file, then linked into place, which fails if another process won.
    draft = path.with_name(f".jwt-secret.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


class TokenCodec:
    """Encodes tokens for seeded users and decodes bearer tokens into principals."""

    def __init__(self, settings: Settings) -> None:
        self._secret = load_secret(settings)
        self._audience = settings.jwt_audience
        self._ttl = timedelta(hours=settings.token_ttl_hours)
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def encode(
        self,
        *,
        user_id: uuid.UUID,
        tenant_id: uuid.UUID,
        role: str,
        email: str,
        ttl: timedelta | None = None,
    ) -> str:
        """A signed HS256 token carrying the claims API.md names."""
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "tenant_id": str(tenant_id),
            "role": role,
            "email": email,
            "iat": now,
            "exp": now + (ttl or self._ttl),
        }
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> Principal:
        """Verify signature, expiry and claims; any failure is a 401."""
        known = self._verified.get(token)
        if known is not None:
            principal, expires_at = known
            if time.time() < expires_at:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]  # expired: verified again, and refused
        principal, expires_at = self._verify(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            if self._jwks is not None:
                key: Any = self._jwks.get_signing_key_from_jwt(token).key
                algorithms = ["RS256", "ES256"]
            else:
                key, algorithms = self._secret, [ALGORITHM]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": bool(self._audience)},
            )
            role = claims["role"]
            if role not in ROLES:
                raise Unauthorized("token has an unknown role")
            return Principal(
                user_id=uuid.UUID(claims["sub"]),
                tenant_id=uuid.UUID(claims["tenant_id"]),
                role=role,
                email=str(claims.get("email", "")),
            ), float(claims["exp"])
        except Unauthorized:
            raise
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc
