"""The `rag_search` tool: hybrid search of the caller's knowledge base, with citations."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.knowledge.embedders import embedder_for
from app.knowledge.metering import price_book, search_in_tenant
from app.knowledge.search import MAX_K, SearchHit
from app.llm.errors import ProviderError
from tools.base import Tool, ToolContext, ToolError, ToolResult

log = logging.getLogger("chatbranch.knowledge")


class RagSearchInput(msgspec.Struct, forbid_unknown_fields=True):
    """Input of rag_search."""

    query: Annotated[str, Meta(min_length=1, max_length=1000, description="What to look up")]
    k: Annotated[int, Meta(ge=1, le=MAX_K, description="How many passages to return")] = 5


def citation(hit: SearchHit) -> dict[str, Any]:
    """How a reply cites one passage (streamed as a source-document part, kept in metadata)."""
    return {
        "chunkId": str(hit.chunk_id),
        "documentId": str(hit.document_id),
        "title": hit.title,
        "snippet": hit.snippet,
        "score": hit.score,
        "source": hit.source,
    }


DESCRIPTION = (
    "Search the knowledge base (renewal playbooks, pricing and escalation policies, account "
    "notes) for passages that answer a question. Returns the k best passages with their title "
    "and source; quote them and cite the title."
)


async def rag_search(context: ToolContext, data: RagSearchInput) -> ToolResult:
    """Run one hybrid search in the caller's tenant (and the thread's customer)."""
    services = context.services
    engine = getattr(services, "engine", None)
    if engine is None:
        raise ToolError("the knowledge base is not available here")
    if not data.query.strip():
        raise ToolError("query must not be blank")
    embedder = embedder_for(services)
    # A customer's thread sees the tenant's general documents and that customer's only;
    # a thread without a customer sees the general documents. A paid query embedding is the
    # tenant's spend, on the ledger without the thread (whose totals count its replies only).
    try:
        hits = await search_in_tenant(
            engine,
            embedder,
            tenant_id=context.tenant_id,
            user_id=context.user_id,
            query=data.query,
            k=data.k,
            customer=context.customer_id,
            prices=price_book(services),
        )
    except ProviderError as exc:
        # A failed tool call the model can answer around, not a failed reply; the provider's
        # own words (which may echo a key's tail) stay in the log.
        log.warning("rag_search: the embedding call failed: %s", exc)
        raise ToolError("the knowledge base cannot search right now (embedding failed)") from exc
    # The model gets each passage whole (chunks are at most ~200 tokens); citations keep
    # the snippet only.
    results = [{**citation(hit), "content": hit.content} for hit in hits]
    sources: dict[str, dict[str, Any]] = {}
    for hit in hits:
        sources.setdefault(
            str(hit.document_id),
            {"documentId": str(hit.document_id), "title": hit.title, "source": hit.source},
        )
    return ToolResult(
        output={"results": results, "sources": list(sources.values())},
        citations=[citation(hit) for hit in hits],
    )


TOOL = Tool(
    name="rag_search",
    description=DESCRIPTION,
    input_type=RagSearchInput,
    run=rag_search,
    # The local model loads in seconds on first use when it was not warmed at start-up.
    timeout_s=30.0,
)
