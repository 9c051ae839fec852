"""Prometheus metrics: `--metrics-listen HOST:PORT`, a listener of its own.

Off by default; prometheus_client is imported only when it is on. Apps never
see the metrics listener (nor shadow it with a route): it is another socket,
served by prometheus_client's own HTTP server on a daemon thread.

What is counted, and where:

- On the request path, `RequestMetrics` wraps the ASGI app like the access
  log does and, per request, counts it by component and status, observes its
  latency (arrival to last body byte) and keeps the in-flight gauge; traps and
  deadline hits are read from the scope (`FAILURE_KEY`, set by host/server.py).
  Per request: a few dict lookups and three lock-protected adds.
- Everything else is read only when scraped (`AppCollector`): instance pools
  (ready, size, misses, created, time spent instantiating; host/runtime/pool.py
  keeps plain counters), admission (running and queued per component), guest
  calls in flight, request body bytes in flight, the memory limit per instance
  and the process's peak resident memory.

Guest memory: wasmtime-py 50's component API exposes neither a component
instance's linear memories nor a store's memory use (its store limiter has no
callback), so no per-instance high-water mark can be read cheaply. What is
reported is the process's: `process_resident_memory_bytes` (now) and
`spinhost_process_peak_resident_memory_bytes` (getrusage's high-water mark),
next to `spinhost_instance_memory_limit_bytes`, the cap each instance runs under.

With `--workers N` each worker keeps its own registry (in memory, so the
request path costs the same as with one process) and serves it on a Unix
socket in a private directory; the supervisor owns the listener and, on each
scrape, reads every serving worker's metrics and exposes them with a `worker`
label (its slot, 0..N-1; a replacement takes the slot of the worker it
replaces, its counters starting from zero as after any process restart).
prometheus_client's multiprocess mode was the alternative: it writes every
increment to a memory-mapped file (slower per request), cannot run the
scrape-time collectors above (pool sizes, admission), and sums counters across
processes, so one worker's numbers would not be seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from host.errors import ConfigError
from host.server import COMPONENT_KEY, FAILURE_KEY, Receive, ResponseWatch, Scope, Send

if TYPE_CHECKING:
    from host.redis_trigger import RedisTriggers
    from host.server import HostApp

log = logging.getLogger("host.metrics")

NONE = "-"  # the component label of a request no component served (as in the access log)
# Seconds; a trivial component answers in well under a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
WORKER_SCRAPE_TIMEOUT = 2.0  # seconds the supervisor waits for one worker's metrics


class Metrics:
    """One process's registry: the request counters, and the app's state at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, resident memory, start time
        r = self.registry
        self.requests = Counter("spinhost_http_requests", "HTTP requests answered, by "
                                "component (- for none) and status", ["component", "status"],
                                registry=r)
        self.latency = Histogram("spinhost_http_request_duration_seconds", "From a request's "
                                 "arrival to its last body byte, by component", ["component"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("spinhost_http_requests_in_flight",
                               "Requests received and not yet answered", registry=r)
        self.traps = Counter("spinhost_guest_traps", "Requests whose guest trapped (a wasm "
                             "trap, a limit hit, a failed host function; answered 500)",
                             ["component"], registry=r)
        self.deadlines = Counter("spinhost_deadline_exceeded", "Requests past their "
                                 "execution deadline (answered 504)", ["component"], registry=r)
        self._app = AppCollector()
        r.register(self._app)
        # Label children by value, made once: .labels() costs more than the add itself.
        self._counted: dict[tuple[str | None, int | None], Any] = {}
        self._timed: dict[str | None, Any] = {}

    def attach(self, host_app: HostApp) -> None:
        """Read this app's pools and admission on every scrape from now on."""
        self._app.host_app = host_app

    def attach_triggers(self, triggers: RedisTriggers) -> None:
        """Read the Redis subscribers' counters on every scrape from now on."""
        self._app.triggers = triggers

    def observe(self, component: str | None, status: int | None, seconds: float,
                failure: str | None) -> None:
        counted = self._counted.get((component, status))
        if counted is None:
            counted = self._counted[(component, status)] = self.requests.labels(
                component or NONE, str(status) if status is not None else NONE)
        counted.inc()
        timed = self._timed.get(component)
        if timed is None:
            timed = self._timed[component] = self.latency.labels(component or NONE)
        timed.observe(seconds)
        if failure == "trap":
            self.traps.labels(component or NONE).inc()
        elif failure == "deadline":
            self.deadlines.labels(component or NONE).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI wrapper: counts and times every request (see the module docstring)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        watch = ResponseWatch(send)
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, watch)
        except BaseException:
            watch.raised()
            raise
        finally:
            metrics.in_flight.dec()
            metrics.observe(scope.get(COMPONENT_KEY), watch.status,
                            time.perf_counter() - start, scope.get(FAILURE_KEY))


class AppCollector(Collector):
    """The app's state, read when scraped: nothing on the request path."""

    def __init__(self) -> None:
        self.host_app: HostApp | None = None
        self.triggers: RedisTriggers | None = None

    def collect(self) -> Iterable[Metric]:
        peak = GaugeMetricFamily("spinhost_process_peak_resident_memory_bytes",
                                 "High-water mark of this process's resident memory "
                                 "(getrusage), guest memory included")
        peak.add_metric([], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        yield peak
        host_app = self.host_app
        if host_app is None:
            return  # still loading
        labels = ["component"]
        ready = GaugeMetricFamily("spinhost_pool_ready_instances",
                                  "Pre-instantiated instances ready now", labels=labels)
        size = GaugeMetricFamily("spinhost_pool_size", "Instances the pool keeps ready "
                                 "(--pool-size)", labels=labels)
        misses = CounterMetricFamily("spinhost_pool_misses", "Requests that found the pool "
                                     "empty and instantiated inline", labels=labels)
        created = CounterMetricFamily("spinhost_instances_created", "Instances made, ahead "
                                      "of time or inline", labels=labels)
        instantiate = SummaryMetricFamily("spinhost_instantiate_seconds", "Time spent "
                                          "instantiating (count: instances made)",
                                          labels=labels)
        memory = GaugeMetricFamily("spinhost_instance_memory_limit_bytes", "Linear memory "
                                   "one instance may use (--max-instance-memory)",
                                   labels=labels)
        for executor in {e.id: e for e in host_app.app.executors.values()}.values():
            memory.add_metric([executor.id], executor.limits.memory_bytes)
            pool = getattr(executor, "pool", None)
            if pool is None:
                continue  # WAGI: a program instantiates per request, without a pool
            ready.add_metric([executor.id], len(pool))
            size.add_metric([executor.id], pool.size)
            misses.add_metric([executor.id], pool.misses)
            created.add_metric([executor.id], pool.created)
            instantiate.add_metric([executor.id], pool.created, pool.instantiate_seconds)
        running = GaugeMetricFamily("spinhost_component_requests_running", "Requests a "
                                    "component runs now (--max-concurrent-requests)",
                                    labels=labels)
        queued = GaugeMetricFamily("spinhost_component_requests_queued", "Requests waiting "
                                   "to run (--max-queued-requests)", labels=labels)
        for component, now, waiting in host_app.admission():
            running.add_metric([component], now)
            queued.add_metric([component], waiting)
        calls = GaugeMetricFamily("spinhost_guest_calls_in_flight", "Guest calls running on "
                                  "guest threads (they outlive a cancelled request until "
                                  "their deadline)")
        calls.add_metric([], host_app.in_flight)
        yield from (ready, size, misses, created, instantiate, memory, running, queued, calls)
        if self.triggers is not None:
            yield from _trigger_metrics(self.triggers)


def _trigger_metrics(triggers: RedisTriggers) -> Iterable[Metric]:
    messages = CounterMetricFamily("spinhost_redis_messages", "Redis messages handed to a "
                                   "component, by outcome: ok, error (the handler's error), "
                                   "trap, deadline, dropped (over --max-message-bytes)",
                                   labels=["component", "outcome"])
    for (component, outcome), count in sorted(triggers.counts().items()):
        messages.add_metric([component, outcome], count)
    in_flight = GaugeMetricFamily("spinhost_redis_messages_in_flight", "Redis messages being "
                                  "handled now (at most --max-concurrent-messages per "
                                  "subscriber)")
    in_flight.add_metric([], triggers.in_flight)
    connected = GaugeMetricFamily("spinhost_redis_subscribers_connected", "Redis subscribers "
                                  "(one per address) subscribed now; the others are "
                                  "reconnecting", labels=["address"])
    for subscriber in triggers.subscribers:
        connected.add_metric([subscriber.shown], 1 if subscriber.connected else 0)
    yield from (messages, in_flight, connected)


# -- serving ------------------------------------------------------------------


def listen(address: tuple[str, int], registry: Collector) -> tuple[str, int]:
    """Serve `registry` over HTTP at `address` on a daemon thread; the bound address."""
    host, port = address
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-listen {host}:{port}: cannot listen: "
                          f"{exc.strerror or exc}") from None
    return str(server.server_address[0]), int(server.server_address[1])


def serve_process(address: tuple[str, int], report: Callable[[str], None]) -> Metrics:
    """`host up` in one process: its metrics on the listener."""
    metrics = Metrics()
    bound = listen(address, metrics.registry)
    report(f"Metrics on {_url(bound)}")
    return metrics


def serve_worker(directory: Path) -> Metrics:
    """A worker (`--workers N`): its metrics on `DIRECTORY/PID.sock`, for the supervisor."""
    metrics = Metrics()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(directory / f"{os.getpid()}.sock"))
    sock.listen(8)

    def answer() -> None:
        while True:
            conn, _ = sock.accept()
            with conn, contextlib.suppress(OSError):
                conn.sendall(metrics.exposition())

    threading.Thread(target=answer, name="metrics", daemon=True).start()
    return metrics


