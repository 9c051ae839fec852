"""The Redis trigger (`[[trigger.redis]]`, host/redis_trigger.py) against a real redis-server.

Handlers are WAT components exporting Spin's `fermyon:spin/inbound-redis` that print
what they got (tests/wat.py `REDIS_PRINTER`), served by a real `host up`; the last
tests serve apps/spin-redis-python, built with spin-sdk 3.4.1 and componentize-py.
Messages are counted in what the guests wrote, never by timing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from host.app import App, Subscription
from host.errors import HandlerError
from host.limits import RedisTriggerLimits
from host.redis_trigger import RedisTriggers
from tests import wat
from tests.apps import built_app
from tests.conftest import HostProcess, run_host, write_app
from tests.loopback import free_port, stop_process
from tests.redis_server import start_redis

CHANNEL = "events"


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wat.build_redis_handler(tmp_path_factory.mktemp("redis-wat") / "printer.wasm")


@pytest.fixture
def admin(clean_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis_url)
    yield client
    client.close()


def _address(url: str) -> str:
    return url.rsplit("/", 1)[0]  # redis://127.0.0.1:PORT


def _manifest(address: str, extra: str = "", channel: str = CHANNEL) -> str:
    return f"""spin_manifest_version = 2
[application]
name = "redis-app"
[variables]
redis_address = {{ default = "{address}" }}
[application.trigger.redis]
address = "{{{{ redis_address }}}}"
[[trigger.redis]]
channel = "{channel}"
component = "printer"
[component.printer]
source = "printer.wasm"
{extra}"""


def _app(tmp_path: Path, printer: Path, address: str, extra: str = "",
         components: dict[str, Path] | None = None) -> Path:
    return write_app(tmp_path / "app", _manifest(address, extra),
                     {"printer.wasm": printer, **(components or {})})


def _host(app: Path, cache_dir: Path, *flags: str) -> HostProcess:
    return HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--state-dir", "",
                        "--pool-size", "1", *flags])


def _got(host: HostProcess, prefix: str = "[printer] got ") -> list[str]:
    return [line.removeprefix(prefix) for line in host.lines if line.startswith(prefix)]


def _wait_metrics(port: int, needles: list[str]) -> None:
    """Until every needle is in the metrics (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        missing = [needle for needle in needles if needle not in text]
        if not missing:
            return
        assert time.monotonic() < deadline, f"{missing} not in:\n{text}"
        time.sleep(0.05)


def _publish(client: redis.Redis, messages: list[str], channel: str = CHANNEL) -> list[int]:
    """PUBLISH each in one pipeline; how many subscribers received each."""
    pipe = client.pipeline(transaction=False)
    for message in messages:
        pipe.publish(channel, message)
    return [int(n) for n in pipe.execute()]


# ---------------------------------------------------------------------------
# Serving


def test_every_message_is_handled_once_in_order_through_traps_and_errors(
        printer: Path, cache_dir: Path, tmp_path: Path, clean_redis_url: str,
        admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    first = [f"x-{i}" for i in range(100)]
    second = [f"x-{i}" for i in range(100, 200)]
    metrics_port = free_port()
    with _host(app, cache_dir, "--max-message-bytes", "64", "--metrics-listen",
               f"127.0.0.1:{metrics_port}") as host:
        assert host.wait_for_output(f"Active Channels on {_address(clean_redis_url)}:")
        assert f"{_address(clean_redis_url)}/{CHANNEL}: [printer]" in host.output
        assert _publish(admin, [*first, "trap", "error", "big-" + "y" * 64, *second]) == \
            [1] * 203
        assert host.wait_for_count("[printer] got x-", 200, timeout=60), host.output
        assert _got(host) == first + second  # one subscriber, one message at a time: in order
        for needle in ("component printer: wasm trap: wasm `unreachable`",
                       "component printer: the handler returned error::error",
                       "a message of 68 bytes on"):
            (line,) = [line for line in host.lines if needle in line]
            assert f"{_address(clean_redis_url)}/{CHANNEL}" in line
        # The last guest has printed; its call is counted as it returns.
        _wait_metrics(metrics_port, [
            *(f'spinhost_redis_messages_total{{component="printer",outcome="{outcome}"}} '
              f"{count}.0" for outcome, count in (("ok", 200), ("trap", 1), ("error", 1),
                                                  ("dropped", 1))),
            "spinhost_redis_messages_in_flight 0.0",
            f'spinhost_redis_subscribers_connected{{address="{_address(clean_redis_url)}"}} 1.0'])
        assert host.stop() == 0


def test_http_and_redis_triggers_together(printer: Path, wat_components: dict[str, Path],
                                          cache_dir: Path, tmp_path: Path,
                                          clean_redis_url: str, admin: redis.Redis) -> None:
    extra = """[[trigger.redis]]
channel = "other"
component = "printer"
[[trigger.http]]
route = "/..."
component = "echo"
[component.echo]
source = "echo.wasm"
"""
    app = _app(tmp_path, printer, _address(clean_redis_url), extra,
               {"echo.wasm": wat_components["echo"]})
    with _host(app, cache_dir) as host, host.client() as client:
        assert "echo: http://" in host.output
        assert client.post("/anything", content=b"hello").content == b"hello"
        assert _publish(admin, ["x-on-events"]) == [1]
        assert _publish(admin, ["x-on-other"], channel="other") == [1]
        assert host.wait_for_count("[printer] got x-", 2), host.output
        assert sorted(_got(host)) == ["x-on-events", "x-on-other"]
        assert client.get("/again").status_code == 200
        assert host.stop() == 0


def test_an_app_with_only_redis_triggers_serves_health_and_no_routes(
        printer: Path, cache_dir: Path, tmp_path: Path, clean_redis_url: str,
        admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    with _host(app, cache_dir) as host, host.client() as client:
        assert client.get("/.well-known/spin/health").status_code == 200
        assert client.get("/.well-known/spin/info").json() == {"name": "redis-app"}
        assert client.get("/").status_code == 404
        assert _publish(admin, ["x-1"]) == [1]
        assert host.wait_for_output("[printer] got x-1")


def test_the_subscriber_reconnects_after_redis_restarts(printer: Path, cache_dir: Path,
                                                        tmp_path: Path) -> None:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server, port = start_redis(workdir)
    address = f"redis://127.0.0.1:{port}"
    app = _app(tmp_path, printer, address)
    try:
        with _host(app, cache_dir) as host:
            with redis.Redis.from_url(address) as client:
                assert _publish(client, ["x-before"]) == [1]
            assert host.wait_for_output("[printer] got x-before")
            stop_process(server)
            assert host.wait_for_output(f"lost the subscription to {address}"), host.output
            # Down for a while: several reconnection attempts fail meanwhile.
            threading.Event().wait(1.0)
            server, _ = start_redis(workdir, port)
            assert host.wait_for_output(f"subscribed again to {address}", timeout=30), \
                host.output
            with redis.Redis.from_url(address) as client:
                assert _publish(client, ["x-after"]) == [1]
            assert host.wait_for_output("[printer] got x-after")
            # One line when the outage starts, one when it ends: not one per attempt.
            assert sum("lost the subscription" in line for line in host.lines) == 1
            (again,) = [line for line in host.lines if "subscribed again" in line]
            assert "attempt" in again and "(1 attempt)" not in again, again
            assert _got(host) == ["x-before", "x-after"]
            assert host.stop() == 0
    finally:
        stop_process(server)


def test_sigterm_lets_a_running_handler_finish_then_exits_0(
        printer: Path, cache_dir: Path, tmp_path: Path, clean_redis_url: str,
        admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    # "spin" loops until its deadline (2 s): the drain (10 s) waits for it.
    with _host(app, cache_dir, "--request-timeout", "2") as host:
        assert _publish(admin, ["spin"]) == [1]
        assert host.wait_for_output("[printer] got spin")
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
        assert host.wait_for_output("component printer: deadline of 2 s exceeded")
        assert "still running after the drain deadline" not in host.output


def test_a_handler_past_the_drain_deadline_does_not_hold_the_exit(
        printer: Path, cache_dir: Path, tmp_path: Path, clean_redis_url: str,
        admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    with _host(app, cache_dir, "--drain-timeout", "0.5") as host:
        assert _publish(admin, ["spin"]) == [1]
        assert host.wait_for_output("[printer] got spin")
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
        assert host.wait_for_output("1 Redis message(s) still running after the drain deadline")


def test_with_workers_each_message_is_handled_once(printer: Path, cache_dir: Path,
                                                   tmp_path: Path, clean_redis_url: str,
                                                   admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    messages = [f"x-{i}" for i in range(50)]
    with _host(app, cache_dir, "--workers", "2") as host:
        assert len(host.children()) == 2
        # PUBLISH answers how many subscribers received the message: one process subscribes.
        assert _publish(admin, messages) == [1] * 50
        assert host.wait_for_count("[printer] got x-", 50, timeout=60), host.output
        assert _got(host) == messages
        assert host.stop() == 0


def test_a_replaced_worker_subscribes_again(printer: Path, cache_dir: Path, tmp_path: Path,
                                           clean_redis_url: str, admin: redis.Redis) -> None:
    app = _app(tmp_path, printer, _address(clean_redis_url))
    with _host(app, cache_dir, "--workers", "2") as host:
        workers = host.children()
        for pid in workers:  # whichever subscribes, its slot gets a new worker
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            assert host.wait_for_output(f"(replaces worker {pid})", timeout=60), host.output
        # The new worker of slot 0 subscribed before it served; the killed one is gone.
        assert admin.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 1)]
        assert _publish(admin, ["x-after"]) == [1]
        assert host.wait_for_output("[printer] got x-after")
        assert host.stop() == 0


def test_an_unreachable_address_stops_start_up(printer: Path, cache_dir: Path,
                                               tmp_path: Path) -> None:
    address = f"redis://127.0.0.1:{free_port()}"
    app = _app(tmp_path, printer, address)
    host = _host(app, cache_dir)
    host.start_async()
    assert host.wait(timeout=60) == 1
    (line,) = [line for line in host.lines if line.startswith("Error:")]
    assert f"Redis trigger: cannot subscribe to {address} (channels {CHANNEL})" in line


# ---------------------------------------------------------------------------
# Start-up checks: `host check` (`host watch` serving them: tests/test_watch.py)


def test_check_validates_and_lists_the_channels_without_connecting(
        printer: Path, tmp_path: Path) -> None:
    address = f"redis://:secret@127.0.0.1:{free_port()}/2"  # nothing listens there
    app = _app(tmp_path, printer, address)
    result = run_host("check", "-f", str(app))
    assert result.returncode == 0, result.stderr
    assert f"redis://:***@127.0.0.1:{address.split(':')[-1]}/{CHANNEL}: [printer]" in \
        result.stdout
    assert "secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("value,problem", [
    ("http://127.0.0.1:6379", "is not a Redis address"),
    ("redis://:pw@127.0.0.1:6379/x", "the path must be a database number"),
    ("redis://", "names no host"),
])
def test_an_address_variable_that_is_not_a_redis_url_is_one_line(
        printer: Path, tmp_path: Path, value: str, problem: str) -> None:
    app = _app(tmp_path, printer, "redis://127.0.0.1:6379")
    result = run_host("check", "-f", str(app),
                      env={**os.environ, "SPIN_VARIABLE_REDIS_ADDRESS": value})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "[[trigger.redis]] 'printer-redis-trigger' [application.trigger.redis] address " \
           '"{{ redis_address }}" renders to' in line and problem in line, line
    assert ":pw@" not in line


def test_a_component_without_the_handler_is_refused(printer: Path, wat_components: dict[str, Path],
                                                    tmp_path: Path) -> None:
    app = _app(tmp_path, wat_components["echo"], "redis://127.0.0.1:6379")
    result = run_host("check", "-f", str(app))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert 'component "printer" is used by a [[trigger.redis]] but does not export ' \
           "fermyon:spin/inbound-redis (it exports: spinhost:http/incoming-handler@0.1.0)" in line


def test_an_async_spin4_handler_is_refused(tmp_path: Path) -> None:
    component = wat.build_async_redis_handler(tmp_path)
    app = _app(tmp_path, component, "redis://127.0.0.1:6379")
    result = run_host("check", "-f", str(app))
    assert result.returncode == 1
    assert "exports spin:redis/inbound-redis@3.0.0 (async, WASI 0.3" in result.stderr


# ---------------------------------------------------------------------------
# Backpressure, without wasm: handlers that wait for the test


class _Blocking:
    """Stands for an InboundRedisExecutor: records each message, waits to be released."""

    id = "blocking"

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.release = threading.Semaphore(0)
        self.changed = threading.Condition()

    def handle_message(self, payload: bytes) -> None:
        with self.changed:
            self.started.append(payload)
            self.changed.notify_all()
        self.release.acquire()
        if payload == b"fail":
            raise HandlerError("the handler returned error::error")

    def wait_started(self, count: int) -> list[bytes]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.started) >= count, timeout=10)
            return list(self.started)


