"""Outbound Redis: `fermyon:spin/redis@2.0.0`, a guest's own connections to Redis.

The grant is the component's `allowed_outbound_hosts` entries for `redis` or
`rediss` (variables resolved, exactly as for outbound HTTP: the list is the
one `OutboundFactor` resolved). `connection.open` on an address they do not
allow, or that is not a `redis://`/`rediss://` URL with a host, answers
`invalid-address` (as Spin does) and logs one line naming the component and
the address, password hidden. The URL checked is the URL connected to: its
host and port must read the same to our parser and to redis-py's, and only its
host, port, credentials and database number are used (query options such as
`protocol` or `ssl_cert_reqs` are ignored).

Each `open` is one redis-py connection (RESP2), a `ResourceTable` entry closed
when the guest drops it or its instance is discarded; an instance holds at most
`OutboundRedisLimits.max_open_connections` (`too-many-connections` past it).
Every command, the connect included, ends by the request's deadline
(host.backends.redis's deadline-aware connections); a failure, timeout or
server error answers `other(message)`, never a trap. A reply is read against a
byte budget (`max_reply_bytes`): one that would exceed it is refused with
`other(...)` as soon as its length is known, before it is read, and its
connection closed.

Replies map as Spin maps them: nil, an integer, a bulk string (binary) or a
status (`+OK` -> status "OK"); `execute` flattens arrays into one list. Where
Spin answers `other`, this host answers `type-error` for a WRONGTYPE server
error (a key holding another kind of value) and for set members that are not
UTF-8 strings, since the interface has the case for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
import wasmtime.component as wc
from redis._parsers.resp2 import _RESP2Parser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout
from redis.retry import Retry
from redis.utils import SENTINEL

# The key-value backend's connections: every command bounded by the time left.
from host.backends.redis import _TcpConnection, _TlsConnection, redact_url
from host.capabilities import (
    Err,
    Ok,
)
from host.capabilities.allowed_hosts import DEFAULT_PORTS, AllowList, request_host, split_url
from host.capabilities.connections import ConnectionCapability, ConnectionFactor
from host.deadline import expired
from host.limits import OutboundRedisLimits

log = logging.getLogger("host.redis")

REDIS = "fermyon:spin/redis@2.0.0"
SCHEMES = ("redis", "rediss")
# What one reply value costs besides its bytes (a component value is 32 bytes).
VALUE_OVERHEAD = 32
# Commands after which the connection no longer answers one reply per command.
_UNSUPPORTED = frozenset({b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE", b"MONITOR", b"SYNC",
                          b"PSYNC", b"HELLO"})

INVALID_ADDRESS = Err(wc.Variant("invalid-address"))
TOO_MANY_CONNECTIONS = Err(wc.Variant("too-many-connections"))
TYPE_ERROR = Err(wc.Variant("type-error"))


def _other(message: str) -> Err:
    return Err(wc.Variant("other", message))


class Status(str):
    """A status reply (`+OK`), told apart from a bulk string (`$2 OK`)."""


class _TooLarge(Exception):
    """A reply over the budget: answered as `other(message)`."""


class _BoundedParser(_RESP2Parser):
    """redis-py's RESP2 parser, reading each reply against a byte budget.

    A bulk string's or an array's size is charged when its header is read,
    before its body, so a reply over the budget is refused without being held
    (redis-py then disconnects: the rest of it is never read). Status replies
    come back as `Status`; nothing is decoded.
    """

    limit = 0  # bytes one reply may take; set per connection
    budget = 0  # bytes the reply being read may still take

    def read_response(self, disable_decoding: bool = False, timeout: Any = SENTINEL) -> Any:
        self.budget = self.limit
        return super().read_response(disable_decoding, timeout)

    def _charge(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise _TooLarge

    def _read_response(self, disable_decoding: bool = False, timeout: Any = SENTINEL,
                       prepaid: bool = False) -> Any:
        """One value; `prepaid`: its array already paid its VALUE_OVERHEAD."""
        buffer = self._buffer
        raw = b"" if buffer is None else buffer.readline(timeout=timeout)
        if buffer is None or not raw:
            raise redis.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        byte, line = raw[:1], raw[1:]
        self._charge(len(line) + (0 if prepaid else VALUE_OVERHEAD))
        if byte == b"-":
            error = self.parse_error(  # type: ignore[no-untyped-call]  # untyped in redis-py
                line.decode("utf-8", "replace"))
            if isinstance(error, redis.ConnectionError):
                raise error
            return error  # raised by the connection; inside an array, kept as a value
        if byte == b"+":
            return Status(line.decode("utf-8", "replace"))
        if byte == b":":
            return int(line)
        if byte in (b"$", b"*") and line == b"-1":
            return None
        if byte == b"$":
            self._charge(int(line))
            return buffer.read(int(line), timeout=timeout)
        if byte == b"*":
            count = int(line)
            self._charge(VALUE_OVERHEAD * count)
            return [self._read_response(disable_decoding, timeout, prepaid=True)
                    for _ in range(count)]
        raise InvalidResponse(f"Protocol Error: {raw!r}")


def _connection_class(scheme: str) -> type[redis.Connection]:
    return _TlsConnection if scheme == "rediss" else _TcpConnection


@dataclass
class _Connection:
    """One guest connection: a redis-py connection."""

    client: redis.Connection
    address: str  # for messages: the guest's address, password hidden


class Redis(ConnectionCapability["_Connection"]):
    interfaces = (REDIS,)
    schemes = SCHEMES
    kind = "redis"

    def __init__(self, component_id: str, allowed: AllowList,
                 limits: OutboundRedisLimits | None = None) -> None:
        self.limits = limits or OutboundRedisLimits()
        super().__init__(component_id, allowed, self.limits)

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        command = self._command
        return {
            "[static]connection.open": self.open,
            "[method]connection.publish": command(
                lambda c, channel, payload: _none(c(b"PUBLISH", channel, payload))),
            "[method]connection.get": command(lambda c, key: _binary(c(b"GET", key))),
            "[method]connection.set": command(lambda c, key, value: _none(c(b"SET", key, value))),
            "[method]connection.incr": command(lambda c, key: _integer(c(b"INCR", key))),
            "[method]connection.del": command(lambda c, keys: _integer(c(b"DEL", *keys))),
            "[method]connection.sadd": command(
                lambda c, key, values: _integer(c(b"SADD", key, *values))),
            "[method]connection.smembers": command(
                lambda c, key: _strings(c(b"SMEMBERS", key))),
            "[method]connection.srem": command(
                lambda c, key, values: _integer(c(b"SREM", key, *values))),
            "[method]connection.execute": command(self._execute),
        }

    def open(self, store: Any, address: str) -> Ok | Err:
        target = self._target(address)
        if isinstance(target, Err):
            return target
        if self.connections.full(store):
            log.warning('component "%s": Redis connection to %s refused: the instance holds '
                        "%d, the most it may (too-many-connections)", self.component_id,
                        redact_url(address), self.limits.max_open_connections)
            return TOO_MANY_CONNECTIONS
        conn = _Connection(target, redact_url(address))
        try:
            target.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        except (RedisError, OSError) as exc:
            self._close(conn)
            return _other(self._message(conn, exc))
        return Ok(self.connections.add(store, conn))

    def _target(self, address: str) -> redis.Connection | Err:
        """The connection `address` stands for, if the allow-list admits it; not connected."""
        parts = split_url(address)
        if parts is None or parts[0] not in SCHEMES or request_host(parts[1]) is None:
            return self._deny(address, "it is not a redis:// or rediss:// URL with a host")
        scheme, host, port = parts
        if not self.allowed.allows(scheme, host, port):
            return self._deny(address, "allowed_outbound_hosts does not allow it; add "
                              f'"{scheme}://{host}:{port or DEFAULT_PORTS["redis"]}"')
        try:
            options = parse_url(address)  # type: ignore[no-untyped-call]  # untyped in redis-py
        except ValueError:
            return self._deny(address, "it is not a valid Redis URL")
        checked = request_host(host)
        if (request_host(str(options.get("host", ""))) != checked
                or options.get("port", DEFAULT_PORTS["redis"]) != (port or DEFAULT_PORTS["redis"])):
            return self._deny(address, "its host is ambiguous")
        limits = self.limits
        connection = _connection_class(scheme)(
            host=str(checked), port=port or DEFAULT_PORTS["redis"],
            db=options.get("db", 0), username=options.get("username"),
            password=options.get("password"),
            limits=limits, socket_timeout=limits.socket_timeout_seconds,
            socket_connect_timeout=limits.connect_timeout_seconds,
            retry=Retry(NoBackoff(), 0), parser_class=_BoundedParser,
            health_check_interval=0, driver_info=None, protocol=2,
        )
        cast(_BoundedParser, connection._parser).limit = limits.max_reply_bytes
        return connection

    def _deny(self, address: str, reason: str) -> Err:
        log.warning('component "%s": Redis connection to %s refused: %s (invalid-address)',
                    self.component_id, redact_url(address), reason)
        return INVALID_ADDRESS

    def _close(self, conn: _Connection) -> None:
        conn.client.disconnect()  # type: ignore[no-untyped-call]  # untyped in redis-py

    def _command(self, body: Callable[..., Ok | Err]) -> Callable[..., Ok | Err]:
        """A connection method: resolve the handle, run `body`, map failures to errors."""
        def call(store: Any, handle: Any, *args: Any) -> Ok | Err:
            conn = self.connections.get(store, handle)
            try:
                return body(lambda *command: self._send(conn, command), *args)
            except _TooLarge:
                message = (f"{conn.address}: the reply exceeds the limit of "
                           f"{self.limits.max_reply_bytes} bytes")
                log.warning('component "%s": %s; answered error::other', self.component_id,
                            message)
                return _other(message)
            except ResponseError as exc:
                if str(exc).startswith("WRONGTYPE"):
                    return TYPE_ERROR
                return _other(self._message(conn, exc))
            except (RedisError, OSError) as exc:
                return _other(self._message(conn, exc))
        return call

    def _send(self, conn: _Connection, command: tuple[Any, ...]) -> Any:
        conn.client.send_command(*command)  # type: ignore[no-untyped-call]
        return conn.client.read_response()

    def _execute(self, send: Callable[..., Any], command: str, arguments: list[Any]) -> Ok | Err:
        name = command.encode()
        words = name.split()  # redis-py sends "CLIENT LIST" as two arguments
        if not words:
            return _other("no command given")
        if words[0].upper() in _UNSUPPORTED:
            return _other(f"{command} is not supported: its replies do not come one per command")
        # redis-parameter arrives untagged (an int or bytes), as wasmtime-py tells them apart.
        reply = send(name, *(a.payload if isinstance(a, wc.Variant) else a for a in arguments))
        results: list[wc.Variant] = []
        _flatten(reply, results)
        return Ok(results)

    def _message(self, conn: _Connection, exc: Exception) -> str:
        if isinstance(exc, RedisTimeout) and expired():
            return f"{conn.address}: no answer before the request's deadline"
        text = " ".join(str(exc).split()) or type(exc).__name__
        password = conn.client.password
        if password:
            text = text.replace(password, "***")
        return f"{conn.address}: {text}"


def _none(reply: Any) -> Ok:
    return Ok(None)


def _binary(reply: Any) -> Ok | Err:
    return Ok(reply) if reply is None or isinstance(reply, bytes) else TYPE_ERROR


def _integer(reply: Any) -> Ok | Err:
    return Ok(reply) if isinstance(reply, int) else TYPE_ERROR


def _strings(reply: Any) -> Ok | Err:
    if not isinstance(reply, list) or not all(isinstance(v, bytes) for v in reply):
        return TYPE_ERROR
    try:
        return Ok([v.decode("utf-8") for v in reply])
    except UnicodeDecodeError:
        return TYPE_ERROR


def _flatten(reply: Any, into: list[wc.Variant]) -> None:
    """A reply as `redis-result`s, arrays flattened (as Spin does)."""
    if isinstance(reply, list):
        for value in reply:
            _flatten(value, into)
    elif reply is None:
        into.append(wc.Variant("nil"))
    elif isinstance(reply, Status):
        into.append(wc.Variant("status", str(reply)))
    elif isinstance(reply, int):
        into.append(wc.Variant("int64", reply))
    elif isinstance(reply, bytes):
        into.append(wc.Variant("binary", reply))
    elif isinstance(reply, ResponseError):
        raise reply  # an error inside an array (EXEC): the whole call fails
    else:
        raise InvalidResponse(f"unexpected reply of type {type(reply).__name__}")


class RedisFactor(ConnectionFactor[Redis]):
    """Each component's `redis`/`rediss` allow-list entries, as Redis connections."""

    capability = Redis
    limits_type = OutboundRedisLimits
