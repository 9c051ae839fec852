"""The default key-value backend: one SQLite file, shared by every label.

Spin's schema (`spin_key_value(store, key, value)`), WAL mode and a busy
timeout, so several host processes on one node can use the same file: each
write is one short transaction, and read-modify-write operations (`increment`,
`swap`) take the write lock up front (`BEGIN IMMEDIATE`) so two processes never
both read the old value.

A call made for a request waits for locks and runs at most until that
request's deadline (host/deadline.py). Errors raised while serving name no
host path (they reach the guest); the operator's log has the file.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from host.backends import check_file
from host.deadline import DeadlineExceeded, expired, time_left
from host.errors import BackendError
from host.limits import KeyValueLimits

if TYPE_CHECKING:
    from host.runtime_config import KeyValueStoreConfig

log = logging.getLogger("host.kv")

T = TypeVar("T")

# How often a running statement (key-value here, guest SQL in
# host/capabilities/sqlite.py) checks the request's deadline: every this many
# SQLite VM instructions, well under a millisecond apart and too rare to cost
# anything measurable; and what the caller is told when it was interrupted.
PROGRESS_INSTRUCTIONS = 1000
INTERRUPTED = "interrupted: the request's deadline has passed"

_SCHEMA = """CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)"""


class SqliteKeyValue:
    def __init__(self, path: Path | None, limits: KeyValueLimits | None = None) -> None:
        """`path` None: a private in-memory database (nothing survives a restart).

        Creates the file (and its directory) and the table now, so a bad path
        fails at start-up; `check` validates the same without creating anything.
        """
        self.path = path
        self.limits = limits or KeyValueLimits()
        self.description = describe(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._memory: sqlite3.Connection | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"cannot create {path.parent}: {exc.strerror}") from None
        try:
            conn = self._connection()
            with conn:
                conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open {self.description}: {exc}") from None

    @classmethod
    def from_config(cls, config: KeyValueStoreConfig, limits: KeyValueLimits) -> SqliteKeyValue:
        return cls(config.path, limits)

    @classmethod
    def check_config(cls, config: KeyValueStoreConfig, limits: KeyValueLimits) -> str:
        return cls.check(config.path)

    @staticmethod
    def check(path: Path | None) -> str:
        """What `__init__` would open, checked without creating a file or connecting."""
        if path is not None:
            check_file(path)
        return describe(path)

    def _connection(self, timeout: float | None = None) -> sqlite3.Connection:
        """One connection per thread (guest calls run on worker threads)."""
        if timeout is None:
            timeout = self.limits.busy_timeout_seconds
        if self.path is None:
            # An in-memory database is per connection: share one, serialised.
            if self._memory is None:
                self._memory = self._connect(":memory:", timeout)
                self._connections.append(self._memory)
            return self._memory
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self.path, timeout)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            self._local.busy_ms = int(timeout * 1000)
            with self._lock:
                self._connections.append(conn)
        return conn

    @staticmethod
    def _connect(path: Path | str, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.set_progress_handler(expired, PROGRESS_INSTRUCTIONS)  # true: interrupt
        return conn

    @contextmanager
    def _bounded(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, waiting for locks no longer than the request may."""
        try:
            seconds = time_left(self.limits.busy_timeout_seconds)
        except DeadlineExceeded as exc:
            raise BackendError(str(exc)) from None
        if self.path is None:
            if not self._lock.acquire(timeout=seconds):
                raise BackendError(INTERRUPTED if expired() else "key-value store busy")
            try:
                yield self._connection(seconds)
            finally:
                self._lock.release()
            return
        conn = self._connection(seconds)
        busy_ms = int(seconds * 10) * 100  # 100 ms steps, rounded down
        if busy_ms != self._local.busy_ms:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._local.busy_ms = busy_ms
        yield conn

    def _call(self, body: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._bounded() as conn:
                return body(conn)
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and expired():
                raise BackendError(INTERRUPTED) from None
            log.warning("key-value store %s: %s", self.description, exc)
            raise BackendError(f"key-value store: {exc}") from None

    def _run(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        return self._call(lambda conn: conn.execute(sql, params).fetchall())

    def get(self, store: str, key: str) -> bytes | None:
        rows = self._run("SELECT value FROM spin_key_value WHERE store = ? AND key = ?",
                         (store, key))
        return bytes(cast(bytes, rows[0][0])) if rows else None

    def set(self, store: str, key: str, value: bytes) -> None:
        self._run("INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) "
                  "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                  (store, key, value))

    def delete(self, store: str, key: str) -> None:
        self._run("DELETE FROM spin_key_value WHERE store = ? AND key = ?", (store, key))

    def exists(self, store: str, key: str) -> bool:
        return bool(self._run("SELECT 1 FROM spin_key_value WHERE store = ? AND key = ?",
                              (store, key)))

    def list_keys(self, store: str, cursor: str | None) -> tuple[list[str], str | None]:
        # The cursor is the last key of the previous page: stable under inserts.
        rows = self._run(
            "SELECT key FROM spin_key_value WHERE store = ? AND key > ? ORDER BY key LIMIT ?",
            (store, cursor or "", self.limits.page_size + 1),
        )
        keys = [str(r[0]) for r in rows[:self.limits.page_size]]
        return keys, (keys[-1] if len(rows) > self.limits.page_size else None)

    def increment(self, store: str, key: str, delta: int) -> int:
        def update(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM spin_key_value WHERE store = ? AND key = ?",
                               (store, key)).fetchone()
            current = 0 if row is None else _as_integer(bytes(row[0]), key)
            new = current + delta
            if not -(2**63) <= new < 2**63:
                raise BackendError(f'incrementing "{key}" by {delta} overflows a 64-bit integer')
            conn.execute("INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) "
                         "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                         (store, key, str(new).encode()))
            return new
        return self._transaction(update)

    def get_many(self, store: str, keys: list[str]) -> list[bytes | None]:
        return [self.get(store, key) for key in keys]

    def set_many(self, store: str, items: list[tuple[str, bytes]]) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) "
                             "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                             [(store, k, v) for k, v in items])
        self._transaction(update)

    def delete_many(self, store: str, keys: list[str]) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM spin_key_value WHERE store = ? AND key = ?",
                             [(store, k) for k in keys])
        self._transaction(update)

    def swap(self, store: str, key: str, expected: bytes | None, value: bytes) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT value FROM spin_key_value WHERE store = ? AND key = ?",
                               (store, key)).fetchone()
            if (None if row is None else bytes(row[0])) != expected:
                return False
            conn.execute("INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) "
                         "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                         (store, key, value))
            return True
        return self._transaction(update)

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run `body(conn)` holding the database write lock (BEGIN IMMEDIATE)."""
        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                # An interrupted write has already rolled back; never leave this
                # thread's connection inside a transaction.
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result
        return self._call(run)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def describe(path: Path | None) -> str:
    return f"sqlite {path}" if path else "sqlite in memory"


# What Redis's INCRBY accepts, so both backends agree on what a counter is.
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def _as_integer(value: bytes, key: str) -> int:
    if _INTEGER.fullmatch(value) and -(2**63) <= (number := int(value)) < 2**63:
        return number
    raise BackendError(
            f'cannot increment "{key}": its value is not a decimal integer'
        )
