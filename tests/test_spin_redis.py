"""Outbound Redis for Spin SDK apps (host/capabilities/redis.py), `fermyon:spin/redis@2.0.0`.

The host functions are called directly against a real redis-server
(tests/redis_server.py), with a wasmtime store standing for the instance;
the last tests serve apps/spin-python through a real `host up`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import wasmtime
import wasmtime.component as wc

from host.capabilities import Err, HostHandle, Ok, store_key
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.redis import REDIS, Redis, RedisFactor
from host.deadline import request_deadline
from host.limits import OutboundRedisLimits
from tests.conftest import HostProcess, grants_through_variable, write_spin_python_app
from tests.loopback import free_port, stop_process
from tests.redis_server import start_redis


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def _capability(url: str, limits: OutboundRedisLimits | None = None,
                entries: list[str] | None = None) -> Redis:
    allowed = [f"redis://127.0.0.1:{_port(url)}"] if entries is None else entries
    return Redis("guest", AllowList.parse(allowed), limits)


class Guest:
    """One instance's view of the interface: its store, and calls by WIT name."""

    def __init__(self, capability: Redis) -> None:
        self.capability = capability
        self.store = wasmtime.Store()
        self.functions = capability.functions(REDIS)

    def open(self, address: str) -> Ok | Err:
        result: Ok | Err = self.functions["[static]connection.open"](self.store, address)
        return result

    def connect(self, address: str) -> Any:
        result = self.open(address)
        assert isinstance(result, Ok), result
        return result.value

    def call(self, method: str, handle: Any, *args: Any) -> Ok | Err:
        result: Ok | Err = self.functions[f"[method]connection.{method}"](
            self.store, handle, *args)
        return result

    def ok(self, method: str, handle: Any, *args: Any) -> Any:
        result = self.call(method, handle, *args)
        assert isinstance(result, Ok), result
        return result.value

    def release(self) -> None:
        self.capability.release_store(store_key(self.store))


@pytest.fixture
def guest(clean_redis_url: str) -> Iterator[Guest]:
    g = Guest(_capability(clean_redis_url))
    yield g
    g.release()


@pytest.fixture
def admin(clean_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis_url)
    yield client
    client.close()


def error(result: Ok | Err) -> tuple[str, Any]:
    assert isinstance(result, Err), result
    return result.value.tag, result.value.payload


def results(result: Ok | Err) -> list[tuple[str, Any]]:
    assert isinstance(result, Ok), result
    return [(v.tag, v.payload) for v in result.value]


def binary(data: bytes) -> bytes:
    """redis-parameter::binary as the host receives it: untagged (int64 is an int)."""
    return data


# ---------------------------------------------------------------------------
# Which addresses a component may open


def test_an_allowed_address_opens(guest: Guest, clean_redis_url: str) -> None:
    port = _port(clean_redis_url)
    for address in (clean_redis_url, f"redis://127.0.0.1:{port}", f"redis://127.0.0.1:{port}/3"):
        assert isinstance(guest.connect(address), HostHandle)


@pytest.mark.parametrize("address", [
    "redis://127.0.0.1:{other}",  # another port
    "redis://localhost:{port}",  # another host name for the same server
    "rediss://127.0.0.1:{port}",  # another scheme
    "http://127.0.0.1:{port}",
    "unix:///tmp/redis.sock",
    "127.0.0.1:{port}",
    "redis://",
    "not a url",
    "redis://127.0.0.1:{port}\\@evil.example:6379",
])
def test_other_addresses_answer_invalid_address_and_log_one_line(
        guest: Guest, clean_redis_url: str, address: str,
        caplog: pytest.LogCaptureFixture) -> None:
    port = _port(clean_redis_url)
    address = address.format(port=port, other=port + 1)
    with caplog.at_level(logging.WARNING, logger="host.redis"):
        assert error(guest.open(address)) == ("invalid-address", None)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "host.redis"]
    assert line.startswith('component "guest": Redis connection to ') and "invalid-address" in line


def test_no_redis_entry_denies_everything_even_with_http_allowed(clean_redis_url: str) -> None:
    port = _port(clean_redis_url)
    g = Guest(_capability(clean_redis_url, entries=[f"http://127.0.0.1:{port}",
                                                    "https://*:*"]))
    assert error(g.open(clean_redis_url)) == ("invalid-address", None)
    g = Guest(_capability(clean_redis_url, entries=[]))
    assert error(g.open(clean_redis_url)) == ("invalid-address", None)


