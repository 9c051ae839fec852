"""`host up --workers 1` against `--workers 2`: throughput and CPU time per request.

    .venv/bin/python -m bench.workers [--seconds 8] [--rounds 3] [--connections 16]

The trivial WAT component (fresh instance per request) under `wrk -t1 -cN
--latency`, the two configurations interleaved round by round (1, 2, 2, 1, ...)
so that the other load on the machine hits both alike. Per run:

- req/s and p50/p99 as wrk reports them;
- CPU per request: user+sys of the server's process tree (supervisor and
  workers, from /proc/PID/stat) over the measured window, divided by the
  requests wrk counted: a figure that does not depend on who else uses the
  cores, the load generator included;
- server cores: that CPU time over the window's wall time (how many cores the
  server actually got), and wrk's own CPU per request.

Placement (`--placement` of each configuration):
- taskset: `--workers 1` started on core 0 (taskset), wrk on core 1: the main
  benchmark's setup;
- auto: no taskset, the host's default `--cpu-pinning auto` (each process pins
  its threads to one CPU once loaded, host/affinity.py); wrk shares the cores;
- off: no taskset and `--cpu-pinning off`: the threads float over both cores.
`--workers 2` (auto) needs both cores, so wrk shares them. On a 2-core machine
wrk takes part of the server's cores, and measured req/s understates what 2
workers do with 2 cores of their own; "projected" is what each configuration
would serve with one core per worker all to itself: workers / CPU per request.

`--app hello-js` serves apps/hello-js (componentize-js, wasi:http) at
/hello-js instead of the trivial component; `--app burn` a WAT component that
computes ~10 ms per request first (tests/wat.py `burn`): where threads free to
run on every core do better than one pinned process.

Prints a markdown table; writes nothing (paste it into bench/REPORT.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import CLIENT_CORE, LOOPBACK, PYTHON, ROOT, SERVER_CORE, free_port, pin, stop
from bench.fixtures import prepare
from bench.hostproc import HEALTH, fill_cache
from bench.http import LoadResult, parse_wrk, wrk_available

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# (workers, placement): run in this order, then reversed, round after round.
CONFIGURATIONS = ((1, "taskset"), (1, "auto"), (1, "off"), (2, "auto"))
PLACEMENTS = {"taskset": "taskset core 0, wrk core 1", "auto": "--cpu-pinning auto",
              "off": "--cpu-pinning off"}


@dataclass(frozen=True)
class Run:
    workers: int
    placement: str
    load: LoadResult
    seconds: float  # wall time of the measured window
    server_cpu: float  # seconds, server process tree
    wrk_cpu: float  # seconds

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.load.requests * 1e6

    @property
    def cores(self) -> float:
        return self.server_cpu / self.seconds

    @property
    def projected_rps(self) -> float:
        return self.workers / (self.server_cpu / self.load.requests)


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def child_cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def measure(app: Path, cache: Path, workers: int, placement: str, seconds: float,
            connections: int, warmup: float, route: str = "/fixed") -> Run:
    port = free_port()
    url = f"http://{LOOPBACK}:{port}{route}"
    cmd = [PYTHON, "-m", "host", "up", "-f", str(app), "-q", "--no-access-log",
           "--state-dir", "",
           "--cache-dir", str(cache), "--listen", f"{LOOPBACK}:{port}",
           "--workers", str(workers), "--cpu-pinning", "off" if placement == "off" else "auto"]
    pinned = placement == "taskset"
    server_pin = pin(SERVER_CORE) if pinned else []
    client_pin = pin(CLIENT_CORE) if pinned else []
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*server_pin, *cmd], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, f"http://{LOOPBACK}:{port}{HEALTH}", workers)
            wrk = [*client_pin, "wrk", "-t1", f"-c{connections}", "--latency"]
            subprocess.run([*wrk, f"-d{max(1, round(warmup))}s", url], capture_output=True,
                           check=True)
            pids = tree(proc.pid)
            before, wrk_before, start = cpu_seconds(pids), child_cpu_seconds(), time.monotonic()
            out = subprocess.run([*wrk, f"-d{max(1, round(seconds))}s", url],
                                 capture_output=True, text=True, check=True).stdout
            elapsed = time.monotonic() - start
            server_cpu = cpu_seconds(pids) - before
            wrk_cpu = child_cpu_seconds() - wrk_before
            if proc.poll() is not None:
                raise RuntimeError(f"host up --workers {workers} died during the run")
        finally:
            stop(proc)  # type: ignore[arg-type]
    load = parse_wrk(out)
    if load.errors:
        raise RuntimeError(f"--workers {workers}: {load.errors} errors in {load.requests}")
    return Run(workers, placement, load, elapsed, server_cpu, wrk_cpu)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, workers: int,
                timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"host up --workers {workers} exited with {proc.returncode}")
        expected = workers if workers > 1 else 0
        if len(tree(proc.pid)) - 1 >= expected:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"host up --workers {workers} not ready after {timeout:g} s")


def table(runs: list[Run]) -> str:
    lines = ["| workers | req/s | p50 ms | p99 ms | server CPU per request | server cores "
             "| wrk CPU per request | projected req/s (one core per worker) |",
             "|---|---|---|---|---|---|---|---|"]
    for workers, placement in CONFIGURATIONS:
        mine = [r for r in runs if (r.workers, r.placement) == (workers, placement)]
        med = statistics.median
        lines.append(
            f"| {workers}, {PLACEMENTS[placement]} | {med(r.load.rps for r in mine):,.0f} "
            f"| {med(r.load.p50_ms for r in mine):.2f} | {med(r.load.p99_ms for r in mine):.2f} "
            f"| {med(r.cpu_us for r in mine):.0f} us | {med(r.cores for r in mine):.2f} "
            f"| {med(r.wrk_cpu / r.load.requests * 1e6 for r in mine):.0f} us "
            f"| {med(r.projected_rps for r in mine):,.0f} |")
    med = statistics.median

    def of(workers: int, placement: str) -> list[Run]:
        return [r for r in runs if (r.workers, r.placement) == (workers, placement)]

    def ratio(key: Callable[[Run], float], top: list[Run], bottom: list[Run]) -> float:
        return med(key(r) for r in top) / med(key(r) for r in bottom)

    two = of(2, "auto")
    for placement in ("taskset", "auto"):
        one = of(1, placement)
        lines += ["", f"2 workers / 1 worker ({PLACEMENTS[placement]}): CPU per request "
                      f"{ratio(lambda r: r.cpu_us, two, one):.2f}x (target <= 1.10), measured "
                      f"req/s {ratio(lambda r: r.load.rps, two, one):.2f}x, projected req/s "
                      f"{ratio(lambda r: r.projected_rps, two, one):.2f}x (target >= 1.6)"]
    auto, off = of(1, "auto"), of(1, "off")
    lines += ["", f"1 worker, pinned by itself / floating (auto / off): CPU per request "
                  f"{ratio(lambda r: r.cpu_us, auto, off):.2f}x, req/s "
                  f"{ratio(lambda r: r.load.rps, auto, off):.2f}x"]
    lines += ["", "Every run, in order: " + "; ".join(
        f"{r.workers} {r.placement} {r.load.rps:,.0f} req/s {r.cpu_us:.0f} us" for r in runs)]
    return "\n".join(lines)


def interleaved(app: Path, cache: Path, rounds: int, seconds: float, connections: int,
                warmup: float, route: str = "/fixed") -> list[Run]:
    """Every configuration `rounds` times, in alternating order."""
    runs = []
    for round_ in range(rounds):
        order = CONFIGURATIONS if round_ % 2 == 0 else CONFIGURATIONS[::-1]
        for workers, placement in order:
            runs.append(measure(app, cache, workers, placement, seconds, connections, warmup,
                                route))
            print(f"  --workers {workers} ({PLACEMENTS[placement]}): "
                  f"{runs[-1].load.rps:,.0f} req/s, {runs[-1].cpu_us:.0f} us CPU per "
                  "request", flush=True)
    return runs


def ratios(runs: list[Run]) -> tuple[float, float]:
    """2 workers against 1 worker on core 0 (taskset): CPU per request, projected req/s
    (medians)."""
    med = statistics.median
    two = [r for r in runs if r.workers == 2]
    one = [r for r in runs if (r.workers, r.placement) == (1, "taskset")]
    return (med(r.cpu_us for r in two) / med(r.cpu_us for r in one),
            med(r.projected_rps for r in two) / med(r.projected_rps for r in one))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--app", choices=("trivial", "hello-js", "burn"), default="trivial")
    args = parser.parse_args(argv)
    if not wrk_available():
        print("wrk is missing: apt-get install wrk")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as work:
        fixtures = prepare(Path(work))
        cache = Path(work) / "cache"
        app, route = {"trivial": (fixtures.wat_app, "/fixed"),
                      "burn": (fixtures.burn_app, "/fixed"),
                      "hello-js": (fixtures.app_dir("hello-js"), "/hello-js")}[args.app]
        fill_cache(app, cache)
        runs = interleaved(app, cache, args.rounds, args.seconds, args.connections,
                           args.warmup, route)
    print(f"\n`python -m bench.workers --app {args.app} --seconds {args.seconds:g} "
          f"--rounds {args.rounds} --connections {args.connections}`, "
          f"os.cpu_count()={os.cpu_count()}\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
