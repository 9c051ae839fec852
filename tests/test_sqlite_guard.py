"""A hostile guest's SQL against the host's SQLite: host/capabilities/sqlite.py.

Fast unit tests on guest connections (the end-to-end suite drives the same
attacks through a real server). Every attack must answer the interface's error
value, leave no file behind, name no host path, and leave the connection usable;
ordinary app SQL must keep working. The last section bounds the key-value
SQLite backend (host/backends/sqlite.py) by the request's deadline.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime.component as wc

from host.backends.sqlite import SqliteKeyValue
from host.capabilities import Err, Ok
from host.capabilities.sqlite import (
    INTERRUPTED,
    GuestConnection,
    Sqlite,
    SqliteDatabase,
    refusal,
)
from host.deadline import request_deadline
from host.errors import BackendError
from host.limits import SqliteLimits

ROOT = Path(__file__).resolve().parent.parent
ATTACH_REFUSED = ("not authorized: attaching a database (ATTACH, VACUUM, VACUUM INTO) "
                  "is not allowed")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def database(state: Path) -> SqliteDatabase:
    database = SqliteDatabase("default", state / "sqlite_db.db")
    database.check()
    return database


@pytest.fixture
def guest(database: SqliteDatabase) -> Iterator[GuestConnection]:
    conn = database.open("probe")
    yield conn
    conn.close()


def ok(conn: GuestConnection, sql: str, *params: object) -> list[list[object]]:
    """The rows of a statement that must succeed, as plain Python values."""
    result = conn.execute(sql, list(params))
    assert isinstance(result, Ok), f"{sql}: {result}"
    _columns, rows = result.value
    return [[value.payload for value in row[0]] for row in rows]


def io_error(conn: GuestConnection, sql: str, *params: object) -> str:
    """The io(...) message of a statement that must fail."""
    result = conn.execute(sql, list(params))
    assert isinstance(result, Err), f"{sql} succeeded: {result}"
    assert isinstance(result.value, wc.Variant) and result.value.tag == "io", result
    message: str = result.value.payload
    return message


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# --- Escaping the database: ATTACH, VACUUM INTO, paths ----------------------------------


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE '{dir}/anywhere.db' AS x",
    "ATTACH '{dir}/state/other.db' AS x",
    "ATTACH 'file:{dir}/uri.db?mode=rwc' AS x",
    "ATTACH ':memory:' AS x",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",  # attaches a temporary database
])
def test_attach_and_vacuum_are_refused_and_create_no_file(
        guest: GuestConnection, tmp_path: Path, statement: str) -> None:
    ok(guest, "CREATE TABLE t(v)")
    before = files_under(tmp_path)
    assert io_error(guest, statement.format(dir=tmp_path)) == ATTACH_REFUSED
    assert io_error(guest, "CREATE TABLE x.t(v)") == "unknown database x"
    assert files_under(tmp_path) == before
    assert ok(guest, "SELECT count(*) FROM t") == [[0]]  # still usable


def test_attach_of_another_store_neither_reads_nor_writes_it(
        guest: GuestConnection, state: Path) -> None:
    kv = SqliteKeyValue(state / "sqlite_key_value.db")
    kv.set("other-label", "secret", b"v")
    kv.close()
    other = SqliteDatabase("billing", state / "billing.db")
    other.check()
    with other.connect() as host:
        host.execute("CREATE TABLE accounts(balance)")
        host.execute("INSERT INTO accounts VALUES (100)")
    for target in ("sqlite_key_value.db", "billing.db"):
        snapshot = (state / target).read_bytes()
        assert io_error(guest, f"ATTACH '{state / target}' AS x") == ATTACH_REFUSED
        assert io_error(guest, "SELECT * FROM x.spin_key_value") == (
            "no such table: x.spin_key_value")
        assert io_error(guest, "UPDATE x.accounts SET balance = 0") == (
            "no such table: x.accounts")
        assert (state / target).read_bytes() == snapshot


@pytest.mark.parametrize("statement", [
    "PRAGMA database_list",
    "SELECT * FROM pragma_database_list",
    "SELECT file FROM pragma_database_list()",
])
def test_database_list_is_refused(guest: GuestConnection, statement: str) -> None:
    assert io_error(guest, statement) == 'not authorized: PRAGMA "database_list" is not allowed'


def test_in_memory_database_is_guarded_too(tmp_path: Path) -> None:
    database = SqliteDatabase("default", None)
    database.check()
    conn = database.open("probe")
    try:
        assert io_error(conn, f"ATTACH '{tmp_path}/x.db' AS x") == ATTACH_REFUSED
        assert not (tmp_path / "x.db").exists()
        assert ok(conn, "SELECT 40 + 2") == [[42]]
    finally:
        conn.close()


# --- Pragmas ----------------------------------------------------------------------------


@pytest.mark.parametrize("pragma", [
    "temp_store_directory = '{dir}'", "data_store_directory = '{dir}'", "temp_store = MEMORY",
    "journal_mode", "journal_mode = DELETE", "journal_mode = OFF", "mmap_size = 1073741824",
    "locking_mode = EXCLUSIVE", "synchronous = OFF", "wal_checkpoint(TRUNCATE)",
    "wal_autocheckpoint = 0", "cache_size = -2000000", "hard_heap_limit = 1",
    "soft_heap_limit = 1", "threads = 8", "writable_schema = ON", "trusted_schema = OFF",
    "busy_timeout = 3600000", "compile_options", "function_list", "module_list",
    "schema_version = 1", "max_page_count = 1", "secure_delete = OFF", "shrink_memory",
    "main.Journal_Mode = delete", "TEMP_STORE_DIRECTORY = '{dir}'",
])
def test_pragmas_touching_files_or_process_state_are_refused(
        guest: GuestConnection, tmp_path: Path, pragma: str) -> None:
    name = pragma.split("=")[0].split("(")[0].strip().split(".")[-1].lower()
    message = io_error(guest, f"PRAGMA {pragma.format(dir=tmp_path)}")
    assert message == f'not authorized: PRAGMA "{name}" is not allowed'


def test_a_host_statement_sent_by_the_guest_is_checked_too(guest: GuestConnection) -> None:
    """The host sets busy_timeout on the guest's connection; the same text from the
    guest is still refused (no statement cache hands it a host-authorized plan)."""
    ok(guest, "SELECT 1")  # outside a request, the host set "PRAGMA busy_timeout = 30000"
    assert io_error(guest, "PRAGMA busy_timeout = 30000") == (
        'not authorized: PRAGMA "busy_timeout" is not allowed')


def test_read_only_pragmas_cannot_be_set(guest: GuestConnection) -> None:
    assert ok(guest, "PRAGMA page_size") == [[4096]]
    assert io_error(guest, "PRAGMA page_size = 1024") == (
        "not authorized: setting PRAGMA page_size is not allowed (it may only be read)")


def test_allowed_pragmas(guest: GuestConnection) -> None:
    ok(guest, "CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    ok(guest, "CREATE TABLE child(id INTEGER PRIMARY KEY, parent REFERENCES parent(id))")
    ok(guest, "CREATE INDEX child_parent ON child(parent)")
    assert [row[1] for row in ok(guest, "PRAGMA table_info(child)")] == ["id", "parent"]
    assert [row[1] for row in ok(guest, "SELECT * FROM pragma_table_xinfo('child')")] == [
        "id", "parent"]
    assert ok(guest, "PRAGMA index_list(child)")[0][1] == "child_parent"
    assert ok(guest, "PRAGMA index_info(child_parent)")[0][2] == "parent"
    assert ok(guest, "PRAGMA foreign_key_list(child)")[0][2] == "parent"
    assert "child" in [row[1] for row in ok(guest, "PRAGMA table_list")]
    ok(guest, "PRAGMA foreign_keys = ON")
    assert ok(guest, "PRAGMA foreign_keys") == [[1]]
    assert io_error(guest, "INSERT INTO child(parent) VALUES (7)") == (
        "FOREIGN KEY constraint failed")
    ok(guest, "PRAGMA user_version = 3")
    assert ok(guest, "PRAGMA user_version") == [[3]]
    ok(guest, "PRAGMA application_id = 42")
    ok(guest, "PRAGMA recursive_triggers = OFF")
    ok(guest, "PRAGMA defer_foreign_keys = ON")
    ok(guest, "PRAGMA case_sensitive_like = ON")
    assert ok(guest, "PRAGMA integrity_check") == [["ok"]]
    assert ok(guest, "PRAGMA quick_check") == [["ok"]]
    assert ok(guest, "PRAGMA foreign_key_check") == []
    ok(guest, "PRAGMA optimize")
    ok(guest, "PRAGMA data_version")
    ok(guest, "PRAGMA page_count")
    ok(guest, "PRAGMA freelist_count")


# --- Functions and virtual tables: the FTS3 tokenizer ------------------------------------


def test_fts3_tokenizer_pointer_is_not_returned(guest: GuestConnection) -> None:
    for statement in ("SELECT fts3_tokenizer('simple')", "SELECT hex(fts3_tokenizer('porter'))",
                      "SELECT FTS3_TOKENIZER('simple')"):
        assert io_error(guest, statement) == (
            "not authorized: function fts3_tokenizer() is not allowed")


def test_load_extension_is_refused(guest: GuestConnection) -> None:
    assert io_error(guest, "SELECT load_extension('/tmp/x.so')") == (
        "not authorized: function load_extension() is not allowed")


# Run in a child process, so that a crash fails the test instead of killing pytest.
FTS3_ATTACK = """
import json, sys
from pathlib import Path
from host.capabilities.sqlite import SqliteDatabase
database = SqliteDatabase("default", Path(sys.argv[1]))
database.check()
conn = database.open("probe")
for statement in json.loads(sys.argv[2]):
    result = conn.execute(statement, [])
    print(result.value.payload if hasattr(result.value, "tag") else "ok", flush=True)
