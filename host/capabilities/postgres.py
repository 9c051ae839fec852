"""Outbound PostgreSQL: a guest's own connections, as Spin SDK apps import them.

Interfaces: `fermyon:spin/postgres@2.0.0` (its types in `rdbms-types`),
`spin:postgres/postgres@3.0.0` and `@4.0.0`. One implementation serves all
three, with values shaped as @4 has them and mapped down as Spin maps them
(a type an older version lacks reads `unsupported`; its column `other`).

The grant is the component's `allowed_outbound_hosts` entries for `postgres`
(the list `OutboundFactor` resolved, variables included). The address is a
libpq connection string (`postgres://user:pw@host:port/db?sslmode=...` or
`host=... port=...`), parsed by libpq itself; it must name exactly one TCP
host, which the allow-list must allow, and only its host, port, dbname, user,
password and sslmode are used (nothing else of the string, nor the host's
PG* environment, ~/.pgpass or client certificates, reaches the connection).
Anything else answers `connection-failed` naming the address (password hidden)
and logs one line, as Spin answers it.

Each `open` is one psycopg connection in autocommit mode, a `ResourceTable`
entry closed when the guest drops it or its instance is discarded; an
instance holds at most `OutboundPostgresLimits.max_open_connections`. Every
call ends by the request's deadline: the connect waits at most the time left
(and `connect_timeout_seconds`), and a statement still running at the
deadline is cancelled (psycopg's cancel request; one watchdog thread watches
every statement), its socket shut if even that gets no answer; the server's
own `statement_timeout` caps calls made outside a request. Rows are streamed
in chunks and counted against `max_result_bytes`: past it the query is
cancelled and answers `query-failed` (as Spin does), nothing more is read.
A failure is the interface's own error value, never a trap:
`connection-failed` (open), `bad-parameter` (a parameter PostgreSQL cannot
take: an invalid date or decimal), `value-conversion-failed` (a value that
cannot be read back; an unsigned integer on @2), `query-failed` (the server's
error, the deadline, the result cap, a lost connection). COPY
(which would leave the connection in copy mode) fails with query-failed;
notifications and notices are dropped, not queued.

Values map as Spin maps them: int2/int4/int8, float4/float8, bool, text,
varchar and bpchar, bytea, date, time, timestamp and timestamptz (as UTC)
read as the same-named cases; @4 adds uuid, jsonb, numeric (decimal text),
int4/int8/num ranges, int4/int8/numeric/text arrays and interval. A
`timestamp` parameter is seconds since the epoch (a timestamptz); `int8` is
sent as int2 (PostgreSQL has no one-byte integer); nanoseconds are truncated
to PostgreSQL's microseconds.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from urllib.parse import quote

import psycopg
import wasmtime.component as wc
from psycopg import pq
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.generators import copy_end, copy_from, fetch
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Float4, Float8, Int2, Int4, Int8
from psycopg.types.range import Int4Range, Int8Range, NumericRange, Range

from host import resolve
from host.capabilities import Err, HostHandle, Ok
from host.capabilities.allowed_hosts import DEFAULT_PORTS, AllowList, request_host
from host.capabilities.connections import ConnectionCapability, ConnectionFactor
from host.deadline import DeadlineExceeded, deadline, time_left
from host.limits import OutboundPostgresLimits

log = logging.getLogger("host.postgres")

V2 = "fermyon:spin/postgres@2.0.0"
V3 = "spin:postgres/postgres@3.0.0"
V4 = "spin:postgres/postgres@4.0.0"
SCHEME = "postgres"
# What one value costs besides its bytes (a component value is 32 bytes).
VALUE_COST = 32
# Rows per chunk read from the server (libpq 17 and later; row by row before).
FETCH_ROWS = 64 if psycopg.capabilities.has_stream_chunked() else 1
DEADLINE_MESSAGE = "no answer before the request's deadline"
MAX_HOST_ADDRESSES = 4  # of a name's addresses, the ones libpq tries in turn
# Connection-string keys a guest may set; all others are ignored.
_GUEST_KEYS = ("host", "port", "dbname", "user", "password", "sslmode")
# What libpq must not take from the host: its files and PG* environment.
# (a passfile that cannot exist: libpq skips it silently.)
_HOST_DEFAULTS = {"passfile": os.path.join(os.devnull, "none"), "sslcertmode": "disable",
                  "gssencmode": "disable"}


class _Failure(Exception):
    """An error the guest gets as the interface's own value."""

    def __init__(self, case: str, message: str, db_error: tuple[Any, ...] | None = None) -> None:
        super().__init__(message)
        self.case = case
        self.message = message
        self.db_error = db_error  # @4's db-error record, for query-failed


