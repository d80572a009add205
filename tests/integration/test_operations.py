"""Operations: DATABASE_URL mode, CORS for a configured origin, metrics."""

from __future__ import annotations

import gc

from litestar.testing import AsyncTestClient

from app.main import create_app


async def test_database_url_mode_uses_that_server_as_the_runtime_role(settings, database, auth):
    configured = settings.model_copy(update={"database_url": database.owner_url})
    app = create_app(configured)
    async with AsyncTestClient(app=app) as client:
        assert app.state.database.embedded is None
        assert app.state.database.app_url.startswith("postgresql+asyncpg://chatbranch_app@")
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["database"]["embedded"] is False
        customers = await client.get("/api/customers", headers=auth())
        assert customers.status_code == 200 and customers.json()["customers"]


async def test_a_served_worker_takes_its_startup_heap_out_of_the_collectors_reach(
        settings, database, auth):
    """`chatbranch run` serves `serve_app`, which freezes the heap once startup is done."""
    before = gc.get_freeze_count()
    app = create_app(settings, database=database, freeze_heap=True)
    try:
        async with AsyncTestClient(app=app) as client:
            assert gc.get_freeze_count() > before
            assert (await client.get("/api/customers", headers=auth())).status_code == 200
    finally:
        gc.unfreeze()


async def test_cors_allows_only_the_configured_frontend_origin(settings, database, auth):
    app = create_app(settings.model_copy(update={"cors_origins": ["http://app.example"]}),
                     database=database)
    async with AsyncTestClient(app=app) as client:
        preflight = await client.options("/api/customers", headers={
            "origin": "http://app.example", "access-control-request-method": "GET",
            "access-control-request-headers": "authorization"})
        assert preflight.headers.get("access-control-allow-origin") == "http://app.example"
        evil = await client.get("/api/customers", headers={**auth(), "origin": "http://evil.example"})
        assert evil.headers.get("access-control-allow-origin") is None


async def test_metrics_are_exposed_in_prometheus_text(client, auth):
    await client.get("/api/workflows", headers=auth())
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert 'path="/api/workflows"' in metrics.text and "requests_total" in metrics.text
