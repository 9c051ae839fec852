"""In-process measurements of the host's own code (imports `host`).

- `abi_calls`: `host.runtime.abi.call_handler` on the WAT echo component per
  micro case; `generic_abi_calls` runs the same cases through wasmtime-py's
  generic API in a subprocess that never imports `host` (bench.generic_micro).
- `instantiate_times`: one instantiation per example app, as the pool does it.
- `loop_rate`: instantiate + call for one app, back to back (no HTTP): the
  ceiling for `host up` with a fresh instance per request.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, SERVER_CORE, pin, timed_loop
from bench.generic import CASES, case_name, case_request


@dataclass(frozen=True)
class Budget:
    max_iterations: int
    max_seconds: float


def _host() -> tuple[Any, Any]:
    """Import the host lazily, so importing this module alone patches nothing."""
    from host.runtime import abi
    from host.runtime.engine import Engine

    return abi, Engine


def abi_calls(echo_wasm: Path, budget: Budget) -> dict[str, dict[str, float]]:
    abi, Engine = _host()
    import wasmtime
    import wasmtime.component as wc

    engine = Engine(None)
    component = engine.load(echo_wasm, "echo").component
    linker = wc.Linker(engine.wasmtime)
    linker.add_wasip2()
    export = abi.HandlerExport.find(component, engine.wasmtime)

    def instantiate() -> Any:
        store = wasmtime.Store(engine.wasmtime)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1 << 40)
        return export.bind(store, linker.instantiate(store, component))

    results = {}
    for headers, body in CASES:
        method, path, hdrs, data = case_request(headers, body)
        request = abi.HttpRequest(method, "http", "x", path, hdrs, data)
        response = abi.call_handler(instantiate(), request)
        if response.status != 200 or response.body != data or list(response.headers) != hdrs:
            raise RuntimeError(f"echo mismatch for {case_name(headers, body)}")

        def once(request: object = request) -> float:
            handler = instantiate()
            start = time.perf_counter()
            abi.call_handler(handler, request)
            return time.perf_counter() - start

        samples = timed_loop(once, budget.max_iterations, budget.max_seconds)
        results[case_name(headers, body)] = {"mean_us": sum(samples) / len(samples) * 1e6,
                                             "n": len(samples)}
    return results


def generic_abi_calls(echo_wasm: Path, budget: Budget) -> dict[str, dict[str, float]]:
    cmd = [*pin(SERVER_CORE), PYTHON, "-m", "bench.generic_micro", str(echo_wasm),
           "--max-iterations", str(budget.max_iterations),
           "--max-seconds", str(budget.max_seconds)]
    worst = budget.max_seconds * len(CASES) + 120  # + the slowest single calls
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=worst).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@contextmanager
def _executor(app_dir: Path, cache_dir: Path) -> Iterator[object]:
    """The app's (only) component executor, loaded as `host up` would, with no pool."""
    from host.app import AppSettings, load_app
    from host.limits import HttpLimits, Limits, pooling_limits
    from host.manifest import load_manifest
    from host.runtime.engine import Engine

    # The allocator `host up` uses for one component (bench/guest_startup.py compares both).
    engine = Engine(cache_dir, pooling=pooling_limits(1, 4, HttpLimits().max_concurrent,
                                                      Limits().memory_bytes))
    app = load_app(load_manifest(str(app_dir)), engine, AppSettings(pool_size=0))
    try:
        (executor,) = app.executors.values()
        yield executor
    finally:
        app.close()


def instantiate_time(app_dir: Path, cache_dir: Path, budget: Budget) -> dict[str, float]:
    """Mean seconds for one instantiation (an empty pool's `take()`: instantiate inline)."""
    with _executor(app_dir, cache_dir) as executor:
        executor.pool.take()  # type: ignore[attr-defined]  # warm-up

        def once() -> float:
            start = time.perf_counter()
            executor.pool.take()  # type: ignore[attr-defined]
            return time.perf_counter() - start

        samples = timed_loop(once, budget.max_iterations, budget.max_seconds)
    return {"mean_ms": sum(samples) / len(samples) * 1e3, "n": len(samples)}


def loop_rate(app_dir: Path, route: str, cache_dir: Path, budget: Budget) -> dict[str, float]:
    """Requests/s of `executor.handle` back to back with an empty pool (instantiate + call)."""
    abi, _ = _host()
    request = abi.HttpRequest("GET", "http", "127.0.0.1", route,
                              [("host", b"127.0.0.1"), ("user-agent", b"bench")], b"")
    with _executor(app_dir, cache_dir) as executor:
        if executor.handle(request).status != 200:  # type: ignore[attr-defined]
            raise RuntimeError(f"{app_dir.name}{route} did not answer 200")
        n = 0
        start = time.perf_counter()
        deadline = start + budget.max_seconds
        while n < budget.max_iterations and time.perf_counter() < deadline:
            executor.handle(request)  # type: ignore[attr-defined]
            n += 1
        elapsed = time.perf_counter() - start
    return {"rps": n / elapsed, "n": n}
