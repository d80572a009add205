"""Create the app's long-lived services once, at start-up (providers, tools, runs, executions)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.chat.executor import ReplyExecutor
from app.chat.runs import RunHandle, RunManager
from app.chat.service import PostedMessage
from app.executions.service import ExecutionService, Services
from app.knowledge.embedders import build_embedder
from app.llm.base import ProviderConfig
from app.llm.registry import ProviderRegistry
from app.settings import Settings
from app.usage.pricing import default_price_book
from tools.base import ToolRegistry


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """Explicit timeouts and retries for every provider (never the SDK defaults)."""
    common = ProviderConfig(connect_timeout=settings.provider_connect_timeout_s,
                            read_timeout=settings.provider_read_timeout_s,
                            total_timeout=settings.provider_total_timeout_s,
                            max_retries=settings.provider_max_retries)
    return {
        "openai": replace(common, api_key=settings.openai_api_key,
                          base_url=settings.openai_base_url),
        "anthropic": replace(common, api_key=settings.anthropic_api_key,
                             base_url=settings.anthropic_base_url),
        "local": replace(common, token_delay_s=settings.local_token_delay_ms / 1000),
    }


def build_tools(state: Any) -> ToolRegistry:
    """The LLM-callable tools (each module under tools/ registers its own)."""
    registry = ToolRegistry()
    import tools

    register_all = getattr(tools, "register_all", None)
    if register_all is not None:
        register_all(registry)
    return registry


def attach_tool_services(state: Any, settings: Settings) -> None:
    """What tools need on the state they are given: the registry and the embedder."""
    state.tools = getattr(state, "tools", None) or build_tools(state)
    state.embedder = getattr(state, "embedder", None) or build_embedder(settings)


def wire_services(state: Any, settings: Settings) -> None:
    """Attach providers, tools, the run manager, the reply executor and executions to state."""
    state.providers = getattr(state, "providers", None) or ProviderRegistry(
        provider_configs(settings))
    attach_tool_services(state, settings)
    state.prices = default_price_book()
    state.run_manager = RunManager(state.engine, state.sessionmaker,
                                   flush_interval_s=settings.run_flush_interval_s,
                                   stale_after_s=settings.run_stale_after_s)
    executor = ReplyExecutor(settings=settings, manager=state.run_manager,
                             providers=state.providers, tools=state.tools, prices=state.prices,
                             services=state)

    def launch_run(posted: PostedMessage, principal: Any,
                   started: RunHandle | None = None) -> RunHandle:
        """Run the posted reply here; `started` when the post transaction already began it."""
        handle = started or RunHandle(run_id=posted.run.id, thread_id=posted.run.thread_id,
                                      tenant_id=posted.run.tenant_id,
                                      order=posted.user_message.sequence_number)
        state.run_manager.launch(handle, executor)
        return handle

    state.launch_run = launch_run
    state.reply_executor = executor
    state.executions = ExecutionService(Services(
        settings=settings, sessionmaker=state.sessionmaker, templates=state.templates,
        handlers=state.handlers, manager=state.run_manager, launch_run=launch_run))
