"""The peer: LiteLLM's proxy in its own virtualenv (its pins never touch ours), no database.

The virtualenv is made once in `bench/.litellm-venv` (`python3 -m venv` + `pip install
'litellm[proxy]'`) and reused; it holds a `.gitignore` of its own so it is never committed.
When it cannot be installed (no registry, no python3), the peer is reported unavailable with the
reason and the harness carries on without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Proc, start, wait_http

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".litellm-venv"
MASTER_KEY = "sk-bench-master-key-0123456789"  # LiteLLM refuses keys under 20 characters
READY_STAMP = VENV / ".installed"


@dataclass
class PeerInstall:
    """How the peer's virtualenv came to be (or why it could not)."""

    available: bool
    reason: str = ""
    install_seconds: float | None = None  # this run's install; None when an earlier one is reused
    first_install_seconds: float | None = None  # what the install took when it was made
    size_mib: float | None = None
    version: str | None = None


def venv_size_mib() -> float:
    """Disk size of the virtualenv."""
    total = 0
    for root, _, files in os.walk(VENV):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return round(total / 1024 / 1024, 1)


def _version() -> str | None:
    try:
        out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def begin_install(log_path: Path) -> subprocess.Popen[bytes] | None:
    """Start creating the virtualenv in the background; None when it is already there."""
    if READY_STAMP.exists():
        return None
    python = shutil.which("python3")
    if python is None:
        raise RuntimeError("python3 is not on PATH")
    shutil.rmtree(VENV, ignore_errors=True)
    script = (f'"{python}" -m venv "{VENV}" && echo "*" > "{VENV}/.gitignore" && '
              f'"{VENV}/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]"')
    with log_path.open("wb") as log:
        return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def finish_install(process: subprocess.Popen[bytes] | None, started: float, log_path: Path,
                   timeout: float = 420.0) -> PeerInstall:
    """Wait for a background install; what it came to."""
    if process is None:
        if READY_STAMP.exists():
            first = READY_STAMP.read_text().strip() or "nan"
            return PeerInstall(True, install_seconds=None, first_install_seconds=float(first),
                               size_mib=venv_size_mib(), version=_version())
        return PeerInstall(False, reason="not installed")
    try:
        code = process.wait(timeout=max(1.0, started + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        return PeerInstall(False, reason=f"pip install did not finish in {timeout:.0f}s")
    seconds = round(time.monotonic() - started, 1)
    if code != 0 or not (VENV / "bin" / "litellm").exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return PeerInstall(False, reason="pip install 'litellm[proxy]' failed: " + " | ".join(tail),
                           install_seconds=seconds)
    READY_STAMP.write_text(f"{seconds}\n")
    return PeerInstall(True, install_seconds=seconds, first_install_seconds=seconds,
                       size_mib=venv_size_mib(), version=_version())


def write_config(path: Path, mock_base_url: str, model: str = "gpt-4o-mini") -> None:
    """Route `model` to the mock as an OpenAI-compatible server; no database, no callbacks."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        "    litellm_params:\n"
        f"      model: openai/{model}\n"
        f"      api_base: {mock_base_url}\n"
        "      api_key: unused\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )


def start_peer(port: int, mock_base_url: str, work_dir: Path, cpus: set[int] | None,
               workers: int = 1) -> Proc:
    """Start the proxy on loopback and wait until it answers."""
    config = work_dir / "litellm.yaml"
    write_config(config, mock_base_url)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": MASTER_KEY,
           "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    for name in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    argv = [str(VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port)]
    if workers > 1:
        argv += ["--num_workers", str(workers)]
    proc = start("litellm" if workers == 1 else f"litellm-{workers}w", argv, env=env,
                 log_dir=work_dir, cpus=cpus, cwd=work_dir, port=port)
    wait_http(proc, f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    return proc
