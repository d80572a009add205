"""RAG branch handler: answers grounded in the knowledge base, with citations."""

from __future__ import annotations

from handlers._llm_context import offered_in_preference_order, select_sections
from handlers.types import HandlerInputError, LlmHandlerInput, LlmSetup

# rag_search first: the model should search before it reaches for raw data.
PREFERRED_TOOLS = ("rag_search", "database_query")

GUIDANCE = (
    "Search the knowledge base with rag_search before answering, and answer only from the "
    "passages it returns and this customer's data. Cite every claim with the source document's "
    "title in square brackets, e.g. [Q3 business review]. If no passage supports an answer, say "
    "the knowledge base does not cover it; do not fill the gap from general knowledge."
)


def setup(inp: LlmHandlerInput) -> LlmSetup:
    """Shape a RAG thread: grounding and citation rules, rag_search first, low temperature."""
    tools = offered_in_preference_order(PREFERRED_TOOLS, inp.tools)
    if "rag_search" not in tools:
        # Grounding rules without a search tool would leave the model nothing to cite.
        raise HandlerInputError("the rag_search handler needs the rag_search tool to be offered")
    return LlmSetup(
        system_prompt_suffix=GUIDANCE,
        tools=tools,
        context_data=select_sections(inp.context_data),
        temperature=0.2,
    )