# --- Types ---------------------------------------------------------------------------------

# oid -> @4's db-data-type case
_DATA_TYPES: dict[int, str] = {
    16: "boolean", 17: "binary", 21: "int16", 23: "int32", 20: "int64",
    700: "floating32", 701: "floating64", 25: "str", 1043: "str", 1042: "str",
    1082: "date", 1083: "time", 1114: "datetime", 1184: "datetime",
    2950: "uuid", 3802: "jsonb", 1700: "decimal", 3904: "range-int32",
    3926: "range-int64", 3906: "range-decimal", 1007: "array-int32", 1016: "array-int64",
    1231: "array-decimal", 1009: "array-str", 1015: "array-str", 1014: "array-str",
    1186: "interval",
}
# What @2 and @3 know of them; the rest are `other` / `unsupported`.
_V2_TYPES = frozenset({"boolean", "int8", "int16", "int32", "int64", "floating32",
                       "floating64", "str", "binary"})
_V3_TYPES = _V2_TYPES | {"date", "time", "datetime", "timestamp"}


@dataclass(frozen=True)
class _Interval:
    micros: int
    days: int
    months: int


_INTERVAL = struct.Struct(">qii")


class _IntervalLoader(Loader):
    format = pq.Format.BINARY

    def load(self, data: Any) -> _Interval:
        micros, days, months = _INTERVAL.unpack(bytes(data))
        return _Interval(micros, days, months)


class _IntervalDumper(Dumper):
    format = pq.Format.BINARY
    oid = 1186

    def dump(self, obj: Any) -> bytes:
        return _INTERVAL.pack(obj.micros, obj.days, obj.months)


class _JsonbBytesLoader(Loader):
    """jsonb as its text, not parsed: the guest gets bytes."""

    format = pq.Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)[1:]  # after the format version byte


class _RawLoader(Loader):
    """A type the interface does not name: its bytes as the server sent them
    (binary format), for @4's `unsupported(list<u8>)`, as Spin gives them."""

    format = pq.Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _adapters() -> psycopg.adapt.AdaptersMap:
    adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
    for info in psycopg.adapters.types:
        for oid in (info.oid, getattr(info, "array_oid", 0)):
            if oid and oid not in _DATA_TYPES:
                adapters.register_loader(oid, _RawLoader)
    adapters.register_loader(1186, _IntervalLoader)
    adapters.register_loader(3802, _JsonbBytesLoader)
    adapters.register_dumper(_Interval, _IntervalDumper)
    return adapters


_ADAPTERS = _adapters()


