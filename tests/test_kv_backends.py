"""Conformance tests: every key-value backend behaves the same to a guest.

Each test runs on an SQLite file, SQLite in memory and a real redis-server
(tests/redis_server.py). Differences the guest can see are limited to those
documented in the backends: list-keys order and paging (SQLite: sorted pages of
PAGE_SIZE; Redis: SCAN order and batch size) and the `store` argument (Redis
ignores it: each label has its own URL).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from host.backends import KeyValueBackend
from host.backends.redis import RedisKeyValue, redact_url
from host.backends.sqlite import SqliteKeyValue
from host.deadline import request_deadline
from host.errors import BackendError
from host.limits import KeyValueLimits
from tests.loopback import free_port
from tests.redis_server import flush

PAGE_SIZE = KeyValueLimits().page_size

ROOT = Path(__file__).resolve().parent.parent
STORE = "default"
ALL_BYTES = bytes(range(256))
ONE_MIB = bytes(range(256)) * 4096


def _make(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> KeyValueBackend:
    if kind == "sqlite-file":
        return SqliteKeyValue(tmp_path / "kv" / "sqlite_key_value.db")
    if kind == "sqlite-memory":
        return SqliteKeyValue(None)
    url: str = request.getfixturevalue("redis_url")
    flush(url)
    return RedisKeyValue(url)


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueBackend]:
    kv = _make(request.param, request, tmp_path)
    yield kv
    kv.close()


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueBackend]:
    kv = _make(request.param, request, tmp_path)
    yield kv
    kv.close()


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[RedisKeyValue]:
    flush(redis_url)
    kv = RedisKeyValue(redis_url)
    yield kv
    kv.close()


def all_keys(kv: KeyValueBackend, store: str = STORE) -> tuple[list[str], list[int]]:
    """Page through list_keys; return every key (in order seen) and the page sizes."""
    keys: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page, cursor = kv.list_keys(store, cursor)
        sizes.append(len(page))
        keys += page
        if cursor is None:
            return keys, sizes
        assert page, "an empty page must be the last one"
        assert len(sizes) < 10_000, "list_keys never ends"


# --- get / set / delete / exists ---------------------------------------------------------


def test_get_missing_is_none(backend: KeyValueBackend) -> None:
    assert backend.get(STORE, "missing") is None
    assert backend.exists(STORE, "missing") is False


@pytest.mark.parametrize("value", [b"", ALL_BYTES, b"\x00", b"\xff\xfe", ONE_MIB],
                         ids=["empty", "all-256-bytes", "nul", "invalid-utf8", "1MiB"])
def test_set_get_round_trips_exact_bytes(backend: KeyValueBackend, value: bytes) -> None:
    backend.set(STORE, "k", value)
    got = backend.get(STORE, "k")
    assert isinstance(got, bytes)
    assert got == value
    assert backend.exists(STORE, "k") is True


def test_empty_value_is_present_not_missing(backend: KeyValueBackend) -> None:
    backend.set(STORE, "empty", b"")
    assert backend.get(STORE, "empty") == b""
    assert backend.exists(STORE, "empty") is True
    assert all_keys(backend)[0] == ["empty"]


def test_overwrite(backend: KeyValueBackend) -> None:
    backend.set(STORE, "k", b"first")
    backend.set(STORE, "k", b"second, longer")
    assert backend.get(STORE, "k") == b"second, longer"
    backend.set(STORE, "k", b"")
    assert backend.get(STORE, "k") == b""


def test_delete_and_delete_missing(backend: KeyValueBackend) -> None:
    backend.set(STORE, "k", b"v")
    backend.delete(STORE, "k")
    assert backend.get(STORE, "k") is None
    assert backend.exists(STORE, "k") is False
    backend.delete(STORE, "k")  # already gone: not an error
    backend.delete(STORE, "never-existed")


def test_unicode_keys(backend: KeyValueBackend) -> None:
    keys = ["ключ", "clé é", "🔑", "with space", "a:b/c"]
    for i, key in enumerate(keys):
        backend.set(STORE, key, str(i).encode())
    for i, key in enumerate(keys):
        assert backend.get(STORE, key) == str(i).encode()
    assert sorted(all_keys(backend)[0]) == sorted(keys)


# --- list_keys ---------------------------------------------------------------------------


def test_list_keys_empty(backend: KeyValueBackend) -> None:
    assert backend.list_keys(STORE, None) == ([], None)


def test_list_keys_pages_through_every_key_exactly_once(backend: KeyValueBackend) -> None:
    wanted = [f"key-{i:05d}" for i in range(2 * PAGE_SIZE + 500)]
    backend.set_many(STORE, [(k, k.encode()) for k in wanted])
    keys, sizes = all_keys(backend)
    assert len(keys) == len(wanted), "a key was returned twice or not at all"
    assert set(keys) == set(wanted)
    assert len(sizes) > 1, "more than PAGE_SIZE keys must take more than one page"


def test_sqlite_list_keys_pages_are_sorted_and_page_size(
    sqlite_backend: KeyValueBackend,
) -> None:
    wanted = [f"key-{i:05d}" for i in range(2 * PAGE_SIZE + 500)]
    sqlite_backend.set_many(STORE, [(k, b"") for k in wanted])
    keys, sizes = all_keys(sqlite_backend)
    assert keys == wanted
    assert sizes == [PAGE_SIZE, PAGE_SIZE, 500]


def test_list_keys_after_delete(backend: KeyValueBackend) -> None:
    backend.set_many(STORE, [("a", b"1"), ("b", b"2"), ("c", b"3")])
    backend.delete(STORE, "b")
    assert sorted(all_keys(backend)[0]) == ["a", "c"]


def test_redis_list_keys_bad_cursor(redis_backend: RedisKeyValue) -> None:
    with pytest.raises(BackendError, match="cursor"):
        redis_backend.list_keys(STORE, "not-a-number")
    with pytest.raises(BackendError, match="cursor"):
        redis_backend.list_keys(STORE, "-1")


# --- increment ---------------------------------------------------------------------------


def test_increment_from_missing(backend: KeyValueBackend) -> None:
    assert backend.increment(STORE, "n", 5) == 5
    assert backend.get(STORE, "n") == b"5"
    assert backend.increment(STORE, "n", 0) == 5


def test_increment_negative_delta(backend: KeyValueBackend) -> None:
    assert backend.increment(STORE, "n", -3) == -3
    assert backend.increment(STORE, "n", 10) == 7
    assert backend.increment(STORE, "n", -10) == -3
    assert backend.get(STORE, "n") == b"-3"


def test_increment_existing_decimal_text(backend: KeyValueBackend) -> None:
    backend.set(STORE, "n", b"41")
    assert backend.increment(STORE, "n", 1) == 42
    assert backend.get(STORE, "n") == b"42"


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"", b"\xff", b"12abc"])
def test_increment_non_integer_is_backend_error(backend: KeyValueBackend, value: bytes) -> None:
    backend.set(STORE, "text-key", value)
    with pytest.raises(BackendError, match="text-key"):
        backend.increment(STORE, "text-key", 1)
    assert backend.get(STORE, "text-key") == value  # unchanged


def test_increment_overflow_is_backend_error(backend: KeyValueBackend) -> None:
    backend.set(STORE, "big", str(2**63 - 1).encode())
    with pytest.raises(BackendError, match="big"):
        backend.increment(STORE, "big", 1)
    assert backend.get(STORE, "big") == str(2**63 - 1).encode()
    assert backend.increment(STORE, "small", -(2**63)) == -(2**63)
    with pytest.raises(BackendError, match="small"):
        backend.increment(STORE, "small", -1)


def test_increment_is_atomic_across_threads(backend: KeyValueBackend) -> None:
    def work() -> None:
        for _ in range(250):
            backend.increment(STORE, "counter", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get(STORE, "counter") == b"1000"


_INCREMENT_CHILD = """
import sys
from pathlib import Path
from host.backends.sqlite import SqliteKeyValue
kv = SqliteKeyValue(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # the parent says "go" once both children are ready
for _ in range(1000):
    kv.increment("default", "shared", 1)
kv.close()
"""


def test_sqlite_file_increment_is_atomic_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SqliteKeyValue(db).close()  # create the schema before the race
    children = [
        subprocess.Popen([sys.executable, "-c", _INCREMENT_CHILD, str(db)], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for child in children:  # both open and waiting: start them together
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err.decode()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    kv = SqliteKeyValue(db)
    try:
        assert kv.get(STORE, "shared") == b"2000"
    finally:
        kv.close()


# --- get_many / set_many / delete_many ---------------------------------------------------


def test_many_with_empty_lists(backend: KeyValueBackend) -> None:
    assert backend.get_many(STORE, []) == []
    backend.set_many(STORE, [])
    backend.delete_many(STORE, [])
    assert all_keys(backend)[0] == []


def test_set_many_get_many(backend: KeyValueBackend) -> None:
    backend.set_many(STORE, [("a", b"1"), ("b", b""), ("c", ALL_BYTES)])
    assert backend.get_many(STORE, ["c", "missing", "a", "b", "a"]) == [
        ALL_BYTES, None, b"1", b"", b"1"]


def test_set_many_repeated_key_last_wins(backend: KeyValueBackend) -> None:
    backend.set_many(STORE, [("k", b"first"), ("k", b"last")])
    assert backend.get(STORE, "k") == b"last"


def test_set_many_overwrites(backend: KeyValueBackend) -> None:
    backend.set(STORE, "a", b"old")
    backend.set_many(STORE, [("a", b"new"), ("b", b"2")])
    assert backend.get_many(STORE, ["a", "b"]) == [b"new", b"2"]


def test_delete_many(backend: KeyValueBackend) -> None:
    backend.set_many(STORE, [("a", b"1"), ("b", b"2"), ("c", b"3")])
    backend.delete_many(STORE, ["a", "c", "missing", "a"])
    assert backend.get_many(STORE, ["a", "b", "c"]) == [None, b"2", None]


# --- swap --------------------------------------------------------------------------------


def test_swap_success(backend: KeyValueBackend) -> None:
    backend.set(STORE, "k", b"old")
    assert backend.swap(STORE, "k", b"old", b"new") is True
    assert backend.get(STORE, "k") == b"new"


def test_swap_mismatch_leaves_value(backend: KeyValueBackend) -> None:
    backend.set(STORE, "k", b"current")
    assert backend.swap(STORE, "k", b"stale", b"new") is False
    assert backend.get(STORE, "k") == b"current"


def test_swap_expected_none_means_absent(backend: KeyValueBackend) -> None:
    assert backend.swap(STORE, "k", None, b"created") is True
    assert backend.get(STORE, "k") == b"created"
    assert backend.swap(STORE, "k", None, b"again") is False  # present now
    assert backend.get(STORE, "k") == b"created"


def test_swap_expected_value_on_absent_key_fails(backend: KeyValueBackend) -> None:
    assert backend.swap(STORE, "k", b"", b"new") is False
    assert backend.get(STORE, "k") is None


def test_swap_empty_value_is_not_absent(backend: KeyValueBackend) -> None:
    backend.set(STORE, "k", b"")
    assert backend.swap(STORE, "k", None, b"x") is False
    assert backend.swap(STORE, "k", b"", b"x") is True
    assert backend.get(STORE, "k") == b"x"


def test_redis_swap_concurrent_write_returns_false(
    redis_backend: RedisKeyValue, redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another client writing between WATCH and EXEC makes swap return False (WatchError)."""
    redis_backend.set(STORE, "k", b"old")
    other = redis.Redis.from_url(redis_url)
    original_multi = redis.client.Pipeline.multi

    def interfering_multi(pipe: redis.client.Pipeline) -> None:
        other.set("k", b"theirs")
        original_multi(pipe)

    monkeypatch.setattr(redis.client.Pipeline, "multi", interfering_multi)
    try:
        assert redis_backend.swap(STORE, "k", b"old", b"mine") is False
    finally:
        other.close()
    assert redis_backend.get(STORE, "k") == b"theirs"


# --- store labels ------------------------------------------------------------------------


def test_sqlite_store_labels_are_isolated(sqlite_backend: KeyValueBackend) -> None:
    sqlite_backend.set("one", "k", b"1")
    sqlite_backend.set("two", "k", b"2")
    assert sqlite_backend.get("one", "k") == b"1"
    assert sqlite_backend.get("two", "k") == b"2"
    assert all_keys(sqlite_backend, "one")[0] == ["k"]
    sqlite_backend.delete("one", "k")
    assert sqlite_backend.get("two", "k") == b"2"
    assert sqlite_backend.exists("one", "k") is False


def test_redis_ignores_store_label_each_label_has_its_own_url(
    redis_backend: RedisKeyValue,
) -> None:
    """Like Spin, a Redis label is isolated by its URL, not by the `store` argument."""
    redis_backend.set("one", "k", b"1")
    assert redis_backend.get("two", "k") == b"1"
    assert all_keys(redis_backend, "two")[0] == ["k"]


# --- Redis connection and errors ---------------------------------------------------------


def test_redis_description_names_url(redis_backend: RedisKeyValue, redis_url: str) -> None:
    assert redis_backend.description == f"redis {redis_url}"


def test_redis_description_hides_password(redis_url: str) -> None:
    # The default user is `nopass` on the test server, so any password logs in.
    with_password = redis_url.replace("redis://", "redis://default:hunter2@")
    kv = RedisKeyValue(with_password)
    try:
        assert "hunter2" not in kv.description
        assert kv.description == f"redis {redis_url.replace('redis://', 'redis://default:***@')}"
        kv.set(STORE, "k", b"v")
        assert kv.get(STORE, "k") == b"v"
    finally:
        kv.close()


def test_redis_closed_port_is_backend_error_naming_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BackendError) as info:
        RedisKeyValue(url)
    message = str(info.value)
    assert url in message
    assert "\n" not in message
    assert "Traceback" not in message


