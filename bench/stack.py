"""The system under test and its baselines, as real processes on a fresh data folder.

PostgreSQL is started first (by the harness, unpinned); the service then attaches to it as
`chatbranch run` would on that data folder, pinned to the server CPU. The mock, the floor and the
peer are started beside it; the harness itself runs the load from the other CPU.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.db.embedded import EmbeddedPostgres
from bench.common import free_port
from bench.procs import Proc, start, wait_http

ROOT = Path(__file__).resolve().parents[1]
SERVICE_MODEL = "openai:gpt-4o-mini"
USER_EMAIL = "csm@demo.example"
WORKFLOW, CUSTOMER, BRANCH = "critical", "acme", "ask-about-risk"


@dataclass
class Stack:
    """Everything started for a run, and how to reach it."""

    work: Path
    data_dir: Path
    server_cpus: set[int] | None
    database: EmbeddedPostgres | None = None
    mock: Proc | None = None
    mock_port: int = 0
    service: Proc | None = None
    floor: Proc | None = None
    peer: Proc | None = None
    extra: list[Proc] = field(default_factory=list)
    token: str = ""
    threads: list[str] = field(default_factory=list)

    @property
    def mock_url(self) -> str:
        """The mock's OpenAI base URL."""
        return f"http://127.0.0.1:{self.mock_port}/v1"

    def env(self) -> dict[str, str]:
        """The service's environment: fresh data folder, every model call to the mock."""
        env = {**os.environ, "CHATBRANCH_DATA_DIR": str(self.data_dir),
               "CHATBRANCH_OPENAI_BASE_URL": self.mock_url,
               "CHATBRANCH_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.mock_port}",
               "OPENAI_API_KEY": "unused-by-the-mock", "ANTHROPIC_API_KEY": "unused-by-the-mock",
               "CHATBRANCH_DEFAULT_MODEL": SERVICE_MODEL, "CHATBRANCH_EMBEDDER": "lexical",
               "PYTHONPATH": str(ROOT)}
        env.pop("DATABASE_URL", None)
        return env

    def stop(self) -> None:
        """Stop every process started (all signalled at once), the database last."""
        procs = [p for p in [*self.extra, self.peer, self.floor, self.service, self.mock]
                 if p is not None]
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop()
        if self.database is not None:
            with contextlib.suppress(Exception):
                self.database.stop()  # stops it when this process holds the last handle
            if (self.data_dir / "pgdata" / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self.database.force_stop()


def start_database(stack: Stack) -> None:
    """The embedded PostgreSQL of the run's data folder (the service attaches to it)."""
    stack.database = EmbeddedPostgres(stack.data_dir)
    stack.database.start()


SEEDED_CACHE = Path(__file__).resolve().parent / ".cache"


def seed_fingerprint() -> str:
    """What a migrated and seeded database depends on: schema, seeds, seeding code, embedder."""
    digest = hashlib.sha256()
    sources = [*sorted((ROOT / "migrations").rglob("*.py")), *sorted((ROOT / "seeds").rglob("*")),
               ROOT / "app" / "seeding.py", *sorted((ROOT / "app" / "knowledge").glob("*.py"))]
    for path in sources:
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    digest.update(os.environ.get("CHATBRANCH_EMBEDDER", "lexical").encode())
    return digest.hexdigest()[:16]


def restore_seeded(stack: Stack) -> bool:
    """Copy a cached migrated-and-seeded cluster into the run's fresh data folder, if any."""
    cached = SEEDED_CACHE / f"seeded-{seed_fingerprint()}" / "pgdata"
    if not (cached / "PG_VERSION").exists():
        return False
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    # cp -a keeps the owner (PostgreSQL runs as its own user when we are root).
    subprocess.run(["cp", "-a", str(cached), str(stack.data_dir / "pgdata")], check=True)
    (stack.data_dir / "pgdata" / ".handle_pids.json").unlink(missing_ok=True)
    return True


def save_seeded(stack: Stack) -> None:
    """Keep the freshly seeded cluster (stopped cleanly, then restarted) for the next runs."""
    assert stack.database is not None
    target = SEEDED_CACHE / f"seeded-{seed_fingerprint()}"
    stack.database.stop()
    if (stack.data_dir / "pgdata" / "postmaster.pid").exists():
        stack.database.force_stop()
    SEEDED_CACHE.mkdir(parents=True, exist_ok=True)
    (SEEDED_CACHE / ".gitignore").write_text("*\n")
    for old in SEEDED_CACHE.glob("seeded-*"):
        if old.name != target.name and not old.name.endswith(".partial"):
            shutil.rmtree(old, ignore_errors=True)  # an older schema or seed
    # Another run may be saving the same copy: each writes its own folder, one rename wins.
    partial = SEEDED_CACHE / f"{target.name}.{os.getpid()}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["cp", "-a", str(stack.data_dir / "pgdata"), str(partial / "pgdata")],
                       check=True)
        (partial / "pgdata" / ".handle_pids.json").unlink(missing_ok=True)
        if not target.exists():
            with contextlib.suppress(OSError):
                partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    start_database(stack)


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the PostgreSQL server whose data lives in `data_dir` (its backends are its
    children)."""
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def start_mock(stack: Stack, cpus: set[int] | None) -> None:
    """The mock provider process, on the load CPU."""
    port = free_port()
    stack.mock = start("mock", [sys.executable, "-m", "bench.mock_provider", "--port", str(port)],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, log_dir=stack.work,
                       cpus=cpus, cwd=ROOT, port=port)
    stack.mock_port = port
    wait_http(stack.mock, f"http://127.0.0.1:{port}/health", timeout=30)


def set_mock(stack: Stack, ttft_ms: float, pacing_ms: float, tokens: int) -> None:
    """Change the mock's pacing for the next phase."""
    httpx.post(f"http://127.0.0.1:{stack.mock_port}/_config", timeout=5,
               json={"ttft_ms": ttft_ms, "pacing_ms": pacing_ms, "tokens": tokens}
               ).raise_for_status()