def _parameter(value: Any) -> Any:
    """A guest's parameter-value as psycopg sends it; _Failure(bad-parameter) if it cannot be."""
    if not isinstance(value, wc.Variant):
        raise _Failure("bad-parameter", f"unexpected parameter {value!r}")
    tag, v = value.tag, cast(Any, value.payload)
    try:
        match tag:
            case "db-null":
                return None
            case "boolean" | "str" | "binary":
                return bytes(v) if tag == "binary" else v
            case "int8" | "int16":
                return Int2(v)
            case "int32":
                return Int4(v)
            case "int64":
                return Int8(v)
            case "uint8" | "uint16" | "uint32" | "uint64":
                raise _Failure("value-conversion-failed",
                               "Postgres does not support unsigned integers")
            case "floating32":
                return Float4(v)
            case "floating64":
                return Float8(v)
            case "date":
                return dt.date(*v)
            case "time":
                h, m, s, ns = v
                return dt.time(h, m, s, ns // 1000)
            case "datetime":
                y, mo, d, h, mi, s, ns = v
                return dt.datetime(y, mo, d, h, mi, s, ns // 1000)
            case "timestamp":
                return dt.datetime.fromtimestamp(v, dt.UTC)
            case "uuid":
                return uuid.UUID(v)
            case "jsonb":
                return Jsonb(json.loads(bytes(v)))
            case "decimal":
                return _decimal(v)
            case "range-int32" | "range-int64" | "range-decimal":
                return _range(tag, v)
            case "array-int32":
                return [None if i is None else Int4(i) for i in v]
            case "array-int64":
                return [None if i is None else Int8(i) for i in v]
            case "array-decimal":
                return [None if d is None else _decimal(d) for d in v]
            case "array-str":
                return list(v)
            case "interval":
                micros, days, months = v
                return _Interval(micros, days, months)
    except (ValueError, OverflowError, OSError, InvalidOperation, TypeError) as exc:
        raise _Failure("bad-parameter", f"invalid {tag} parameter {v!r}: {exc}") from None
    raise _Failure("bad-parameter", f"unknown parameter type {tag}")


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise ValueError("not a finite decimal")
    return value


_RANGES: dict[str, tuple[type[Range[Any]], Callable[[Any], Any]]] = {
    "range-int32": (Int4Range, int), "range-int64": (Int8Range, int),
    "range-decimal": (NumericRange, _decimal),
}


def _range(tag: str, value: Any) -> Range[Any]:
    cls, convert = _RANGES[tag]
    lower, upper = value
    bounds = (("[" if lower is None or lower[1] == "inclusive" else "(")
              + ("]" if upper is not None and upper[1] == "inclusive" else ")"))
    return cls(None if lower is None else convert(lower[0]),
               None if upper is None else convert(upper[0]), bounds)


def _value(kind: str | None, value: Any) -> wc.Variant:
    """A read value as @4's db-value, by its column's data type (None: unsupported)."""
    if value is None:
        return wc.Variant("db-null")
    match kind:
        case "boolean" | "int16" | "int32" | "int64" | "floating32" | "floating64" | "str":
            return wc.Variant(kind, value)
        case "binary" | "jsonb":
            return wc.Variant(kind, bytes(value))
        case "date":
            return wc.Variant("date", (value.year, value.month, value.day))
        case "time":
            return wc.Variant("time", (value.hour, value.minute, value.second,
                                       value.microsecond * 1000))
        case "datetime":
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC)
            return wc.Variant("datetime", (value.year, value.month, value.day, value.hour,
                                           value.minute, value.second, value.microsecond * 1000))
        case "uuid" | "decimal":
            return wc.Variant(kind, str(value))
        case "range-int32" | "range-int64" | "range-decimal":
            text = str if kind == "range-decimal" else int
            return wc.Variant(kind, (
                None if value.lower is None else
                (text(value.lower), "inclusive" if value.lower_inc else "exclusive"),
                None if value.upper is None else
                (text(value.upper), "inclusive" if value.upper_inc else "exclusive")))
        case "array-int32" | "array-int64" | "array-str" | "array-decimal":
            if any(isinstance(item, list) for item in value):
                raise _Failure("value-conversion-failed",
                               f"cannot read a multidimensional array as {kind}")
            if kind == "array-decimal":
                return wc.Variant(kind, [None if d is None else str(d) for d in value])
            return wc.Variant(kind, list(value))
        case "interval":
            return wc.Variant(kind, (value.micros, value.days, value.months))
    return wc.Variant("unsupported", bytes(value))


def _cost(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return VALUE_COST + len(value)
    if isinstance(value, list):
        return VALUE_COST + sum(_cost(v) for v in value)
    return VALUE_COST


# --- Versions: what each one's values look like --------------------------------------------

def _down(version: str, value: wc.Variant) -> wc.Variant:
    known = _V2_TYPES if version == V2 else _V3_TYPES if version == V3 else None
    if known is None or value.tag in known or value.tag == "db-null":
        return value
    return wc.Variant("unsupported")


def _data_type(version: str, kind: str | None, name: str) -> Any:
    if version == V4:
        return wc.Variant(kind) if kind else wc.Variant("other", name)
    known = _V2_TYPES if version == V2 else _V3_TYPES
    return kind if kind in known else "other"


def _error(version: str, failure: _Failure) -> Err:
    if failure.case == "query-failed" and version == V4:
        detail = (wc.Variant("db-error", failure.db_error) if failure.db_error is not None
                  else wc.Variant("text", failure.message))
        return Err(wc.Variant("query-failed", detail))
    return Err(wc.Variant(failure.case, failure.message))


# --- Connections ---------------------------------------------------------------------------

class _Cursor(psycopg.RawCursor[Any]):
    """psycopg's stream() (its `_stream_fetchone_gen`), which also ends on a statement
    that returns no rows (INSERT, CREATE) and keeps its row count; and whose
    columns are known when a query returns no row."""

    affected = 0

    def _stream_fetchone_gen(self, first: bool) -> Any:
        res = yield from fetch(self._pgconn)
        if res is None:
            return None
        status = res.status
        if res.command_tuples is not None:  # the last chunk of rows has it, or the end
            self.affected = res.command_tuples
        if status in (pq.ExecStatus.SINGLE_TUPLE, pq.ExecStatus.TUPLES_CHUNK):
            self.pgresult = res
            self._tx.set_pgresult(res, set_loaders=first)
            if first:
                self._make_row = self._make_row_maker()
            return res
        if status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT):
            # psycopg would leave the connection in COPY mode: end it, then fail.
            if status == pq.ExecStatus.COPY_IN:
                res = yield from copy_end(self._pgconn, b"COPY FROM STDIN is not supported")
            else:
                while isinstance(res := (yield from copy_from(self._pgconn)), memoryview):
                    pass  # bounded by the deadline, as any statement
            while res:
                res = yield from fetch(self._pgconn)
            raise psycopg.NotSupportedError("COPY is not supported: use INSERT and SELECT")
        if status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            if first:
                self.pgresult = res
            while res:
                res = yield from fetch(self._pgconn)
            return None
        return self._raise_for_result(res)


@dataclass
class _Connection:
    """One guest connection: a psycopg connection."""

    conn: psycopg.Connection[Any]
    address: str  # for messages: the guest's address, password hidden


class _Statement:
    """One running statement, as the watchdog sees it."""

    def __init__(self, conn: psycopg.Connection[Any], grace: float) -> None:
        self.conn = conn
        self.grace = grace
        self.done = threading.Event()
        self.fired = False

    def stop(self) -> None:
        self.done.set()

    def interrupt(self) -> None:
        """At the deadline: a cancel request; the socket shut if even that goes unanswered."""
        self.fired = True
        try:
            self.conn.cancel_safe(timeout=self.grace)
        except Exception:  # noqa: BLE001 - then the socket goes
            pass
        if not self.done.wait(self.grace):
            try:
                with socket.socket(fileno=os.dup(self.conn.pgconn.socket)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # noqa: BLE001 - already closed
                pass


class _Watchdog:
    """One thread that interrupts statements still running at their deadline.

    Watching costs a heap push (a timer thread per statement would cost more
    than a local round trip); interrupting, which may wait on the server, runs
    on a thread of its own."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Statement]] = []
        self._seq = 0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, statement: _Statement) -> None:
        with self._wake:
            while self._heap and self._heap[0][2].done.is_set():
                heapq.heappop(self._heap)  # finished in time: no need to wait for them
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, statement))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="postgres-watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is statement:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].done.is_set():
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wake.wait()
                    continue
                at, _, statement = self._heap[0]
                now = time.monotonic()
                if now < at:
                    self._wake.wait(at - now)
                    continue
                heapq.heappop(self._heap)
            if not statement.done.is_set():
                threading.Thread(target=statement.interrupt, name="postgres-cancel",
                                 daemon=True).start()


_watchdog = _Watchdog()


class Postgres(ConnectionCapability["_Connection"]):
    interfaces = (V2, V3, V4)
    schemes = (SCHEME,)
    kind = "postgres"

    def __init__(self, component_id: str, allowed: AllowList,
                 limits: OutboundPostgresLimits | None = None) -> None:
        self.limits = limits or OutboundPostgresLimits()
        super().__init__(component_id, allowed, self.limits)

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        def call(body: Callable[..., Any]) -> Callable[..., Ok | Err]:
            def run(store: Any, *args: Any) -> Ok | Err:
                try:
                    return Ok(body(store, *args))
                except _Failure as failure:
                    return _error(interface, failure)
            return run
        return {
            "[static]connection.open": call(lambda store, address: self.open(store, address)),
            "[method]connection.query": call(
                lambda store, handle, statement, params:
                self.query(interface, store, handle, statement, params)),
            "[method]connection.execute": call(
                lambda store, handle, statement, params:
                self.execute(interface, store, handle, statement, params)),
        }

    # --- open

    def open(self, store: Any, address: str) -> HostHandle:
        shown, params = self._target(address)
        if self.connections.full(store):
            log.warning('component "%s": PostgreSQL connection to %s refused: the instance '
                        "holds %d, the most it may", self.component_id, shown,
                        self.limits.max_open_connections)
            raise _Failure("connection-failed", "too many connections")
        conn = self._connect(shown, params)
        return self.connections.add(store, _Connection(conn, shown))

    def _target(self, address: str) -> tuple[str, dict[str, Any]]:
        """(the address as logs show it, libpq parameters), if the allow-list admits it."""
        try:
            given = conninfo_to_dict(address)
        except psycopg.Error as exc:
            raise self._deny(address, address, f"it is not a connection string: {exc}") from None
        shown = _redact(address, given.get("password"))
        host = str(given.get("host") or "")
        if "hostaddr" in given or not host or "," in host or host.startswith(("/", "@")):
            raise self._deny(address, shown, "it must name exactly one TCP host")
        checked = request_host(host)
        port_text = str(given.get("port") or DEFAULT_PORTS[SCHEME])
        if checked is None or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise self._deny(address, shown, "its host or port is not valid")
        port = int(port_text)
        if not self.allowed.allows(SCHEME, host, port):
            raise self._deny(address, shown, "allowed_outbound_hosts does not allow it; add "
                             f'"postgres://{host}:{port}"')
        params = {k: str(given[k]) for k in _GUEST_KEYS if given.get(k) is not None}
        params.update(host=str(checked), port=str(port), **_HOST_DEFAULTS)
        return shown, params

    def _deny(self, address: str, shown: str, reason: str) -> _Failure:
        log.warning('component "%s": PostgreSQL connection to %s refused: %s '
                    "(connection-failed)", self.component_id, shown, reason)
        return _Failure("connection-failed", f"address {shown} is not permitted: {reason}")

    def _connect(self, shown: str, params: dict[str, Any]) -> psycopg.Connection[Any]:
        from psycopg import waiting
        limits = self.limits
        options = f"-c statement_timeout={int(limits.statement_timeout_seconds * 1000)}"
        conninfo = make_conninfo("", **self._addressed(shown, params), options=options,
                                 application_name="spinhost")
        try:  # after the lookup, which took some of it
            left = time_left(limits.connect_timeout_seconds)
        except DeadlineExceeded:
            raise _Failure("connection-failed", f"{shown}: {DEADLINE_MESSAGE}") from None
        try:
            # Connection.connect() rounds its timeout to whole seconds (2 at least):
            # its own steps, with the time left as it is.
            conn: psycopg.Connection[Any] = waiting.wait_conn(
                psycopg.Connection._connect_gen(conninfo), interval=0.1, timeout=left)
        except psycopg.errors._WaitTimeout:
            raise _Failure("connection-failed", f"{shown}: {DEADLINE_MESSAGE}"
                           if deadline() is not None and left < limits.connect_timeout_seconds
                           else f"{shown}: connection timeout expired") from None
        except psycopg.Error as exc:
            raise _Failure("connection-failed", f"{shown}: {_text(exc, params)}") from None
        # Nobody reads them: psycopg would queue notifications without bound.
        conn.pgconn.notify_handler = conn.pgconn.notice_handler = None
        conn._autocommit = True
        conn.prepare_threshold = None
        conn.cursor_factory = _Cursor
        conn._adapters = psycopg.adapt.AdaptersMap(_ADAPTERS)
        return conn

    @staticmethod
    def _addressed(shown: str, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with the host name looked up here, within the deadline, and handed
        to libpq as `hostaddr` (libpq's own lookup, in C, no timeout bounds); `host`
        stays for TLS verification. Numeric hosts go as they are."""
        host = params["host"]
        try:
            found = resolve.addresses(host, int(params["port"]))
        except socket.gaierror as exc:
            raise _Failure("connection-failed", f"{shown}: {resolve.TIMED_OUT}"
                           if exc.args and exc.args[-1] == resolve.TIMED_OUT
                           else f'{shown}: could not resolve host "{host}": '
                                f"{exc.strerror or exc}") from None
        if not found or found == [host]:
            return params
        found = found[:MAX_HOST_ADDRESSES]
        return {**params, "host": ",".join([host] * len(found)), "hostaddr": ",".join(found)}

    def _close(self, conn: _Connection) -> None:
        conn.conn.close()

    # --- statements

    def query(self, version: str, store: Any, handle: Any, statement: str,
              params: list[Any]) -> tuple[list[tuple[str, Any]], list[list[wc.Variant]]]:
        conn = self.connections.get(store, handle)
        columns: list[tuple[str, Any]] = []
        rows: list[list[wc.Variant]] = []
        budget = self.limits.max_result_bytes

        def read(cursor: _Cursor, stream: Iterator[Any]) -> None:
            nonlocal budget
            kinds: list[str | None] = []
            for row in stream:
                if not kinds:
                    kinds = self._columns(version, cursor, columns)
                    budget -= sum(len(c[0]) + VALUE_COST for c in columns)
                budget -= VALUE_COST + sum(_cost(v) for v in row)
                if budget < 0:
                    raise _Failure("query-failed", "query result exceeds limit of "
                                   f"{self.limits.max_result_bytes} bytes (max_result_bytes)")
                rows.append([_down(version, _value(k, v)) for k, v in zip(kinds, row, strict=True)])
            if not kinds and cursor.description:
                self._columns(version, cursor, columns)

        self._run(version, conn, statement, params, read)
        return columns, rows

    def execute(self, version: str, store: Any, handle: Any, statement: str,
                params: list[Any]) -> int:
        conn = self.connections.get(store, handle)

        def discard(cursor: _Cursor, stream: Iterator[Any]) -> None:
            for _row in stream:
                pass

        return self._run(version, conn, statement, params, discard)

    def _columns(self, version: str, cursor: _Cursor,
                 columns: list[tuple[str, Any]]) -> list[str | None]:
        kinds = [_DATA_TYPES.get(d.type_code) for d in cursor.description or ()]
        for d, kind in zip(cursor.description or (), kinds, strict=True):
            columns.append((d.name, _data_type(version, kind, _type_name(d.type_code))))
        return kinds

    def _run(self, version: str, conn: _Connection, statement: str, params: list[Any],
             consume: Callable[[_Cursor, Iterator[Any]], None]) -> int:
        values = [_parameter(p) for p in params]
        try:
            time_left(self.limits.statement_timeout_seconds)
        except DeadlineExceeded:
            raise _Failure("query-failed", f"{conn.address}: {DEADLINE_MESSAGE}") from None
        watchdog = _Statement(conn.conn, self.limits.cancel_grace_seconds)
        at = deadline()
        if at is not None:
            _watchdog.watch(at, watchdog)
        cursor = _Cursor(conn.conn)
        stream = cast(Generator[Any, None, None], cursor.stream(
            statement, values or None, binary=True, size=FETCH_ROWS))
        try:
            try:
                consume(cursor, stream)
            finally:
                stream.close()  # stopped early: cancels the statement, reads nothing more
            return cursor.affected
        except _Failure:
            raise
        except psycopg.DataError as exc:
            if exc.sqlstate is None:  # a value psycopg could not load
                raise _Failure("value-conversion-failed", str(exc)) from None
            raise self._query_failed(conn, exc, watchdog) from None
        except (psycopg.Error, OSError) as exc:
            raise self._query_failed(conn, exc, watchdog) from None
        finally:
            watchdog.stop()
            cursor.close()

    def _query_failed(self, conn: _Connection, exc: Exception, watchdog: _Statement) -> _Failure:
        if watchdog.fired:
            log.warning('component "%s": PostgreSQL statement on %s stopped at the request\'s '
                        "deadline", self.component_id, conn.address)
            return _Failure("query-failed", f"{conn.address}: {DEADLINE_MESSAGE}")
        text = " ".join(str(exc).split()) or type(exc).__name__
        diag = getattr(exc, "diag", None)
        if not isinstance(exc, psycopg.Error) or diag is None or exc.sqlstate is None:
            return _Failure("query-failed", text)
        extras = [(name, str(value)) for name in
                  ("column_name", "constraint_name", "context", "datatype_name", "message_hint",
                   "schema_name", "table_name", "source_file", "source_line")
                  if (value := getattr(diag, name, None))]
        record = (text, diag.severity or "", exc.sqlstate, diag.message_primary or text,
                  diag.message_detail, extras)
        return _Failure("query-failed", text, record)


def _type_name(oid: int) -> str:
    """PostgreSQL's name for a type (`_bool` for bool[]), as Spin reports `other`."""
    info = psycopg.adapters.types.get(oid)
    if info is None:
        return str(oid)
    name = info.name.strip('"')  # psycopg quotes "char"
    return name if info.oid == oid else f"_{name}"


def _redact(address: str, password: Any) -> str:
    """`address` with its password hidden, as written or percent-encoded (URL form)."""
    if not password:
        return address
    for form in (quote(str(password), safe=""), str(password)):
        address = address.replace(form, "***")
    return address


def _text(exc: psycopg.Error, params: dict[str, Any]) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = params.get("password")
    return text.replace(password, "***") if password else text


class PostgresFactor(ConnectionFactor[Postgres]):
    """Each component's `postgres` allow-list entries, as PostgreSQL connections."""

    capability = Postgres
    limits_type = OutboundPostgresLimits
