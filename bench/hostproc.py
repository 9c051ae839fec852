"""`host up` as a process: its flags, time to the first 200, resident memory."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from bench.common import LOOPBACK, PYTHON, ROOT, free_port, host_up_cmd, rss_kib, serve

HEALTH = "/.well-known/spin/health"  # answered by the host itself, takes no instance


# Instance reuse, under either name: a bare flag, or Spin's count (with this many).
REUSE_FLAG = "--reuse-instances"
REUSE_COUNT_FLAG = "--max-instance-reuse-count"
REUSE_COUNT = 1000


def host_up_help() -> str:
    return subprocess.run([PYTHON, "-m", "host", "up", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True).stdout


def reuse_args() -> list[str] | None:
    """`host up` arguments that turn instance reuse on, or None if it has no such flag."""
    help_text = host_up_help()
    if REUSE_FLAG in help_text:
        return [REUSE_FLAG]
    if REUSE_COUNT_FLAG in help_text:
        return [REUSE_COUNT_FLAG, str(REUSE_COUNT)]
    return None


def fill_cache(app_dir: Path, cache_dir: Path) -> None:
    """Compile the app's components into `cache_dir` (`host check`), untimed."""
    subprocess.run([PYTHON, "-m", "host", "check", "-f", str(app_dir), "--cache-dir",
                    str(cache_dir)], cwd=ROOT, capture_output=True, check=True, timeout=600)


def first_200_seconds(app_dir: Path, route: str, cache_dir: Path, runs: int) -> float:
    """Median seconds from spawning `host up` to the first 200 on `route`."""
    times = []
    for _ in range(runs):
        port = free_port()
        with serve(host_up_cmd(app_dir, port, cache_dir)) as server:
            times.append(server.wait_ready(f"http://{LOOPBACK}:{port}{route}", poll=0.005))
    return statistics.median(times)


def rss_after_start(app_dir: Path, cache_dir: Path, pool_size: int,
                    settle: float = 1.0) -> int:
    """VmRSS (KiB) of `host up --pool-size N` once it serves (its pool is filled at start)."""
    port = free_port()
    cmd = host_up_cmd(app_dir, port, cache_dir, "--pool-size", str(pool_size))
    with serve(cmd) as server:
        server.wait_ready(f"http://{LOOPBACK}:{port}{HEALTH}")
        time.sleep(settle)
        return rss_kib(server.pid)
