"""A hostile guest, through a real `host up`: it must not escape its grants,
crash the host or exhaust its memory.

The guest is apps/capability-probe (componentize-py, world `platform`), which
runs whatever SQL, URL or value the test sends it. Each attack class of issue
12 is one test: the attempt fails with the interface's own error value (or the
request ends with the status the host defines), no file appears, no other
store changes, the host stays up and within a memory bound, and the next
request succeeds. WAGI programs (plain WASI commands) are stopped at the
response limit: tests/test_wagi_limits.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.loopback import Upstream, upstream_server
from tests.procmem import peak_growth, reset_peak

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def probe_wasm() -> Path:
    return built_app("capability-probe") / "capability-probe.wasm"


def manifest(grants: str, name: str = "hostile") -> str:
    return f"""spin_manifest_version = 2
[application]
name = "{name}"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "probe.wasm"
{grants}
"""


def start(app: Path, cache_dir: Path, *args: str) -> HostProcess:
    return HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1",
                        *args]).start()


def still_serving(client: httpx.Client) -> None:
    """The attack left the host up and the next request succeeds."""
    response = client.get("/kv/open?label=default")
    assert response.status_code == 200, response.text
    assert client.get("/.well-known/spin/health").status_code == 200


# ---------------------------------------------------------------------------
# SQLite: the guest runs any statement it likes on its own database only


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory, probe_wasm: Path,
               cache_dir: Path) -> Iterator[tuple[HostProcess, Path]]:
    """A probe granted its own SQLite database and key-value store, next to
    another app's database that it must never reach."""
    root = tmp_path_factory.mktemp("hostile-sqlite")
    other = root / "other-app" / ".spin"
    other.mkdir(parents=True)
    with sqlite3.connect(other / "sqlite_db.db") as victim:
        victim.execute("CREATE TABLE secrets(v)")
        victim.execute("INSERT INTO secrets VALUES ('other app data')")
    app = write_app(root / "app", manifest('sqlite_databases = ["default"]\n'
                                           'key_value_stores = ["default"]'),
                    {"probe.wasm": probe_wasm})
    host = start(app, cache_dir, "--request-timeout", "2")
    try:
        yield host, root
    finally:
        host.stop()


def sql(client: httpx.Client, statement: str, params: list[object] | None = None
        ) -> httpx.Response:
    return client.post("/sqlite", content=json.dumps({"sql": statement,
                                                      "params": params or []}))


def sql_error(client: httpx.Client, statement: str) -> str:
    response = sql(client, statement)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "error" in body, f"{statement!r} was allowed: {body}"
    return str(body["error"])


def test_sqlite_cannot_create_or_copy_files_outside_its_database(
        sqlite_app: tuple[HostProcess, Path]) -> None:
    host, root = sqlite_app
    target = root / "escaped.db"
    with host.client() as c:
        for statement in (f"ATTACH DATABASE '{target}' AS x",
                          f"ATTACH DATABASE 'file:{target}?mode=rwc' AS x",
                          f"VACUUM INTO '{target}'",
                          "PRAGMA temp_store_directory = '/tmp'",
                          "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libz.so.1')"):
            error = sql_error(c, statement)
            assert str(root) not in error  # never a host path
        assert not target.exists()
        assert not list(root.glob("escaped*"))
        still_serving(c)


def test_sqlite_cannot_reach_other_databases_or_the_key_value_file(
        sqlite_app: tuple[HostProcess, Path]) -> None:
    host, root = sqlite_app
    victim = root / "other-app" / ".spin" / "sqlite_db.db"
    kv_file = root / "app" / ".spin" / "sqlite_key_value.db"
    with host.client() as c:
        assert c.post("/kv/set?key=k", content=b"mine").status_code == 200
        assert kv_file.exists()
        for path in (victim, kv_file):
            sql_error(c, f"ATTACH DATABASE '{path}' AS v")
        listing = sql(c, "PRAGMA database_list")
        assert str(root) not in listing.text  # the guest is not told where files are
        assert c.get("/kv/get?key=k").content == b"mine"
        still_serving(c)
    with sqlite3.connect(victim) as check:
        assert check.execute("SELECT v FROM secrets").fetchall() == [("other app data",)]


def test_sqlite_fts3_tokenizer_is_not_a_memory_primitive(
        sqlite_app: tuple[HostProcess, Path]) -> None:
    host, _ = sqlite_app
    with host.client() as c:
        sql_error(c, "SELECT fts3_tokenizer('simple')")  # would leak a host pointer
        sql_error(c, "SELECT fts3_tokenizer('e', X'4141414141414141')")
        # Creating a table with the fake tokenizer would jump to 0x4141...: the
        # host must still be here afterwards, whatever this statement answers.
        sql(c, "CREATE VIRTUAL TABLE temp.t USING fts3(tokenize=e)")
        still_serving(c)


