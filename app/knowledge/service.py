"""Ingestion rules: hash, chunk, embed and store a document; the same content twice is a no-op."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from app.db.driver import driver_of
from app.errors import Unprocessable
from app.knowledge import repository
from app.knowledge.chunking import Chunk, chunk_text
from app.knowledge.embedders import Embedder
from app.knowledge.metering import EmbeddingMeter
from app.knowledge.repository import Executor, StoredChunk
from app.usage.pricing import PriceBook

log = logging.getLogger("chatbranch.knowledge")

MAX_CONTENT_CHARS = 1_000_000
EMBED_BATCH = 64  # bounds the memory of one embed call on a very long document


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion did."""

    document_id: uuid.UUID
    chunks: int
    created: bool  # a new document row was written
    embedded: int  # chunks written or re-embedded; 0 when nothing changed

    @property
    def changed(self) -> bool:
        """True when anything was written."""
        return self.created or self.embedded > 0


def content_hash(content: str) -> str:
    """The document's identity within its scope: sha256 of its (stripped) content."""
    return hashlib.sha256(content.encode()).hexdigest()


async def ingest_document(
    db: Executor,
    embedder: Embedder,
    *,
    tenant_id: uuid.UUID,
    title: str,
    content: str,
    source: str,
    customer_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
    user_id: uuid.UUID | None = None,
    prices: PriceBook | None = None,
) -> IngestResult:
    """Store a document with its embedded chunks in the caller's transaction.

    Idempotent: the same content for the same tenant and customer is one document; ingesting it
    again writes nothing, unless its chunks were never built, were built by another chunker
    version (rebuilt) or embedded by another model (re-embedded with the current one).
    Everything is embedded before anything is written, so a failing embedder writes nothing.
    Each paid embedding call gets a ledger row (tenant, `user_id`, customer) in the same
    transaction.
    """
    meter = EmbeddingMeter(embedder)
    result = await _ingest(db, meter, tenant_id=tenant_id, title=title, content=content,
                           source=source, customer_id=customer_id, metadata=metadata)
    if meter.calls:
        await meter.record(await driver_of(db), tenant_id=tenant_id, user_id=user_id,
                           customer_id=customer_id, prices=prices)
    return result


async def _ingest(
    db: Executor,
    embedder: Embedder,
    *,
    tenant_id: uuid.UUID,
    title: str,
    content: str,
    source: str,
    customer_id: uuid.UUID | None,
    metadata: dict[str, Any] | None,
) -> IngestResult:
    content = content.strip()
    title, source = title.strip(), source.strip()
    _validate(title, content, source)
    digest = content_hash(content)
    chunks = chunk_text(content)
    existing = await repository.find_document(db, tenant_id, customer_id, digest)
    if existing is not None:
        return await _refresh(db, embedder, tenant_id, customer_id, existing, chunks)
    vectors = await _embed(embedder, [c.content for c in chunks])
    await repository.ensure_embedding_index(db, embedder.model, embedder.dims)
    document_id = await repository.insert_document(
        db,
        {
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "title": title,
            "source": source,
            "content": content,
            "content_hash": digest,
            "metadata": json.dumps(metadata or {}),
        },
    )
    if document_id is None:
        # Another transaction stored the same content meanwhile; theirs stands.
        raced = await repository.find_document(db, tenant_id, customer_id, digest)
        assert raced is not None
        return IngestResult(raced, len(chunks), created=False, embedded=0)
    await repository.insert_chunks(
        db, _chunk_rows(tenant_id, document_id, customer_id, chunks, vectors, embedder)
    )
    log.info("ingested %s: %d chunks (%s)", source, len(chunks), embedder.model)
    return IngestResult(document_id, len(chunks), created=True, embedded=len(chunks))


async def _refresh(
    db: Executor,
    embedder: Embedder,
    tenant_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    document_id: uuid.UUID,
    chunks: list[Chunk],
) -> IngestResult:
    stored = await repository.list_chunks(db, tenant_id, document_id)
    if [s.content for s in stored] != [c.content for c in chunks]:
        vectors = await _embed(embedder, [c.content for c in chunks])
        await repository.ensure_embedding_index(db, embedder.model, embedder.dims)
        await repository.delete_chunks(db, tenant_id, document_id)
        await repository.insert_chunks(
            db, _chunk_rows(tenant_id, document_id, customer_id, chunks, vectors, embedder)
        )
        return IngestResult(document_id, len(chunks), created=False, embedded=len(chunks))
    stale = [s for s in stored if not _embedded_by(s, embedder)]
    if not stale:
        return IngestResult(document_id, len(stored), created=False, embedded=0)
    vectors = await _embed(embedder, [s.content for s in stale])
    await repository.ensure_embedding_index(db, embedder.model, embedder.dims)
    await repository.update_embeddings(
        db,
        tenant_id,
        [
            {
                "id": s.id,
                "embedding": repository.vector_literal(v),
                "embedding_model": embedder.model,
                "embedding_dims": embedder.dims,
            }
            for s, v in zip(stale, vectors, strict=True)
        ],
    )
    return IngestResult(document_id, len(stored), created=False, embedded=len(stale))


def _embedded_by(chunk: StoredChunk, embedder: Embedder) -> bool:
    return chunk.embedding_model == embedder.model and chunk.embedding_dims == embedder.dims


async def _embed(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBED_BATCH):
        vectors += await embedder.embed(texts[start : start + EMBED_BATCH])
    if len(vectors) != len(texts) or any(len(v) != embedder.dims for v in vectors):
        raise RuntimeError(f"embedder {embedder.model} returned vectors of the wrong shape")
    return vectors


def _chunk_rows(
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    chunks: list[Chunk],
    vectors: list[list[float]],
    embedder: Embedder,
) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": tenant_id,
            "document_id": document_id,
            # Denormalised from the document so that search filters chunks without a join.
            "customer_id": customer_id,
            "chunk_index": chunk.index,
            "content": chunk.content,
            "token_count": chunk.token_count,
            "embedding": repository.vector_literal(vector),
            "embedding_model": embedder.model,
            "embedding_dims": embedder.dims,
        }
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


def _validate(title: str, content: str, source: str) -> None:
    errors = []
    if not title or len(title) > 500:
        errors.append({"key": "title", "message": "must be 1 to 500 characters"})
    if not source or len(source) > 1000:
        errors.append({"key": "source", "message": "must be 1 to 1000 characters"})
    if not content:
        errors.append({"key": "content", "message": "must not be empty"})
    elif len(content) > MAX_CONTENT_CHARS:
        limit = f"must be at most {MAX_CONTENT_CHARS} characters"
        errors.append({"key": "content", "message": limit})
    if errors:
        raise Unprocessable("the document is invalid", errors=errors)
