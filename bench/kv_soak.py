"""Soak for capabilities: apps/kv-counter under concurrent load; not a unit test.

    .venv/bin/python -m bench.kv_soak [--requests 6000] [--clients 8]

A real `host up` of apps/kv-counter (SQLite key-value and database in a temp
state dir). Clients send a mix of `GET /` (atomic increment), `GET /visits`
(SQLite insert + select) and `GET /greeting` (a variable). Reports
answered/sent, whether the counter equals the number of increments exactly
(8 clients racing on one key), and host RSS after warm-up and at the end (open
SQLite connections or leaked resource entries would show there). Expected:
all answered, exact count, RSS growth < 10 %.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading

import httpx

from bench.soak import rss_kib
from tests.apps import built_app
from tests.conftest import HostProcess

MIX = (("/", 0.6), ("/visits", 0.3), ("/greeting", 0.1))


def run(requests: int, clients: int) -> int:
    with tempfile.TemporaryDirectory(prefix="kv-soak-") as tmp:
        host = HostProcess(["-f", str(built_app("kv-counter")), "-q", "--state-dir", tmp])
        host.start()
        pid = host.pid
        counts = {"/": 0, "/visits": 0, "/greeting": 0}
        failures: list[str] = []
        lock = threading.Lock()

        def client(n: int, seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=host.base_url, timeout=60) as c:
                for _ in range(n):
                    path = rng.choices([p for p, _ in MIX], [w for _, w in MIX])[0]
                    response = c.get(path)
                    with lock:
                        counts[path] += 1
                        if response.status_code != 200:
                            failures.append(f"{path} {response.status_code}")

        def wave(total: int, seed: int) -> None:
            threads = [threading.Thread(target=client, args=(total // clients, seed + i))
                       for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        wave(clients * 50, 1)  # warm-up
        rss_start = rss_kib(pid)
        wave(requests, 100)
        rss_end = rss_kib(pid)
        with httpx.Client(base_url=host.base_url) as c:
            final = int(c.get("/").text)
        increments = counts["/"] + 1
        code = host.stop()
    sent = sum(counts.values())
    growth = (rss_end - rss_start) / rss_start * 100
    print(f"- requests: {sent} sent, {sent - len(failures)} answered 200; "
          f"failures: {failures[:5] or 'none'}")
    print(f"- counter {final}, increments {increments}: "
          f"{'exact' if final == increments else 'MISMATCH'}")
    print(f"- host RSS after warm-up {rss_start / 1024:.1f} MiB, at the end "
          f"{rss_end / 1024:.1f} MiB ({growth:+.1f} %); exit code {code}")
    ok = not failures and final == increments and growth < 10 and code == 0
    print(f"- verdict: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kv_soak")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    return run(args.requests, args.clients)


if __name__ == "__main__":
    raise SystemExit(main())