def test_sqlite_statement_stops_at_the_request_deadline(
        sqlite_app: tuple[HostProcess, Path]) -> None:
    host, _ = sqlite_app
    endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
               "WHERE i < 100000000000) SELECT count(*) FROM n")
    with host.client() as c:
        # Minutes of work: only the 2 s deadline (answered 504) can end it.
        assert sql(c, endless).status_code == 504
        still_serving(c)


def test_sqlite_waits_for_a_lock_only_until_the_deadline(
        sqlite_app: tuple[HostProcess, Path]) -> None:
    host, root = sqlite_app
    database = root / "app" / ".spin" / "sqlite_db.db"
    with host.client() as c:
        assert sql(c, "CREATE TABLE IF NOT EXISTS t(v)").status_code == 200
        blocker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
        answered = threading.Event()
        gave_up = threading.Event()

        def hold() -> None:
            if not answered.wait(25):
                gave_up.set()
            blocker.execute("ROLLBACK")

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            response = sql(c, "INSERT INTO t VALUES (1)")
        finally:
            answered.set()
            holder.join()
            blocker.close()
        assert not gave_up.is_set(), "the guest waited for the lock past its deadline"
        # Either the lock wait ended just inside the deadline (the guest got
        # the interface's error) or at it (504).
        assert response.status_code == 504 or "locked" in response.json()["error"]
        assert sql(c, "SELECT count(*) FROM t").json()["rows"] == [[0]]
        still_serving(c)


def test_sqlite_large_results_are_refused_not_built(probe_wasm: Path, cache_dir: Path,
                                                    tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", manifest('sqlite_databases = ["default"]\n'
                                               'key_value_stores = ["default"]'),
                    {"probe.wasm": probe_wasm})
    with start(app, cache_dir) as host, host.client() as c:
        still_serving(c)
        baseline = reset_peak(host.pid)
        sql_error(c, "SELECT zeroblob(4194304)")  # was +400 MiB
        sql_error(c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                     "WHERE i < 1000) SELECT zeroblob(500000) FROM n")
        assert peak_growth(host.pid, baseline) < 50 * MiB
        still_serving(c)


# ---------------------------------------------------------------------------
# Outbound HTTP: the URL that is checked is the URL that is connected to


@pytest.fixture
def two_upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with upstream_server() as allowed, upstream_server() as forbidden:
        yield allowed, forbidden


def test_outbound_cannot_reach_a_host_it_was_not_granted(
        probe_wasm: Path, cache_dir: Path, tmp_path: Path,
        two_upstreams: tuple[Upstream, Upstream]) -> None:
    allowed, forbidden = two_upstreams
    a, b = allowed.server_address[1], forbidden.server_address[1]
    app = write_app(tmp_path / "app",
                    manifest(f'allowed_outbound_hosts = ["http://127.0.0.1:{a}"]'),
                    {"probe.wasm": probe_wasm})
    crafted = [
        {"authority": f"127.0.0.1:{a}\\@127.0.0.1:{b}", "path": "/x"},
        {"authority": f"127.0.0.1:{a}", "path": f"\\@127.0.0.1:{b}/x"},
        {"authority": f"127.0.0.1:{a}", "path": f"@127.0.0.1:{b}/x"},
        {"authority": f"u@127.0.0.1:{b}", "path": "/x"},
        {"authority": f"127.0.0.1:{a}@127.0.0.1:{b}", "path": "/x"},
        {"authority": f"127.0.0.1:{b}#@127.0.0.1:{a}", "path": "/x"},
        {"authority": f"127.0.0.1:{a}", "path": "/x\r\nHost: evil"},
        {"authority": f"127.0.0.1:{a} ", "path": "/x"},
        {"authority": f"127.1:{b}", "path": "/x"},
        {"authority": f"[::ffff:127.0.0.1]:{b}", "path": "/x"},
        {"authority": f"2130706433:{b}", "path": "/x"},
    ]
    with start(app, cache_dir) as host, host.client() as c:
        for parts in crafted:
            got = c.get("/http", params=parts).json()
            assert "error" in got and got["error"].startswith("http-request-"), (parts, got)
        assert forbidden.seen == []
        ok = c.get("/http", params={"url": f"http://127.0.0.1:{a}/fine?x=1"}).json()
        assert ok["status"] == 201 and ok["body"] == "upstream saw GET /fine?x=1"
        assert [s["path"] for s in allowed.seen] == ["/fine?x=1"]


def test_outbound_call_ends_at_the_request_deadline(probe_wasm: Path, cache_dir: Path,
                                                   tmp_path: Path) -> None:
    with upstream_server() as slow:
        port = slow.server_address[1]
        app = write_app(tmp_path / "app",
                        manifest(f'allowed_outbound_hosts = ["http://127.0.0.1:{port}"]'),
                        {"probe.wasm": probe_wasm})
        with start(app, cache_dir, "--request-timeout", "2") as host, host.client() as c:
            # The upstream answers only when released (or after 30 s): a 504
            # that comes before it answered was not waiting on the upstream.
            status = c.get("/http", params={"url": f"http://127.0.0.1:{port}/slow"}).status_code
            assert slow.answered == []
            slow.release.set()
            assert status == 504
            still_serving(c)


