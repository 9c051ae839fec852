"""Name lookups end by the request's deadline (host/resolve.py), through every
outbound capability that names hosts: HTTP, Redis, PostgreSQL and MQTT, each
against its real server.

The system resolver is replaced by a fake one: names under `.slow.test`
never answer (until the test ends), names under `.missing.test` do not
exist, names under `.fast.test` are 127.0.0.1, anything else goes to the
real resolver. Capabilities see the real
`socket.getaddrinfo` path otherwise (resolve.install())."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from host import resolve
from host.capabilities import Ok
from host.deadline import request_deadline
from tests.mqtt_server import Broker
from tests.test_outbound import error_case, outbound, request
from tests.test_spin_mqtt import Guest as MqttGuest
from tests.test_spin_mqtt import _capability as mqtt_capability
from tests.test_spin_mqtt import error as mqtt_error
from tests.test_spin_postgres import Guest as PostgresGuest
from tests.test_spin_postgres import _capability as postgres_capability
from tests.test_spin_postgres import error as postgres_error
from tests.test_spin_redis import Guest as RedisGuest
from tests.test_spin_redis import _capability as redis_capability
from tests.test_spin_redis import _port as redis_port_of


class FakeDns:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[str] = []  # where each lookup ran
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, host: Any, port: Any, *args: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        with self._lock:
            self.threads.append(threading.current_thread().name)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if name.endswith(".slow.test"):
                self.release.wait(30)
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            if name.endswith(".missing.test"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            if name.endswith(".fast.test"):
                name = "127.0.0.1"
            return ORIGINAL(name, port, *args)
        finally:
            with self._lock:
                self.running -= 1


ORIGINAL = resolve._original


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    fake = FakeDns()
    monkeypatch.setattr(resolve, "_original", fake)
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)  # restored afterwards
    resolve.install()
    try:
        yield fake
    finally:
        fake.release.set()


def _timed_out(exc: BaseException) -> bool:
    return resolve.TIMED_OUT in str(exc)


def test_outside_a_request_lookups_run_on_the_callers_thread(dns: FakeDns) -> None:
    assert socket.getaddrinfo("db.fast.test", 80)[0][4][0] == "127.0.0.1"
    assert dns.threads == [threading.current_thread().name]


def test_numeric_hosts_are_never_handed_to_the_resolver_threads(dns: FakeDns) -> None:
    with request_deadline(5):
        for host in ("127.0.0.1", "::1", b"127.0.0.1", "0.0.0.0"):
            socket.getaddrinfo(host, 80)
    assert dns.threads == [threading.current_thread().name] * 4


def test_a_lookup_ends_at_the_deadline(dns: FakeDns) -> None:
    started = time.monotonic()
    with request_deadline(0.3), pytest.raises(socket.gaierror) as caught:
        socket.getaddrinfo("db.slow.test", 80)
    assert caught.value.errno == socket.EAI_AGAIN and _timed_out(caught.value)
    assert time.monotonic() - started < 5  # not the resolver's 30 s
    with request_deadline(5):  # a name that answers still does, on a resolver thread
        assert socket.getaddrinfo("db.fast.test", 80)[0][4][0] == "127.0.0.1"
    assert dns.threads[-1].startswith("resolve-")


def test_stuck_lookups_hold_at_most_the_resolver_threads(dns: FakeDns) -> None:
    failures: list[BaseException] = []

    def lookup(name: str) -> None:
        try:
            with request_deadline(0.5):
                socket.getaddrinfo(name, 80)
        except socket.gaierror as exc:
            failures.append(exc)

    callers = [threading.Thread(target=lookup, args=(f"n{i}.slow.test",))
               for i in range(3 * resolve.MAX_LOOKUPS)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert len(failures) == len(callers) and all(_timed_out(exc) for exc in failures)
    assert 0 < dns.most_running <= resolve.MAX_LOOKUPS
    dns.release.set()


def test_an_outbound_http_lookup_answers_dns_timeout(dns: FakeDns) -> None:
    cap = outbound(["http://*:8080"])
    with request_deadline(0.3):
        result = cap.handle(None, request("api.slow.test:8080", "/"))
    assert error_case(result) == "DNS-timeout"


def test_redis_lookups_end_at_the_deadline(dns: FakeDns, redis_url: str) -> None:
    port = redis_port_of(redis_url)
    guest = RedisGuest(redis_capability(redis_url, entries=[f"redis://*:{port}"]))
    with request_deadline(5):  # a name: looked up, then connected to
        conn = guest.connect(f"redis://cache.fast.test:{port}")
        assert guest.ok("set", conn, "k", b"v") is None
        assert guest.ok("get", conn, "k") == b"v"
    with request_deadline(0.3):
        result = guest.open(f"redis://cache.slow.test:{port}")
    assert result.value.tag == "other" and _timed_out(result.value.payload), result


def test_postgres_names_are_looked_up_here_and_handed_to_libpq(
        dns: FakeDns, postgres_port: int) -> None:
    guest = PostgresGuest(postgres_capability(postgres_port,
                                              entries=[f"postgres://*:{postgres_port}"]))
    with request_deadline(5):
        db = guest.connect(f"postgres://postgres@db.fast.test:{postgres_port}/postgres")
        assert guest.ok("execute", db, "SELECT 1") == 1
    assert any(name.startswith("resolve-") for name in dns.threads)  # ours, not libpq's
    with request_deadline(0.3):
        tag, message = postgres_error(
            guest.open(f"postgres://postgres@db.slow.test:{postgres_port}/postgres"))
    assert tag == "connection-failed" and _timed_out(message), message
    with request_deadline(5):
        tag, message = postgres_error(
            guest.open(f"postgres://postgres@db.missing.test:{postgres_port}/postgres"))
    assert tag == "connection-failed" and 'could not resolve host "db.missing.test"' in message
    guest.release()


def test_mqtt_lookups_end_at_the_deadline(dns: FakeDns, mqtt_broker: Broker) -> None:
    guest = MqttGuest(mqtt_capability(mqtt_broker.port,
                                      entries=[f"mqtt://*:{mqtt_broker.port}"]))
    with request_deadline(0.3):
        tag, message = mqtt_error(
            guest.open(f"mqtt://broker.slow.test:{mqtt_broker.port}?client_id=g"))
    assert tag == "connection-failed" and _timed_out(message), message
    with request_deadline(5):
        conn = guest.connect(f"mqtt://broker.fast.test:{mqtt_broker.port}?client_id=g")
        assert isinstance(guest.publish(conn, "t", b"x"), Ok)
    guest.release()
