"""Who is calling: decoded from the JWT, never from the request body."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Role = Literal["csm", "manager", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("csm", "manager", "analyst", "admin")


@dataclass(frozen=True)
class Principal:
    """The authenticated user of a request."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    email: str