def test_at_the_cap_the_subscriber_stops_reading(clean_redis_url: str,
                                                 admin: redis.Redis) -> None:
    handler = _Blocking()
    triggers = _triggers(clean_redis_url, handler, RedisTriggerLimits(max_in_flight=2))
    try:
        triggers.start()
        assert _publish(admin, ["m1", "fail", "m3", "m4", "m5"]) == [1] * 5
        assert handler.wait_started(2) == [b"m1", b"fail"]
        assert triggers.in_flight == 2  # m3 is read, waiting for a slot; m4, m5 unread
        for count in (3, 4, 5):
            handler.release.release()
            assert handler.wait_started(count)[-1] == f"m{count}".encode()
            assert triggers.in_flight == 2
        for _ in range(2):
            handler.release.release()
        assert triggers.drain(deadline=time.monotonic() + 30) == 0
        assert triggers.counts() == {("blocking", "ok"): 4, ("blocking", "error"): 1}
    finally:
        triggers.close()


def _triggers(url: str, handler: object, limits: RedisTriggerLimits) -> RedisTriggers:
    """Subscribers for one channel whose messages go to `handler`, connected."""
    app = App.__new__(App)  # only what RedisTriggers reads
    app.subscriptions = (Subscription(_address(url), {CHANNEL: ("blocking",)}),)
    app.message_executors = {"blocking": handler}  # type: ignore[dict-item]
    triggers = RedisTriggers(app, limits)
    triggers.connect()
    return triggers


