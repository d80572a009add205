"""Processes under test: start pinned to CPUs, wait until they answer, read CPU time and RSS."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_layout() -> tuple[set[int] | None, set[int] | None, str]:
    """(server CPUs, load CPUs, note): servers on one core, load generator and mocks on another."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None, f"not pinned: only {len(available)} CPU available"
    return {available[0]}, set(available[1:]), (
        f"servers pinned to CPU {available[0]}, load generator and mocks to CPU "
        f"{','.join(map(str, available[1:]))} (PostgreSQL unpinned)")


@dataclass
class Proc:
    """A process the harness started (and stops)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    children: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while it runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a graceful stop for uvicorn), then SIGKILL to its process group."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


def start(name: str, argv: list[str], *, env: dict[str, str], log_dir: Path,
          cpus: set[int] | None = None, cwd: Path | None = None, port: int | None = None) -> Proc:
    """Start `argv` in its own process group, pinned to `cpus`, output to a log file."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, preexec_fn=pin, start_new_session=True)
    log.close()
    return Proc(name, popen, log_path, port)


def wait_http(proc: Proc, url: str, *, timeout: float = 120.0, headers: dict[str, str] | None = None
              ) -> None:
    """Wait until `url` answers below 500 (any answer proves it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} in {timeout:.0f}s:\n{proc.log_tail()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of a process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    total = 0.0
    with contextlib.suppress(OSError):
        total += cpu_seconds(pid)
    for child in children_of(pid):
        total += tree_cpu_seconds(child)
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE_SIZE


def machine() -> dict[str, str | int]:
    """What the run ran on: cores, CPU model, memory, kernel."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_kib = int(line.split()[1])
    return {"nproc": os.cpu_count() or 0, "cpu": model,
            "memory": f"{memory_kib / 1024 / 1024:.1f} GiB", "kernel": os.uname().release}