def launch_service(stack: Stack, *, workers: int = 1, cpus: set[int] | None = None,
                   name: str = "service") -> Proc:
    """`python -m app.cli run --port N [--workers W]` on the run's data folder (not waited for)."""
    port = free_port()
    return start(name, [sys.executable, "-m", "app.cli", "run", "--port", str(port),
                        "--workers", str(workers)],
                 env=stack.env(), log_dir=stack.work, cpus=cpus, cwd=ROOT, port=port)


def wait_service(proc: Proc, timeout: float = 240.0) -> None:
    """Until /health answers (migrations and seeding happen before it listens)."""
    wait_http(proc, f"http://127.0.0.1:{proc.port}/health", timeout=timeout)


def start_floor(stack: Stack, cpus: set[int] | None, workers: int = 1) -> Proc:
    """The floor app, with an asyncpg pool on the run's database for its round trips."""
    assert stack.database is not None
    port = free_port()
    proc = start("floor" if workers == 1 else f"floor-{workers}w",
                 [sys.executable, "-m", "bench.floor", "--port", str(port), "--mock",
                  stack.mock_url, "--dsn", stack.database.dsn(), "--workers", str(workers)],
                 env={**os.environ, "PYTHONPATH": str(ROOT)}, log_dir=stack.work, cpus=cpus,
                 cwd=ROOT, port=port)
    wait_http(proc, f"http://127.0.0.1:{port}/relay", timeout=60)
    return proc


def cli_token(stack: Stack) -> str:
    """A bearer token from `python -m app.cli token --email csm@demo.example`."""
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "--email", USER_EMAIL],
                         env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return out.stdout.strip()


async def open_threads(base: str, token: str, count: int, concurrency: int = 4) -> list[str]:
    """`count` LLM threads opened through the API: an execution, then its LLM branch."""
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        started = await client.post("/api/executions",
                                    json={"workflowId": WORKFLOW, "customerId": CUSTOMER})
        started.raise_for_status()
        execution = started.json()["execution"]["id"]
        threads: list[str] = []
        remaining = iter(range(count))

        async def opener() -> None:
            for _ in remaining:
                answer = await client.post(f"/api/executions/{execution}/branches/{BRANCH}")
                answer.raise_for_status()
                threads.append(answer.json()["thread"]["id"])

        await asyncio.gather(*(opener() for _ in range(concurrency)))
    return threads


