"""SQLite: `spinhost:sqlite/sqlite` over the databases in `sqlite_databases`.

Each label names a database file (the runtime config may point it anywhere;
`default` is `<state dir>/sqlite_db.db`). `connection.open` on a label the
component was not granted answers `access-denied`. Every `open` gets its own
`sqlite3` connection (so a transaction never crosses requests), closed when the
guest drops it or when its instance is discarded.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import wasmtime.component as wc

from host.capabilities import Capability, Err, Ok, ResourceTable

log = logging.getLogger("host.sqlite")

SQLITE = "spinhost:sqlite/sqlite@0.1.0"
BUSY_TIMEOUT_SECONDS = 30.0

ACCESS_DENIED = wc.Variant("access-denied")


def _io(message: str) -> Err:
    return Err(wc.Variant("io", message))


def _to_sql(value: Any) -> object:
    """A lifted `value`: a bare payload (the variant is untagged) or a wc.Variant."""
    if isinstance(value, wc.Variant):
        value = value.payload
    return value


def _from_sql(value: object) -> wc.Variant:
    if value is None:
        return wc.Variant("null")
    if isinstance(value, int):
        return wc.Variant("integer", value)
    if isinstance(value, float):
        return wc.Variant("real", value)
    if isinstance(value, str):
        return wc.Variant("text", value)
    return wc.Variant("blob", bytes(cast(bytes, value)))


class SqliteDatabase:
    """One labelled database file (or a private in-memory one when path is None)."""

    def __init__(self, label: str, path: Path | None) -> None:
        self.label = label
        self.path = path
        self.description = f"sqlite {path}" if path else "sqlite in memory"
        self._memory: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self.path is None:
            # In memory: one shared database for the process (connections see each other).
            return sqlite3.connect(f"file:spinhost-{id(self)}?mode=memory&cache=shared",
                                   uri=True, isolation_level=None, check_same_thread=False)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def check(self) -> None:
        """Open once at start-up so a bad path fails before serving."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        if self.path is None:
            self._memory = conn  # keeps the shared in-memory database alive
        else:
            conn.close()


class Sqlite(Capability):
    interfaces = (SQLITE,)

    def __init__(self, component_id: str, databases: Mapping[str, SqliteDatabase]) -> None:
        super().__init__(component_id)
        self.databases = dict(databases)
        self.connections: ResourceTable[sqlite3.Connection] = ResourceTable(
            "connection", close=lambda conn: conn.close())

    def tables(self) -> list[ResourceTable[Any]]:
        return [self.connections]

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        return {"connection": self.connections}

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        return {"[static]connection.open": self.open,
                "[method]connection.execute": self.execute}

    def open(self, store: Any, label: str) -> Ok | Err:
        database = self.databases.get(label)
        if database is None:
            log.warning(
                'component "%s" tried to open SQLite database "%s", which it was not granted '
                "(sqlite_databases = %s): access-denied",
                self.component_id, label, list(self.databases),
            )
            return Err(ACCESS_DENIED)
        try:
            conn = database.connect()
        except sqlite3.Error as exc:
            return _io(f"{database.description}: {exc}")
        return Ok(self.connections.add(store, conn))

    def execute(self, store: Any, handle: Any, statement: str, parameters: list[Any]) -> Ok | Err:
        try:
            conn = self.connections.get(store, handle)
        except LookupError:
            return Err(wc.Variant("invalid-connection"))
        try:
            cursor = conn.execute(statement, [_to_sql(p) for p in parameters])
            columns = [d[0] for d in cursor.description or ()]
            rows = [([_from_sql(v) for v in row],) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                return Err(wc.Variant("database-full"))
            return _io(str(exc))
        except (OverflowError, ValueError) as exc:
            return _io(str(exc))
        return Ok((columns, rows))
