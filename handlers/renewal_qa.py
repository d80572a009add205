"""LLM branch handler: answer renewal questions from this customer's own data."""

from __future__ import annotations

from handlers._llm_context import offered_in_preference_order, select_sections
from handlers.types import LlmHandlerInput, LlmSetup

PREFERRED_TOOLS = ("database_query", "create_chart")

GUIDANCE = (
    "Answer questions about this customer's renewal from their own data: the context below and "
    "the database_query tool. Quote figures exactly as the data gives them and say where they "
    "came from. If the data does not hold the answer, say so instead of estimating. Use "
    "create_chart only when a trend or comparison reads better as a chart."
)


def setup(inp: LlmHandlerInput) -> LlmSetup:
    """Shape a renewal Q&A thread: data-grounded guidance, query and chart tools."""
    return LlmSetup(
        system_prompt_suffix=GUIDANCE,
        tools=offered_in_preference_order(PREFERRED_TOOLS, inp.tools),
        context_data=select_sections(inp.context_data),
        # Factual answers over figures: keep sampling close to deterministic.
        temperature=0.3,
    )
