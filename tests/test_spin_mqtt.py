"""Outbound MQTT for Spin SDK apps (host/capabilities/mqtt.py), `fermyon:spin/mqtt@2.0.0`.

The host functions are called directly against real mosquitto brokers
(tests/mqtt_server.py), with a wasmtime store standing for the instance and a
paho subscriber seeing what arrived; a few fake brokers (raw sockets) stand
for misbehaving ones; the last tests serve apps/spin-python through a real
`host up`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from host.capabilities import Err, HostHandle, Ok, store_key
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.mqtt import MQTT, Mqtt, MqttFactor
from host.deadline import request_deadline
from host.limits import OutboundMqttLimits
from tests.conftest import HostProcess, grants_through_variable, write_spin_python_app
from tests.loopback import free_port, stop_process
from tests.mqtt_server import PASSWORD, USER, Broker, Subscriber, start_mosquitto
from tests.test_tls import make_certificate


def _capability(port: int, limits: OutboundMqttLimits | None = None,
                entries: list[str] | None = None) -> Mqtt:
    allowed = [f"mqtt://127.0.0.1:{port}"] if entries is None else entries
    return Mqtt("guest", AllowList.parse(allowed), limits)


class Guest:
    """One instance's view of the interface: its store, and calls by WIT name."""

    def __init__(self, capability: Mqtt) -> None:
        self.capability = capability
        self.store = wasmtime.Store()
        self.functions = capability.functions(MQTT)

    def open(self, address: str, username: str = "", password: str = "",
             keep_alive: int = 30) -> Ok | Err:
        result: Ok | Err = self.functions["[static]connection.open"](
            self.store, address, username, password, keep_alive)
        return result

    def connect(self, address: str, username: str = "", password: str = "") -> Any:
        result = self.open(address, username, password)
        assert isinstance(result, Ok), result
        return result.value

    def publish(self, handle: Any, topic: str, payload: bytes,
                qos: str = "at-least-once") -> Ok | Err:
        result: Ok | Err = self.functions["[method]connection.publish"](
            self.store, handle, topic, payload, qos)
        return result

    def release(self) -> None:
        self.capability.release_store(store_key(self.store))


@pytest.fixture
def guest(mqtt_broker: Broker) -> Iterator[Guest]:
    g = Guest(_capability(mqtt_broker.port))
    yield g
    g.release()


def address(port: int, client_id: str = "guest") -> str:
    return f"mqtt://127.0.0.1:{port}?client_id={client_id}"


def error(result: Ok | Err) -> tuple[str, Any]:
    assert isinstance(result, Err), result
    return result.value.tag, result.value.payload


# ---------------------------------------------------------------------------
# Which addresses a component may open


