"""HTTP endpoints of the knowledge base: ingest a document (admin) and search it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import JSONBody, QueryParameter
from litestar.response import Response

from app.auth.guards import admin_only
from app.deps import CurrentUser, DbSession
from app.errors import BadRequest, Unprocessable
from app.knowledge import repository
from app.knowledge.embedders import embedder_for
from app.knowledge.metering import price_book, search_in_tenant
from app.knowledge.schemas import (
    CreateDocument,
    DocumentEnvelope,
    DocumentOut,
    SearchResult,
    SearchResults,
)
from app.knowledge.search import ALL_CUSTOMERS, MAX_K, CustomerScope
from app.knowledge.service import ingest_document


class KnowledgeController(Controller):
    """Knowledge documents: ingestion and hybrid search, always within the caller's tenant."""

    path = "/api/knowledge"
    tags = ["knowledge"]

    @post("/documents", guards=[admin_only])
    async def create_document(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: CurrentUser,
        data: JSONBody[CreateDocument],
    ) -> Response[DocumentEnvelope]:
        """Chunk, embed and store a document: 201 when new, 200 when the content was known."""
        if data.customer_id is not None and not await repository.customer_exists(
            db_session, principal.tenant_id, data.customer_id
        ):
            raise Unprocessable(
                "customerId does not name a customer of your tenant",
                errors=[{"key": "customerId", "message": "unknown customer"}],
            )
        embedder = embedder_for(request.app.state)
        result = await ingest_document(
            db_session,
            embedder,
            tenant_id=principal.tenant_id,
            customer_id=data.customer_id,
            title=data.title,
            content=data.content,
            source=data.source,
            metadata={"ingestedBy": str(principal.user_id)},
            user_id=principal.user_id,
            prices=price_book(request.app.state),
        )
        body = DocumentEnvelope(
            document=DocumentOut(
                id=str(result.document_id),
                chunks=result.chunks,
                created=result.created,
                embedding_model=embedder.model,
            )
        )
        return Response(body, status_code=201 if result.created else 200)

    @get("/search")
    async def search(
        self,
        request: Request[Any, Any, Any],
        principal: CurrentUser,
        q: Annotated[str, QueryParameter(min_length=1, max_length=1000)],
        k: Annotated[int, QueryParameter(ge=1, le=MAX_K)] = 5,
        customer_id: Annotated[uuid.UUID | None, QueryParameter(name="customerId")] = None,
    ) -> SearchResults:
        """Hybrid search; without customerId every document of the tenant is in scope,
        with it the tenant's general documents and that customer's (as in its threads).

        No request session: the query is embedded before a connection is taken (it may be a
        paid network call), then searched in a tenant transaction of its own."""
        if not q.strip():
            raise BadRequest("q must contain something to search for")
        scope: CustomerScope = ALL_CUSTOMERS if customer_id is None else customer_id
        embedder = embedder_for(request.app.state)
        hits = await search_in_tenant(request.app.state.engine, embedder,
                                      tenant_id=principal.tenant_id, user_id=principal.user_id,
                                      query=q, k=k, customer=scope,
                                      prices=price_book(request.app.state))
        return SearchResults(
            results=[
                SearchResult(
                    chunk_id=str(h.chunk_id),
                    document_id=str(h.document_id),
                    title=h.title,
                    snippet=h.snippet,
                    score=h.score,
                    source=h.source,
                )
                for h in hits
            ],
            embedder=embedder.name,
        )