def test_redis_call_ends_at_the_request_deadline(probe_wasm: Path, cache_dir: Path,
                                                 tmp_path: Path, clean_redis_url: str) -> None:
    config = tmp_path / "runtime-config.toml"
    config.write_text(f'[key_value_store.default]\ntype = "redis"\nurl = "{clean_redis_url}"\n')
    app = write_app(tmp_path / "app", manifest('key_value_stores = ["default"]'),
                    {"probe.wasm": probe_wasm})
    admin = redis.Redis.from_url(clean_redis_url)
    with start(app, cache_dir, "--request-timeout", "1",
               "--runtime-config-file", str(config)) as host, host.client() as c:
        assert c.post("/kv/set?key=k", content=b"v").status_code == 200
        admin.execute_command("CLIENT", "PAUSE", "6000", "ALL")  # Redis stops answering
        started = time.monotonic()
        status = c.get("/kv/get?key=k").status_code
        waited = time.monotonic() - started
        # Not a performance figure: without the deadline the call would wait
        # for the backend's own 5 s socket timeout (or the 6 s pause).
        assert status == 504 and waited < 4.5
        redis.Redis.from_url(clean_redis_url, socket_timeout=30).ping()  # pause over
        # A new connection: the pause ends about 5 s after the 504, when uvicorn's
        # keep-alive timeout closes the idle one (a reused one could be closed mid-send).
        with host.client() as fresh:
            assert fresh.get("/kv/get?key=k").content == b"v"


# ---------------------------------------------------------------------------
# Memory: what crosses the boundary is bounded before it is built


def test_large_bodies_and_responses_are_refused_before_they_are_built(
        probe_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", manifest('key_value_stores = ["default"]'),
                    {"probe.wasm": probe_wasm})
    with start(app, cache_dir) as host, host.client() as c:
        still_serving(c)
        baseline = reset_peak(host.pid)
        # Over the bytes-in-flight budget: refused unread (was +660 MiB).
        assert c.post("/kv/set?key=body", content=b"b" * (8 * MiB)).status_code == 413
        # Over wasmtime's copy budget for one call: refused before it is built.
        assert c.get("/bytes?n=8388608").status_code == 500
        assert peak_growth(host.pid, baseline) < 50 * MiB
        still_serving(c)


def test_large_key_value_values_are_refused(probe_wasm: Path, cache_dir: Path,
                                            tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", manifest('key_value_stores = ["default"]'),
                    {"probe.wasm": probe_wasm})
    with start(app, cache_dir) as host, host.client() as c:
        still_serving(c)
        baseline = reset_peak(host.pid)
        # The value is made by the guest, so only the host call's argument
        # crosses (about 80 bytes of host memory per byte, for the duration of
        # the call, until bodies move as streams): refused and not stored.
        got = c.get("/kv/fill?key=big&n=2400000").json()
        assert got["error"].startswith("other: value of 2400000 bytes exceeds the limit")
        assert c.get("/kv/get?key=big").status_code == 404
        assert peak_growth(host.pid, baseline) < 300 * MiB
        assert c.get("/kv/fill?key=ok&n=1000000").json() == {"set": "ok", "bytes": 1000000}
        assert len(c.get("/kv/get?key=ok").content) == 1000000
        still_serving(c)


# ---------------------------------------------------------------------------
# Logs: outbound calls are logged without their query or credentials


def test_outbound_secrets_stay_out_of_the_logs(probe_wasm: Path, cache_dir: Path,
                                               tmp_path: Path) -> None:
    with upstream_server() as upstream:
        port = upstream.server_address[1]
        app = write_app(tmp_path / "app",
                        manifest(f'allowed_outbound_hosts = ["http://127.0.0.1:{port}"]'),
                        {"probe.wasm": probe_wasm})
        with start(app, cache_dir) as host, host.client() as c:
            url = f"http://127.0.0.1:{port}/api?token=SECRET-TOKEN"
            assert c.get("/http", params={"url": url}).json()["status"] == 201
            assert host.wait_for_output(f"127.0.0.1:{port}")
            assert "SECRET-TOKEN" not in host.output


# ---------------------------------------------------------------------------
# Shutdown: a guest stopped at its deadline leaves nothing behind


def test_sigterm_after_a_guest_timeout_exits_cleanly(probe_wasm: Path, cache_dir: Path,
                                                     tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", manifest(""), {"probe.wasm": probe_wasm})
    host = start(app, cache_dir, "--request-timeout", "1")
    try:
        with host.client() as c:
            assert c.get("/loop").status_code == 504
            assert host.wait_for_output("looping until the deadline")
            assert c.get("/env").status_code == 200
    finally:
        code = host.stop()
    assert code == 0, host.output
    assert "panic" not in host.output
