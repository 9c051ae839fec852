"""SQLite: `spinhost:sqlite/sqlite`, and Spin's `fermyon:spin/sqlite@2.0.0` and
`spin:sqlite/sqlite@3.0.0` (what Spin SDK 3.x apps call), over the databases in
`sqlite_databases`. The three interfaces share values and errors; 3.0.0 adds
`last-insert-rowid` and `changes`.

Each label names a database file (the runtime config may point it anywhere;
`default` is `<state dir>/sqlite_db.db`). `connection.open` on a label the
component was not granted answers `access-denied`. Every `open` gets its own
`sqlite3` connection (so a transaction never crosses requests), closed when the
guest drops it or when its instance is discarded.

Guest SQL is untrusted, so every guest connection is guarded with SQLite's own
mechanisms before the guest sees it:

- an authorizer that allows what apps need (tables, indexes, views, triggers,
  DML, transactions, FTS and R*Tree virtual tables, a few pragmas) and denies
  the rest: ATTACH/DETACH (so VACUUM and VACUUM INTO, which attach), pragmas
  that touch files or process state, `fts3_tokenizer` and `load_extension`;
- defensive mode: ordinary SQL may not write the shadow tables behind FTS and
  R*Tree tables, whose contents their C code trusts;
- `SqliteLimits` as `sqlite3_limit`s (no attached databases at all);
- a progress handler that interrupts a statement at the request's deadline,
  and a busy timeout bounded by the time left;
- results read in batches and refused once over `max_result_bytes`.

No message to the guest names a host path; the operator's log has the cause.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import wasmtime.component as wc

from host.backends import check_file
from host.backends.sqlite import INTERRUPTED, PROGRESS_INSTRUCTIONS, describe
from host.capabilities import AppContext, Capability, Err, Factor, Ok, ResourceTable
from host.deadline import DeadlineExceeded, expired, time_left
from host.errors import BackendError, ComponentError, ConfigError
from host.limits import SqliteLimits
from host.manifest import Component

log = logging.getLogger("host.sqlite")

SQLITE = "spinhost:sqlite/sqlite@0.1.0"
SPIN_SQLITE_2 = "fermyon:spin/sqlite@2.0.0"
SPIN_SQLITE_3 = "spin:sqlite/sqlite@3.0.0"
DEFAULT_LABEL = "default"  # the only label without a runtime-config table
DEFAULT_FILE = "sqlite_db.db"  # in the state dir

ACCESS_DENIED = wc.Variant("access-denied")
# Rows fetched from SQLite at a time while the result is measured.
FETCH_ROWS = 64
# What one value (or row, or column name) costs beyond its bytes, for the
# result cap: the host builds one Python object and one C value for each.
VALUE_COST = 32

# --- What guest SQL may do -------------------------------------------------------------

# Authorizer actions allowed without looking further: what an app's own schema
# and data need. Anything not here and not checked below (ATTACH, DETACH,
# actions a future SQLite adds) is denied.
ALLOWED_ACTIONS = frozenset({
    sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_TRIGGER,
    sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_CREATE_TEMP_INDEX,
    sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_VIEW, sqlite3.SQLITE_DROP_TEMP_INDEX,
    sqlite3.SQLITE_DROP_TEMP_TABLE, sqlite3.SQLITE_DROP_TEMP_TRIGGER,
    sqlite3.SQLITE_DROP_TEMP_VIEW, sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT,
    sqlite3.SQLITE_ANALYZE, sqlite3.SQLITE_REINDEX,
})

# Pragmas a guest may run, with or without an argument: each only describes
# or changes the guest's own schema, data or connection.
PRAGMAS = frozenset({
    # Schema introspection, as ORMs and migration tools use it.
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list",
    # Checks of the guest's own database.
    "integrity_check", "quick_check", "foreign_key_check",
    # How this connection runs the guest's SQL.
    "foreign_keys", "defer_foreign_keys", "recursive_triggers", "case_sensitive_like",
    # Header fields that exist for applications (migrations keep their version here).
    "user_version", "application_id",
    # ANALYZE where it helps, as SQLite recommends before closing.
    "optimize",
})
# Pragmas a guest may read but not set. FTS3/4 and R*Tree read page_size and
# FTS5 reads data_version on the guest's behalf, through this same authorizer.
READ_ONLY_PRAGMAS = frozenset({"page_size", "data_version", "page_count", "freelist_count"})

# Functions a guest may not call. Both are SQLITE_DIRECTONLY, so SQLite already
# refuses them in views, triggers and schema: every use reaches the authorizer.
# fts3_tokenizer returns a tokenizer's address and registers one at any address
# (Debian builds with SQLITE_ENABLE_FTS3_TOKENIZER): a memory-corruption primitive.
DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension"})

# Virtual table modules a guest may create (and drop). Not fts3tokenize (any
# registered tokenizer), nor the debugging and introspection tables.
VIRTUAL_TABLE_MODULES = frozenset({"fts3", "fts4", "fts5", "rtree", "rtree_i32"})

# The only databases a connection has: ATTACH is denied and limited to none.
SCHEMAS = frozenset({"main", "temp"})

def refusal(action: int, arg1: str | None, arg2: str | None, schema: str | None) -> str | None:
    """Why the authorizer denies this action, or None to allow it.

    The arguments are the authorizer's; the reason goes to the guest after
    "not authorized: ", so it never repeats a file name.
    """
    if action == sqlite3.SQLITE_ALTER_TABLE:
        schema = arg1  # its last argument is the column of DROP COLUMN
    if schema is not None and schema not in SCHEMAS:
        return f"database {_quoted(schema)} is not allowed (only main and temp)"
    if action in ALLOWED_ACTIONS:
        return None
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in PRAGMAS or (name in READ_ONLY_PRAGMAS and arg2 is None):
            return None
        if name in READ_ONLY_PRAGMAS:
            return f"setting PRAGMA {name} is not allowed (it may only be read)"
        return f"PRAGMA {_quoted(name)} is not allowed"
    if action == sqlite3.SQLITE_FUNCTION:
        name = (arg2 or "").lower()
        return f"function {name}() is not allowed" if name in DENIED_FUNCTIONS else None
    if action in (sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE):
        module = (arg2 or "").lower()
        if module in VIRTUAL_TABLE_MODULES:
            return None
        allowed = ", ".join(sorted(VIRTUAL_TABLE_MODULES))
        return f"virtual table module {_quoted(module)} is not allowed (only {allowed})"
    if action == sqlite3.SQLITE_ATTACH:
        return "attaching a database (ATTACH, VACUUM, VACUUM INTO) is not allowed"
    if action == sqlite3.SQLITE_DETACH:
        return "DETACH is not allowed"
    return f"SQLite action {action} is not allowed"


def _quoted(name: str) -> str:
    return '"' + (name if len(name) <= 64 else name[:64] + "...") + '"'


class _Guard:
    """The authorizer and progress handler of one guest connection.

    SQLite only reports "not authorized" or "interrupted"; the guard remembers
    what it refused, so the guest and the log can be told which rule applied.
    """

    def __init__(self) -> None:
        self.denied: str | None = None
        self.attach_target: str | None = None  # for the operator's log only
        self.interrupted = False
        self._host_statement = False

    def authorize(self, action: int, arg1: str | None, arg2: str | None,
                  schema: str | None, _source: str | None) -> int:
        if self._host_statement:
            return sqlite3.SQLITE_OK
        reason = refusal(action, arg1, arg2, schema)
        if reason is None:
            return sqlite3.SQLITE_OK
        if self.denied is None:
            self.denied = reason
            self.attach_target = arg1 if action == sqlite3.SQLITE_ATTACH else None
        return sqlite3.SQLITE_DENY

    def progress(self) -> int:
        if expired():
            self.interrupted = True
            return 1  # non-zero: SQLite stops the statement with SQLITE_INTERRUPT
        return 0

    def reset(self) -> None:
        self.denied = self.attach_target = None
        self.interrupted = False

    @contextmanager
    def host_statement(self) -> Iterator[None]:
        """Statements the host itself runs on the guest's connection (busy_timeout)."""
        self._host_statement = True
        try:
            yield
        finally:
            self._host_statement = False


