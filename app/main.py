"""The Litestar application factory; nothing is configured at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from app.auth.middleware import BearerAuthMiddleware
from app.auth.tokens import TokenCodec
from app.charts.controller import ChartController
from app.charts.render import warm_up
from app.chat.controller import ThreadController
from app.context.controller import ContextController
from app.customers.controller import CustomerController
from app.db.engine import DatabaseUrls, create_engine, create_sessionmaker, resolve_database
from app.deps import DEPENDENCIES
from app.executions.controller import ExecutionController
from app.handler_registry import HandlerRegistry
from app.health.controller import health
from app.knowledge.controller import KnowledgeController
from app.problems import EXCEPTION_HANDLERS
from app.settings import Settings, get_settings
from app.templates.engine import TemplateEngine
from app.usage.controller import UsageController
from app.web import PUBLIC_WEB_PATHS, web_route_handlers
from app.wiring import wire_services
from app.workflows.controller import SavedActionController, WorkflowController

log = logging.getLogger("chatbranch")

PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema", *PUBLIC_WEB_PATHS]


def serve_app() -> Litestar:
    """The server's factory (`chatbranch run`): the service, its startup heap frozen."""
    return create_app(freeze_heap=True)


def freeze_startup_heap() -> None:
    """Move what startup built (modules, models, pools) out of the cyclic collector's reach.

    Otherwise the first full collection under traffic walks all of it: a 200 ms stall measured
    in a fresh worker's first seconds of streaming. Objects are still freed by reference count.
    """
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None, *, database: DatabaseUrls | None = None,
    freeze_heap: bool = False,
) -> Litestar:
    """Build the service. Tests pass their own settings and an already-running database."""
    settings = settings or get_settings()
    # The HTTP clients of the provider SDKs log every request at INFO: a line per model call
    # on the hot path, and the usage ledger records each call already.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owns_database = database is None
        db = database if database is not None else await asyncio.to_thread(
            resolve_database, settings)
        engine = create_engine(
            db.app_url,
            pool_size=settings.pool_size,
            max_overflow=settings.pool_overflow,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
        app.state.database = db
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        wire_services(app.state, settings)
        await asyncio.to_thread(warm_up)  # vl-convert's first conversion takes ~0.5 s
        await app.state.embedder.warm()  # load the embedding model before the first search
        await app.state.run_manager.start()
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            await app.state.run_manager.shutdown()
            await app.state.providers.aclose()
            if hasattr(app.state.embedder, "aclose"):
                await app.state.embedder.aclose()
            await engine.dispose()
            if owns_database:
                db.stop()

    state = State(
        {
            "settings": settings,
            "token_codec": TokenCodec(settings),
            "templates": TemplateEngine(),
            "handlers": HandlerRegistry.build(),
        }
    )
    prometheus = PrometheusConfig(app_name="chatbranch", group_path=True)
    return Litestar(
        route_handlers=[
            health,
            PrometheusController,
            WorkflowController,
            ContextController,
            CustomerController,
            SavedActionController,
            ExecutionController,
            ThreadController,
            ChartController,
            KnowledgeController,
            UsageController,
            *web_route_handlers(settings),
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            prometheus.middleware,
            DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS),
        ],
        cors_config=CORSConfig(
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_headers=["authorization", "content-type", "idempotency-key", "last-event-id"],
        )
        if settings.cors_origins
        else None,
        openapi_config=OpenAPIConfig(
            title="chatbranch",
            version="0.1.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        lifespan=[lifespan],
        state=state,
        request_max_body_size=2 * 1024 * 1024,
        debug=False,
    )