def _committed_question(window: list[tuple[str, str]]) -> bool:
    """Whether the question's insert ran, then a COMMIT on the same backend, in `window`.

    `window` holds (backend pid, statement) pairs; another connection's COMMIT (a flush of an
    earlier turn's events, say) says nothing about the question's transaction.
    """
    asked = next((i for i, (_, sql) in enumerate(window)
                  if "INSERT INTO WORKFLOW_CHAT_MESSAGES" in " ".join(sql.upper().split())), None)
    if asked is None:
        return False
    backend = window[asked][0]
    return any(pid == backend and sql.strip().upper().startswith("COMMIT")
               for pid, sql in window[asked + 1:])


def _opens_transaction(sql: str) -> bool:
    """A BEGIN, or a statement that is its own transaction (a run-events flush)."""
    upper = sql.upper()
    return upper.startswith("BEGIN") or "FLUSH_RUN_EVENTS(" in upper


_STATEMENT = re.compile(
    r"^(\S+ \S+) UTC \[(\d+)\] (\S+) LOG:  (?:statement|execute [^:]*): (.*)")


@dataclass
class Census:
    """PostgreSQL statements the service sent per turn, from the server's statement log."""

    per_turn: float
    before_call: float | None
    first_insert_before_call: bool | None
    sample: list[str]
    transactions_per_turn: float = 0.0
    transactions_before_call: float | None = None


async def statement_census(stack: Stack, turn: Any, turns: int) -> Census:
    """Log every statement of the runtime role while `turns` turns run one after another.

    The statements logged between sending a turn and the mock receiving its provider call are
    the ones the service makes before calling the model.
    """
    assert stack.database is not None
    log_path = stack.data_dir / "pgdata" / "log"
    await asyncio.to_thread(_set_statement_log, stack, True)
    offset = log_path.stat().st_size
    sent: list[float] = []
    try:
        for number in range(turns):
            sent.append(time.time())
            await turn(number)
            await asyncio.sleep(0.25)  # the flusher's last tick belongs to this turn
    finally:
        await asyncio.to_thread(_set_statement_log, stack, False)
    async with httpx.AsyncClient(timeout=5) as client:
        received = (await client.get(f"http://127.0.0.1:{stack.mock_port}/_stats")).json()[
            "recentRequestTimes"]
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    stamps: list[tuple[float, str, str]] = []  # (moment, backend pid, statement)
    continued = False  # whether the last logged line began one of our statements
    for line in lines:
        found = _STATEMENT.match(line)
        if found and found.group(3) == "chatbranch_app":
            moment = calendar.timegm(time.strptime(found.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            stamps.append((moment + float("0" + found.group(1)[19:]), found.group(2),
                           found.group(4)))
            continued = True
        elif continued and line[:1] in ("\t", " "):  # the rest of a multi-line statement
            moment, pid, sql = stamps[-1]
            stamps[-1] = (moment, pid, f"{sql}\n{line}")
        else:
            continued = False
    before, insert_first, begins_before = [], [], []
    for began in sent:
        called = min((r for r in received if r >= began), default=None)
        if called is None:
            continue
        window = [(pid, sql) for moment, pid, sql in stamps
                  if began - 0.002 <= moment <= called + 0.002]
        before.append(len(window))
        begins_before.append(sum(1 for _, sql in window if _opens_transaction(sql)))
        insert_first.append(_committed_question(window))
    return Census(per_turn=round(len(stamps) / max(1, turns), 1),
                  before_call=round(sum(before) / len(before), 1) if before else None,
                  first_insert_before_call=all(insert_first) if insert_first else None,
                  sample=[sql[:160] for _, _, sql in stamps[:40]],
                  transactions_per_turn=round(sum(1 for _, _, sql in stamps
                                                  if _opens_transaction(sql)) / turns, 1),
                  transactions_before_call=round(sum(begins_before) / len(begins_before), 1)
                  if begins_before else None)


def _set_statement_log(stack: Stack, on: bool) -> None:
    import asyncpg  # the owner changes a server setting; reloaded configuration reaches all

    assert stack.database is not None

    async def apply() -> None:
        conn = await asyncpg.connect(stack.database.dsn())  # type: ignore[union-attr]
        try:
            if on:
                await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
                await conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %u '")
            else:
                await conn.execute("ALTER SYSTEM RESET log_statement")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(apply())
    time.sleep(0.3)  # backends pick the reload up at their next command


def thread_turn_body(content: str) -> bytes:
    """The JSON body of a posted message."""
    return json.dumps({"content": content}).encode()
