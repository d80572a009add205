"""Declarative base shared by every slice's models (the schema itself lives in migrations/)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base class of all ORM models."""

    metadata = MetaData()
    type_annotation_map = {
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


def uuid_pk() -> Mapped[uuid.UUID]:
    """A server-generated UUID primary key."""
    return mapped_column(primary_key=True, server_default=func.gen_random_uuid())


def server_now() -> Mapped[datetime]:
    """A creation timestamp filled in by the server."""
    return mapped_column(server_default=func.now())
