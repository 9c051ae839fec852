"""Spin's own interfaces at the host-function level: fermyon:spin/variables (Spin's name rules and
errors), fermyon:spin/key-value (grants, store-table-full, get-keys over pages and its bound),
spin:sqlite@3.0.0 (last-insert-rowid, changes), and the interfaces answered as not provided.
Through a real server: tests/test_spin_python.py."""

from __future__ import annotations

import pytest
import wasmtime
import wasmtime.component as wc

from host.backends.sqlite import SqliteKeyValue
from host.capabilities import Err, Ok
from host.capabilities.keyvalue import SPIN_KEY_VALUE, KeyValue
from host.capabilities.sqlite import SPIN_SQLITE_3, Sqlite, SqliteDatabase
from host.capabilities.unprovided import UNPROVIDED, Unprovided
from host.capabilities.variables import SPIN_VARIABLES, Config, invalid_name
from host.limits import KeyValueLimits


@pytest.fixture
def store() -> wasmtime.Store:
    return wasmtime.Store(wasmtime.Engine())


@pytest.mark.parametrize("name", ["a", "greeting", "api_key2", "a1_b2"])
def test_valid_variable_names(name: str) -> None:
    assert invalid_name(name) is None


@pytest.mark.parametrize(("name", "reason"), [
    ("", "must not be empty"),
    ("Greeting", "invalid character 'G'"),
    ("with-dash", "invalid character '-'"),
    ("é", "invalid character 'é'"),
    ("1abc", "must start with a lowercase ASCII letter"),
    ("_abc", "must start with a lowercase ASCII letter"),
    ("abc_", "must end with a lowercase ASCII letter or digit"),
    ("a__b", "must not contain multiple consecutive underscores"),
])
def test_invalid_variable_names_say_why(name: str, reason: str) -> None:
    message = invalid_name(name)
    assert message is not None and reason in message


def test_spin_variables_answer_as_spin(store: wasmtime.Store) -> None:
    config = Config("web", {"greeting": "hi"})
    get = config.functions(SPIN_VARIABLES)["get"]
    assert get(store, "greeting") == Ok("hi")
    undefined = get(store, "other")
    assert isinstance(undefined, Err) and undefined.value.tag == "undefined"
    invalid = get(store, "Other")
    assert isinstance(invalid, Err) and invalid.value.tag == "invalid-name"


def test_wasi_config_reads_none_for_invalid_and_unknown_names(store: wasmtime.Store) -> None:
    # wasi:config's error has only upstream and io: Spin answers none here.
    config = Config("web", {"greeting": "hi"})
    get = config.functions("wasi:config/store@0.2.0-draft-2024-09-27")["get"]
    assert get(store, "Bad Name") == Ok(None)
    assert get(store, "other") == Ok(None)
    assert get(store, "greeting") == Ok("hi")


def _key_value(limits: KeyValueLimits) -> KeyValue:
    return KeyValue("web", {"default": SqliteKeyValue(None, limits)}, limits)


def test_spin_key_value_grants_and_round_trip(store: wasmtime.Store) -> None:
    kv = _key_value(KeyValueLimits())
    f = kv.functions(SPIN_KEY_VALUE)
    assert f["[static]store.open"](store, "other") == Err(wc.Variant("access-denied"))
    opened = f["[static]store.open"](store, "default")
    assert isinstance(opened, Ok)
    handle = opened.value
    assert f["[method]store.set"](store, handle, "k", b"v") == Ok(None)
    assert f["[method]store.get"](store, handle, "k") == Ok(b"v")
    assert f["[method]store.exists"](store, handle, "k") == Ok(True)
    assert f["[method]store.get-keys"](store, handle) == Ok(["k"])
    assert f["[method]store.delete"](store, handle, "k") == Ok(None)
    assert f["[method]store.get"](store, handle, "k") == Ok(None)


def test_spin_key_value_store_table_full(store: wasmtime.Store) -> None:
    kv = _key_value(KeyValueLimits(max_open_stores=2))
    open_store = kv.functions(SPIN_KEY_VALUE)["[static]store.open"]
    assert all(isinstance(open_store(store, "default"), Ok) for _ in range(2))
    assert open_store(store, "default") == Err(wc.Variant("store-table-full"))
    # Another instance's table is its own.
    assert isinstance(open_store(wasmtime.Store(wasmtime.Engine()), "default"), Ok)


def test_spin_get_keys_reads_every_page_and_is_bounded(store: wasmtime.Store) -> None:
    kv = _key_value(KeyValueLimits(page_size=3, max_batch_bytes=400))
    f = kv.functions(SPIN_KEY_VALUE)
    handle = f["[static]store.open"](store, "default").value
    for i in range(10):
        f["[method]store.set"](store, handle, f"key{i}", b"x")
    assert sorted(f["[method]store.get-keys"](store, handle).value) == [
        f"key{i}" for i in range(10)]
    for i in range(10, 40):
        f["[method]store.set"](store, handle, f"key{i}", b"x")
    refused = f["[method]store.get-keys"](store, handle)
    assert isinstance(refused, Err) and refused.value.tag == "other"
    assert "the batch limit" in refused.value.payload


def test_spin_sqlite_3_rowid_and_changes(store: wasmtime.Store) -> None:
    database = SqliteDatabase("default", None)
    database.check()
    sqlite = Sqlite("web", {"default": database})
    f = sqlite.functions(SPIN_SQLITE_3)
    handle = f["[static]connection.open"](store, "default").value
    execute = f["[method]connection.execute"]
    assert isinstance(execute(store, handle, "CREATE TABLE t (v TEXT)", []), Ok)
    execute(store, handle, "INSERT INTO t VALUES ('a'), ('b')", [])
    assert f["[method]connection.last-insert-rowid"](store, handle) == 2
    assert f["[method]connection.changes"](store, handle) == 2
    execute(store, handle, "UPDATE t SET v = 'c' WHERE v = 'a'", [])
    assert f["[method]connection.changes"](store, handle) == 1
    execute(store, handle, "SELECT * FROM t", [])  # a query leaves both as they were
    assert f["[method]connection.changes"](store, handle) == 1
    assert f["[method]connection.last-insert-rowid"](store, handle) == 2
    sqlite.release_store(id(store))


@pytest.mark.parametrize("interface", [i for i, v in UNPROVIDED.items() if v[1]])
def test_unprovided_interfaces_answer_their_error_case(store: wasmtime.Store,
                                                       interface: str) -> None:
    what, case, _ = UNPROVIDED[interface]
    answer = Unprovided("web").fallback(interface, "[static]connection.open")
    result = answer(store, "postgres://db:5432/x")
    assert result == Err(wc.Variant(case, f"this host does not provide {what} ({interface}) yet"))
