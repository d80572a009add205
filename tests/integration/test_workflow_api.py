"""The workflow, context, customer and saved-action APIs over HTTP, with their failure modes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_core_workflow_is_returned_with_its_config(client, auth) -> None:
    response = await client.get("/api/workflows/critical", headers=auth())
    assert response.status_code == 200
    workflow = response.json()["workflow"]
    assert response.json()["success"] is True
    assert workflow["workflowId"] == "critical" and workflow["isCore"] is True
    assert workflow["config"]["trigger"]["daysUntilRenewal"] == {"min": 7, "max": 14}
    assert len(workflow["config"]["steps"]) == 4


async def test_workflow_list_shows_the_three_core_workflows(client, auth) -> None:
    response = await client.get("/api/workflows", headers=auth())
    ids = {w["workflowId"] for w in response.json()["workflows"] if w["isCore"]}
    assert ids == {"critical", "emergency", "overdue"}


async def test_context_has_the_specs_shape_and_computed_fields(client, auth) -> None:
    customers = (await client.get("/api/customers", headers=auth())).json()["customers"]
    today = datetime.now(UTC).date()
    by_days = {c["daysUntilRenewal"]: c for c in customers}
    for days in (10, 0, min(by_days)):
        assert days in by_days
        response = await client.get(f"/api/workflows/context/{by_days[days]['id']}", headers=auth())
        assert response.status_code == 200
        context = response.json()["context"]
        assert set(context) == {"customer", "csm", "workflow", "company", "accountTeam"}
        renewal = date.fromisoformat(context["customer"]["renewalDate"])
        assert (renewal - today).days == days
        assert context["workflow"]["daysUntilRenewal"] == days
        assert context["workflow"]["hoursUntilRenewal"] == days * 24
        assert context["workflow"]["daysOverdue"] == max(0, -days)
        assert context["workflow"]["renewalARR"] == context["customer"]["arr"]
        assert context["csm"]["email"] and context["csm"]["manager"]
        emails = context["accountTeam"]["allEmails"].split(",")
        assert context["accountTeam"]["ae"] in emails and context["csm"]["email"] in emails
        assert context["company"]["vpCustomerSuccess"] and context["company"]["ceo"]
    assert min(by_days) < 0


async def test_customer_list_names_the_workflow_whose_window_holds_it(client, auth) -> None:
    customers = (await client.get("/api/customers", headers=auth())).json()["customers"]
    for c in customers:
        days = c["daysUntilRenewal"]
        expected = (
            "overdue"
            if days < 0
            else "emergency"
            if days <= 6
            else "critical"
            if days <= 14
            else None
        )
        assert c["matchingWorkflowId"] == expected, c
    assert {c["matchingWorkflowId"] for c in customers} >= {
        "overdue",
        "emergency",
        "critical",
        None,
    }


async def test_other_tenants_customers_are_invisible_and_answer_404(client, auth) -> None:
    demo = (await client.get("/api/customers", headers=auth())).json()["customers"]
    other = (await client.get("/api/customers", headers=auth("csm@other.example"))).json()[
        "customers"
    ]
    assert demo and other and not {c["id"] for c in demo} & {c["id"] for c in other}
    response = await client.get(f"/api/workflows/context/{other[0]['id']}", headers=auth())
    assert_problem(response, 404)
    missing = await client.get(
        "/api/workflows/context/00000000-0000-0000-0000-000000000000", headers=auth()
    )
    assert missing.json()["detail"].replace(
        "00000000-0000-0000-0000-000000000000", "X"
    ) == response.json()["detail"].replace(other[0]["id"], "X")


async def test_saved_actions_are_listed(client, auth) -> None:
    actions = (await client.get("/api/saved-actions", headers=auth())).json()["savedActions"]
    ids = {a["actionId"] for a in actions}
    assert {"snooze-1-day", "snooze-3-days", "snooze-7-days", "skip-step", "escalate"} <= ids


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer not-a-jwt"},
    ],
)
async def test_missing_or_malformed_token_is_401(client, headers) -> None:
    assert_problem(await client.get("/api/workflows", headers=headers), 401)


async def test_forged_and_expired_tokens_are_401(client, users) -> None:
    user = users["admin@demo.example"]
    claims = {
        "sub": str(user.id),
        "tenant_id": str(user.tenant_id),
        "role": "admin",
        "email": user.email,
        "exp": datetime.now(UTC) + timedelta(hours=1),
    }
    forged = jwt.encode(claims, "some-other-secret-" + "y" * 32, algorithm="HS256")
    assert_problem(
        await client.get("/api/workflows", headers={"Authorization": f"Bearer {forged}"}), 401
    )
    none_alg = jwt.encode(claims, None, algorithm="none")
    assert_problem(
        await client.get("/api/workflows", headers={"Authorization": f"Bearer {none_alg}"}), 401
    )


async def test_expired_token_is_401(client, settings, users) -> None:
    from app.auth.tokens import TokenCodec

    user = users["csm@demo.example"]
    token = TokenCodec(settings).encode(
        user_id=user.id,
        tenant_id=user.tenant_id,
        role=user.role,
        email=user.email,
        ttl=timedelta(seconds=-10),
    )
    assert_problem(
        await client.get("/api/workflows", headers={"Authorization": f"Bearer {token}"}), 401
    )


async def _workflow_count(owner_engine: AsyncEngine, workflow_id: str) -> int:
    async with owner_engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT count(*) FROM workflows WHERE workflow_id = :w"), {"w": workflow_id}
            )
        ).scalar_one()


def _config(client_id: str, seed: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(seed)
    config["id"] = client_id
    config["name"] = f"Custom {client_id}"
    return config


@pytest.fixture
async def critical_config(client, auth) -> dict[str, Any]:
    return (await client.get("/api/workflows/critical", headers=auth())).json()["workflow"][
        "config"
    ]


async def test_admin_creates_and_updates_a_versioned_tenant_workflow(
    client, auth, users, unique, critical_config
) -> None:
    workflow_id = f"custom-{unique}"
    admin = auth("admin@demo.example")
    created = await client.post(
        "/api/workflows",
        headers=admin,
        json={"workflowId": workflow_id, "config": _config(workflow_id, critical_config)},
    )
    assert created.status_code == 201, created.text
    assert created.json()["workflow"]["isCore"] is False
    changed = _config(workflow_id, critical_config)
    changed["description"] = "Tightened for Q4"
    updated = await client.put(
        f"/api/workflows/{workflow_id}",
        headers=admin,
        json={"config": changed, "changeDescription": "Q4 tightening"},
    )
    assert updated.status_code == 200, updated.text
    versions = (await client.get(f"/api/workflows/{workflow_id}/versions", headers=admin)).json()[
        "versions"
    ]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["changeDescription"] == "Q4 tightening"
    assert versions[0]["changedBy"] == str(users["admin@demo.example"].id)
    # Another tenant cannot see it, even by naming the tenant.
    other = auth("admin@other.example")
    assert_problem(await client.get(f"/api/workflows/{workflow_id}", headers=other), 404)
    demo_tenant = str(users["admin@demo.example"].tenant_id)
    assert_problem(
        await client.get(f"/api/workflows/critical?tenantId={demo_tenant}", headers=other), 404
    )
    assert_problem(
        await client.put(f"/api/workflows/{workflow_id}", headers=other, json={"config": changed}),
        404,
    )


async def test_tenant_workflow_shadows_the_core_one(client, auth, critical_config) -> None:
    admin = auth("admin@other.example")
    config = _config("critical", critical_config)
    created = await client.post(
        "/api/workflows", headers=admin, json={"workflowId": "critical", "config": config}
    )
    assert created.status_code == 201, created.text
    seen = (await client.get("/api/workflows/critical", headers=admin)).json()["workflow"]
    assert seen["isCore"] is False and seen["name"] == "Custom critical"
    demo_seen = (await client.get("/api/workflows/critical", headers=auth())).json()["workflow"]
    assert demo_seen["isCore"] is True


async def test_invalid_config_is_422_listing_every_failed_check_and_writes_nothing(
    client, auth, owner_engine, unique, critical_config
) -> None:
    workflow_id = f"broken-{unique}"
    config = _config(workflow_id, critical_config)
    config["steps"][0]["routing"]["defaultRoute"] = "no-such-step"
    config["steps"][1]["execution"] = {"llmPrompt": "{{#if customer.name}}unclosed"}
    config["ui"] = {"artifacts": [{"type": "dashboard"}]}
    response = await client.post(
        "/api/workflows",
        headers=auth("admin@demo.example"),
        json={"workflowId": workflow_id, "config": config},
    )
    body = assert_problem(response, 422)
    failed = {e["check"] for e in body["errors"]}
    assert {"routing targets exist", "template syntax", "no UI artifacts"} <= failed
    assert await _workflow_count(owner_engine, workflow_id) == 0


async def test_core_workflow_update_is_refused(client, auth, critical_config) -> None:
    response = await client.put(
        "/api/workflows/overdue",
        headers=auth("admin@demo.example"),
        json={"config": critical_config},
    )
    assert_problem(response, 403)


async def test_non_admin_cannot_create_workflows(
    client, auth, owner_engine, unique, critical_config
) -> None:
    workflow_id = f"csm-{unique}"
    response = await client.post(
        "/api/workflows",
        headers=auth("csm@demo.example"),
        json={"workflowId": workflow_id, "config": _config(workflow_id, critical_config)},
    )
    assert_problem(response, 403)
    assert await _workflow_count(owner_engine, workflow_id) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"workflowId": 5}',
        b"",
        b'{"workflowId": "x", "config": {}, "extra": 1}',
    ],
)
async def test_malformed_bodies_are_400_and_write_nothing(client, auth, body) -> None:
    headers = {**auth("admin@demo.example"), "content-type": "application/json"}
    response = await client.post("/api/workflows", headers=headers, content=body)
    assert_problem(response, 400)


async def test_unknown_workflow_is_404(client, auth) -> None:
    assert_problem(await client.get("/api/workflows/does-not-exist", headers=auth()), 404)
    assert_problem(await client.get("/api/workflows/does-not-exist/versions", headers=auth()), 404)


async def test_health_and_openapi_are_public(client) -> None:
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["database"]["migrated"] is True
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/workflows/{workflow_id}" in paths and "/api/customers" in paths


async def test_duplicate_create_is_409(client, auth, unique, critical_config) -> None:
    workflow_id = f"dup-{unique}"
    admin = auth("admin@demo.example")
    body = {"workflowId": workflow_id, "config": _config(workflow_id, critical_config)}
    assert (await client.post("/api/workflows", headers=admin, json=body)).status_code == 201
    assert_problem(await client.post("/api/workflows", headers=admin, json=body), 409)
    assert json.dumps(body)
