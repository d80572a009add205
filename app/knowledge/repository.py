"""Queries on knowledge documents and chunks; every one names its tenant explicitly.

They run on a tenant-scoped session of the runtime role (RLS applies as well) or on the owner's
connection when seeding and ingesting from the command line (RLS does not apply: the explicit
tenant filter is what scopes those).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

Executor = AsyncSession | AsyncConnection

# Same rule as ensure_embedding_index() in migration 0004; model names are inlined into SQL
# (a partial index is only used when its predicate is a literal), so they must be this plain.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
MAX_VECTOR_DIMS = 2000  # beyond this pgvector's HNSW needs halfvec (up to 4000)


@dataclass(frozen=True)
class StoredChunk:
    """What re-ingestion needs to know about a chunk already stored."""

    id: uuid.UUID
    chunk_index: int
    content: str
    embedding_model: str | None
    embedding_dims: int | None


def checked_model_name(model: str) -> str:
    """The model name, if it is safe to inline as a SQL literal; ValueError otherwise."""
    if not _MODEL_NAME.match(model):
        raise ValueError(f"invalid embedding model name {model!r}")
    return model


def vector_type(dims: int) -> str:
    """The pgvector type an embedding of `dims` dimensions is indexed and compared as."""
    if not 1 <= dims <= 4000:
        raise ValueError(f"embedding dimensions must be between 1 and 4000, got {dims}")
    return f"vector({dims})" if dims <= MAX_VECTOR_DIMS else f"halfvec({dims})"


def vector_literal(values: list[float]) -> str:
    """pgvector's text form of a vector."""
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


async def customer_exists(db: Executor, tenant_id: uuid.UUID, customer_id: uuid.UUID) -> bool:
    """True when the customer belongs to the tenant."""
    found = await db.execute(
        text("SELECT 1 FROM customers WHERE id = :c AND tenant_id = :t"),
        {"c": customer_id, "t": tenant_id},
    )
    return found.first() is not None


async def find_customer(db: Executor, tenant_id: uuid.UUID, key: str) -> uuid.UUID | None:
    """A customer of the tenant by id or external key (the seeds' and the CLI's `acme`)."""
    try:
        as_id: uuid.UUID | None = uuid.UUID(key)
    except ValueError:
        as_id = None
    row = await db.execute(
        text(
            "SELECT id FROM customers WHERE tenant_id = :t"
            " AND (external_key = :k OR (CAST(:id AS uuid) IS NOT NULL AND id = CAST(:id AS uuid)))"
        ),
        {"t": tenant_id, "k": key, "id": str(as_id) if as_id else None},
    )
    return row.scalar_one_or_none()


async def find_document(
    db: Executor, tenant_id: uuid.UUID, customer_id: uuid.UUID | None, content_hash: str
) -> uuid.UUID | None:
    """The document with this content in this scope (tenant, customer), if any."""
    row = await db.execute(
        text(
            "SELECT id FROM knowledge_documents WHERE tenant_id = :t"
            " AND customer_id IS NOT DISTINCT FROM CAST(:c AS uuid) AND content_hash = :h"
        ),
        {"t": tenant_id, "c": str(customer_id) if customer_id else None, "h": content_hash},
    )
    return row.scalar_one_or_none()


async def insert_document(db: Executor, values: dict[str, Any]) -> uuid.UUID | None:
    """Insert a document; None when the same content already exists in its scope."""
    row = await db.execute(
        text(
            "INSERT INTO knowledge_documents (tenant_id, customer_id, title, source, content,"
            " content_hash, metadata) VALUES (:tenant_id, :customer_id, :title, :source,"
            " :content, :content_hash, CAST(:metadata AS jsonb))"
            " ON CONFLICT ON CONSTRAINT knowledge_documents_content_key DO NOTHING RETURNING id"
        ),
        values,
    )
    return row.scalar_one_or_none()


async def list_chunks(
    db: Executor, tenant_id: uuid.UUID, document_id: uuid.UUID
) -> list[StoredChunk]:
    """A document's chunks in order."""
    rows = await db.execute(
        text(
            "SELECT id, chunk_index, content, embedding_model, embedding_dims"
            " FROM knowledge_chunks WHERE tenant_id = :t AND document_id = :d ORDER BY chunk_index"
        ),
        {"t": tenant_id, "d": document_id},
    )
    return [StoredChunk(*row) for row in rows.all()]


async def delete_chunks(db: Executor, tenant_id: uuid.UUID, document_id: uuid.UUID) -> None:
    """Remove a document's chunks (before they are rebuilt)."""
    await db.execute(
        text("DELETE FROM knowledge_chunks WHERE tenant_id = :t AND document_id = :d"),
        {"t": tenant_id, "d": document_id},
    )


async def insert_chunks(db: Executor, rows: list[dict[str, Any]]) -> None:
    """Insert chunks with their embeddings (given as pgvector text)."""
    if not rows:
        return
    await db.execute(
        text(
            "INSERT INTO knowledge_chunks (tenant_id, document_id, customer_id, chunk_index,"
            " content, token_count, embedding, embedding_model, embedding_dims)"
            " VALUES (:tenant_id, :document_id, :customer_id, :chunk_index, :content,"
            " :token_count, CAST(CAST(:embedding AS text) AS vector), :embedding_model,"
            " :embedding_dims)"
        ),
        rows,
    )


async def update_embeddings(db: Executor, tenant_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Replace chunks' embeddings (the embedder changed since they were stored)."""
    if not rows:
        return
    await db.execute(
        text(
            "UPDATE knowledge_chunks SET embedding = CAST(CAST(:embedding AS text) AS vector),"
            " embedding_model = :embedding_model, embedding_dims = :embedding_dims"
            " WHERE id = :id AND tenant_id = :tenant_id"
        ),
        [{**row, "tenant_id": tenant_id} for row in rows],
    )


async def ensure_embedding_index(db: Executor, model: str, dims: int) -> str:
    """Create the model's HNSW index if missing (as the schema owner); returns its name."""
    name = await db.execute(
        text("SELECT ensure_embedding_index(:m, :d)"), {"m": checked_model_name(model), "d": dims}
    )
    return str(name.scalar_one())
