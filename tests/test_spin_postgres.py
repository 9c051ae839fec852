"""Outbound PostgreSQL for Spin SDK apps (host/capabilities/postgres.py).

`fermyon:spin/postgres@2.0.0`, `spin:postgres/postgres@3.0.0` and `@4.0.0`: the
host functions are called directly against a real PostgreSQL server
(tests/postgres_server.py), with a wasmtime store standing for the instance;
the last tests serve apps/spin-python through a real `host up`.
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

import psycopg
import pytest
import wasmtime
import wasmtime.component as wc

from host.capabilities import Err, HostHandle, Ok, store_key
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.postgres import V2, V3, V4, Postgres, PostgresFactor
from host.deadline import request_deadline
from host.limits import OutboundPostgresLimits
from tests.conftest import HostProcess, grants_through_variable, write_spin_python_app

V = wc.Variant


def _address(port: int, db: str = "postgres") -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{db}"


def _capability(port: int, limits: OutboundPostgresLimits | None = None,
                entries: list[str] | None = None) -> Postgres:
    allowed = [f"postgres://127.0.0.1:{port}"] if entries is None else entries
    return Postgres("guest", AllowList.parse(allowed), limits)


class Guest:
    """One instance's view of one interface: its store, and calls by WIT name."""

    def __init__(self, capability: Postgres, interface: str = V3) -> None:
        self.capability = capability
        self.store = wasmtime.Store()
        self.functions = capability.functions(interface)

    def open(self, address: str) -> Ok | Err:
        result: Ok | Err = self.functions["[static]connection.open"](self.store, address)
        return result

    def connect(self, address: str) -> Any:
        result = self.open(address)
        assert isinstance(result, Ok), result
        return result.value

    def call(self, method: str, handle: Any, statement: str, params: list[Any] | None = None
             ) -> Ok | Err:
        result: Ok | Err = self.functions[f"[method]connection.{method}"](
            self.store, handle, statement, params or [])
        return result

    def ok(self, method: str, handle: Any, statement: str, params: list[Any] | None = None
           ) -> Any:
        result = self.call(method, handle, statement, params)
        assert isinstance(result, Ok), result
        return result.value

    def release(self) -> None:
        self.capability.release_store(store_key(self.store))


