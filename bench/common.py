"""Shared plumbing: paths, CPU pinning, free ports, server processes that always stop.

Imports nothing from `host`, so the generic/naive subprocesses may use it too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"

SERVER_CORE = 0
CLIENT_CORE = 1

# The uvicorn settings `host up` uses (host/serve.py `run_uvicorn`), spelled as flags,
# so every baseline runs on the same stack.
UVICORN_FLAGS = ["--workers", "1", "--http", "httptools", "--loop", "uvloop",
                 "--no-access-log", "--log-level", "warning", "--no-server-header"]


def pin(core: int) -> list[str]:
    """`taskset -c CORE` when there are 2+ cores and taskset exists, else nothing."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port), *UVICORN_FLAGS]


def host_up_cmd(app_dir: Path, port: int, cache_dir: Path, *extra: str) -> list[str]:
    # No access log, like the uvicorn baselines (uvicorn's own is off there too).
    return [PYTHON, "-m", "host", "up", "-f", str(app_dir), "-q", "--no-access-log",
            "--state-dir", "", "--cache-dir", str(cache_dir), "--listen", f"{LOOPBACK}:{port}",
            *extra]


class ServerError(RuntimeError):
    pass


class Server:
    """A running server subprocess, pinned to the server core."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, started: float) -> None:
        self.proc = proc
        self.log_path = log_path
        self.started = started  # perf_counter() just before Popen

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs the command: same pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout: float = 180.0, poll: float = 0.01) -> float:
        """Poll `url` until it answers 200; return seconds since the process started."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited with {self.proc.returncode}:\n"
                                      f"{self.log_tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(poll)
        raise ServerError(f"{url} not ready after {timeout:g} s:\n{self.log_tail()}")


@contextmanager
def serve(cmd: Sequence[str], cwd: Path = ROOT,
          env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `cmd` pinned to the server core; terminate (then kill) it on exit, always."""
    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log",
                                     delete=False) as log_file:
        log_path = Path(log_file.name)
    full_env = {**os.environ, **(env or {})}
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*pin(SERVER_CORE), *cmd], cwd=cwd, env=full_env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Server(proc, log_path, started)
    finally:
        stop(proc)
        log_path.unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields 3.. (comm may hold spaces)


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a scan of /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants, live and reaped.

    utime + stime of each live process plus cutime + cstime (children it has
    waited for). A child reaped between two readings moves from "live" to its
    parent's cutime with its whole total, so the difference stays right.
    """
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue  # exited between the scan and the read
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it) to `wanted`, or the
    hard limit if lower; return the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ServerError(f"no VmRSS for pid {pid}")


def timed_loop(fn, max_iterations: int, max_seconds: float,  # type: ignore[no-untyped-def]
               min_iterations: int = 1) -> list[float]:
    """Call `fn()` (which returns the seconds it wants counted) until either bound is hit."""
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(samples) < max_iterations and (
            len(samples) < min_iterations or time.perf_counter() < deadline):
        samples.append(fn())
    return samples


@contextmanager
def pinned(core: int) -> Iterator[None]:
    """Run this process on `core` for the duration (in-process measurements)."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