def test_wildcard_entries_allow_redis(clean_redis_url: str) -> None:
    port = _port(clean_redis_url)
    for entries in ([f"*://127.0.0.1:{port}"], ["redis://*:*"], ["redis://127.0.0.0/8:*"]):
        g = Guest(_capability(clean_redis_url, entries=entries))
        assert isinstance(g.connect(clean_redis_url), HostHandle)
        g.release()


def test_the_password_never_reaches_the_log(guest: Guest, clean_redis_url: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    port = _port(clean_redis_url)
    with caplog.at_level(logging.WARNING, logger="host.redis"):
        guest.open(f"redis://user:s3cret@127.0.0.1:{port + 1}")
        result = guest.open(f"redis://user:s3cret@127.0.0.1:{port}")  # allowed; auth fails
    tag, message = error(result)
    assert tag == "other" and "s3cret" not in message
    assert "s3cret" not in caplog.text and "***" in caplog.text


def test_nothing_listening_answers_other(clean_redis_url: str) -> None:
    port = free_port()
    g = Guest(_capability(clean_redis_url, entries=[f"redis://127.0.0.1:{port}"]))
    tag, message = error(g.open(f"redis://127.0.0.1:{port}"))
    assert tag == "other" and f"127.0.0.1:{port}" in message


# ---------------------------------------------------------------------------
# Every function


def test_every_function(guest: Guest, clean_redis_url: str, admin: redis.Redis) -> None:
    conn = guest.connect(clean_redis_url)
    assert guest.ok("set", conn, "k", b"\x00bytes\xff") is None
    assert guest.ok("get", conn, "k") == b"\x00bytes\xff"
    assert guest.ok("get", conn, "missing") is None
    assert guest.ok("set", conn, "empty", b"") is None
    assert guest.ok("get", conn, "empty") == b""
    assert guest.ok("incr", conn, "n") == 1
    assert guest.ok("incr", conn, "n") == 2
    assert guest.ok("sadd", conn, "s", ["a", "b", "c", "a"]) == 3
    assert sorted(guest.ok("smembers", conn, "s")) == ["a", "b", "c"]
    assert guest.ok("smembers", conn, "nothing") == []
    assert guest.ok("srem", conn, "s", ["a", "z"]) == 1
    assert guest.ok("del", conn, ["k", "n", "nope"]) == 2
    assert admin.keys("*") and sorted(admin.keys("*")) == [b"empty", b"s"]
    pubsub = admin.pubsub()
    pubsub.subscribe("events")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert guest.ok("publish", conn, "events", b"hit") is None
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"hit"
    pubsub.close()


def test_keys_with_spaces_are_one_argument(guest: Guest, clean_redis_url: str,
                                          admin: redis.Redis) -> None:
    conn = guest.connect(clean_redis_url)
    guest.ok("set", conn, "a key", b"v")
    assert admin.get("a key") == b"v"


def test_execute_maps_replies_as_spin_does(guest: Guest, clean_redis_url: str) -> None:
    conn = guest.connect(clean_redis_url)
    run = lambda command, *args: results(guest.call("execute", conn, command, list(args)))  # noqa: E731
    assert run("SET", binary(b"k"), binary(b"v")) == [("status", "OK")]
    assert run("PING") == [("status", "PONG")]
    assert run("ECHO", binary(b"OK")) == [("binary", b"OK")]  # a bulk string stays binary
    assert run("set", binary(b"n"), -5) == [("status", "OK")]
    assert run("INCRBY", binary(b"n"), 2**40) == [("int64", 2**40 - 5)]
    assert run("GET", binary(b"n")) == [("binary", str(2**40 - 5).encode())]
    assert run("GET", binary(b"missing")) == [("nil", None)]
    assert run("ECHO", wc.Variant("binary", b"tagged")) == [("binary", b"tagged")]
    assert run("MGET", binary(b"k"), binary(b"missing")) == [("binary", b"v"), ("nil", None)]
    assert run("RPUSH", binary(b"l"), binary(b"x"), binary(b"y")) == [("int64", 2)]
    assert run("LRANGE", binary(b"l"), 0, -1) == [
        ("binary", b"x"), ("binary", b"y")]
    assert run("LRANGE", binary(b"none"), 0, -1) == []
    # Nested arrays are flattened: SCAN answers [cursor, [keys...]].
    scanned = run("SCAN", 0, binary(b"COUNT"), 100)
    assert scanned[0] == ("binary", b"0")
    assert sorted(scanned[1:]) == [("binary", b"k"), ("binary", b"l"), ("binary", b"n")]


def test_execute_errors(guest: Guest, clean_redis_url: str) -> None:
    conn = guest.connect(clean_redis_url)
    tag, message = error(guest.call("execute", conn, "NOSUCHCOMMAND", []))
    assert tag == "other" and "unknown command" in message
    assert error(guest.call("execute", conn, " ", [])) == ("other", "no command given")
    for command in ("SUBSCRIBE", "monitor", "HELLO"):
        tag, message = error(guest.call("execute", conn, command, [binary(b"3")]))
        assert tag == "other" and "not supported" in message
    # The connection still answers one reply per command afterwards.
    assert results(guest.call("execute", conn, "PING", [])) == [("status", "PONG")]


def test_type_errors(guest: Guest, clean_redis_url: str, admin: redis.Redis) -> None:
    conn = guest.connect(clean_redis_url)
    admin.sadd("set", "a")
    admin.set("string", "x")
    admin.sadd("bytes", b"\xff\xfe")
    assert error(guest.call("get", conn, "set")) == ("type-error", None)
    assert error(guest.call("incr", conn, "set")) == ("type-error", None)
    assert error(guest.call("sadd", conn, "string", ["a"])) == ("type-error", None)
    assert error(guest.call("smembers", conn, "string")) == ("type-error", None)
    assert error(guest.call("smembers", conn, "bytes")) == ("type-error", None)  # not UTF-8
    assert error(guest.call("execute", conn, "LPUSH", [binary(b"set"), binary(b"x")])) == (
        "type-error", None)
    tag, message = error(guest.call("incr", conn, "string"))  # a string, just not a number
    assert tag == "other" and "not an integer" in message
    assert guest.ok("get", conn, "string") == b"x"  # the connection is still in step


# ---------------------------------------------------------------------------
# Bounds: the request's deadline, reply size, connections per instance


def test_a_paused_server_answers_other_at_the_deadline(guest: Guest, clean_redis_url: str,
                                                        admin: redis.Redis) -> None:
    conn = guest.connect(clean_redis_url)
    admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    try:
        started = time.monotonic()
        with request_deadline(0.5):
            tag, message = error(guest.call("get", conn, "k"))
        elapsed = time.monotonic() - started
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert tag == "other" and "deadline" in message
    assert 0.4 < elapsed < 1.5


def test_a_stopped_server_bounds_open_and_every_command(clean_redis_url: str,
                                                         tmp_path: Path) -> None:
    proc, port = start_redis(tmp_path)
    g = Guest(_capability(clean_redis_url, entries=[f"redis://127.0.0.1:{port}"]))
    try:
        conn = g.connect(f"redis://127.0.0.1:{port}/1")  # SELECT 1 on connect
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for call in (lambda: g.call("incr", conn, "n"),
                         lambda: g.open(f"redis://127.0.0.1:{port}/1")):
                started = time.monotonic()
                with request_deadline(0.3):
                    tag, message = error(call())
                assert tag == "other" and "deadline" in message, message
                assert time.monotonic() - started < 1.0
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        with request_deadline(0.0001):
            time.sleep(0.001)
            tag, message = error(g.call("incr", conn, "n"))  # nothing is sent once it passed
            assert tag == "other" and "deadline" in message
    finally:
        g.release()
        stop_process(proc)


def test_a_reply_over_the_limit_is_refused_before_it_is_read(clean_redis_url: str,
                                                              admin: redis.Redis) -> None:
    limits = OutboundRedisLimits(max_reply_bytes=64 * 1024)
    g = Guest(_capability(clean_redis_url, limits))
    conn = g.connect(clean_redis_url)
    admin.set("big", b"x" * (64 * 1024 + 1))
    admin.set("fits", b"x" * (60 * 1024))
    admin.sadd("many", *range(3000))  # small values, but 3000 x 32 bytes of overhead
    for method, args in (("get", ("big",)), ("smembers", ("many",)),
                         ("execute", ("MGET", [binary(b"fits"), binary(b"fits")]))):
        tag, message = error(g.call(method, conn, *args))
        assert tag == "other" and "exceeds the limit of 65536 bytes" in message
        assert g.capability.connections.get(g.store, conn).client._sock is None  # closed
    assert g.ok("get", conn, "fits") == b"x" * (60 * 1024)  # reconnects for the next command
    g.release()
    assert OutboundRedisLimits().max_reply_bytes == 2 * 1024 * 1024


def test_connections_per_instance_are_capped(clean_redis_url: str, admin: redis.Redis) -> None:
    before = len(admin.client_list())
    g = Guest(_capability(clean_redis_url, OutboundRedisLimits(max_open_connections=2)))
    other = Guest(g.capability)  # another instance of the same component
    first = g.connect(clean_redis_url)
    g.connect(clean_redis_url)
    assert error(g.open(clean_redis_url)) == ("too-many-connections", None)
    assert isinstance(other.connect(clean_redis_url), HostHandle)  # the cap is per instance
    g.capability.connections.drop(first.rep)  # the guest drops one: room again
    g.connect(clean_redis_url)

    def clients(expected: int) -> int:
        """Connections this test opened, once the server has seen closes (up to 5 s)."""
        deadline = time.monotonic() + 5
        while ((count := len(admin.client_list()) - before) != expected
               and time.monotonic() < deadline):
            time.sleep(0.02)
        return count

    assert clients(3) == 3
    g.release()
    other.release()
    assert clients(0) == 0  # a discarded instance leaves no connection open
    assert g.capability.connections.live(g.store) == g.capability.connections.live(other.store) == 0
    assert OutboundRedisLimits().max_open_connections == 16


def test_a_failed_open_holds_no_slot(clean_redis_url: str) -> None:
    port = free_port()
    cap = _capability(clean_redis_url, OutboundRedisLimits(max_open_connections=1),
                      entries=[f"redis://127.0.0.1:{port}",
                               f"redis://127.0.0.1:{_port(clean_redis_url)}"])
    g = Guest(cap)
    for _ in range(3):
        assert error(g.open(f"redis://127.0.0.1:{port}"))[0] == "other"
    g.connect(clean_redis_url)


# ---------------------------------------------------------------------------
# The factor: the allow-list outbound HTTP resolved, variables included


def test_the_factor_reads_the_resolved_allow_list(tmp_path: Path, clean_redis_url: str) -> None:
    port = _port(clean_redis_url)
    with grants_through_variable(tmp_path, "redis", f"127.0.0.1:{port}") as (grants, component):
        capability = grants.app.factor(RedisFactor).for_component(component)
        assert [e.entry for e in capability.allowed] == [f"redis://127.0.0.1:{port}"]
        assert isinstance(Guest(capability).connect(clean_redis_url), HostHandle)


# ---------------------------------------------------------------------------
# End to end: apps/spin-python through `host up`


# The app reads the address it opens from variable redis_address.
_REDIS_ADDRESS_VARIABLE = """[variables]
redis_address = { required = true }
[component.spin-python.variables]
redis_address = "{{ redis_address }}"
"""



@pytest.mark.toolchain
def test_spin_python_app_uses_redis(cache_dir: Path, tmp_path: Path,
                                    clean_redis_url: str, admin: redis.Redis) -> None:
    port = _port(clean_redis_url)
    app = write_spin_python_app(tmp_path / "app", "spin-python-redis",
                                f'"redis://127.0.0.1:{port}"', _REDIS_ADDRESS_VARIABLE)
    pubsub = admin.pubsub()
    pubsub.subscribe("spin-python:events")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    env = {**os.environ, "SPIN_VARIABLE_REDIS_ADDRESS": f"redis://127.0.0.1:{port}"}
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"],
                     env=env) as host, host.client() as client:
        for hits in (1, 2):
            response = client.get("/redis")
            assert response.status_code == 200, response.text
            assert json.loads(response.text) == {
                "hits": hits, "value": "hello", "missing": None, "added": 2,
                "members": ["a", "b"], "removed": 1, "deleted": 2,
                "execute": ["RedisResult_Binary(value=b'ping')"]}
            message = pubsub.get_message(timeout=5)
            assert message is not None and message["data"] == b"hit"
    pubsub.close()
    assert admin.get("spin-python:hits") == b"2"


@pytest.mark.toolchain
def test_spin_python_app_denied_address_gets_the_error(
        cache_dir: Path, tmp_path: Path, clean_redis_url: str) -> None:
    port = _port(clean_redis_url)
    app = write_spin_python_app(tmp_path / "app", "spin-python-redis",
                                f'"redis://127.0.0.1:{port + 1}"', _REDIS_ADDRESS_VARIABLE)
    env = {**os.environ, "SPIN_VARIABLE_REDIS_ADDRESS": f"redis://127.0.0.1:{port}"}
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"],
                     env=env) as host, host.client() as client:
        response = client.get("/redis")
        assert response.status_code == 500
        assert response.text.strip() == "error: Error_InvalidAddress()"
        assert host.wait_for_output(f"Redis connection to redis://127.0.0.1:{port} refused")

