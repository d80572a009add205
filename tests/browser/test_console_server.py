"""The console as the server delivers it, without a browser: headers, files, the dev sign-in."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from app.web import DevAuthController, web_route_handlers

DEMO_USERS = {"csm@demo.example": "csm", "manager@demo.example": "manager",
              "analyst@demo.example": "analyst", "admin@demo.example": "admin",
              "csm@other.example": "csm", "analyst@other.example": "analyst",
              "admin@other.example": "admin"}


async def test_console_page_is_served_with_a_strict_policy_and_no_token(http: Any) -> None:
    page = await http.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/app.js">' in page.text
    policy = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' blob:"
    assert policy["connect-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(("path", "media_type"), [
    ("/console/app.js", "text/javascript"), ("/console/markdown.js", "text/javascript"),
    ("/console/styles.css", "text/css"), ("/console/favicon.svg", "image/svg+xml"),
])
async def test_console_assets_are_served_with_their_media_type(
        http: Any, path: str, media_type: str) -> None:
    response = await http.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", [
    "/console/../controller.py", "/console/%2e%2e/controller.py", "/console/..%2fdev_auth.py",
    "/console/dev_auth.py", "/console/missing.js", "/console/",
])
async def test_console_serves_nothing_outside_its_static_files(http: Any, path: str) -> None:
    response = await http.get(path)

    assert response.status_code == 404
    assert "import" not in response.text


async def test_dev_sign_in_lists_every_seeded_user_with_role_and_tenant(http: Any) -> None:
    users = (await http.get("/api/dev/users")).json()["users"]

    listed = {u["email"]: u for u in users}
    for email, role in DEMO_USERS.items():
        assert listed[email]["role"] == role
    assert listed["csm@demo.example"]["tenant"] != listed["csm@other.example"]["tenant"]


async def test_dev_token_is_a_working_bearer_token_for_that_user(http: Any) -> None:
    issued = await http.post("/api/dev/token", json={"email": "Analyst@Demo.example"})

    assert issued.status_code == 200
    assert issued.headers["cache-control"] == "no-store"
    body = issued.json()
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["email"], claims["role"]) == ("analyst@demo.example", "analyst")
    assert body["user"]["role"] == "analyst"
    customers = await http.get("/api/customers",
                               headers={"Authorization": f"Bearer {body['token']}"})
    assert customers.status_code == 200


async def test_dev_token_for_an_unknown_email_is_not_found(http: Any) -> None:
    response = await http.post("/api/dev/token", json={"email": "nobody@demo.example"})

    assert response.status_code == 404


def test_dev_sign_in_is_not_registered_outside_dev_mode(settings: Any) -> None:
    production = settings.model_copy(update={"dev_mode": False})

    assert DevAuthController not in web_route_handlers(production)
    assert DevAuthController in web_route_handlers(settings.model_copy(update={"dev_mode": True}))


async def test_dev_sign_in_answers_not_found_if_dev_mode_is_switched_off(
        http: Any, console: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console[0].state.settings, "dev_mode", False)

    assert (await http.get("/api/dev/users")).status_code == 404
    assert (await http.post("/api/dev/token", json={"email": "csm@demo.example"})).status_code == 404