def test_redis_closed_port_error_hides_password() -> None:
    port = free_port()
    with pytest.raises(BackendError) as info:
        RedisKeyValue(f"redis://admin:s3cr%40t-pw@127.0.0.1:{port}/0")
    message = str(info.value)
    assert f"redis://admin:***@127.0.0.1:{port}/0" in message
    assert "s3cr" not in message


def test_redis_invalid_url_is_backend_error() -> None:
    with pytest.raises(BackendError, match="invalid Redis URL"):
        RedisKeyValue("http://user:pw-secret@127.0.0.1:1/0")
    try:
        RedisKeyValue("http://user:pw-secret@127.0.0.1:1/0")
    except BackendError as exc:
        assert "pw-secret" not in str(exc)


def test_redact_url() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("rediss://u:pw@h/0") == "rediss://u:***@h/0"
    assert redact_url("redis://u@h/0") == "redis://u@h/0"
    assert redact_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"


def test_redis_server_error_is_backend_error(redis_backend: RedisKeyValue, redis_url: str) -> None:
    other = redis.Redis.from_url(redis_url)
    try:
        other.rpush("a-list", b"x")  # not a string: GET/INCRBY/swap reply WRONGTYPE
    finally:
        other.close()
    for call in (
        lambda: redis_backend.get(STORE, "a-list"),
        lambda: redis_backend.increment(STORE, "a-list", 1),
        lambda: redis_backend.swap(STORE, "a-list", None, b"v"),
    ):
        with pytest.raises(BackendError, match="WRONGTYPE") as info:
            call()
        assert str(info.value).startswith(f"redis {redis_url}: ")
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_redis_server_gone_is_backend_error(tmp_path: Path) -> None:
    from tests.loopback import stop_process
    from tests.redis_server import start_redis

    proc, port = start_redis(tmp_path)
    kv = RedisKeyValue(f"redis://127.0.0.1:{port}/0")
    try:
        kv.set(STORE, "k", b"v")
        stop_process(proc)
        with pytest.raises(BackendError, match=f"127.0.0.1:{port}"):
            kv.get(STORE, "k")
    finally:
        stop_process(proc)
        kv.close()