def _wait_logged(caplog: pytest.LogCaptureFixture, needle: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [r.getMessage() for r in caplog.records if needle in r.getMessage()]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} not logged: {[r.getMessage() for r in caplog.records]}")


def test_a_server_that_stops_answering_is_detected_by_ping(
        clean_redis_url: str, admin: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    handler = _Blocking()
    limits = RedisTriggerLimits(health_check_interval_seconds=0.3, connect_timeout_seconds=0.5,
                                reconnect_delays=(0.05, 0.2))
    triggers = _triggers(clean_redis_url, handler, limits)
    try:
        triggers.start()
        handler.release.release()
        assert _publish(admin, ["m1"]) == [1]
        assert handler.wait_started(1) == [b"m1"]
        with caplog.at_level(logging.WARNING, logger="host.redis_trigger"):
            # Redis holds every client's commands (the subscriber's PING too) for 1.5 s,
            # without closing a connection.
            admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            lost = _wait_logged(caplog, "lost the subscription")
            assert "no answer to PING within 0.5 s" in lost, lost
            again = _wait_logged(caplog, "subscribed again")
        assert "(1 attempt)" not in again  # connecting during the pause failed too
        handler.release.release()
        assert _publish(admin, ["m2"]) == [1]
        assert handler.wait_started(2) == [b"m1", b"m2"]
    finally:
        triggers.close()


# ---------------------------------------------------------------------------
# A Spin SDK for Python app (apps/spin-redis-python)


@pytest.fixture(scope="module")
def spin_redis_python() -> Path:
    return built_app("spin-redis-python")


def _spin_app_host(app_dir: Path, cache_dir: Path, url: str, *flags: str) -> HostProcess:
    host_port = _address(url).removeprefix("redis://")
    return HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--state-dir", "",
                        "--pool-size", "1", "--variable", f"redis_host={host_port}",
                        "--variable", "channel=orders", *flags])