@pytest.fixture
def admin(postgres_port: int) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(host="127.0.0.1", port=postgres_port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        yield conn


def error(result: Ok | Err) -> tuple[str, Any]:
    assert isinstance(result, Err), result
    return result.value.tag, result.value.payload


def backends(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'spinhost'").fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------------------
# Which addresses a component may open


@pytest.mark.parametrize("interface", [V2, V3, V4])
def test_an_allowed_address_opens(postgres_port: int, interface: str) -> None:
    guest = Guest(_capability(postgres_port), interface)
    handle = guest.connect(_address(postgres_port))
    assert isinstance(handle, HostHandle)
    assert guest.ok("execute", handle, "SELECT 1") == 1
    # the key=value form too
    guest.connect(f"host=127.0.0.1 port={postgres_port} user=postgres dbname=postgres")
    guest.release()


@pytest.mark.parametrize(("address", "reason"), [
    ("postgres://postgres@127.0.0.1:{other}/postgres", "allowed_outbound_hosts does not allow"),
    ("postgres://postgres@localhost:{port}/postgres", "allowed_outbound_hosts does not allow"),
    ("host=/tmp port={port} user=postgres", "exactly one TCP host"),
    ("host=127.0.0.1,127.0.0.1 port={port}", "exactly one TCP host"),
    ("postgres:///postgres", "exactly one TCP host"),
    ("host=127.0.0.1 hostaddr=10.0.0.1 port={port}", "exactly one TCP host"),
    ("not a connection string", "not a connection string"),
])
def test_other_addresses_answer_connection_failed_naming_them(
        postgres_port: int, caplog: pytest.LogCaptureFixture, address: str, reason: str) -> None:
    address = address.format(port=postgres_port, other=postgres_port + 1)
    guest = Guest(_capability(postgres_port))
    with caplog.at_level(logging.WARNING, logger="host.postgres"):
        tag, message = error(guest.open(address))
    assert tag == "connection-failed"
    assert message.startswith(f"address {address} is not permitted") and reason in message
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and 'component "guest"' in lines[0] and address in lines[0]


def test_no_postgres_entry_denies_everything_even_with_http_allowed(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port, entries=[f"http://127.0.0.1:{postgres_port}",
                                                      f"redis://127.0.0.1:{postgres_port}"]))
    assert error(guest.open(_address(postgres_port)))[0] == "connection-failed"


def test_wildcard_entries_allow_postgres(postgres_port: int) -> None:
    for entry in ("*://*:*", "postgres://*:*", f"postgres://127.0.0.1:{postgres_port}"):
        guest = Guest(_capability(postgres_port, entries=[entry]))
        guest.connect(_address(postgres_port))
        guest.release()


def test_the_password_never_reaches_the_log_or_the_guest(
        postgres_port: int, caplog: pytest.LogCaptureFixture) -> None:
    guest = Guest(_capability(postgres_port))
    with caplog.at_level(logging.WARNING, logger="host.postgres"):
        denied = error(guest.open(f"postgres://u:hunter2@127.0.0.1:{postgres_port + 1}/x"))
    assert "hunter2" not in denied[1] and "u:***@" in denied[1]
    encoded = error(guest.open(f"postgres://u:hun%40ter@127.0.0.1:{postgres_port + 1}/x"))
    assert "hun" not in encoded[1] and "u:***@" in encoded[1]
    assert "hunter2" not in caplog.text
    # a wrong password for a user the server does not know: the server's message only
    refused = error(guest.open(f"postgres://nobody:hunter2@127.0.0.1:{postgres_port}/x"))
    assert refused[0] == "connection-failed" and "hunter2" not in refused[1]


def test_nothing_listening_answers_connection_failed(postgres_port: int) -> None:
    port = postgres_port + 1
    guest = Guest(_capability(port))
    tag, message = error(guest.open(_address(port)))
    assert tag == "connection-failed" and f"127.0.0.1:{port}" in message


def test_a_server_that_never_answers_fails_open_at_the_deadline() -> None:
    with socket.socket() as listener:  # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        guest = Guest(_capability(port))
        started = time.monotonic()
        with request_deadline(0.5):
            tag, message = error(guest.open(_address(port)))
        assert tag == "connection-failed" and "deadline" in message
        assert time.monotonic() - started < 1.5


# ---------------------------------------------------------------------------
# Statements and values


def test_execute_counts_rows_and_query_reads_them(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    assert guest.ok("execute", db, "CREATE TEMP TABLE t (a int4, b text)") == 0
    assert guest.ok("execute", db, "INSERT INTO t VALUES ($1, $2), ($3, $4)",
                    [V("int32", 1), V("str", "one"), V("int32", 2), V("db-null")]) == 2
    assert guest.ok("execute", db, "UPDATE t SET b = 'x'") == 2
    columns, rows = guest.ok("query", db, "SELECT a, b FROM t ORDER BY a")
    assert columns == [("a", "int32"), ("b", "str")]
    assert rows == [[V("int32", 1), V("str", "x")], [V("int32", 2), V("str", "x")]]
    # no rows: the columns all the same
    assert guest.ok("query", db, "SELECT a FROM t WHERE false") == ([("a", "int32")], [])
    guest.release()


# (parameter, SQL type, value read back) for every parameter-value case @3 has
V3_VALUES = [
    (V("boolean", True), "bool", V("boolean", True)),
    (V("int8", -7), "int2", V("int16", -7)),
    (V("int16", -300), "int2", V("int16", -300)),
    (V("int32", 2**31 - 1), "int4", V("int32", 2**31 - 1)),
    (V("int64", -(2**63)), "int8", V("int64", -(2**63))),
    (V("floating32", 1.5), "float4", V("floating32", 1.5)),
    (V("floating64", 0.1), "float8", V("floating64", 0.1)),
    (V("str", "héllo\u2603"), "text", V("str", "héllo\u2603")),
    (V("binary", b"\x00\xff\x01"), "bytea", V("binary", b"\x00\xff\x01")),
    (V("date", (2024, 2, 29)), "date", V("date", (2024, 2, 29))),
    (V("time", (23, 59, 58, 123456000)), "time", V("time", (23, 59, 58, 123456000))),
    (V("datetime", (1999, 12, 31, 23, 59, 59, 1000)), "timestamp",
     V("datetime", (1999, 12, 31, 23, 59, 59, 1000))),
    (V("timestamp", 86400 + 3661), "timestamptz", V("datetime", (1970, 1, 2, 1, 1, 1, 0))),
]
V4_VALUES = [
    (V("uuid", "0b5f2c3e-9a4e-4b8a-9d8c-7f1e2d3c4b5a"), "uuid",
     V("uuid", "0b5f2c3e-9a4e-4b8a-9d8c-7f1e2d3c4b5a")),
    (V("jsonb", b'{"a": [1, 2]}'), "jsonb", V("jsonb", b'{"a": [1, 2]}')),
    (V("decimal", "12345678901234567890.125"), "numeric",
     V("decimal", "12345678901234567890.125")),
    (V("range-int32", ((1, "inclusive"), (5, "exclusive"))), "int4range",
     V("range-int32", ((1, "inclusive"), (5, "exclusive")))),
    (V("range-int64", (None, (2**40, "exclusive"))), "int8range",
     V("range-int64", (None, (2**40, "exclusive")))),
    (V("range-decimal", (("1.5", "exclusive"), ("2.5", "inclusive"))), "numrange",
     V("range-decimal", (("1.5", "exclusive"), ("2.5", "inclusive")))),
    (V("array-int32", [1, None, 3]), "int4[]", V("array-int32", [1, None, 3])),
    (V("array-int64", [2**40, None]), "int8[]", V("array-int64", [2**40, None])),
    (V("array-decimal", ["1.25", None]), "numeric[]", V("array-decimal", ["1.25", None])),
    (V("array-str", ["a", None, "c"]), "text[]", V("array-str", ["a", None, "c"])),
    (V("interval", (3_000_000, 2, 14)), "interval", V("interval", (3_000_000, 2, 14))),
]
# what @4's column data types are: the variant's case
V4_TYPES = {"bool": "boolean", "int2": "int16", "int4": "int32", "int8": "int64",
            "float4": "floating32", "float8": "floating64", "text": "str", "bytea": "binary",
            "date": "date", "time": "time", "timestamp": "datetime", "timestamptz": "datetime",
            "uuid": "uuid", "jsonb": "jsonb", "numeric": "decimal", "int4range": "range-int32",
            "int8range": "range-int64", "numrange": "range-decimal", "int4[]": "array-int32",
            "int8[]": "array-int64", "numeric[]": "array-decimal", "text[]": "array-str",
            "interval": "interval"}


@pytest.mark.parametrize(("param", "sql_type", "read"), V3_VALUES + V4_VALUES,
                         ids=lambda v: v.tag if isinstance(v, wc.Variant) else str(v))
def test_every_parameter_type_round_trips_on_v4(postgres_port: int, param: wc.Variant,
                                                sql_type: str, read: wc.Variant) -> None:
    guest = Guest(_capability(postgres_port), V4)
    db = guest.connect(_address(postgres_port))
    guest.ok("execute", db, f"CREATE TEMP TABLE t (v {sql_type})")
    assert guest.ok("execute", db, "INSERT INTO t VALUES ($1), ($2)", [param, V("db-null")]) == 2
    columns, rows = guest.ok("query", db, "SELECT v FROM t")
    assert columns == [("v", V(V4_TYPES[sql_type]))]
    assert rows == [[read], [V("db-null")]]
    # and as a parameter compared in SQL
    assert guest.ok("query", db, "SELECT count(*)::int4 FROM t WHERE v = $1",
                    [param])[1] == [[V("int32", 1)]]
    guest.release()


@pytest.mark.parametrize(("param", "sql_type", "read"), V3_VALUES,
                         ids=lambda v: v.tag if isinstance(v, wc.Variant) else str(v))
def test_every_parameter_type_round_trips_on_v3(postgres_port: int, param: wc.Variant,
                                                sql_type: str, read: wc.Variant) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    guest.ok("execute", db, f"CREATE TEMP TABLE t (v {sql_type})")
    guest.ok("execute", db, "INSERT INTO t VALUES ($1), (NULL)", [param])
    columns, rows = guest.ok("query", db, "SELECT v FROM t")
    assert columns == [("v", V4_TYPES[sql_type])]
    assert rows == [[read], [V("db-null")]]
    guest.release()


def test_v2_values_and_what_it_cannot_say(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V2)
    db = guest.connect(_address(postgres_port))
    params = [V("boolean", False), V("int8", 1), V("int16", 2), V("int32", 3), V("int64", 4),
              V("floating32", 0.5), V("floating64", 0.25), V("str", "s"), V("binary", b"\x01"),
              V("db-null")]
    columns, rows = guest.ok("query", db, "SELECT " + ", ".join(
        f"${i + 1}" + ("::text" if p.tag == "db-null" else "") for i, p in enumerate(params)),
        params)
    assert [c[1] for c in columns] == ["boolean", "int16", "int16", "int32", "int64",
                                       "floating32", "floating64", "str", "binary", "str"]
    assert rows == [[V("boolean", False), V("int16", 1), V("int16", 2), V("int32", 3),
                     V("int64", 4), V("floating32", 0.5), V("floating64", 0.25),
                     V("str", "s"), V("binary", b"\x01"), V("db-null")]]
    # types @2 does not have: `other` columns, `unsupported` values (as Spin maps them)
    columns, rows = guest.ok("query", db, "SELECT current_date, 1.5::numeric, 'x'::name")
    assert [c[1] for c in columns] == ["other", "other", "other"]
    assert rows == [[V("unsupported")] * 3]
    # unsigned integers: PostgreSQL has none (Spin's answer)
    for tag in ("uint8", "uint16", "uint32", "uint64"):
        assert error(guest.call("query", db, "SELECT $1", [V(tag, 1)])) == (
            "value-conversion-failed", "Postgres does not support unsigned integers")
    guest.release()


def test_v3_reads_v4_only_types_as_unsupported(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    columns, rows = guest.ok("query", db, "SELECT gen_random_uuid(), '{}'::jsonb, "
                             "'1 day'::interval, ARRAY[1]")
    assert [c[1] for c in columns] == ["other"] * 4
    assert rows == [[V("unsupported")] * 4]
    guest.release()


def test_v4_other_types_carry_their_name_and_raw_value(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V4)
    db = guest.connect(_address(postgres_port))
    columns, rows = guest.ok("query", db, "SELECT 'x'::name, '1.2.3.4'::inet, "
                             "'{\"a\": 1}'::json, 7::oid, ARRAY[true]")
    assert columns == [("name", V("other", "name")), ("inet", V("other", "inet")),
                       ("json", V("other", "json")), ("oid", V("other", "oid")),
                       ("array", V("other", "_bool"))]
    # their binary form, as the server sends it (Spin's `unsupported` payload)
    assert rows == [[V("unsupported", b"x"), V("unsupported", bytes([2, 32, 0, 4, 1, 2, 3, 4])),
                     V("unsupported", b'{"a": 1}'), V("unsupported", (7).to_bytes(4, "big")),
                     rows[0][4]]]
    assert rows[0][4].tag == "unsupported"
    # a multidimensional array does not fit array-int32
    assert error(guest.call("query", db, "SELECT ARRAY[[1, 2], [3, 4]]"))[0] == (
        "value-conversion-failed")
    guest.release()


@pytest.mark.parametrize("param", [
    V("date", (2023, 2, 30)), V("time", (25, 0, 0, 0)),
    V("datetime", (2023, 1, 1, 0, 60, 0, 0)), V("uuid", "not-a-uuid"), V("jsonb", b"{"),
    V("decimal", "1.2.3"), V("decimal", "NaN"), V("range-decimal", (("x", "inclusive"), None)),
    V("timestamp", 2**62), V("timestamp", 2**40), V("time", (1, 2, 3, 1_000_000_000)),
], ids=lambda v: v.tag)
def test_invalid_parameters_answer_bad_parameter(postgres_port: int, param: wc.Variant) -> None:
    guest = Guest(_capability(postgres_port), V4)
    db = guest.connect(_address(postgres_port))
    assert error(guest.call("query", db, "SELECT $1", [param]))[0] == "bad-parameter"
    assert guest.ok("execute", db, "SELECT 1") == 1  # the connection is fine
    guest.release()


def test_unreadable_values_answer_value_conversion_failed(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    tag, message = error(guest.call("query", db, "SELECT 'infinity'::date"))
    assert tag == "value-conversion-failed", message
    assert guest.ok("execute", db, "SELECT 1") == 1
    guest.release()


def test_sql_errors_answer_query_failed(postgres_port: int) -> None:
    v3 = Guest(_capability(postgres_port), V3)
    db = v3.connect(_address(postgres_port))
    tag, message = error(v3.call("query", db, "SELEC 1"))
    assert tag == "query-failed" and 'syntax error at or near "SELEC"' in message
    assert error(v3.call("execute", db, "INSERT INTO missing VALUES (1)"))[0] == "query-failed"
    assert error(v3.call("query", db, "SELECT $1::int4", [V("str", "x")]))[0] == "query-failed"
    v3.release()
    v4 = Guest(_capability(postgres_port), V4)
    db = v4.connect(_address(postgres_port))
    tag, detail = error(v4.call("query", db, "SELECT 1/0"))
    assert tag == "query-failed" and detail.tag == "db-error"
    as_text, severity, code, message, _detail, _extras = detail.payload
    assert (severity, code, message) == ("ERROR", "22012", "division by zero")
    assert "division by zero" in as_text
    v4.release()


def test_each_statement_runs_on_its_own(postgres_port: int) -> None:
    """Autocommit: a failed statement does not poison the next; BEGIN/COMMIT work."""
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    guest.ok("execute", db, "CREATE TEMP TABLE t (a int4 PRIMARY KEY)")
    guest.ok("execute", db, "INSERT INTO t VALUES (1)")
    assert error(guest.call("execute", db, "INSERT INTO t VALUES (1)"))[0] == "query-failed"
    guest.ok("execute", db, "BEGIN")
    guest.ok("execute", db, "INSERT INTO t VALUES (2)")
    guest.ok("execute", db, "ROLLBACK")
    assert guest.ok("query", db, "SELECT count(*)::int4 FROM t")[1] == [[V("int32", 1)]]
    guest.release()


@pytest.mark.parametrize("statement", [
    "COPY (SELECT g FROM generate_series(1, 100000) g) TO STDOUT",
    "COPY t FROM STDIN",
    "SELECT 1; SELECT 2",
])
def test_what_the_protocol_cannot_carry_fails_and_leaves_the_connection_usable(
        postgres_port: int, statement: str) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    guest.ok("execute", db, "CREATE TEMP TABLE t (a int4)")
    assert error(guest.call("execute", db, statement))[0] == "query-failed"
    assert guest.ok("query", db, "SELECT 1")[1] == [[V("int32", 1)]]
    guest.release()


def test_notifications_and_notices_are_not_kept(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    guest.ok("execute", db, "LISTEN ch")
    guest.ok("execute", db, "DO $$ BEGIN FOR i IN 1..1000 LOOP PERFORM pg_notify('ch', "
                            "i::text); RAISE NOTICE 'n %', i; END LOOP; END $$")
    guest.ok("execute", db, "SELECT 1")
    conn = guest.capability.connections.get(guest.store, db).conn
    assert not conn._notifies_backlog
    guest.release()


# ---------------------------------------------------------------------------
# Bounds: the deadline, the result cap, connections per instance


def test_a_long_statement_answers_query_failed_at_the_deadline(
        postgres_port: int, admin: psycopg.Connection[Any]) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    started = time.monotonic()
    with request_deadline(0.5):
        tag, message = error(guest.call("query", db, "SELECT pg_sleep(10)"))
    elapsed = time.monotonic() - started
    assert tag == "query-failed" and "deadline" in message
    assert 0.45 < elapsed < 1.5
    assert guest.ok("execute", db, "SELECT 1") == 1  # cancelled, not lost
    # the server is not still sleeping for it
    row = admin.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'").fetchone()
    assert row == (0,)
    guest.release()


def test_each_statement_ends_at_its_own_deadline(postgres_port: int) -> None:
    capability = _capability(postgres_port)
    elapsed: dict[float, float] = {}

    def sleep(seconds: float) -> None:
        guest = Guest(capability)
        db = guest.connect(_address(postgres_port))
        started = time.monotonic()
        with request_deadline(seconds):
            assert error(guest.call("execute", db, "SELECT pg_sleep(10)"))[0] == "query-failed"
        elapsed[seconds] = time.monotonic() - started
        guest.release()

    threads = [threading.Thread(target=sleep, args=(s,)) for s in (0.9, 0.3, 0.6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seconds, took in elapsed.items():
        assert seconds - 0.05 < took < seconds + 0.4, elapsed


def test_a_deadline_already_past_runs_nothing(postgres_port: int) -> None:
    guest = Guest(_capability(postgres_port), V3)
    db = guest.connect(_address(postgres_port))
    with request_deadline(0.0):
        assert error(guest.call("execute", db, "SELECT 1"))[0] == "query-failed"
        assert error(guest.open(_address(postgres_port)))[0] == "connection-failed"
    guest.release()


def test_a_frozen_backend_is_cut_off_after_the_grace(postgres_port: int) -> None:
    """The cancel request gets no answer: the socket is shut, the call still returns."""
    limits = OutboundPostgresLimits(cancel_grace_seconds=0.3)
    guest = Guest(_capability(postgres_port, limits), V3)
    db = guest.connect(_address(postgres_port))
    pid = guest.ok("query", db, "SELECT pg_backend_pid()")[1][0][0].payload
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with request_deadline(0.3):
            tag, message = error(guest.call("query", db, "SELECT 1"))
        assert tag == "query-failed" and "deadline" in message
        assert time.monotonic() - started < 0.3 + 2 * 0.3 + 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
    guest.release()


def test_a_result_over_the_limit_answers_query_failed(postgres_port: int) -> None:
    limits = OutboundPostgresLimits(max_result_bytes=100_000)
    guest = Guest(_capability(postgres_port, limits), V4)
    db = guest.connect(_address(postgres_port))
    started = time.monotonic()
    tag, detail = error(guest.call(
        "query", db, "SELECT repeat('x', 1000) FROM generate_series(1, 10000000)"))
    assert tag == "query-failed" and "exceeds limit of 100000 bytes" in detail.payload
    assert time.monotonic() - started < 5  # reading stopped; the rest was not fetched
    # under the limit: fine; execute counts rows and keeps none
    assert len(guest.ok("query", db, "SELECT repeat('x', 100) FROM generate_series(1, 100)")[1]
               ) == 100
    assert guest.ok("execute", db, "SELECT repeat('x', 1000) FROM generate_series(1, 5000)"
                    ) == 5000
    guest.release()


def test_connections_per_instance_are_capped_and_closed_with_it(
        postgres_port: int, admin: psycopg.Connection[Any]) -> None:
    limits = OutboundPostgresLimits(max_open_connections=2)
    capability = _capability(postgres_port, limits)
    guest, other = Guest(capability), Guest(capability)
    before = backends(admin)
    first = guest.connect(_address(postgres_port))
    guest.connect(_address(postgres_port))
    assert error(guest.open(_address(postgres_port))) == (
        "connection-failed", "too many connections")
    other.connect(_address(postgres_port))  # another instance has its own
    assert backends(admin) == before + 3
    capability.connections.drop(first.rep)  # the guest drops one: a slot frees
    guest.connect(_address(postgres_port))
    guest.release()
    other.release()
    deadline = time.monotonic() + 5
    while backends(admin) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends(admin) == before


def test_a_failed_open_holds_no_slot(postgres_port: int) -> None:
    limits = OutboundPostgresLimits(max_open_connections=1)
    guest = Guest(_capability(postgres_port, limits))
    for _ in range(3):
        assert error(guest.open(f"postgres://nobody@127.0.0.1:{postgres_port}/x"))[0] == (
            "connection-failed")
    guest.connect(_address(postgres_port))
    guest.release()


def test_instances_run_statements_concurrently(postgres_port: int) -> None:
    capability = _capability(postgres_port)
    results: list[float] = []

    def sleep() -> None:
        guest = Guest(capability)
        db = guest.connect(_address(postgres_port))
        started = time.monotonic()
        guest.ok("execute", db, "SELECT pg_sleep(0.5)")
        results.append(time.monotonic() - started)
        guest.release()

    started = time.monotonic()
    threads = [threading.Thread(target=sleep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and time.monotonic() - started < 1.5


# ---------------------------------------------------------------------------
# The factor: the allow-list outbound HTTP resolved, variables included


def test_the_factor_reads_the_resolved_allow_list(tmp_path: Path, postgres_port: int) -> None:
    with grants_through_variable(tmp_path, "postgres", f"127.0.0.1:{postgres_port}") as (
            grants, component):
        capability = grants.app.factor(PostgresFactor).for_component(component)
        assert [e.entry for e in capability.allowed] == [f"postgres://127.0.0.1:{postgres_port}"]
        Guest(capability).connect(_address(postgres_port))


# ---------------------------------------------------------------------------
# End to end: apps/spin-python through `host up`


@pytest.mark.toolchain
def test_spin_python_app_uses_postgres(cache_dir: Path, tmp_path: Path,
                                       postgres_port: int,
                                       admin: psycopg.Connection[Any]) -> None:
    for version in ("2", "3", "4"):
        admin.execute(f"DROP TABLE IF EXISTS spin_python_notes_v{version}")
    app = write_spin_python_app(tmp_path / "app", "spin-python-postgres",
                                f'"postgres://127.0.0.1:{postgres_port}"')
    address = _address(postgres_port)
    row = [["Str", "hello"], ["Int32", 42], ["Int64", 2**40], ["Floating64", 0.5],
           ["Boolean", True], ["Binary", "00ff"], ["DbNull", None]]
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"]
                     ) as host, host.client() as client:
        for version in ("2", "3", "4"):
            for n in (1, 2):
                response = client.get("/pg", params={"address": address, "version": version})
                assert response.status_code == 200, response.text
                doc = json.loads(response.text)
                assert doc["inserted"] == 1
                assert [c[0] for c in doc["columns"]] == [
                    "title", "score", "big", "ratio", "ok", "data", "note"]
                assert doc["rows"] == [row] * n
    for version in ("2", "3", "4"):
        counted = admin.execute(f"SELECT count(*) FROM spin_python_notes_v{version}").fetchone()
        assert counted == (2,)


@pytest.mark.toolchain
def test_spin_python_app_denied_address_gets_connection_failed(
        cache_dir: Path, tmp_path: Path, postgres_port: int) -> None:
    app = write_spin_python_app(tmp_path / "app", "spin-python-postgres",
                                f'"postgres://127.0.0.1:{postgres_port + 1}"')
    address = _address(postgres_port)
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"]
                     ) as host, host.client() as client:
        response = client.get("/pg", params={"address": address})
        assert response.status_code == 500
        assert response.text.startswith(
            f"error: Error_ConnectionFailed(value='address {address} is not permitted")
        assert host.wait_for_output(f"PostgreSQL connection to {address} refused")
