"""Outbound MQTT: `fermyon:spin/mqtt@2.0.0`, a guest publishing to an MQTT broker.

The grant is the component's `allowed_outbound_hosts` entries for the
address's own scheme (the list `OutboundFactor` resolved, variables
included), as Spin checks it: `mqtt://broker:1883` for
`mqtt://broker:1883?client_id=app`. The address is Spin's (rumqttc's) URL:
`mqtt://` or `tcp://` (plain, port 1883 by default), `mqtts://` or `ssl://`
(TLS with the system's CAs and hostname verification, port 8883), with a
`client_id` query parameter (required; `clean_session=true|false` is
honoured, any other parameter ignored). An address the allow-list does not
allow answers `connection-failed("address ... is not permitted: ...")`; an
allowed one that is not such a URL answers `invalid-address` (both as Spin
answers them), each with one log line naming the component. The username and
password are the `open` arguments (both empty: no credentials); userinfo in
the URL is ignored, as Spin's arguments override it.

Each `open` is one MQTT 3.1.1 connection (paho-mqtt, driven by this module
on the calling thread: no background thread, no reconnect), a
`ResourceTable` entry closed when the guest drops it or its instance is
discarded; an instance holds at most `max_open_connections`
(`too-many-connections` past it). Unlike Spin, which connects on the first
publish, `open` connects (TCP, TLS, CONNACK): an unreachable broker or a
refused login answers `connection-failed` there. `publish` waits for what its
QoS promises: the message written (at-most-once), PUBACK (at-least-once) or
PUBCOMP (exactly-once). Every wait ends by the request's deadline; a publish
that times out answers `other` and closes the connection, whose state is then
unknown. A lost connection answers `connection-failed` to every later
publish. Nothing is sent between calls: a broker may drop a connection left
idle for 1.5 x its keep-alive. Payloads over `max_payload_bytes` answer
`other` (Spin's message), as do topics MQTT forbids (empty, wildcards).
"""

from __future__ import annotations

import logging
import select
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import parse_qsl, urlsplit

import wasmtime.component as wc

from host.capabilities import Err, HostHandle, Ok
from host.capabilities.allowed_hosts import AllowList, request_host, split_url
from host.capabilities.connections import ConnectionCapability, ConnectionFactor
from host.deadline import DeadlineExceeded, time_left
from host.limits import OutboundMqttLimits

if TYPE_CHECKING:  # paho is imported on the first open: it costs ~50 ms of start-up
    from paho.mqtt.client import MQTTMessageInfo, SocketLike

log = logging.getLogger("host.mqtt")

MQTT = "fermyon:spin/mqtt@2.0.0"
# scheme -> (TLS, default port), as rumqttc reads Spin's addresses
SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883),
           "ssl": (True, 8883)}
QOS = {"at-most-once": 0, "at-least-once": 1, "exactly-once": 2}
MAX_KEEP_ALIVE = 65535  # MQTT's keep-alive is a 16-bit count of seconds
DEADLINE_MESSAGE = "no answer before the request's deadline"
_RECV_CHUNK = 64 * 1024


class _Failure(Exception):
    """An error the guest gets as the interface's own value (a case with a message)."""

    def __init__(self, case: str, message: str = "") -> None:
        super().__init__(message)
        self.case = case
        self.message = message

    def error(self) -> Err:
        if self.case in ("invalid-address", "too-many-connections"):  # cases without a payload
            return Err(wc.Variant(self.case))
        return Err(wc.Variant(self.case, self.message))


@dataclass(frozen=True)
class _Target:
    """What an allowed address connects to."""

    host: str
    port: int
    tls: bool
    client_id: str
    clean_session: bool
    shown: str  # the address for messages, password hidden


class _Client(Protocol):
    """The paho client `_client_class` makes, as this module uses it."""

    refused: str  # why the broker refused or closed the connection, if it did

    def socket(self) -> SocketLike | None: ...
    def want_write(self) -> bool: ...
    def loop_read(self) -> int: ...
    def loop_write(self) -> int: ...
    def is_connected(self) -> bool: ...
    def publish(self, topic: str, payload: bytes, qos: int) -> MQTTMessageInfo: ...
    def disconnect(self) -> int: ...


@dataclass
class _Connection:
    client: _Client
    shown: str
    lost: str | None = None  # why the connection is no longer usable


@cache
def _client_class() -> Any:
    """paho's client, bounded: the TLS handshake ends when the connect must, and what
    the broker sends is read in chunks, one packet of at most `max_incoming` bytes."""
    import paho.mqtt.client as paho

    class Client(paho.Client):
        ends = 0.0  # the monotonic time by which connecting must be done
        max_incoming = 0  # bytes one packet from the broker may take
        refused = ""  # why the broker refused or closed the connection, if it did

        def _create_socket_connection(self) -> Any:
            sock = super()._create_socket_connection()
            # paho gives the TLS handshake the whole connect timeout again.
            self._connect_timeout = max(self.ends - time.monotonic(), 0.001)
            return sock

        def _sock_recv(self, bufsize: int) -> bytes:
            # paho asks for a packet's remaining bytes at once, which allocates
            # that much however little arrives.
            size = self._in_packet["remaining_length"]
            if self._in_packet["have_remaining"] and size > self.max_incoming:
                self.refused = (f"the broker sent a packet of {size} bytes, more than the "
                                f"{self.max_incoming} this host reads")
                raise OSError(self.refused)
            data: bytes = super()._sock_recv(min(bufsize, _RECV_CHUNK))
            return data

    return Client