# --- Databases and guest connections ----------------------------------------------------


class SqliteDatabase:
    """One labelled database file (or a private in-memory one when path is None)."""

    def __init__(self, label: str, path: Path | None, limits: SqliteLimits | None = None) -> None:
        self.label = label
        self.path = path
        self.limits = limits or SqliteLimits()
        self.description = describe(path)
        self._memory: sqlite3.Connection | None = None

    def connect(self, timeout: float | None = None) -> sqlite3.Connection:
        """A connection with the host's rights (WAL mode set); guests get `open`."""
        if timeout is None:
            timeout = self.limits.busy_timeout_seconds
        # No statement cache: a cached host statement would run again, unchecked,
        # when the guest sends the same text (the authorizer runs at prepare only).
        if self.path is None:
            # In memory: one shared database for the process (connections see each other).
            return sqlite3.connect(f"file:spinhost-{id(self)}?mode=memory&cache=shared",
                                   uri=True, isolation_level=None, check_same_thread=False,
                                   cached_statements=0)
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                               check_same_thread=False, cached_statements=0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self, component_id: str) -> GuestConnection:
        """A connection for a guest's SQL, bounded by the current request's deadline.

        Raises sqlite3.Error (or OSError) when the database cannot be opened, and
        DeadlineExceeded when the request has no time left.
        """
        conn = self.connect(timeout=time_left(self.limits.busy_timeout_seconds))
        try:
            return GuestConnection(conn, self.limits, component_id, self.label)
        except BaseException:
            conn.close()
            raise

    def check(self) -> None:
        """Open once at start-up, guards included, so a bad path fails before serving."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        if self.path is None:
            self._memory = conn  # keeps the shared in-memory database alive
            conn = self.connect()
        GuestConnection(conn, self.limits, "", self.label).close()


class GuestConnection:
    """A connection running guest SQL under SQLite's guards, with capped results."""

    def __init__(self, conn: sqlite3.Connection, limits: SqliteLimits,
                 component_id: str, label: str) -> None:
        self.limits = limits
        self._conn = conn
        self._where = f'component "{component_id}", SQLite database "{label}"'
        self._guard = _Guard()
        self._busy_ms = -1
        _set_defensive(conn)
        for category, value in (
            (sqlite3.SQLITE_LIMIT_ATTACHED, 0),
            (sqlite3.SQLITE_LIMIT_WORKER_THREADS, 0),
            (sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes),
            (sqlite3.SQLITE_LIMIT_SQL_LENGTH, limits.max_sql_bytes),
            (sqlite3.SQLITE_LIMIT_COLUMN, limits.max_columns),
            (sqlite3.SQLITE_LIMIT_VDBE_OP, limits.max_statement_ops),
            (sqlite3.SQLITE_LIMIT_EXPR_DEPTH, limits.max_expression_depth),
            (sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, limits.max_compound_select),
            (sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limits.max_parameters),
            (sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, limits.max_trigger_depth),
            (sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, limits.max_like_pattern_bytes),
        ):
            conn.setlimit(category, value)
        # Last: the host's own statements above (journal_mode) ran unchecked.
        conn.set_authorizer(self._guard.authorize)
        conn.set_progress_handler(self._guard.progress, PROGRESS_INSTRUCTIONS)

    def close(self) -> None:
        self._conn.close()

    def execute(self, statement: str, parameters: list[object]) -> Ok | Err:
        """Run one guest statement; the result, or the interface's error value."""
        self._guard.reset()
        cursor: sqlite3.Cursor | None = None
        try:
            self._bound_busy_wait()
            cursor = self._conn.execute(statement, parameters)
            return Ok(self._read(cursor))
        except _ResultTooLarge:
            limit = self.limits.max_result_bytes
            log.warning("%s: result over max_result_bytes (%d bytes) refused", self._where, limit)
            return _io(f"result too large: over the host's limit of {limit} bytes for one "
                       "statement (max_result_bytes); select fewer rows or columns, "
                       "or page with LIMIT")
        except DeadlineExceeded:
            return self._interrupted()
        except MemoryError:
            log.warning("%s: statement refused: out of memory (over max_statement_ops?)",
                        self._where)
            return _io("out of memory: the statement is too large or complex for the host "
                       f"(at most {self.limits.max_statement_ops} instructions per statement)")
        except (sqlite3.Error, sqlite3.Warning) as exc:
            return self._error(exc)
        except (OverflowError, ValueError) as exc:
            return _io(str(exc))
        finally:
            if cursor is not None:
                cursor.close()  # resets the statement even when reading stopped early

    def last_insert_rowid(self) -> int:
        return self._host_query("SELECT last_insert_rowid()")

    def changes(self) -> int:
        """Rows changed by the last INSERT, UPDATE or DELETE (SQLite's changes())."""
        return self._host_query("SELECT changes()")

    def _host_query(self, sql: str) -> int:
        with self._guard.host_statement():
            value = self._conn.execute(sql).fetchone()[0]
        return int(value)

    def _bound_busy_wait(self) -> None:
        """Wait for another writer's lock at most until the request's deadline."""
        seconds = time_left(self.limits.busy_timeout_seconds)
        # In steps of 100 ms, rounded down, so a request's statements rarely reset it.
        busy_ms = int(seconds * 10) * 100
        if busy_ms != self._busy_ms:
            with self._guard.host_statement():
                self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._busy_ms = busy_ms

    def _read(self, cursor: sqlite3.Cursor) -> tuple[list[str], list[tuple[list[wc.Variant]]]]:
        """Columns and rows, stopping once they would cost more than max_result_bytes."""
        columns = [str(d[0]) for d in cursor.description or ()]
        budget = self.limits.max_result_bytes - sum(len(c) + VALUE_COST for c in columns)
        rows: list[tuple[list[wc.Variant]]] = []
        while batch := cursor.fetchmany(FETCH_ROWS):
            for row in batch:
                budget -= VALUE_COST + sum(_cost(value) for value in row)
                if budget < 0:
                    raise _ResultTooLarge
                rows.append(([_from_sql(value) for value in row],))
        if budget < 0:
            raise _ResultTooLarge
        return columns, rows

    def _error(self, exc: sqlite3.Error | sqlite3.Warning) -> Err:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        # A denied function fails as SQLITE_ERROR ("not authorized to use function"),
        # the rest as SQLITE_AUTH: either way the guard knows what it refused.
        if self._guard.denied is not None or code == sqlite3.SQLITE_AUTH:
            reason = self._guard.denied or "the statement is not allowed"
            target = self._guard.attach_target
            log.warning("%s: SQL refused: %s%s", self._where, reason,
                        f" (target {target!r})" if target is not None else "")
            return _io(f"not authorized: {reason}")
        if code == sqlite3.SQLITE_INTERRUPT and self._guard.interrupted:
            return self._interrupted()
        if code == sqlite3.SQLITE_FULL:
            return Err(wc.Variant("database-full"))
        if code == sqlite3.SQLITE_TOOBIG:
            return _io(f"{exc} (the host allows {self.limits.max_value_bytes} bytes per "
                       "string, blob or row: max_value_bytes)")
        return _io(str(exc))

    def _interrupted(self) -> Err:
        log.warning("%s: SQL statement stopped at the request's deadline", self._where)
        return _io(INTERRUPTED)