@pytest.mark.toolchain
def test_spin_sdk_python_app_handles_each_message_once(spin_redis_python: Path, cache_dir: Path,
                                                       clean_redis_url: str,
                                                       admin: redis.Redis) -> None:
    messages = [f"order-{i}" for i in range(40)]
    with _spin_app_host(spin_redis_python, cache_dir, clean_redis_url) as host:
        assert "/orders: [spin-redis-python]" in host.output  # the channel's template rendered
        assert _publish(admin, [*messages[:20], "error", "trap", *messages[20:]], "orders") \
            == [1] * 42
        assert host.wait_for_count("[spin-redis-python] RuntimeError: asked to trap", 1)
        assert host.wait_for_output("component spin-redis-python: the handler returned "
                                    "error::error")
        assert _publish(admin, ["last"], "orders") == [1]
        handled = _wait_list(admin, len(messages) + 1)
        assert handled == [*messages, "last"]
        assert host.stop() == 0


@pytest.mark.toolchain
def test_spin_sdk_python_app_drains_a_sleeping_handler_on_sigterm(
        spin_redis_python: Path, cache_dir: Path, clean_redis_url: str,
        admin: redis.Redis) -> None:
    with _spin_app_host(spin_redis_python, cache_dir, clean_redis_url) as host:
        assert _publish(admin, ["sleep:1.5 late"], "orders") == [1]
        assert host.wait_for_output("[spin-redis-python] sleeping")
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
    assert admin.lrange("handled", 0, -1) == [b"sleep:1.5 late"]


def _wait_list(admin: redis.Redis, count: int) -> list[str]:
    """The `handled` list once it holds `count` entries (it only grows: its length is
    polled; give up after a minute of Redis's clock)."""
    deadline = float(admin.time()[0]) + 60
    while admin.llen("handled") < count and float(admin.time()[0]) < deadline:
        threading.Event().wait(0.05)
    return [item.decode() for item in admin.lrange("handled", 0, -1)]
