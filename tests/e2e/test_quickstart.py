"""The README's quick start as a new user runs it: `chatbranch run`, a token, the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("quickstart")
    port = free_port()
    env = {**os.environ, "CHATBRANCH_DATA_DIR": str(data), "CHATBRANCH_LOCAL_TOKEN_DELAY_MS": "0"}
    env.pop("DATABASE_URL", None)
    log = (data / "server.log").open("w")
    proc = subprocess.Popen([*CLI, "run", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError((data / "server.log").read_text())
        time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not become healthy:\n" + (data / "server.log").read_text())
    yield base, env, data
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log.close()


def cli_token(env: dict[str, str], email: str) -> str:
    out = subprocess.run([*CLI, "token", "--email", email], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    token = out.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    return token


def test_run_serves_the_seeded_demo_with_a_cli_token(served) -> None:
    base, env, _ = served
    headers = {"Authorization": f"Bearer {cli_token(env, 'csm@demo.example')}"}
    workflow = httpx.get(f"{base}/api/workflows/critical", headers=headers).json()["workflow"]
    assert workflow["config"]["id"] == "critical"
    customers = httpx.get(f"{base}/api/customers", headers=headers).json()["customers"]
    context = httpx.get(f"{base}/api/workflows/context/{customers[0]['id']}",
                        headers=headers).json()["context"]
    assert context["customer"]["name"] == customers[0]["name"]


def test_users_command_lists_every_seeded_user(served) -> None:
    _, env, _ = served
    out = subprocess.run([*CLI, "users"], cwd=ROOT, env={**env, "COLUMNS": "200"},
                         capture_output=True, text=True, check=True).stdout
    for email in ("csm@demo.example", "manager@demo.example", "analyst@demo.example",
                  "admin@demo.example", "csm@other.example", "analyst@other.example",
                  "admin@other.example"):
        assert email in out


def test_token_for_unknown_user_fails_clearly(served) -> None:
    _, env, _ = served
    out = subprocess.run([*CLI, "token", "--email", "nobody@nowhere.example"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and out.stdout == "" and "no user" in out.stderr


def test_embedded_database_lives_in_the_data_folder(served) -> None:
    _, _, data = served
    assert (data / "pgdata" / "PG_VERSION").exists()
    assert (data / "jwt-secret").exists()


def test_readme_walkthrough_runs_with_no_provider_key(served) -> None:
    base, env, _ = served
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->")[0]
    script = block.split("```bash", 1)[1].rsplit("```", 1)[0]
    clean_env = {k: v for k, v in env.items()
                 if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT,
                         env={**clean_env, "BASE": base}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "data: [DONE]" in out.stdout
    assert '"type":"finish","finishReason":"stop"' in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "critical-emergency-resolution"