class Mqtt(ConnectionCapability["_Connection"]):
    interfaces = (MQTT,)
    schemes = tuple(SCHEMES)
    kind = "mqtt"

    def __init__(self, component_id: str, allowed: AllowList,
                 limits: OutboundMqttLimits | None = None) -> None:
        self.limits = limits or OutboundMqttLimits()
        super().__init__(component_id, allowed, self.limits)

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        def call(body: Callable[..., Any]) -> Callable[..., Ok | Err]:
            def run(store: Any, *args: Any) -> Ok | Err:
                try:
                    return Ok(body(store, *args))
                except _Failure as failure:
                    return failure.error()
            return run
        return {"[static]connection.open": call(self.open),
                "[method]connection.publish": call(self.publish)}

    # --- open

    def open(self, store: Any, address: str, username: str, password: str,
             keep_alive: int) -> HostHandle:
        target = self._target(address)
        if self.connections.full(store):
            log.warning('component "%s": MQTT connection to %s refused: the instance holds '
                        "%d, the most it may (too-many-connections)", self.component_id,
                        target.shown, self.limits.max_open_connections)
            raise _Failure("too-many-connections")
        if keep_alive > MAX_KEEP_ALIVE:
            raise _Failure("other", f"keep-alive-interval-in-secs {keep_alive} is more than "
                           f"MQTT allows ({MAX_KEEP_ALIVE})")
        client = self._connect(target, username, password, keep_alive)
        return self.connections.add(store, _Connection(client, target.shown))

    def _target(self, address: str) -> _Target:
        """Where `address` connects, if the allow-list admits it and it is an MQTT URL.

        As Spin: the allow-list first (text that is no URL is read as `mqtt://`
        + text there), then the URL's own checks."""
        shown = _shown(address)
        parts = split_url(address) or split_url("mqtt://" + address)
        if parts is None or request_host(parts[1]) is None:
            raise self._deny(shown, "it is not a URL with a host")
        scheme, host, port = parts
        tls, default_port = SCHEMES.get(scheme, (False, None))
        port = port or default_port
        if not self.allowed.allows(scheme, host, port):
            where = f"{host}:{port}" if port else host
            raise self._deny(shown, "allowed_outbound_hosts does not allow it; add "
                             f'"{scheme}://{where}"')
        if scheme not in SCHEMES or port is None or not address.lower().startswith(
                f"{scheme}://"):
            raise self._invalid(shown, "its scheme is not mqtt, tcp, mqtts or ssl")
        checked = request_host(host)
        try:
            url = urlsplit(address)
            same = request_host(url.hostname or "") == checked and (url.port or port) == port
        except ValueError:
            same = False
        if not same:
            raise self._invalid(shown, "its host is ambiguous")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if "client_id" not in query:
            raise self._invalid(shown, 'it has no client_id; add "?client_id=NAME"')
        clean = query.get("clean_session", "true")
        if clean not in ("true", "false"):
            raise self._invalid(shown, "clean_session must be true or false")
        return _Target(str(checked), port, tls, query["client_id"], clean == "true", shown)

    def _deny(self, shown: str, reason: str) -> _Failure:
        log.warning('component "%s": MQTT connection to %s refused: %s (connection-failed)',
                    self.component_id, shown, reason)
        return _Failure("connection-failed", f"address {shown} is not permitted: {reason}")

    def _invalid(self, shown: str, reason: str) -> _Failure:
        log.warning('component "%s": MQTT connection to %s refused: %s (invalid-address)',
                    self.component_id, shown, reason)
        return _Failure("invalid-address")

    def _connect(self, target: _Target, username: str, password: str,
                 keep_alive: int) -> _Client:
        from paho.mqtt.client import MQTTv311
        from paho.mqtt.enums import CallbackAPIVersion
        if not target.clean_session and not target.client_id:
            raise _Failure("connection-failed",
                           f"{target.shown}: clean_session=false needs a client_id")
        ends, timeout = _bound(self.limits.connect_timeout_seconds, target.shown,
                               "connection-failed")
        client = _client_class()(CallbackAPIVersion.VERSION2, client_id=target.client_id,
                                 clean_session=target.clean_session, protocol=MQTTv311,
                                 reconnect_on_failure=False)
        client.ends = ends
        client.max_incoming = self.limits.max_incoming_packet_bytes
        client.connect_timeout = max(ends - time.monotonic(), 0.001)
        if target.tls:
            client.tls_set_context(ssl.create_default_context())
        if username or password:
            client.username_pw_set(username, password or None)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
            if reason.is_failure:
                client.refused = f"the broker refused the connection: {reason}"
        client.on_connect = on_connect
        try:
            client.connect(target.host, target.port, keep_alive)
            _wait(client, lambda: client.is_connected() or bool(client.refused), ends, timeout)
            if not client.is_connected():
                raise _Failure("connection-failed", client.refused)
        except _Failure as failure:
            _disconnect(client)
            raise _Failure("connection-failed", f"{target.shown}: {failure.message}") from None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            _disconnect(client)
            raise _Failure("connection-failed", f"{target.shown}: " + (
                timeout if isinstance(exc, TimeoutError) else _text(exc))) from None
        return cast(_Client, client)

    def _close(self, conn: _Connection) -> None:
        _disconnect(conn.client)

    # --- publish

    def publish(self, store: Any, handle: Any, topic: str, payload: bytes, qos: str) -> None:
        limits = self.limits
        if len(payload) > limits.max_payload_bytes:
            raise _Failure("other", f"payload size {len(payload)} exceeds the maximum allowed "
                           f"size of {limits.max_payload_bytes} bytes")
        conn = self.connections.get(store, handle)
        refused = _topic_error(topic)
        if refused is not None:
            raise _Failure("other", f"{conn.shown}: {refused}")
        if conn.lost is not None:
            raise _Failure("connection-failed", f"{conn.shown}: {conn.lost}; open a new "
                           "connection")
        ends, timeout = _bound(limits.publish_timeout_seconds, conn.shown, "other")
        client = conn.client
        try:
            # A broker that closed an idle connection is noticed before publishing.
            _wait(client, lambda: not _readable(client), ends, timeout)
            info = client.publish(topic, payload, QOS[qos])
            if info.rc != 0:
                raise _Failure("connection-failed", client.refused or "the connection was lost")
            _wait(client, info.is_published, ends, timeout)
        except _Failure as failure:
            # Lost, or an acknowledgement still due: the connection's state is unknown.
            conn.lost = failure.message
            _disconnect(client)
            log.warning('component "%s": MQTT publish to "%s" on %s failed: %s',
                        self.component_id, topic, conn.shown, failure.message)
            raise _Failure(failure.case, f"{conn.shown}: {failure.message}") from None