"""
TOKENIZER_AT = "fts3_tokenizer('e', x'4141414141414141')"
FTS3_DENIED = "not authorized: function fts3_tokenizer() is not allowed"
FTS3_UNSAFE = "unsafe use of fts3_tokenizer()"  # SQLITE_DIRECTONLY: never from schema
FTS3_STEPS = [
    (f"SELECT {TOKENIZER_AT}", FTS3_DENIED),
    ("SELECT fts3_tokenizer('e', zeroblob(8))", FTS3_DENIED),
    (f"CREATE TABLE d(a, b DEFAULT ({TOKENIZER_AT}))", "ok"),
    ("INSERT INTO d(a) VALUES (1)", FTS3_UNSAFE),
    (f"CREATE VIEW v AS SELECT {TOKENIZER_AT}", "ok"),
    ("SELECT * FROM v", FTS3_UNSAFE),
    (f"CREATE TEMP TRIGGER tr AFTER INSERT ON d BEGIN SELECT {TOKENIZER_AT}; END", "ok"),
    ("INSERT INTO d(a) VALUES (2)", FTS3_DENIED),
    ("CREATE VIRTUAL TABLE temp.t USING fts3(tokenize=e)", "unknown tokenizer: e"),
    ("CREATE VIRTUAL TABLE temp.u USING fts4(tokenize=e)", "unknown tokenizer: e"),
    ("CREATE VIRTUAL TABLE temp.k USING fts3tokenize(e)", 'not authorized: virtual table '
     'module "fts3tokenize" is not allowed (only fts3, fts4, fts5, rtree, rtree_i32)'),
    ("INSERT INTO temp.t VALUES ('boom')", "no such table: temp.t"),
]


def test_fts3_tokenizer_cannot_be_registered_so_the_host_cannot_be_crashed(
        tmp_path: Path) -> None:
    statements = json.dumps([statement for statement, _ in FTS3_STEPS])
    child = subprocess.run(
        [sys.executable, "-c", FTS3_ATTACK, str(tmp_path / "db.sqlite"), statements],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr  # was -11: the host's SIGSEGV
    assert child.stdout.splitlines() == [expected for _, expected in FTS3_STEPS]


@pytest.mark.parametrize("module", ["fts3tokenize(simple)", "dbstat", "fts4aux(t)",
                                    "fts5vocab(t, row)", "json_each", "pragma_database_list"])
def test_other_virtual_table_modules_are_refused(guest: GuestConnection, module: str) -> None:
    name = module.split("(")[0]
    assert io_error(guest, f"CREATE VIRTUAL TABLE temp.x USING {module}") == (
        f'not authorized: virtual table module "{name}" is not allowed '
        "(only fts3, fts4, fts5, rtree, rtree_i32)")


def test_shadow_tables_are_read_only_to_the_guest(guest: GuestConnection) -> None:
    """Defensive mode: the guest cannot hand FTS/R*Tree C code crafted internals."""
    ok(guest, "CREATE VIRTUAL TABLE f5 USING fts5(body)")
    ok(guest, "CREATE VIRTUAL TABLE f3 USING fts3(body)")
    ok(guest, "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1)")
    ok(guest, "INSERT INTO f5 VALUES ('hello world')")
    ok(guest, "INSERT INTO f3 VALUES ('hello world')")
    ok(guest, "INSERT INTO r VALUES (1, 0, 1)")
    for statement, table in [("UPDATE f5_data SET block = x'00'", "f5_data"),
                             ("INSERT INTO f5_idx VALUES (1, x'00', 2)", "f5_idx"),
                             ("UPDATE f3_segdir SET root = x'ff'", "f3_segdir"),
                             ("DELETE FROM f3_content", "f3_content"),
                             ("UPDATE r_node SET data = x'0001'", "r_node")]:
        assert io_error(guest, statement) == f"table {table} may not be modified"
    assert ok(guest, "SELECT body FROM f5 WHERE f5 MATCH 'hello'") == [["hello world"]]
    assert ok(guest, "SELECT * FROM r") == [[1, 0.0, 1.0]]


# --- Deadlines ----------------------------------------------------------------------------

RUNAWAY_CTE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 100000000) SELECT count(*) FROM c")


def test_a_long_statement_stops_at_the_request_deadline(guest: GuestConnection) -> None:
    started = time.monotonic()
    with request_deadline(0.5):
        assert io_error(guest, RUNAWAY_CTE) == INTERRUPTED
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 2.0  # unbounded, this ran for more than 6 s
    assert ok(guest, "SELECT 1") == [[1]]  # the connection survives


def test_an_interrupted_write_rolls_back(guest: GuestConnection) -> None:
    ok(guest, "CREATE TABLE t(x)")
    with request_deadline(0.3):
        assert io_error(guest, "INSERT INTO t " + RUNAWAY_CTE.replace("count(*)", "x")) == (
            INTERRUPTED)
    assert ok(guest, "SELECT count(*) FROM t") == [[0]]


def test_nothing_runs_after_the_deadline(database: SqliteDatabase,
                                         guest: GuestConnection) -> None:
    ok(guest, "CREATE TABLE t(x)")
    with request_deadline(0.0):
        assert io_error(guest, "INSERT INTO t VALUES (1)") == INTERRUPTED
        capability = Sqlite("probe", {"default": database})
        assert capability.open(None, "default") == Err(wc.Variant("io", INTERRUPTED))
    assert ok(guest, "SELECT count(*) FROM t") == [[0]]


def test_waiting_for_a_lock_ends_at_the_deadline(database: SqliteDatabase,
                                                 guest: GuestConnection) -> None:
    ok(guest, "CREATE TABLE t(x)")
    with database.connect() as writer:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with request_deadline(0.5):
            assert io_error(guest, "INSERT INTO t VALUES (1)") == "database is locked"
        assert time.monotonic() - started < 1.5  # the busy timeout alone is 30 s
        writer.execute("ROLLBACK")
    ok(guest, "INSERT INTO t VALUES (1)")


# --- Sizes: values, results, statements ---------------------------------------------------


def test_zeroblob_over_the_value_limit_is_refused(guest: GuestConnection) -> None:
    too_big = ("string or blob too big (the host allows 1048576 bytes per string, blob or "
               "row: max_value_bytes)")
    assert io_error(guest, "SELECT zeroblob(4194304)") == too_big
    assert io_error(guest, "SELECT randomblob(1048577)") == too_big
    assert io_error(guest, "SELECT zeroblob(600000) || zeroblob(600000)") == too_big
    assert io_error(guest, "SELECT ?", b"x" * (1024 * 1024 + 1)) == too_big
    assert len(ok(guest, "SELECT zeroblob(1048576)")[0][0]) == 1048576  # type: ignore[arg-type]


def test_result_over_the_cap_is_refused_before_it_is_built(database: SqliteDatabase) -> None:
    limits = SqliteLimits(max_result_bytes=100_000)
    conn = GuestConnection(database.connect(), limits, "probe", "default")
    try:
        many_rows = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                     "WHERE x < 1000000) SELECT x, printf('%.100c', 'y') FROM c")
        tracemalloc.start()
        try:
            message = io_error(conn, many_rows)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert message == ("result too large: over the host's limit of 100000 bytes for one "
                           "statement (max_result_bytes); select fewer rows or columns, or "
                           "page with LIMIT")
        assert peak < 2_000_000  # the whole result would be ~200 MB of Python objects
        assert len(ok(conn, many_rows + " LIMIT 100")) == 100
    finally:
        conn.close()


def test_default_result_cap(guest: GuestConnection) -> None:
    three_mib = ("SELECT zeroblob(1000000) FROM (SELECT 1 UNION ALL SELECT 2 "
                 "UNION ALL SELECT 3)")
    assert io_error(guest, three_mib).startswith(
        "result too large: over the host's limit of 2097152 bytes")


SMALL = SqliteLimits(max_sql_bytes=1000, max_columns=10, max_parameters=5,
                     max_compound_select=3, max_like_pattern_bytes=10, max_expression_depth=20)


@pytest.mark.parametrize(("statement", "params", "message"), [
    ("SELECT '" + "x" * 1000 + "'", [], "query string is too large"),
    ("SELECT " + ", ".join(["1"] * 11), [], "too many columns in result set"),
    ("CREATE TABLE wide(" + ", ".join(f"c{i}" for i in range(11)) + ")", [],
     "too many columns on wide"),
    ("SELECT ?6", [1, 2, 3, 4, 5, 6], "variable number must be between ?1 and ?5"),
    ("SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4", [],
     "too many terms in compound SELECT"),
    ("SELECT 'a' LIKE '" + "%" * 11 + "'", [], "LIKE or GLOB pattern too complex"),
    ("SELECT 1" + " + 1" * 25, [], "Expression tree is too large (maximum depth 20)"),
])
def test_sqlite_limits_apply(database: SqliteDatabase, statement: str, params: list[Any],
                             message: str) -> None:
    conn = GuestConnection(database.connect(), SMALL, "probe", "default")
    try:
        assert io_error(conn, statement, *params) == message
    finally:
        conn.close()


def test_statement_ops_and_trigger_depth_limits(database: SqliteDatabase) -> None:
    limits = SqliteLimits(max_statement_ops=500, max_trigger_depth=5)
    conn = GuestConnection(database.connect(), limits, "probe", "default")
    try:
        values = ", ".join(f"({i})" for i in range(200))
        ok(conn, "CREATE TABLE t(x)")
        assert io_error(conn, f"INSERT INTO t VALUES {values}") == (
            "out of memory: the statement is too large or complex for the host "
            "(at most 500 instructions per statement)")
        ok(conn, "PRAGMA recursive_triggers = ON")
        ok(conn, "CREATE TRIGGER again AFTER INSERT ON t WHEN new.x < 100 "
                 "BEGIN INSERT INTO t VALUES (new.x + 1); END")
        assert io_error(conn, "INSERT INTO t VALUES (0)") == "too many levels of trigger recursion"
        assert ok(conn, "SELECT count(*) FROM t") == [[0]]
    finally:
        conn.close()


# --- Errors: no host paths, one log line per refusal --------------------------------------


def test_open_error_names_the_label_not_the_path(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "is-a-directory.db"
    database = SqliteDatabase("billing", path)
    path.mkdir()
    capability = Sqlite("probe", {"billing": database})
    with caplog.at_level(logging.ERROR, logger="host.sqlite"):
        assert capability.open(None, "billing") == Err(
            wc.Variant("io", 'cannot open database "billing"'))
    assert str(path) in caplog.text  # the operator gets the cause
    assert 'component "probe"' in caplog.text


def test_no_message_names_a_host_path(guest: GuestConnection, tmp_path: Path) -> None:
    attacks = [f"ATTACH '{tmp_path}/x.db' AS x", f"VACUUM INTO '{tmp_path}/x.db'",
               "PRAGMA database_list", "SELECT * FROM pragma_database_list",
               f"PRAGMA temp_store_directory = '{tmp_path}'", "SELECT fts3_tokenizer('simple')",
               "SELECT * FROM x.t", "PRAGMA compile_options", "SELECT sqlite_source_id()"]
    for statement in attacks:
        result = guest.execute(statement, [])
        assert str(tmp_path) not in str(result)
        assert "/" not in str(result.value.payload if isinstance(result, Err) else "")


def test_each_refusal_logs_one_warning_naming_component_and_rule(
        guest: GuestConnection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="host.sqlite"):
        io_error(guest, f"ATTACH '{tmp_path}/x.db' AS x")
        io_error(guest, "PRAGMA temp_store_directory = '/tmp'")
        io_error(guest, "SELECT fts3_tokenizer('simple')")
        io_error(guest, "SELECT no_such_function()")  # an ordinary error: no warning
    lines = [r.getMessage() for r in caplog.records]
    prefix = 'component "probe", SQLite database "default": SQL refused: '
    assert lines == [
        f"{prefix}{ATTACH_REFUSED.removeprefix('not authorized: ')} "
        f"(target '{tmp_path}/x.db')",
        f'{prefix}PRAGMA "temp_store_directory" is not allowed',
        f"{prefix}function fts3_tokenizer() is not allowed",
    ]


@pytest.mark.parametrize(("args", "reason"), [
    ((sqlite3.SQLITE_ATTACH, "/x.db", None, None), "attaching a database"),
    ((sqlite3.SQLITE_DETACH, "x", None, None), "DETACH is not allowed"),
    ((sqlite3.SQLITE_PRAGMA, "Temp_Store_Directory", "/x", None), "PRAGMA"),
    ((sqlite3.SQLITE_READ, "t", "c", "other"), 'database "other" is not allowed'),
    ((sqlite3.SQLITE_FUNCTION, None, "LOAD_EXTENSION", None), "load_extension()"),
    ((sqlite3.SQLITE_CREATE_VTABLE, "t", "FTS3TOKENIZE", "main"), "fts3tokenize"),
    ((99, None, None, None), "SQLite action 99 is not allowed"),
])
def test_refusal_denies(args: tuple[int, str | None, str | None, str | None],
                        reason: str) -> None:
    assert reason in (refusal(*args) or "")


@pytest.mark.parametrize("args", [
    (sqlite3.SQLITE_READ, "t", "c", "main"),
    (sqlite3.SQLITE_CREATE_TEMP_TABLE, "t", None, "temp"),
    (sqlite3.SQLITE_FUNCTION, None, "json_extract", None),
    (sqlite3.SQLITE_CREATE_VTABLE, "t", "FTS5", "main"),
    (sqlite3.SQLITE_PRAGMA, "TABLE_INFO", "t", None),
    (sqlite3.SQLITE_PRAGMA, "data_version", None, "main"),
    (sqlite3.SQLITE_SAVEPOINT, "BEGIN", "s", None),
])
def test_refusal_allows(args: tuple[int, str | None, str | None, str | None]) -> None:
    assert refusal(*args) is None


# --- What apps do keeps working -------------------------------------------------------------


def test_ordinary_app_sql_works(guest: GuestConnection) -> None:
    ok(guest, "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
              "meta TEXT DEFAULT '{}', created TEXT DEFAULT (datetime('now')))")
    ok(guest, "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), "
              "title TEXT, body BLOB)")
    ok(guest, "CREATE INDEX posts_user ON posts(user_id)")
    ok(guest, "CREATE TABLE audit(what TEXT)")
    ok(guest, "CREATE TRIGGER posts_audit AFTER INSERT ON posts "
              "BEGIN INSERT INTO audit VALUES ('post ' || new.title); END")
    ok(guest, "CREATE VIEW post_counts AS SELECT u.name, count(p.id) AS n FROM users u "
              "LEFT JOIN posts p ON p.user_id = u.id GROUP BY u.id")
    assert ok(guest, "INSERT INTO users(name, meta) VALUES (?, ?) RETURNING id",
              "ann", '{"tags": ["a", "b"]}') == [[1]]
    ok(guest, "INSERT INTO users(name) VALUES (?) ON CONFLICT(name) DO NOTHING", "ann")
    ok(guest, "BEGIN")
    ok(guest, "INSERT INTO posts(user_id, title, body) VALUES (1, 'first', ?)", b"\x00\xff")
    ok(guest, "SAVEPOINT s")
    ok(guest, "INSERT INTO posts(user_id, title) VALUES (1, 'dropped')")
    ok(guest, "ROLLBACK TO s")
    ok(guest, "RELEASE s")
    ok(guest, "COMMIT")
    ok(guest, "BEGIN IMMEDIATE")
    ok(guest, "INSERT INTO users(name) VALUES ('rolled back')")
    ok(guest, "ROLLBACK")
    assert ok(guest, "SELECT * FROM post_counts") == [["ann", 1]]
    assert ok(guest, "SELECT what FROM audit") == [["post first"]]
    assert ok(guest, "SELECT body FROM posts") == [[b"\x00\xff"]]
    assert ok(guest, "SELECT u.name, p.title FROM users u JOIN posts p ON p.user_id = u.id "
                     "WHERE u.id = ?", 1) == [["ann", "first"]]
    assert ok(guest, "SELECT json_extract(meta, '$.tags[1]'), json_array_length(meta, '$.tags') "
                     "FROM users") == [["b", 2]]
    assert ok(guest, "SELECT value FROM users, json_each(users.meta, '$.tags')") == [["a"], ["b"]]
    assert ok(guest, "SELECT json_object('n', 1) ->> '$.n', json_group_array(name) FROM users"
              ) == [[1, '["ann"]']]
    assert ok(guest, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                     "WHERE i < 5) SELECT sum(i), group_concat(i) FROM n") == [[15, "1,2,3,4,5"]]
    assert ok(guest, "SELECT name, row_number() OVER (ORDER BY id) FROM users") == [["ann", 1]]
    assert ok(guest, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == [
        ["audit"], ["posts"], ["users"]]
    ok(guest, "CREATE TEMP TABLE scratch AS SELECT * FROM users")
    ok(guest, "CREATE TEMP VIEW scratch_names AS SELECT name FROM scratch")
    assert ok(guest, "SELECT * FROM scratch_names") == [["ann"]]
    ok(guest, "DROP VIEW scratch_names")
    ok(guest, "DROP TABLE temp.scratch")
    ok(guest, "ALTER TABLE posts RENAME TO articles")
    ok(guest, "ALTER TABLE articles ADD COLUMN tags TEXT")
    ok(guest, "ALTER TABLE articles RENAME COLUMN tags TO labels")
    ok(guest, "ALTER TABLE articles DROP COLUMN labels")
    ok(guest, "UPDATE articles SET title = upper(title) WHERE id = 1")
    ok(guest, "DELETE FROM audit")
    ok(guest, "ANALYZE")
    ok(guest, "REINDEX")
    ok(guest, "DROP TRIGGER posts_audit")
    ok(guest, "DROP INDEX posts_user")
    ok(guest, "DROP VIEW post_counts")
    assert ok(guest, "SELECT title, sqlite_version() IS NOT NULL FROM articles") == [["FIRST", 1]]


def test_full_text_and_rtree_tables_work(guest: GuestConnection) -> None:
    ok(guest, "CREATE VIRTUAL TABLE docs USING fts5(title, body)")
    ok(guest, "INSERT INTO docs VALUES (?, ?)", "Spin", "WebAssembly components on the server")
    ok(guest, "INSERT INTO docs VALUES (?, ?)", "SQLite", "an embedded database")
    assert ok(guest, "SELECT title, snippet(docs, 1, '[', ']', '...', 3) FROM docs "
                     "WHERE docs MATCH 'webassembly' ORDER BY bm25(docs)") == [
        ["Spin", "[WebAssembly] components on..."]]
    assert ok(guest, "SELECT highlight(docs, 0, '<', '>') FROM docs WHERE docs MATCH 'sqlite'"
              ) == [["<SQLite>"]]
    ok(guest, "CREATE VIRTUAL TABLE notes USING fts4(body, tokenize=porter)")
    ok(guest, "INSERT INTO notes VALUES ('running runners run')")
    assert ok(guest, "SELECT count(*) FROM notes WHERE notes MATCH 'run'") == [[1]]
    assert ok(guest, "SELECT length(matchinfo(notes)) > 0 FROM notes WHERE notes MATCH 'run'"
              ) == [[1]]
    ok(guest, "INSERT INTO notes(notes) VALUES ('optimize')")
    ok(guest, "CREATE VIRTUAL TABLE temp.old USING fts3(body)")
    ok(guest, "CREATE VIRTUAL TABLE boxes USING rtree(id, min_x, max_x, min_y, max_y)")
    ok(guest, "INSERT INTO boxes VALUES (1, 0, 10, 0, 10), (2, 20, 30, 20, 30)")
    assert ok(guest, "SELECT id FROM boxes WHERE min_x <= 5 AND max_x >= 5") == [[1]]
    ok(guest, "CREATE VIEW found AS SELECT title FROM docs WHERE docs MATCH 'database'")
    assert ok(guest, "SELECT * FROM found") == [["SQLite"]]
    ok(guest, "DROP VIEW found")
    ok(guest, "DROP TABLE docs")
    ok(guest, "DROP TABLE notes")
    ok(guest, "DROP TABLE temp.old")
    ok(guest, "DROP TABLE boxes")
    assert ok(guest, "SELECT count(*) FROM sqlite_master") == [[0]]


def test_two_guest_connections_share_the_database(database: SqliteDatabase) -> None:
    first, second = database.open("probe"), database.open("probe")
    try:
        ok(first, "CREATE TABLE t(x)")
        ok(first, "INSERT INTO t VALUES (1)")
        assert ok(second, "SELECT x FROM t") == [[1]]
    finally:
        first.close()
        second.close()


# --- The key-value SQLite backend: bounded by the request's deadline -------------------------


@pytest.fixture(params=["file", "memory"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteKeyValue]:
    store = SqliteKeyValue(tmp_path / "kv.db" if request.param == "file" else None)
    yield store
    store.close()


def test_kv_call_after_the_deadline_is_refused(kv: SqliteKeyValue) -> None:
    kv.set("s", "k", b"v")
    with request_deadline(0.0), pytest.raises(BackendError, match="deadline"):
        kv.get("s", "k")
    with request_deadline(0.0), pytest.raises(BackendError, match="deadline"):
        kv.increment("s", "n", 1)
    assert kv.get("s", "k") == b"v"
    assert kv.get("s", "n") is None


def test_kv_waiting_for_a_lock_ends_at_the_deadline(tmp_path: Path) -> None:
    kv = SqliteKeyValue(tmp_path / "kv.db")
    try:
        with sqlite3.connect(tmp_path / "kv.db", isolation_level=None) as writer:
            writer.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with request_deadline(0.5), pytest.raises(BackendError) as info:
                kv.increment("s", "n", 1)
            assert time.monotonic() - started < 1.5  # the busy timeout alone is 30 s
            assert str(tmp_path) not in str(info.value)
            writer.execute("ROLLBACK")
        assert kv.increment("s", "n", 1) == 1  # no transaction was left open
    finally:
        kv.close()


def test_kv_in_memory_lock_wait_ends_at_the_deadline() -> None:
    kv = SqliteKeyValue(None)
    try:
        kv._lock.acquire()  # another request's call, stuck
        try:
            started = time.monotonic()
            with request_deadline(0.3), pytest.raises(BackendError, match="deadline"):
                kv.get("s", "k")
            assert time.monotonic() - started < 1.5
        finally:
            kv._lock.release()
        assert kv.get("s", "k") is None
    finally:
        kv.close()


def test_kv_batch_stops_at_the_deadline(kv: SqliteKeyValue) -> None:
    keys = [f"k{i:06d}" for i in range(20_000)]
    kv.set_many("s", [(key, b"") for key in keys])
    started = time.monotonic()
    with request_deadline(0.02), pytest.raises(BackendError, match="deadline"):
        kv.get_many("s", keys)
    assert time.monotonic() - started < 1.5
    assert kv.get("s", "k000000") == b""