class _ResultTooLarge(Exception):
    pass


def _cost(value: object) -> int:
    """Bytes a fetched value adds to the result, for max_result_bytes."""
    if isinstance(value, str):
        return VALUE_COST + (len(value) if value.isascii() else len(value.encode()))
    if isinstance(value, bytes):
        return VALUE_COST + len(value)
    return VALUE_COST


# --- Defensive mode ---------------------------------------------------------------------

_DBCONFIG_DEFENSIVE = 1010  # SQLITE_DBCONFIG_DEFENSIVE
_db_config: Any = None


def _set_defensive(conn: sqlite3.Connection) -> None:
    """SQLITE_DBCONFIG_DEFENSIVE: no writes to shadow tables, writable_schema, ...

    The C code of FTS3/4/5 and R*Tree trusts what their shadow tables hold
    (crafted shadow-table contents are a known way to corrupt memory); in
    defensive mode only SQLite itself writes them.
    """
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:  # Python 3.12+
        setconfig(_DBCONFIG_DEFENSIVE, True)
        return
    # Python 3.11 has no Connection.setconfig: call sqlite3_db_config with the
    # connection's sqlite3*, the field right after the object header of 3.11's
    # pysqlite_Connection.
    global _db_config
    if sys.version_info[:2] != (3, 11):
        raise sqlite3.NotSupportedError("cannot enable SQLite's defensive mode")
    if _db_config is None:
        library = ctypes.CDLL(importlib.import_module("_sqlite3").__file__)
        _db_config = library.sqlite3_db_config
        _db_config.restype = ctypes.c_int
        _db_config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                               ctypes.POINTER(ctypes.c_int)]
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    enabled = ctypes.c_int(0)
    if _db_config(handle, _DBCONFIG_DEFENSIVE, 1, ctypes.byref(enabled)) != 0 or not enabled:
        raise sqlite3.NotSupportedError("cannot enable SQLite's defensive mode")


