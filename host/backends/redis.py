"""The Redis key-value backend: one Redis server (URL) per store label, as in Spin.

Keys are used as-is, with no label prefix: Spin gives each label its own Redis
URL (a separate server or database number), so the data is the same a Spin app
or `redis-cli` would see. The `store` argument every method takes is therefore
ignored here; two labels pointed at the same URL share their keys.

Semantics follow the SQLite backend: values are bytes; counters are decimal text
(INCRBY's own encoding); `swap` is a WATCH/MULTI/EXEC compare-and-set. Every
redis-py failure becomes a one-line `BackendError` without the password.

The client does not retry a failed command: INCRBY and MSET are not idempotent,
so re-sending one after a timeout could apply it twice. Stale pooled
connections (a restarted server) are still caught before use, by the pool's
check on checkout and by `health_check_interval`.

Every command made for a request ends by that request's deadline
(`host.deadline`). redis-py sets a socket's timeout once per connection, so
the pool's connections (`_DeadlineConnection`) set it per command instead: no
command starts once the deadline has passed, connecting, sending and waiting
for the reply each get the time left (capped by `RedisLimits`), and a
connection whose reply did not come in time is dropped, never reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection, parse_url
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeout
from redis.retry import Retry

from host.deadline import DeadlineExceeded, expired, time_left
from host.errors import BackendError
from host.limits import KeyValueLimits, RedisLimits

if TYPE_CHECKING:
    from host.runtime_config import KeyValueStoreConfig

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def redact_url(url: str) -> str:
    """`url` with any password (userinfo or `?password=`) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in pairs):
            query = urlencode([(n, "***" if n == "password" else v) for n, v in pairs],
                              safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _passwords(url: str) -> list[str]:
    """Every spelling of the URL's password, to scrub from error messages."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for n, v in parse_qsl(parts.query) if n == "password"]
    except ValueError:
        return []
    return [s for p in found if p for s in {p, unquote(p), quote(p, safe="")}]


class _DeadlineConnection(AbstractConnection):
    """Mixed into redis-py's connection classes: each command bounded by the time left.

    The pool passes `limits` (a RedisLimits) through its connection kwargs.
    """

    def __init__(self, *args: Any, limits: RedisLimits, **kwargs: Any) -> None:
        self.limits = limits
        super().__init__(*args, **kwargs)

    def connect(self) -> None:
        self.socket_connect_timeout = _time_left(self.limits.connect_timeout_seconds)
        super().connect()  # type: ignore[no-untyped-call]  # untyped in redis-py

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # Nothing is sent once the deadline has passed.
        left = _time_left(self.limits.socket_timeout_seconds)
        # If it reconnects:
        self.socket_connect_timeout = min(self.limits.connect_timeout_seconds, left)
        if self._sock is not None:
            self._sock.settimeout(left)
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def read_response(self, disable_decoding: bool = False, **kwargs: Any) -> Any:
        try:
            left = time_left(self.limits.socket_timeout_seconds)
        except DeadlineExceeded:
            # Its reply is still on the way: this connection must never be reused.
            self.disconnect()  # type: ignore[no-untyped-call]
            raise RedisTimeout(_DEADLINE_PASSED) from None
        caller = kwargs.get("timeout")
        if isinstance(caller, int | float):
            left = min(left, caller)
        kwargs["timeout"] = left  # a reply not read in time disconnects (redis-py's rule)
        return super().read_response(disable_decoding, **kwargs)


class _TcpConnection(_DeadlineConnection, redis.Connection):
    pass


class _TlsConnection(_DeadlineConnection, redis.SSLConnection):
    pass


class _UnixConnection(_DeadlineConnection, redis.UnixDomainSocketConnection):
    pass


_CONNECTIONS: dict[str, type[redis.Connection] | type[redis.UnixDomainSocketConnection]] = {
    "redis": _TcpConnection, "rediss": _TlsConnection, "unix": _UnixConnection}
_DEADLINE_PASSED = "no answer before the request's deadline"


def _time_left(ceiling: float) -> float:
    try:
        return time_left(ceiling)
    except DeadlineExceeded:
        raise RedisTimeout(_DEADLINE_PASSED) from None


class RedisKeyValue:
    def __init__(self, url: str, limits: RedisLimits | None = None) -> None:
        """Connect to `url` and PING it, so a wrong URL fails at start-up, not per request."""
        self._secrets = _passwords(url)
        self.url = redact_url(url)
        self.description = f"redis {self.url}"
        self.limits = limits = limits or RedisLimits()
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url,
                # from_url's own choice by scheme, made deadline-aware
                connection_class=_CONNECTIONS.get(urlsplit(url).scheme.lower(), _TcpConnection),
                limits=limits,
                socket_timeout=limits.socket_timeout_seconds,
                socket_connect_timeout=limits.connect_timeout_seconds,
                health_check_interval=limits.health_check_interval_seconds,
                retry=Retry(NoBackoff(), 0),
            )
        except (ValueError, RedisError) as exc:
            raise BackendError(self._scrub(f"invalid Redis URL {self.url}: {exc}")) from None
        try:
            self._redis.ping()
        except RedisError as exc:
            self._redis.close()
            raise BackendError(self._scrub(f"cannot reach Redis at {self.url}: {exc}")) from None

    @classmethod
    def from_config(cls, config: KeyValueStoreConfig, limits: KeyValueLimits) -> RedisKeyValue:
        return cls(config.url or "", limits.redis)

    @classmethod
    def check_config(cls, config: KeyValueStoreConfig, limits: KeyValueLimits) -> str:
        """Parse the URL as the client would; no connection (a server may be down
        or unreachable from where the app is checked, e.g. a build machine)."""
        url = config.url or ""
        shown = redact_url(url)
        try:
            parse_url(url)  # type: ignore[no-untyped-call]  # untyped in redis-py
        except ValueError as exc:
            message = f"invalid Redis URL {shown}: {exc}"
            for secret in _passwords(url):
                message = message.replace(secret, "***")
            raise BackendError(message) from None
        return f"redis {shown}"

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return " ".join(message.split())  # one line, whatever the server said

    def _error(self, exc: RedisError) -> BackendError:
        if isinstance(exc, RedisTimeout) and expired():
            return BackendError(f"{self.description}: {_DEADLINE_PASSED}")
        return BackendError(self._scrub(f"{self.description}: {exc}"))

    def get(self, store: str, key: str) -> bytes | None:
        try:
            return _bytes_or_none(self._redis.get(key))
        except RedisError as exc:
            raise self._error(exc) from None

    def set(self, store: str, key: str, value: bytes) -> None:
        try:
            self._redis.set(key, value)
        except RedisError as exc:
            raise self._error(exc) from None

    def delete(self, store: str, key: str) -> None:
        try:
            self._redis.delete(key)
        except RedisError as exc:
            raise self._error(exc) from None

    def exists(self, store: str, key: str) -> bool:
        try:
            return bool(self._redis.exists(key))
        except RedisError as exc:
            raise self._error(exc) from None

    def list_keys(self, store: str, cursor: str | None) -> tuple[list[str], str | None]:
        """One SCAN page; the cursor is SCAN's own, as decimal text.

        SCAN may return an empty batch with more to come, so this scans on until
        it has at least one key or reaches the end: a page is empty only when it
        is the last. Redis's SCAN guarantee applies: every key present for the
        whole scan is returned, in no particular order, and a key may appear on
        two pages if the server rehashes mid-scan (SQLite: sorted, exactly once).
        Keys that are not UTF-8 (written by other clients) are decoded with U+FFFD.
        """
        try:
            position = int(cursor) if cursor else 0
        except ValueError:
            raise BackendError(f"{self.description}: invalid list-keys cursor") from None
        if position < 0:
            raise BackendError(f"{self.description}: invalid list-keys cursor")
        try:
            while True:
                position, batch = self._redis.scan(position, count=self.limits.scan_count)
                if batch or position == 0:
                    break
        except RedisError as exc:
            raise self._error(exc) from None
        keys = list(dict.fromkeys(_text(k) for k in batch))
        return keys, (str(position) if position else None)

    def increment(self, store: str, key: str, delta: int) -> int:
        if not _INT64_MIN <= delta <= _INT64_MAX:
            raise BackendError(f'incrementing "{key}" by {delta} overflows a 64-bit integer')
        try:
            return int(self._redis.incrby(key, delta))
        except ResponseError as exc:
            text = str(exc)
            if "not an integer" in text:
                raise BackendError(
                    f'cannot increment "{key}": its value is not a decimal integer'
                ) from None
            if "overflow" in text:
                raise BackendError(
                    f'incrementing "{key}" by {delta} overflows a 64-bit integer'
                ) from None
            raise self._error(exc) from None
        except RedisError as exc:
            raise self._error(exc) from None

    def get_many(self, store: str, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []  # MGET needs at least one key
        try:
            return [_bytes_or_none(v) for v in self._redis.mget(keys)]
        except RedisError as exc:
            raise self._error(exc) from None

    def set_many(self, store: str, items: list[tuple[str, bytes]]) -> None:
        if not items:
            return  # MSET needs at least one pair
        try:
            self._redis.mset(dict(items))  # a repeated key: the last value wins, as in SQLite
        except RedisError as exc:
            raise self._error(exc) from None

    def delete_many(self, store: str, keys: list[str]) -> None:
        if not keys:
            return  # DEL needs at least one key
        try:
            self._redis.delete(*keys)
        except RedisError as exc:
            raise self._error(exc) from None

    def swap(self, store: str, key: str, expected: bytes | None, value: bytes) -> bool:
        """Compare-and-set with WATCH/MULTI/EXEC.

        False when the value differs from `expected` (None: the key must be
        absent) or when another client wrote the key between our GET and EXEC
        (WatchError), even if it wrote the expected value back: a "weak" CAS, so
        a guest retries on False exactly as it would after a real mismatch.
        """
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # untyped in redis-py
                if _bytes_or_none(pipe.get(key)) != expected:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(key, value)
                pipe.execute()
                return True
        except WatchError:
            if expired():  # redis-py turns a lost connection while watching into WatchError
                raise BackendError(f"{self.description}: {_DEADLINE_PASSED}") from None
            return False
        except RedisError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Disconnect every pooled connection (the client owns its pool)."""
        self._redis.close()
        self._redis.connection_pool.disconnect()


def _bytes_or_none(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise BackendError(f"unexpected reply from Redis: {type(value).__name__}")


def _text(key: object) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