def test_allowed_addresses_open(guest: Guest, mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    for allowed in (address(port), f"mqtt://127.0.0.1:{port}/?client_id=a",
                    f"mqtt://127.0.0.1:{port}?client_id=&keep_alive_secs=5",
                    f"mqtt://127.0.0.1:{port}?client_id=b&clean_session=false",
                    f"MQTT://127.0.0.1:{port}?client_id=c"):
        assert isinstance(guest.connect(allowed), HostHandle)


@pytest.mark.parametrize("target", [
    "mqtt://127.0.0.1:{other}?client_id=x",  # another port
    "mqtt://localhost:{port}?client_id=x",  # another host name for the same broker
    "mqtts://127.0.0.1:{port}?client_id=x",  # another scheme
    "tcp://127.0.0.1:{port}?client_id=x",  # another scheme, though rumqttc reads it as mqtt
    "http://127.0.0.1:{port}",
    "mqtt://[::1]:{port}?client_id=x",
    "mqtt://127.0.0.1?client_id=x",  # the default port, 1883
    "mqtt://",
    "not a url",
])
def test_addresses_outside_the_grant_answer_connection_failed_and_log_one_line(
        guest: Guest, mqtt_broker: Broker, target: str,
        caplog: pytest.LogCaptureFixture) -> None:
    port = mqtt_broker.port
    target = target.format(port=port, other=port + 1)
    with caplog.at_level(logging.WARNING, logger="host.mqtt"):
        tag, message = error(guest.open(target))
    assert tag == "connection-failed"
    assert message.startswith(f"address {target} is not permitted: ")  # as Spin words it
    (line,) = [r.getMessage() for r in caplog.records if r.name == "host.mqtt"]
    assert line.startswith(f'component "guest": MQTT connection to {target} refused: ')
    assert line.endswith("(connection-failed)")


def test_the_denial_says_what_to_allow(guest: Guest, mqtt_broker: Broker) -> None:
    other = mqtt_broker.port + 1
    assert error(guest.open(address(other)))[1].endswith(
        f'allowed_outbound_hosts does not allow it; add "mqtt://127.0.0.1:{other}"')


@pytest.mark.parametrize(("target", "reason"), [
    ("mqtt://127.0.0.1:{port}", "it has no client_id"),  # rumqttc (Spin) needs one
    ("127.0.0.1:{port}?client_id=x", "its scheme is not"),  # allowed as mqtt://, as Spin does
    ("http://127.0.0.1:{port}?client_id=x", "its scheme is not"),
    ("mqtt://127.0.0.1:{port}?client_id=x&clean_session=maybe", "clean_session must be"),
])
def test_allowed_addresses_that_are_no_mqtt_url_answer_invalid_address(
        mqtt_broker: Broker, target: str, reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    port = mqtt_broker.port
    g = Guest(_capability(port, entries=[f"*://127.0.0.1:{port}"]))
    target = target.format(port=port)
    with caplog.at_level(logging.WARNING, logger="host.mqtt"):
        assert error(g.open(target)) == ("invalid-address", None)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "host.mqtt"]
    assert reason in line and line.endswith("(invalid-address)")


def test_no_mqtt_entry_denies_everything_even_with_http_allowed(mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    for entries in ([f"http://127.0.0.1:{port}", "https://*:*", f"redis://127.0.0.1:{port}"],
                    []):
        g = Guest(_capability(port, entries=entries))
        assert error(g.open(address(port)))[0] == "connection-failed"


def test_wildcard_entries_allow_mqtt(mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    for entries in ([f"*://127.0.0.1:{port}"], ["mqtt://*:*"], ["mqtt://127.0.0.0/8:*"],
                    [f"mqtt://127.0.0.1:{port - 1}..{port + 1}"]):
        g = Guest(_capability(port, entries=entries))
        assert isinstance(g.connect(address(port)), HostHandle)
        g.release()


def test_tcp_is_plain_mqtt_when_allowed_by_its_own_scheme(mqtt_broker: Broker,
                                                          subscriber: Subscriber) -> None:
    port = mqtt_broker.port
    g = Guest(_capability(port, entries=[f"tcp://127.0.0.1:{port}"]))
    conn = g.connect(f"tcp://127.0.0.1:{port}?client_id=tcp")
    assert g.publish(conn, "t/tcp", b"over tcp://") == Ok(None)
    assert subscriber.get().payload == b"over tcp://"
    g.release()


def test_a_password_in_the_address_never_reaches_the_log(
        guest: Guest, mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    other = mqtt_broker.port + 1
    with caplog.at_level(logging.WARNING, logger="host.mqtt"):
        tag, message = error(guest.open(f"mqtt://user:hunter2@127.0.0.1:{other}?client_id=x"))
    assert tag == "connection-failed" and "hunter2" not in message and "user:***@" in message
    assert "hunter2" not in caplog.text


# ---------------------------------------------------------------------------
# Publishing, at each QoS


@pytest.mark.parametrize(("qos", "level"), [
    ("at-most-once", 0), ("at-least-once", 1), ("exactly-once", 2)])
def test_each_qos_reaches_a_subscriber(guest: Guest, mqtt_broker: Broker,
                                       subscriber: Subscriber, qos: str, level: int) -> None:
    conn = guest.connect(address(mqtt_broker.port, f"qos{level}"))
    payloads = [b"\x00binary\xff", b"", b"x" * 100_000]
    for i, payload in enumerate(payloads):
        assert guest.publish(conn, f"spin/{qos}/{i}", payload, qos) == Ok(None)
    for i, payload in enumerate(payloads):
        message = subscriber.get()
        assert (message.topic, message.payload, message.qos) == (f"spin/{qos}/{i}", payload,
                                                                 level)


def test_topics_mqtt_forbids_answer_other_and_the_connection_goes_on(
        guest: Guest, mqtt_broker: Broker, subscriber: Subscriber) -> None:
    conn = guest.connect(address(mqtt_broker.port))
    for topic, reason in (("", "the topic is empty"), ("a/#", "has a wildcard (+ or #)"),
                          ("a/+/b", "has a wildcard"), ("a\0b", "contains U+0000"),
                          ("t" * 65536, "longer than 65535 bytes")):
        tag, message = error(guest.publish(conn, topic, b"x"))
        assert tag == "other" and message.startswith(f"{address(mqtt_broker.port)}: ")
        assert reason in message
    assert guest.publish(conn, "fine", b"after") == Ok(None)
    assert subscriber.get().payload == b"after"


def test_a_payload_over_the_limit_answers_other_before_anything_is_sent(
        mqtt_broker: Broker, subscriber: Subscriber) -> None:
    g = Guest(_capability(mqtt_broker.port, OutboundMqttLimits(max_payload_bytes=1000)))
    conn = g.connect(address(mqtt_broker.port))
    assert error(g.publish(conn, "big", b"x" * 1001)) == (
        "other", "payload size 1001 exceeds the maximum allowed size of 1000 bytes")  # Spin's
    assert g.publish(conn, "fits", b"x" * 1000) == Ok(None)
    assert subscriber.get().topic == "fits"  # "big" never arrived
    g.release()
    assert OutboundMqttLimits().max_payload_bytes == 2 * 1024 * 1024


def test_keep_alive_beyond_what_mqtt_can_say_answers_other(guest: Guest,
                                                           mqtt_broker: Broker) -> None:
    tag, message = error(guest.open(address(mqtt_broker.port), keep_alive=65536))
    assert tag == "other" and "65535" in message
    assert isinstance(guest.open(address(mqtt_broker.port), keep_alive=65535), Ok)
    assert isinstance(guest.open(address(mqtt_broker.port, "k0"), keep_alive=0), Ok)


# ---------------------------------------------------------------------------
# Brokers that refuse, are down, stop answering or misbehave


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto-auth"), password=True)
    try:
        yield broker
    finally:
        stop_process(broker.process)


def test_a_broker_with_a_password_file(auth_broker: Broker,
                                       caplog: pytest.LogCaptureFixture) -> None:
    port = auth_broker.port
    g = Guest(_capability(port))
    sub = Subscriber(port, username=USER, password=PASSWORD)
    try:
        conn = g.connect(address(port), USER, PASSWORD)
        assert g.publish(conn, "auth/ok", b"logged in", "exactly-once") == Ok(None)
        assert sub.get().payload == b"logged in"
        with caplog.at_level(logging.DEBUG):
            for user, password in ((USER, "wrong"), ("", ""), ("nobody", PASSWORD)):
                tag, message = error(g.open(address(port), user, password))
                assert tag == "connection-failed", message
                assert message == (f"{address(port)}: the broker refused the connection: "
                                   "Not authorized")
        assert PASSWORD not in caplog.text and "wrong" not in caplog.text
    finally:
        sub.close()
        g.release()


def test_nothing_listening_answers_connection_failed_at_once(mqtt_broker: Broker) -> None:
    port = free_port()
    g = Guest(_capability(port))
    started = time.monotonic()
    tag, message = error(g.open(address(port)))
    assert tag == "connection-failed"
    assert message.startswith(f"{address(port)}: ") and "refused" in message.lower()
    assert time.monotonic() - started < 5


def test_a_stopped_broker_bounds_open_and_publish_by_the_deadline(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    g = Guest(_capability(broker.port))
    try:
        connections = {qos: g.connect(address(broker.port, qos))
                       for qos in ("at-least-once", "exactly-once")}
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with request_deadline(0.3):
                tag, message = error(g.open(address(broker.port, "second")))
            assert (tag, message) == ("connection-failed", f"{address(broker.port, 'second')}: "
                                      "no answer before the request's deadline")
            for qos, conn in connections.items():
                with request_deadline(0.3):
                    tag, message = error(g.publish(conn, "t", b"x", qos))
                assert (tag, message) == ("other", f"{address(broker.port, qos)}: no answer "
                                          "before the request's deadline")
                # The acknowledgement is still due: the connection's state is unknown.
                tag, message = error(g.publish(conn, "t", b"x", qos))
                assert tag == "connection-failed" and "open a new connection" in message
            assert time.monotonic() - started < 3
            with request_deadline(0.0001):
                time.sleep(0.001)  # nothing is tried once the deadline has passed
                assert error(g.open(address(broker.port))) == (
                    "connection-failed",
                    f"{address(broker.port)}: no answer before the request's deadline")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
    finally:
        g.release()
        stop_process(broker.process)


def test_a_broker_gone_after_open_answers_connection_failed(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    g = Guest(_capability(broker.port))
    try:
        conn = g.connect(address(broker.port))
        assert g.publish(conn, "t", b"before") == Ok(None)
        stop_process(broker.process)
        for qos in ("at-most-once", "at-least-once"):
            tag, message = error(g.publish(conn, "t", b"after", qos))
            assert tag == "connection-failed" and message.startswith(address(broker.port))
    finally:
        g.release()


class FakeBroker:
    """A TCP listener that answers CONNECT with CONNACK (or not at all) and, once a
    PUBLISH arrives, sends `after_publish`."""

    def __init__(self, connack: bool = True, after_publish: bytes = b"") -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connack, self.after_publish = connack, after_publish
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.clients.append(client)
            threading.Thread(target=self._talk, args=(client,), daemon=True).start()

    def _talk(self, client: socket.socket) -> None:
        try:
            first = client.recv(4096)
            if not first or not self.connack:
                client.recv(4096)  # until the other side closes
                return
            client.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
            if client.recv(4096):  # a PUBLISH
                client.sendall(self.after_publish)
                client.recv(4096)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
        for client in self.clients:
            client.close()


def test_a_broker_that_never_answers_connect_is_bounded(mqtt_broker: Broker) -> None:
    fake = FakeBroker(connack=False)
    g = Guest(_capability(fake.port, OutboundMqttLimits(connect_timeout_seconds=0.5),
                          entries=[f"mqtt://127.0.0.1:{fake.port}",
                                   f"mqtts://127.0.0.1:{fake.port}"]))
    try:
        tag, message = error(g.open(address(fake.port)))
        assert (tag, message) == ("connection-failed",
                                  f"{address(fake.port)}: no answer within 0.5 s")
        with request_deadline(0.3):  # the deadline bounds the TLS handshake too
            started = time.monotonic()
            target = f"mqtts://127.0.0.1:{fake.port}?client_id=tls"
            tag, message = error(g.open(target))
        assert (tag, message) == ("connection-failed",
                                  f"{target}: no answer before the request's deadline")
        assert time.monotonic() - started < 1.0
    finally:
        fake.close()


def test_a_huge_packet_from_the_broker_closes_the_connection_unread() -> None:
    # A PUBLISH header announcing 200 MB: paho alone would ask recv() for all of it.
    fake = FakeBroker(after_publish=b"\x30\x80\x84\xaf\x5f")  # remaining length 200,000,000
    g = Guest(_capability(fake.port))
    try:
        conn = g.connect(address(fake.port))
        tag, message = error(g.publish(conn, "t", b"x"))
        assert tag == "connection-failed"
        assert message == (f"{address(fake.port)}: the broker sent a packet of 200000000 bytes, "
                           "more than the 65536 this host reads")
    finally:
        g.release()
        fake.close()


# ---------------------------------------------------------------------------
# TLS (mqtts://): the system's CAs and hostname verification


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Path]]:
    directory = tmp_path_factory.mktemp("mosquitto-tls")
    cert, key = make_certificate(directory, "broker")
    broker = start_mosquitto(directory, tls=(cert, key))
    try:
        yield broker, cert
    finally:
        stop_process(broker.process)


def test_mqtts_verifies_the_broker_certificate(tls_broker: tuple[Broker, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    broker, cert = tls_broker
    port = broker.port
    g = Guest(_capability(port, entries=[f"mqtts://127.0.0.1:{port}", f"mqtt://127.0.0.1:{port}",
                                         f"mqtts://localhost:{port}"]))
    target = f"mqtts://127.0.0.1:{port}?client_id=tls"
    try:
        tag, message = error(g.open(target))  # a self-signed certificate
        assert tag == "connection-failed" and "CERTIFICATE_VERIFY_FAILED" in message
        assert error(g.open(address(port)))[0] == "connection-failed"  # plain MQTT on TLS
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's CAs, as OpenSSL reads them
        conn = g.connect(target)
        assert g.publish(conn, "tls", b"encrypted", "exactly-once") == Ok(None)
        assert isinstance(g.connect(f"mqtts://localhost:{port}?client_id=name"), HostHandle)
    finally:
        g.release()


# ---------------------------------------------------------------------------
# Connections per instance, and what a discarded instance leaves behind


def _wait_for_log(broker: Broker, text: str, count: int = 1) -> int:
    deadline = time.monotonic() + 10
    while (found := broker.log.read_text(errors="replace").count(text)) < count \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_connections_per_instance_are_capped_and_closed_with_the_instance(
        mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    g = Guest(_capability(port, OutboundMqttLimits(max_open_connections=2)))
    other = Guest(g.capability)  # another instance of the same component
    first = g.connect(address(port, "cap-1"))
    g.connect(address(port, "cap-2"))
    assert error(g.open(address(port, "cap-3"))) == ("too-many-connections", None)
    assert isinstance(other.connect(address(port, "cap-other")), HostHandle)  # per instance
    g.capability.connections.drop(first.rep)  # the guest drops one: room again
    assert _wait_for_log(mqtt_broker, "Client cap-1 disconnected") == 1
    g.connect(address(port, "cap-4"))
    g.release()
    other.release()
    for client in ("cap-2", "cap-4", "cap-other"):
        assert _wait_for_log(mqtt_broker, f"Client {client} disconnected") == 1
    assert "cap-3" not in mqtt_broker.log.read_text()
    assert g.capability.connections.live(g.store) == g.capability.connections.live(other.store) == 0
    assert OutboundMqttLimits().max_open_connections == 16


def test_a_failed_open_holds_no_slot(mqtt_broker: Broker) -> None:
    down = free_port()
    g = Guest(_capability(mqtt_broker.port, OutboundMqttLimits(max_open_connections=1),
                          entries=[f"mqtt://127.0.0.1:{down}",
                                   f"mqtt://127.0.0.1:{mqtt_broker.port}"]))
    for _ in range(3):
        assert error(g.open(address(down)))[0] == "connection-failed"
    g.connect(address(mqtt_broker.port))
    g.release()


# ---------------------------------------------------------------------------
# The factor: the allow-list outbound HTTP resolved, variables included


def test_the_factor_reads_the_resolved_allow_list(tmp_path: Path, mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    with grants_through_variable(tmp_path, "mqtt", f"127.0.0.1:{port}") as (grants, component):
        capability = grants.app.factor(MqttFactor).for_component(component)
        assert [e.entry for e in capability.allowed] == [f"mqtt://127.0.0.1:{port}"]
        g = Guest(capability)
        assert isinstance(g.connect(address(port)), HostHandle)
        g.release()


# ---------------------------------------------------------------------------
# End to end: apps/spin-python through `host up`


@pytest.mark.toolchain
def test_spin_python_app_publishes(cache_dir: Path, tmp_path: Path,
                                   mqtt_broker: Broker, subscriber: Subscriber) -> None:
    port = mqtt_broker.port
    app = write_spin_python_app(tmp_path / "app", "spin-python-mqtt",
                                f'"mqtt://127.0.0.1:{port}"')
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"]
                     ) as host, host.client() as client:
        for qos in ("0", "1", "2"):
            response = client.get("/mqtt", params={
                "address": address(port, "spin-python"), "topic": f"spin-python/{qos}",
                "qos": qos, "count": "3", "payload": f"hello at {qos}"})
            assert response.status_code == 200, response.text
            assert json.loads(response.text)["published"] == 3
            for _ in range(3):
                message = subscriber.get()
                assert (message.topic, message.payload, message.qos) == (
                    f"spin-python/{qos}", f"hello at {qos}".encode(), int(qos))


@pytest.mark.toolchain
def test_spin_python_app_gets_the_errors(cache_dir: Path,
                                         tmp_path: Path, mqtt_broker: Broker) -> None:
    port = mqtt_broker.port
    app = write_spin_python_app(tmp_path / "app", "spin-python-mqtt",
                                f'"mqtt://127.0.0.1:{port}"')
    denied = address(port + 1)
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"]
                     ) as host, host.client() as client:
        response = client.get("/mqtt", params={"address": denied, "topic": "t"})
        assert response.status_code == 500
        assert response.text.strip() == (
            f"error: Error_ConnectionFailed(value='address {denied} is not permitted: "
            f"allowed_outbound_hosts does not allow it; add \"mqtt://127.0.0.1:{port + 1}\"')")
        assert host.wait_for_output(f"MQTT connection to {denied} refused")
        response = client.get("/mqtt", params={"address": f"mqtt://127.0.0.1:{port}",
                                               "topic": "t"})
        assert response.text.strip() == "error: Error_InvalidAddress()"
        response = client.get("/mqtt", params={"address": address(port), "topic": "a/#"})
        assert response.text.strip().startswith("error: Error_Other(value=")
