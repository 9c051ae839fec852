"""Load a server with wrk (pinned to the client core) and parse what it reports."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import CLIENT_CORE, ROOT, Server, ServerError, pin, serve, tree_cpu_seconds

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx responses
    non2xx: int = 0  # of which non-2xx/3xx responses (e.g. 503 from admission limits)
    cpu_seconds: float | None = None  # server process tree's user+sys over the run

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per request: independent of the load generator sharing the cores."""
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests * 1e6


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def latency_ms(text: str) -> float:
    """wrk's latency ("812.00us", "1.23ms", "2.01s") in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> LoadResult:
    def find(pattern: str) -> str:
        m = re.search(pattern, out)
        if not m:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return m.group(1)

    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    errors = non2xx
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=latency_ms(find(r"\n\s+50%\s+(\S+)")),
        p99_ms=latency_ms(find(r"\n\s+99%\s+(\S+)")),
        requests=int(find(r"(\d+) requests in")),
        errors=errors,
        non2xx=non2xx,
    )


def wrk(url: str, seconds: float, connections: int, timeout: float = 2.0) -> LoadResult:
    duration = max(1, round(seconds))
    cmd = [*pin(CLIENT_CORE), "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
           f"--timeout={timeout:g}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    return parse_wrk(out)


def measure(server: Server, url: str, seconds: float, connections: int,
            timeout: float = 2.0) -> LoadResult:
    """One wrk run against a running server, with the server tree's CPU time over it."""
    before = tree_cpu_seconds(server.pid)
    result = wrk(url, seconds, connections, timeout)
    cpu = tree_cpu_seconds(server.pid) - before
    if server.proc.poll() is not None:
        raise ServerError(f"server died during the run:\n{server.log_tail()}")
    return replace(result, cpu_seconds=cpu)


def load_server(cmd: Sequence[str], url: str, seconds: float, connections: int,
                warmup: float, cwd: Path = ROOT, env: dict[str, str] | None = None,
                ready_timeout: float = 180.0) -> LoadResult:
    """Start the server, wait for a 200 at `url`, warm up, measure; always stop it."""
    with serve(cmd, cwd=cwd, env=env) as server:
        server.wait_ready(url, timeout=ready_timeout)
        if warmup > 0:
            wrk(url, warmup, connections)
        result = measure(server, url, seconds, connections)
    if not result.requests:
        raise ServerError(f"{url}: no request answered in {seconds:g} s")
    if result.errors:
        raise ServerError(f"{url}: {result.errors} errors out of {result.requests} requests")
    return result
