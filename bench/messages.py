"""Redis trigger throughput: messages one component handles per second (`--only redis`).

A redis-server on loopback; `host up` (pinned to the server core) subscribed to one
channel; the bench process publishes MESSAGES messages with redis-py pipelining (in
batches of PIPELINE) and polls the host's `spinhost_redis_messages_total` until every
one is counted ok. Messages/s = MESSAGES / (last counted - first published); CPU per
message = the server process tree's user+sys over that time / MESSAGES. A warm-up of
WARMUP messages first, untimed.

Components: a trivial WAT handler (tests/wat.py REDIS_PRINTER, payload "m...": returns
ok at once) and apps/spin-redis-python (Spin SDK for Python 3.4.1: opens an outbound
Redis connection and RPUSHes the payload, so its `handled` list is also checked for
exactly MESSAGES entries). Each at --max-concurrent-messages 1 (the default: in order)
and 4.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.common import LOOPBACK, free_port, host_up_cmd, serve, tree_cpu_seconds

MESSAGES = 5000
WARMUP = 200
PIPELINE = 500
CHANNEL = "messages"
TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.05

WAT_MANIFEST = f"""spin_manifest_version = 2
[application]
name = "redis-wat"
[variables]
redis_host = {{ default = "127.0.0.1:6379" }}
[application.trigger.redis]
address = "redis://{{{{ redis_host }}}}"
[[trigger.redis]]
channel = "{CHANNEL}"
component = "printer"
[component.printer]
source = "printer.wasm"
"""


@dataclass(frozen=True)
class MessageRate:
    messages: int
    seconds: float
    cpu_seconds: float
    handled_list: int | None  # entries the app wrote (Spin SDK app), None if it writes none

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / self.messages


def wat_app(work: Path, printer_wasm: Path) -> Path:
    app = work / "redis-wat"
    app.mkdir(exist_ok=True)
    (app / "printer.wasm").write_bytes(printer_wasm.read_bytes())
    (app / "spin.toml").write_text(WAT_MANIFEST)
    return app


def rate(app_dir: Path, cache: Path, redis_port: int, *flags: str,
         counts_list: bool = False) -> MessageRate:
    port, metrics_port = free_port(), free_port()
    cmd = host_up_cmd(app_dir, port, cache, "--variable", f"redis_host={LOOPBACK}:{redis_port}",
                      "--variable", f"channel={CHANNEL}", "--metrics-listen",
                      f"{LOOPBACK}:{metrics_port}", *flags)
    metrics = f"http://{LOOPBACK}:{metrics_port}/metrics"
    with serve(cmd) as server, redis.Redis(host=LOOPBACK, port=redis_port) as client, \
            httpx.Client(timeout=10.0) as http:
        # Subscribed before the port answers (host/serve.py).
        server.wait_ready(f"http://{LOOPBACK}:{port}/.well-known/spin/health")
        client.delete("handled")
        _publish(client, WARMUP, "w")
        _wait_counted(http, metrics, WARMUP)
        cpu_before = tree_cpu_seconds(server.pid)
        started = time.perf_counter()
        _publish(client, MESSAGES, "m")
        _wait_counted(http, metrics, WARMUP + MESSAGES)
        seconds = time.perf_counter() - started
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        handled = int(client.llen("handled")) - WARMUP if counts_list else None
    return MessageRate(MESSAGES, seconds, cpu, handled)


def _publish(client: redis.Redis, count: int, prefix: str) -> None:
    for start in range(0, count, PIPELINE):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(count, start + PIPELINE)):
            pipe.publish(CHANNEL, f"{prefix}-{n}")
        receivers = pipe.execute()
        if receivers != [1] * len(receivers):
            raise RuntimeError(f"PUBLISH reached {set(receivers)} subscribers, not 1")


_OK = re.compile(r'^spinhost_redis_messages_total\{component="[^"]+",outcome="ok"\} (\S+)$',
                 re.MULTILINE)


def _wait_counted(http: httpx.Client, metrics: str, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = _OK.search(http.get(metrics).text)
        if found and float(found.group(1)) >= count:
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{count} messages not handled ok within {TIMEOUT_SECONDS:g} s")