def _topic_error(topic: str) -> str | None:
    """Why MQTT forbids publishing to `topic` (None: it does not)."""
    if not topic:
        return "the topic is empty"
    if "+" in topic or "#" in topic:
        return f"the topic {topic!r} has a wildcard (+ or #), which only subscriptions may use"
    if "\0" in topic:
        return "the topic contains U+0000"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "the topic is longer than 65535 bytes"
    return None


def _bound(ceiling: float, shown: str, case: str) -> tuple[float, str]:
    """(the monotonic time a call must end by, what to answer then): `ceiling` seconds
    from now, or the request's deadline if that comes first (`case` if it has passed)."""
    try:
        left = time_left(ceiling)
    except DeadlineExceeded:
        raise _Failure(case, f"{shown}: {DEADLINE_MESSAGE}") from None
    return time.monotonic() + left, (DEADLINE_MESSAGE if left < ceiling
                                     else f"no answer within {ceiling:g} s")


def _wait(client: _Client, done: Callable[[], bool], ends: float, timeout: str) -> None:
    """Read and write for `client` until `done()`.

    _Failure("connection-failed") if the connection is lost, _Failure("other",
    `timeout`) if `ends` (a monotonic time) comes first."""
    poller = select.poll()  # select() cannot wait on descriptors past 1023
    sock = client.socket()
    registered = 0
    while not done():
        if sock is None or client.socket() is not sock:
            raise _Failure("connection-failed", client.refused or "the connection was lost")
        events = select.POLLIN | (select.POLLOUT if client.want_write() else 0)
        if events != registered:
            poller.register(sock, events)  # registering again modifies
            registered = events
        if getattr(sock, "pending", lambda: 0)() > 0:
            ready = [(sock.fileno(), select.POLLIN)]  # TLS bytes read but not yet taken
        else:
            left = ends - time.monotonic()
            if left <= 0:
                raise _Failure("other", timeout)
            ready = poller.poll(left * 1000)
        for _fd, event in ready:
            if event & select.POLLOUT and client.loop_write() != 0:
                raise _Failure("connection-failed", client.refused or "the connection was lost")
            if event & ~select.POLLOUT and client.loop_read() != 0:
                raise _Failure("connection-failed",
                               client.refused or "the broker closed the connection")


def _readable(client: _Client) -> bool:
    """Whether the broker sent something (or closed the connection) since the last call."""
    sock = client.socket()
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _disconnect(client: _Client) -> None:
    """Send DISCONNECT if the socket takes it now, and close the socket."""
    sock = client.socket()
    try:
        client.disconnect()
    except (OSError, ValueError):
        pass
    if sock is not None:
        sock.close()


def _shown(address: str) -> str:
    """`address` with the password in its userinfo hidden."""
    authority = address.partition("://")[2].split("/", 1)[0]
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        return address.replace(userinfo, userinfo.split(":", 1)[0] + ":***", 1)
    return address


def _text(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class MqttFactor(ConnectionFactor[Mqtt]):
    """Each component's MQTT allow-list entries, as MQTT connections."""

    capability = Mqtt
    limits_type = OutboundMqttLimits