class Workers(Collector):
    """The supervisor's view: every serving worker's metrics, labelled `worker`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.serving: Callable[[], list[tuple[int, int]]] = list  # (slot, pid) of each

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for slot, pid in sorted(self.serving()):
            text = self._read(pid)
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
                into.samples.extend(s._replace(labels={**s.labels, "worker": str(slot)})
                                    for s in family.samples)
        workers = GaugeMetricFamily("spinhost_workers", "Worker processes serving")
        workers.add_metric([], len(self.serving()))
        yield workers
        yield from merged.values()

    def _read(self, pid: int) -> str | None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(WORKER_SCRAPE_TIMEOUT)
                sock.connect(str(self.directory / f"{pid}.sock"))
                chunks = list(iter(lambda: sock.recv(65536), b""))
        except OSError as exc:  # a worker stopping, or too busy to answer in time
            log.debug("metrics of worker %d: %s", pid, exc)
            return None
        return b"".join(chunks).decode()


@contextlib.contextmanager
def serve_supervisor(address: tuple[str, int], report: Callable[[str], None]
                     ) -> Iterator[Workers]:
    """The listener for `--workers N`, and the directory the workers' sockets go in."""
    directory = Path(tempfile.mkdtemp(prefix="spinhost-metrics-"))
    try:
        workers = Workers(directory)
        registry = CollectorRegistry()
        registry.register(workers)
        bound = listen(address, registry)
        report(f"Metrics on {_url(bound)} (every worker's, labelled worker=0..N-1)")
        yield workers
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
