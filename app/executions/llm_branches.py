"""llm and rag branches: a thread whose prompt, tools and context the branch handler shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.chat.models import Thread
from app.chat.threads import open_thread, resolve_model_settings
from app.errors import Unprocessable
from app.executions.models import Execution
from app.handler_registry import HandlerReferenceError
from app.workflows.models import ChatBranch, Workflow
from handlers.types import HandlerInputError, LlmHandlerInput, LlmSetup

if TYPE_CHECKING:
    from app.executions.service import ExecutionService

TOOLS_BY_BRANCH_TYPE = {
    "llm": ["database_query", "create_chart"],
    "rag": ["rag_search", "database_query", "create_chart"],
}


async def open_llm_thread(service: ExecutionService, session: AsyncSession,
                          principal: Principal, workflow: Workflow, execution: Execution,
                          step: dict[str, Any], branch: ChatBranch, context: dict[str, Any],
                          tenant_llm: dict[str, Any] | None) -> Thread:
    """Create the thread and its LLM context for an llm/rag branch."""
    templates = service.s.templates
    parts = [str((workflow.config.get("context") or {}).get("systemPrompt", "")),
             str((step.get("execution") or {}).get("llmPrompt", ""))]
    rendered = [await templates.arender(p, context) for p in parts if p]
    system_prompt = "\n\n".join(r for r in rendered if r.strip())
    tools = list(TOOLS_BY_BRANCH_TYPE[branch.branch_type])
    setup = LlmSetup(system_prompt_suffix="", tools=tools, context_data=context)
    if branch.llm_handler:
        try:
            shape = service.s.handlers.resolve(branch.llm_handler)
            setup = shape(LlmHandlerInput(branch_type=branch.branch_type,  # type: ignore[arg-type]
                                          system_prompt=system_prompt, context_data=context,
                                          tools=tools))
        except (HandlerReferenceError, HandlerInputError) as exc:
            raise Unprocessable(f"branch '{branch.branch_id}' handler cannot run: {exc}") from exc
    if setup.system_prompt_suffix:
        system_prompt = f"{system_prompt}\n\n{setup.system_prompt_suffix}"
    overrides = {"temperature": setup.temperature, "maxTokens": setup.max_tokens}
    model = resolve_model_settings(service.s.settings, branch.llm_config, overrides,
                                   (workflow.config.get("context") or {}), tenant_llm)
    return await open_thread(
        session, tenant_id=principal.tenant_id, user_id=principal.user_id,
        execution_id=execution.id, customer_id=execution.customer_id,
        step_id=execution.current_step_id or "", thread_type=branch.branch_type,
        return_to_step=branch.return_to_step or execution.current_step_id,
        branch_id=branch.branch_id, system_prompt=system_prompt,
        context_data=setup.context_data, tools=setup.tools, model=model)