# ---------------------------------------------------------------------------
# Redis: every command made for a request ends by the request's deadline


@contextmanager
def _redis_paused(url: str, seconds: float) -> Iterator[None]:
    """The server answers no client for `seconds` (CLIENT PAUSE ALL); the block must end sooner.

    A paused server queues every command, CLIENT UNPAUSE included, so the block
    ends by waiting the pause out.
    """
    admin = redis.Redis.from_url(url, socket_timeout=seconds + 10)
    admin.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")
    paused_until = time.monotonic() + seconds
    try:
        yield
        assert time.monotonic() < paused_until, "the pause ended before the test did"
    finally:
        admin.ping()  # answered when the pause ends
        admin.close()


REDIS_CALLS: list[tuple[str, Callable[[RedisKeyValue], object]]] = [
    ("get", lambda kv: kv.get(STORE, "k")),
    ("set", lambda kv: kv.set(STORE, "paused-set", b"v")),
    ("delete", lambda kv: kv.delete(STORE, "paused-delete")),
    ("exists", lambda kv: kv.exists(STORE, "k")),
    ("list-keys", lambda kv: kv.list_keys(STORE, None)),
    ("increment", lambda kv: kv.increment(STORE, "paused-counter", 1)),
    ("get-many", lambda kv: kv.get_many(STORE, ["k", "x"])),
    ("set-many", lambda kv: kv.set_many(STORE, [("paused-many", b"v")])),
    ("delete-many", lambda kv: kv.delete_many(STORE, ["paused-many"])),
    ("swap", lambda kv: kv.swap(STORE, "paused-swap", None, b"v")),
]


