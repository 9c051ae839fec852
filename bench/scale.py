"""Scale rows (issue 15 item 4): many components, many connections, large bodies.

Each function starts its own servers (pinned to the server core, as every row)
and returns the figures; `bench/__main__.py` turns them into report sections.

  many_components   one `host up` serving N copies of the trivial WAT component
                    (each file made distinct by a custom section, so each is
                    compiled and cached on its own): time to the first 200 on the
                    last route with a warm compile cache (median of runs), VmRSS
                    after start, and how long `host check` took to fill the cache
  many_connections  `wrk -t1 -c1000` keep-alive on a server: req/s, p50, p99,
                    non-2xx (503 from the admission limits) and socket errors
                    counted apart, server CPU per request
  body_throughput   clients that read while they send (tests/duplex.py) POST
                    bodies of one size to an echo for a while; MB/s = body bytes
                    that came back intact per second of wall time
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    CLIENT_CORE,
    LOOPBACK,
    PYTHON,
    ROOT,
    ServerError,
    free_port,
    pinned,
    rss_kib,
    serve,
    tree_cpu_seconds,
)
from bench.http import LoadResult, measure, wrk
from tests import duplex, wat

MiB = 1024 * 1024
COMPONENTS = 100
CONNECTIONS = 1000
BODY_CLIENTS = 4


# -- many components ------------------------------------------------------------------


def _custom_section(name: str, payload: bytes) -> bytes:
    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    content = leb(len(name)) + name.encode() + payload
    return b"\x00" + leb(len(content)) + content


def many_components_app(work: Path, count: int = COMPONENTS) -> Path:
    """A spin.toml directory with `count` trivial components at /c0 ... /c{count-1}."""
    app = work / f"components-{count}"
    app.mkdir(parents=True, exist_ok=True)
    base = wat.build_component(wat.FIXED, app / "fixed.wasm").read_bytes()
    lines = ['spin_manifest_version = 2', '[application]', f'name = "bench-{count}"', '']
    for i in range(count):
        # A trailing custom section makes each file (and its compile-cache entry) distinct.
        (app / f"c{i}.wasm").write_bytes(base + _custom_section("bench-id", str(i).encode()))
        lines += ["[[trigger.http]]", f'route = "/c{i}"', f'component = "c{i}"', "",
                  f"[component.c{i}]", f'source = "c{i}.wasm"', ""]
    (app / "spin.toml").write_text("\n".join(lines))
    return app


@dataclass(frozen=True)
class ManyComponents:
    count: int
    cache_fill_s: float  # `host check` compiling every component into an empty cache
    first_200_s: float  # warm cache, median
    runs_s: tuple[float, ...]
    rss_kib: int  # VmRSS after start, median
    all_routes_ok: bool


def many_components(app: Path, cache: Path, host_cmd: Callable[[Path, int, Path], list[str]],
                    runs: int, count: int = COMPONENTS, settle: float = 1.0) -> ManyComponents:
    started = time.perf_counter()
    subprocess.run([PYTHON, "-m", "host", "check", "-f", str(app), "--cache-dir", str(cache)],
                   cwd=ROOT, capture_output=True, check=True, timeout=900)
    fill = time.perf_counter() - started
    times, rss = [], []
    ok = True
    for n in range(runs):
        port = free_port()
        base = f"http://{LOOPBACK}:{port}"
        with serve(host_cmd(app, port, cache)) as server:
            times.append(server.wait_ready(f"{base}/c{count - 1}", poll=0.005))
            if n == 0:
                with httpx.Client(timeout=30.0) as client:
                    ok = all(client.get(f"{base}/c{i}").status_code == 200
                             for i in range(count))
            time.sleep(settle)
            rss.append(rss_kib(server.pid))
    return ManyComponents(count, fill, statistics.median(times), tuple(times),
                          int(statistics.median(rss)), ok)


# -- many connections ----------------------------------------------------------------------


def many_connections(cmd: Sequence[str], url: str, seconds: float, warmup: float,
                     connections: int = CONNECTIONS, timeout: float = 10.0) -> LoadResult:
    """wrk -c`connections` against one server; non-2xx answers do not fail the row."""
    with serve(cmd) as server:
        server.wait_ready(url)
        if warmup > 0:
            wrk(url, warmup, connections, timeout)
        return measure(server, url, seconds, connections, timeout)


# -- body throughput -------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyResult:
    size: int
    bodies: int  # echoed intact
    bad: int  # wrong status or altered body
    seconds: float
    cpu_seconds: float  # server process tree

    @property
    def mb_per_s(self) -> float:
        return self.bodies * self.size / self.seconds / 1e6

    @property
    def cpu_bound_mb_per_s(self) -> float:
        """MB/s one core could echo at this server CPU per byte (the load-independent
        figure: the clients share the cores and cap what is measured)."""
        return self.bodies * self.size / self.cpu_seconds / 1e6 if self.cpu_seconds else 0.0

    @property
    def cpu_ms_per_mib(self) -> float:
        return self.cpu_seconds / (self.bodies * self.size / MiB) * 1e3 if self.bodies else 0.0


def _echo_clients(base: str, path: str, body: bytes, seconds: float,
                  clients: int) -> tuple[int, int, float]:
    """`clients` threads POST `body` in a loop until `seconds` pass (at least once each)."""
    deadline = time.perf_counter() + seconds
    counts = [[0, 0] for _ in range(clients)]

    def client(slot: list[int]) -> None:
        while True:
            try:
                status, _, content = duplex.post(base, path, body, timeout=300.0)
                good = status == 200 and content == body
            except OSError:
                good = False
            slot[0 if good else 1] += 1
            if time.perf_counter() >= deadline:
                return

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts), time.perf_counter() - started


def body_throughput(cmd: Sequence[str], ready_url: str, path: str, sizes: Sequence[int],
                    seconds: float, clients: int = BODY_CLIENTS) -> list[BodyResult]:
    """One server; for each size, `clients` concurrent echo clients (pinned to the client
    core) for `seconds`, after one untimed 1 MiB body per client."""
    results = []
    with serve(cmd) as server:
        server.wait_ready(ready_url)
        base = ready_url.split("/", 3)[0] + "//" + ready_url.split("/", 3)[2]
        with pinned(CLIENT_CORE):
            for size in sizes:
                body = os.urandom(size)
                _echo_clients(base, path, body[:MiB], 0, clients)  # warm-up
                before = tree_cpu_seconds(server.pid)
                good, bad, wall = _echo_clients(base, path, body, seconds, clients)
                cpu = tree_cpu_seconds(server.pid) - before
                results.append(BodyResult(size, good, bad, wall, cpu))
        if server.proc.poll() is not None:
            raise ServerError(f"server died during the run:\n{server.log_tail()}")
    return results
