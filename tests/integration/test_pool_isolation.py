"""Tenant scope never leaks through pooled connections."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from app.main import create_app


async def test_thousand_requests_alternating_tenants_through_one_connection_leak_nothing(
        settings, database, auth) -> None:
    single = settings.model_copy(update={"pool_size": 1, "pool_overflow": 0})
    app = create_app(single, database=database)
    tenants = {"csm@demo.example": set(), "csm@other.example": set()}
    async with AsyncTestClient(app=app) as client:
        for email in tenants:
            customers = (await client.get("/api/customers", headers=auth(email))).json()
            tenants[email] = {c["id"] for c in customers["customers"]}
        assert tenants["csm@demo.example"] and tenants["csm@other.example"]
        assert not tenants["csm@demo.example"] & tenants["csm@other.example"]
        emails = list(tenants)
        for i in range(1000):
            email = emails[i % 2]
            response = await client.get("/api/customers", headers=auth(email))
            assert response.status_code == 200
            seen = {c["id"] for c in response.json()["customers"]}
            assert seen == tenants[email], f"request {i} as {email} saw another tenant's rows"
        assert app.state.engine.pool.size() == 1
