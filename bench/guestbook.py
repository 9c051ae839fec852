"""apps/guestbook on its two stacks through a real `host up`, the same .wasm files:
dev (SQLite, files, embedded key-value) and prod (PostgreSQL, S3 on a local
moto_server, Redis key-value), each with a private redis-server. Stacks are set
up as tests/test_guestbook.py sets them up.

    .venv/bin/python -m bench.guestbook [--posts 200] [--mib 16]

Prints per stack: POST /posts and GET /posts latency (sequential, one client;
median and p90), the notification lag (POST answered -> its id in GET
/notifications, polled every 5 ms: Redis publish, trigger, notifier, key-value),
and one attachment's upload/download MiB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.apps import built_app
from tests.loopback import stop_process
from tests.postgres_server import start_postgres
from tests.redis_server import start_redis
from tests.s3_server import start_s3
from tests.test_guestbook import dev_host, prod_host

MiB = 1024 * 1024


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"{statistics.median(ordered) * 1000:6.1f} ms "
            f"(p90 {ordered[int(len(ordered) * 0.9)] * 1000:6.1f})")


def measure(base_url: str, posts: int, data: bytes) -> list[str]:
    created, listed, lag = [], [], []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for i in range(posts):
            start = time.perf_counter()
            answer = client.post("/posts", json={"name": f"bench {i}", "message": "hello"})
            created.append(time.perf_counter() - start)
            assert answer.status_code == 201, answer.text
            if i % 10 == 0:  # every 10th: wait for the notifier (the rest queue behind it)
                post_id = answer.json()["id"]
                start = time.perf_counter()
                while post_id not in client.get("/notifications").json()["recent"]:
                    threading.Event().wait(0.005)
                lag.append(time.perf_counter() - start)
        for _ in range(50):
            start = time.perf_counter()
            assert client.get("/posts").status_code == 200
            listed.append(time.perf_counter() - start)
        post = client.post("/posts", json={"name": "file", "message": "attached"}).json()
        start = time.perf_counter()
        stored = client.put(post["attachment"],
                            content=(data[i:i + MiB] for i in range(0, len(data), MiB)))
        up = time.perf_counter() - start
        assert stored.status_code == 200, stored.text
        start = time.perf_counter()
        got = hashlib.sha256()
        with client.stream("GET", post["attachment"]) as answer:
            for chunk in answer.iter_bytes():
                got.update(chunk)
        down = time.perf_counter() - start
        assert got.digest() == hashlib.sha256(data).digest()
    mib = len(data) / MiB
    return [f"  POST /posts          {_ms(created)}",
            f"  GET /posts (100)     {_ms(listed)}",
            f"  notification lag     {_ms(lag)}",
            f"  attachment {mib:.0f} MiB    upload {mib / up:5.1f} MiB/s, "
            f"download {mib / down:5.1f} MiB/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--mib", type=int, default=16)
    args = parser.parse_args()
    app = built_app("guestbook")
    data = os.urandom(args.mib * MiB)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in ("dev", "prod"):
            stack = work / kind
            stack.mkdir()
            with ExitStack() as servers:
                redis_proc, redis_port = start_redis(stack)
                servers.callback(stop_process, redis_proc)
                if kind == "dev":
                    host, _ = dev_host(app, work / "cache", stack, redis_port)
                else:
                    pg_dir = Path(tempfile.mkdtemp(prefix="spinhost-pg-"))
                    servers.callback(shutil.rmtree, pg_dir, ignore_errors=True)
                    pg_proc, pg_port = start_postgres(pg_dir)
                    servers.callback(stop_process, pg_proc)
                    s3 = start_s3(stack)
                    servers.callback(s3.stop)
                    host, _, _ = prod_host(app, work / "cache", stack, redis_port, pg_port, s3)
                with host:
                    print(f"{kind}:", flush=True)
                    for line in measure(host.base_url, args.posts, data):
                        print(line, flush=True)

if __name__ == "__main__":
    main()