def test_redis_commands_end_at_the_request_deadline(clean_redis_url: str) -> None:
    kv = RedisKeyValue(clean_redis_url)
    try:
        kv.set(STORE, "k", b"v")
        with _redis_paused(clean_redis_url, 0.2 * len(REDIS_CALLS) + 1.5):
            for name, call in REDIS_CALLS:
                started = time.monotonic()
                with request_deadline(0.2), pytest.raises(BackendError) as info:
                    call(kv)
                elapsed = time.monotonic() - started
                assert str(info.value) == (f"redis {clean_redis_url}: no answer before the "
                                           "request's deadline"), name
                assert 0.15 <= elapsed < 0.5, (name, elapsed)  # not the 5 s socket timeout
        # Connections whose reply was late were dropped: no late reply is ever
        # read as the answer to the next command.
        assert kv.get(STORE, "k") == b"v"
        assert kv.get_many(STORE, ["k", "nothing"]) == [b"v", None]
    finally:
        kv.close()


def test_redis_sends_nothing_once_the_deadline_passed(clean_redis_url: str) -> None:
    kv = RedisKeyValue(clean_redis_url)
    try:
        with request_deadline(0.0), pytest.raises(BackendError, match="deadline"):
            kv.set(STORE, "late", b"v")
        assert kv.get(STORE, "late") is None  # the command never left the host
    finally:
        kv.close()


def test_redis_new_connection_is_bounded_by_the_deadline(clean_redis_url: str) -> None:
    kv = RedisKeyValue(clean_redis_url)
    try:
        kv._redis.connection_pool.disconnect()  # the next command connects afresh
        with _redis_paused(clean_redis_url, 1.0):
            started = time.monotonic()
            with request_deadline(0.3), pytest.raises(BackendError, match="deadline"):
                kv.get(STORE, "k")
            assert time.monotonic() - started < 0.8
        assert kv.get(STORE, "k") is None
    finally:
        kv.close()


def test_redis_server_that_never_answers_is_bounded_by_the_deadline() -> None:
    # Accepts connections (the kernel does, from the backlog) but never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        with request_deadline(0.3), pytest.raises(BackendError, match="cannot reach Redis"):
            RedisKeyValue(url)
        assert time.monotonic() - started < 0.8
