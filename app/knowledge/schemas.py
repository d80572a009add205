"""Request and response shapes of the knowledge API (camelCase on the wire)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from msgspec import Meta


class Camel(msgspec.Struct, rename="camel", omit_defaults=False):
    """Base for wire structs: snake_case in Python, camelCase in JSON."""


class CreateDocument(Camel, forbid_unknown_fields=True):
    """POST /api/knowledge/documents."""

    title: Annotated[str, Meta(min_length=1, max_length=500)]
    content: Annotated[str, Meta(min_length=1, max_length=1_000_000)]
    source: Annotated[str, Meta(min_length=1, max_length=1000)]
    customer_id: uuid.UUID | None = None


class DocumentOut(Camel):
    """An ingested document: its id and how many chunks it has."""

    id: str
    chunks: int
    created: bool
    embedding_model: str


class DocumentEnvelope(Camel):
    """POST /api/knowledge/documents response."""

    document: DocumentOut


class SearchResult(Camel):
    """One retrieved chunk."""

    chunk_id: str
    document_id: str
    title: str
    snippet: str
    score: float
    source: str


class SearchResults(Camel):
    """GET /api/knowledge/search response."""

    results: list[SearchResult]
    embedder: str