# --- The capability ---------------------------------------------------------------------


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


class Sqlite(Capability):
    interfaces = (SQLITE, SPIN_SQLITE_2, SPIN_SQLITE_3)

    def __init__(self, component_id: str, databases: Mapping[str, SqliteDatabase],
                 limits: SqliteLimits | None = None) -> None:
        super().__init__(component_id)
        self.databases = dict(databases)
        max_live = (limits or SqliteLimits()).max_open_connections
        # One table per interface: each interface's `connection` is its own resource type.
        self.connections: dict[str, ResourceTable[GuestConnection]] = {
            interface: ResourceTable("connection", close=lambda conn: conn.close(),
                                     max_live=max_live)
            for interface in self.interfaces}

    def tables(self) -> list[ResourceTable[Any]]:
        return list(self.connections.values())

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        return {"connection": self.connections[interface]}

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        table = self.connections[interface]
        functions: dict[str, Callable[..., Any]] = {
            "[static]connection.open": lambda store, label: self.open(store, label, table),
            "[method]connection.execute":
                lambda store, handle, statement, parameters:
                    self.execute(store, handle, statement, parameters, table),
        }
        if interface == SPIN_SQLITE_3:
            functions["[method]connection.last-insert-rowid"] = \
                lambda store, handle: table.get(store, handle).last_insert_rowid()
            functions["[method]connection.changes"] = \
                lambda store, handle: table.get(store, handle).changes()
        return functions

    def open(self, store: Any, label: str,
             table: ResourceTable[GuestConnection] | None = None) -> Ok | Err:
        table = self.connections[SQLITE] if table is None else table
        database = self.databases.get(label)
        if database is None:
            log.warning(
                'component "%s" tried to open SQLite database "%s", which it was not granted '
                "(sqlite_databases = %s): access-denied",
                self.component_id, label, list(self.databases),
            )
            return Err(ACCESS_DENIED)
        try:
            conn = database.open(self.component_id)
        except DeadlineExceeded:
            return _io(INTERRUPTED)
        except (sqlite3.Error, OSError) as exc:
            log.error('component "%s": cannot open SQLite database "%s" (%s): %s',
                      self.component_id, label, database.description, exc)
            return _io(f'cannot open database "{label}"')
        return Ok(table.add(store, conn))

    def execute(self, store: Any, handle: Any, statement: str, parameters: list[Any],
                table: ResourceTable[GuestConnection] | None = None) -> Ok | Err:
        table = self.connections[SQLITE] if table is None else table
        try:
            conn = table.get(store, handle)
        except LookupError:
            return Err(wc.Variant("invalid-connection"))
        return conn.execute(statement, [_to_sql(p) for p in parameters])


