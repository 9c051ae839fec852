"""Quick side-by-side figures: compile (cold vs cached), instantiate, requests/s.

    .venv/bin/python -m bench.quick [--seconds 5] [--connections 16]

Builds the example apps if needed (as the tests do), then in one run:
  1. compile each app's component cold and load it from the compile cache;
  2. instantiate each component (fresh store each time, as a request does);
  3. load with wrk (Debian package `wrk`): a plain Starlette hello app (the
     baseline, same uvicorn settings) and `host up` serving each hello app,
     each server pinned to core 0 and wrk to core 1 when there are 2+ cores.
Prints a markdown table with ratios against the baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import wasmtime
import wasmtime.component as wc

from host.runtime.engine import Engine
from tests.apps import OUTPUTS, built_app

ROOT = Path(__file__).resolve().parent.parent
BASELINE_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("Hello from Starlette\\n")

app = Starlette(routes=[Route("/hello", hello)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run([*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses")
    return rps, p50.group(1) if p50 else "?"


def serve_and_load(cmd: list[str], url: str, seconds: int, connections: int,
                   cwd: Path = ROOT) -> tuple[float, str]:
    proc = subprocess.Popen([*pin(0), *cmd], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, proc)
        wrk(url, 1, connections)  # warm-up
        return wrk(url, seconds, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 1
    apps = ["hello-python", "hello-ts", "echo"]
    dirs = {app: built_app(app) for app in apps}

    print("## Compile and instantiate\n")
    print("| app | .wasm | compile cold | load from cache | speed-up | instantiate (mean of 50) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for app in apps:
            path = dirs[app] / OUTPUTS[app]
            cold = Engine(None).load(path, app)
            engine = Engine(Path(cache))
            engine.load(path, app)  # fills the cache
            warm = engine.load(path, app)
            assert warm.cached
            linker = wc.Linker(engine.wasmtime)
            linker.add_wasip2()
            start = time.perf_counter()
            for _ in range(50):
                store = wasmtime.Store(engine.wasmtime)
                store.set_wasi(wasmtime.WasiConfig())
                store.set_epoch_deadline(1 << 30)
                linker.instantiate(store, warm.component)
            inst = (time.perf_counter() - start) / 50
            print(f"| {app} | {path.stat().st_size / 1e6:.1f} MB | {cold.seconds:.2f} s | "
                  f"{warm.seconds * 1000:.0f} ms | {cold.seconds / warm.seconds:.0f}x | "
                  f"{inst * 1000:.2f} ms |")

    print(f"\n## Requests/s (wrk -t1 -c{args.connections} -d{args.seconds}s, one uvicorn "
          "worker)\n")
    results: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "baseline.py").write_text(BASELINE_APP)
        port = free_port()
        rps, p50 = serve_and_load(
            [sys.executable, "-m", "uvicorn", "baseline:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log", "--no-server-header"],
            f"http://127.0.0.1:{port}/hello", args.seconds, args.connections, cwd=Path(tmp))
        results.append(("Starlette hello (baseline)", rps, p50))
        for app, route in (("hello-python", "/hello"), ("hello-ts", "/hello-ts")):
            port = free_port()
            rps, p50 = serve_and_load(
                [sys.executable, "-m", "host", "up", "-f", str(dirs[app]), "-q",
                 "--cache-dir", str(Path(tmp) / "cache"), "--listen", f"127.0.0.1:{port}"],
                f"http://127.0.0.1:{port}{route}", args.seconds, args.connections)
            results.append((f"host up {app} (fresh instance per request)", rps, p50))
    base = results[0][1]
    print("| server | req/s | p50 | ratio to baseline |")
    print("|---|---|---|---|")
    for name, rps, p50 in results:
        print(f"| {name} | {rps:,.0f} | {p50} | {rps / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
