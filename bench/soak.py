"""Soak: many requests, healthy and faulting, from concurrent clients; not a unit test.

    .venv/bin/python -m bench.soak [--requests 20000] [--clients 8]

Serves tiny WAT components (a healthy one, a trapping one, a memory bomb and an
infinite loop with a 0.2 s deadline) from a real `host up` on loopback, sends
the requests from several threads (bounded in count and time), then reports:
answered/sent, status counts, p50/p99 of the healthy calls, host RSS after
warm-up and at the end, and the instance pool sizes the host reports at exit.
Expected: every request answered, no restart, RSS growth < 10 %, pools full.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests import wat
from tests.conftest import HostProcess, write_app

# route -> (WAT body, share of the requests, expected status)
MIX = {
    "/ok": (wat.FIXED, 0.85, 200),
    "/trap": (wat.TRAP, 0.06, 500),
    "/bomb": (wat.MEMORY_BOMB, 0.06, 500),
    "/loop": (wat.SPIN, 0.03, 504),
}
TIME_BUDGET_SECONDS = 600


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def build_app(directory: Path) -> None:
    manifest = ['spin_manifest_version = 2', '[application]', 'name = "soak"']
    for route, (body, _, _) in MIX.items():
        name = route.strip("/")
        wat.build_component(body, directory / f"{name}.wasm")
        manifest += ["[[trigger.http]]", f'route = "{route}"', f'component = "{name}"',
                     f"[component.{name}]", f'source = "{name}.wasm"']
    write_app(directory, "\n".join(manifest) + "\n")


def run(requests: int, clients: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build_app(directory)
        host = HostProcess(["-f", str(directory), "--cache-dir", str(directory / "cache"),
                            "--state-dir", "", "--max-instance-memory", "16",
                            "--request-timeout", "loop=0.2", "--max-queued-requests", "1000"])
        host.start()
        pid = host.pid
        routes = list(MIX)
        weights = [MIX[r][1] for r in routes]
        statuses: collections.Counter[str] = collections.Counter()
        healthy_ms: list[float] = []
        lock = threading.Lock()
        deadline = time.monotonic() + TIME_BUDGET_SECONDS

        def client(n: int, seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=host.base_url, timeout=30) as c:
                for _ in range(n):
                    if time.monotonic() > deadline:
                        return
                    route = rng.choices(routes, weights)[0]
                    start = time.perf_counter()
                    try:
                        status = str(c.get(route).status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    elapsed = (time.perf_counter() - start) * 1000
                    with lock:
                        statuses[f"{route} {status}"] += 1
                        if route == "/ok":
                            healthy_ms.append(elapsed)

        def wave(total: int) -> None:
            threads = [threading.Thread(target=client, args=(total // clients, i))
                       for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        wave(min(1000, requests // 10))  # warm-up: allocators, pools
        statuses.clear()
        healthy_ms.clear()
        rss_start = rss_kib(pid)
        started = time.perf_counter()
        wave(requests)
        seconds = time.perf_counter() - started
        rss_end = rss_kib(pid)
        time.sleep(1.0)  # idle: pools should be back to their configured size
        host.send_signal(signal.SIGTERM)
        code = host.wait(timeout=30)
        host.wait_for_output("Instance pools at exit", timeout=5)
        pools = re.search(r"Instance pools at exit: (.*)", host.output)

    pool_text = pools.group(1) if pools else ""
    full = bool(pool_text) and all(a == b for a, b in re.findall(r"=(\d+)/(\d+)", pool_text))
    sent = (requests // clients) * clients
    answered = sum(n for key, n in statuses.items() if key.split()[1].isdigit())
    wrong = {k: n for k, n in statuses.items()
             if k.split()[1] != str(MIX[k.split()[0]][2])}
    q = statistics.quantiles(healthy_ms, n=100)
    print(f"## Soak: {sent} requests from {clients} clients in {seconds:.1f} s\n")
    print(f"- answered / sent: {answered} / {sent}")
    print(f"- status counts: {dict(sorted(statuses.items()))}")
    print(f"- unexpected statuses: {wrong or 'none'}")
    print(f"- healthy calls: p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
    print(f"- host RSS after warm-up {rss_start / 1024:.1f} MiB, at the end "
          f"{rss_end / 1024:.1f} MiB ({(rss_end - rss_start) / rss_start * 100:+.1f} %)")
    print(f"- pools at exit: {pool_text or 'not reported'}; exit code {code}")
    ok = (answered == sent and not wrong and code == 0 and rss_end <= rss_start * 1.10
          and full)
    print(f"- verdict: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    return run(args.requests, args.clients)


if __name__ == "__main__":
    raise SystemExit(main())