@dataclass(frozen=True)
class SqliteStatement:
    """One `host up --sqlite`: a statement for the default database, or `@FILE[:LABEL]`:
    the file's statements (read at start-up) for the database LABEL (default
    "default"), as `spin up` reads them."""

    source: str  # as given, for messages
    sql: str
    label: str = DEFAULT_LABEL
    script: bool = False  # a file: any number of statements

    @classmethod
    def parse(cls, source: str) -> SqliteStatement:
        """ValueError says what is wrong."""
        if not source.startswith("@"):
            if not source.strip():
                raise ValueError("expected an SQL statement or @FILE[:LABEL]")
            return cls(source, source)
        file, sep, label = source[1:].strip().partition(":")
        file, label = file.strip(), label.strip()
        if not file:
            raise ValueError("file path is empty (expected @FILE or @FILE:LABEL)")
        if sep and not label:
            raise ValueError("database label is empty (expected @FILE:LABEL)")
        try:
            sql = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{file} is not UTF-8 text") from None
        return cls(source, sql, label or DEFAULT_LABEL, script=True)


class SqliteFactor(Factor):
    """Checks each label's database the first time a component is granted it."""

    manifest_keys = ("sqlite_databases",)
    runtime_config_keys = ("sqlite_database",)

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self.limits = app.settings.sqlite_limits
        self.databases: dict[str, SqliteDatabase] = {}  # by label

    def start(self) -> None:
        """`host up --sqlite`: run each statement (or file) with the host's rights, in order."""
        for statement in self.app.settings.sqlite_statements:
            where = f"--sqlite {statement.source!r}"
            database = self._database(where, statement.label)
            if database.path is not None and not self.app.settings.seed_shared:
                continue  # another process (the first worker) runs it on the shared file
            try:
                conn = database.connect()
                try:
                    if statement.script:
                        conn.executescript(statement.sql)
                    else:
                        conn.execute(statement.sql).fetchall()
                finally:
                    conn.close()
            except (sqlite3.Error, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ConfigError(f'{where}: {reason} (SQLite database "{statement.label}", '
                                  f"{database.description})") from None
        if self.app.settings.sqlite_statements:
            self.app.report(f"Ran {len(self.app.settings.sqlite_statements)} SQLite "
                            "statement(s) (--sqlite)")

    def for_component(self, component: Component) -> Sqlite:
        return Sqlite(component.id, {label: self._database(f'component "{component.id}"', label)
                                     for label in component.sqlite_databases}, self.limits)

    def _database(self, user: str, label: str) -> SqliteDatabase:
        if label in self.databases:
            return self.databases[label]
        runtime_config = self.app.runtime_config
        config = runtime_config.sqlite_databases.get(label)
        where = ""
        if config is not None:
            path = config.path
            if runtime_config.path is not None:
                where = f", [sqlite_database.{label}] in {runtime_config.path}"
        elif label == DEFAULT_LABEL:
            state_dir = self.app.settings.state_dir
            path = state_dir / DEFAULT_FILE if state_dir else None
        else:
            in_file = f" in {runtime_config.path}" if runtime_config.path else ""
            raise ComponentError(
                f'{self.app.manifest.path}: unknown sqlite_databases label "{label}" for '
                f'{user}: only "{DEFAULT_LABEL}" is built in; define '
                f"[sqlite_database.{label}] in the runtime config{in_file} "
                "(--runtime-config-file)")
        database = SqliteDatabase(label, path, self.limits)
        try:
            if self.app.check_only and path is not None:
                check_file(path)  # creates nothing; an in-memory database is checked fully
            else:
                database.check()
        except (sqlite3.Error, OSError, BackendError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f'SQLite database "{label}" ({user}{where}): '
                              f"cannot open {database.description}: {reason}") from None
        checked = " (checked, not opened)" if self.app.check_only and path is not None else ""
        self.app.report(f'SQLite database "{label}": {database.description}{checked}')
        self.databases[label] = database
        return database
