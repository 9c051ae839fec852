"""Resource handles cross host calls as HostHandle/GuestHandle through raw C calls
(host/runtime/marshal.py, `ResourceCalls`), not wasmtime-py objects: a host-made
handle reaches the guest, comes back borrowed and owned, and a dropped one closes
its value; nothing is freed twice or resolved twice."""

from __future__ import annotations

from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc

from host.capabilities import ResourceTable
from host.runtime.calls import TypedFunc, define_func, import_func_types
from host.runtime.marshal import GuestHandle, HostHandle

COMPONENT = """(component
  (import "host:test/res" (instance $h
    (export "r" (type (sub resource)))
    (export "make" (func (param "v" u32) (result (own 0))))
    (export "peek" (func (param "h" (borrow 0)) (result u32)))
    (export "take" (func (param "h" (own 0)) (result u32)))
    (export "twice" (func (param "h" (borrow 0)) (result u32)))))
  (alias export $h "r" (type $r))
  (alias export $h "make" (func $make))
  (alias export $h "peek" (func $peek))
  (alias export $h "take" (func $take))
  (alias export $h "twice" (func $twice))
  (core func $make_c (canon lower (func $make)))
  (core func $peek_c (canon lower (func $peek)))
  (core func $take_c (canon lower (func $take)))
  (core func $twice_c (canon lower (func $twice)))
  (core func $drop_c (canon resource.drop $r))
  (core module $m
    (import "h" "make" (func $make (param i32) (result i32)))
    (import "h" "peek" (func $peek (param i32) (result i32)))
    (import "h" "take" (func $take (param i32) (result i32)))
    (import "h" "twice" (func $twice (param i32) (result i32)))
    (import "h" "drop" (func $drop (param i32)))
    (func (export "run") (result i32)
      (local $a i32) (local $b i32) (local $sum i32)
      (local.set $a (call $make (i32.const 7)))
      (local.set $b (call $make (i32.const 9)))
      (local.set $sum (i32.add (i32.mul (call $peek (local.get $a)) (i32.const 100))
                               (call $take (local.get $b))))
      (call $drop (local.get $a))
      (local.get $sum))
    (func (export "twice") (result i32)
      (call $twice (call $make (i32.const 1)))))
  (core instance $i (instantiate $m (with "h" (instance
    (export "make" (func $make_c)) (export "peek" (func $peek_c))
    (export "take" (func $take_c)) (export "twice" (func $twice_c))
    (export "drop" (func $drop_c))))))
  (func (export "run") (result u32) (canon lift (core func $i "run")))
  (func (export "twice") (result u32) (canon lift (core func $i "twice"))))"""


def _instance(table: ResourceTable[int]) -> tuple[wasmtime.Store, wc.Component, Any]:
    engine = wasmtime.Engine()
    component = wc.Component(engine, COMPONENT)
    types = import_func_types(component, engine, "host:test/res")
    seen: list[Any] = []

    def twice(store: Any, h: GuestHandle) -> int:
        seen.append(h)
        value = table.get(store, h)
        h.to_host(store)  # a second resolution of the same handle
        return value

    functions = {
        "make": lambda store, v: table.add(store, v),
        "peek": lambda store, h: (seen.append(h), table.get(store, h))[1],
        "take": lambda store, h: (seen.append(h), table.take(store, h))[1],
        "twice": twice,
    }
    linker = wc.Linker(engine)
    with linker.root() as root, root.add_instance("host:test/res") as instance:
        table.define(instance, "r")
        for name, func in functions.items():
            define_func(instance, name, types[name], func)
    store = wasmtime.Store(engine)
    return store, component, (linker.instantiate(store, component), engine, seen)


def _call(store: wasmtime.Store, component: wc.Component, found: Any, name: str) -> Any:
    instance, engine, _ = found
    func = instance.get_func(store, name)
    fty: wc.FuncType = component.type.exports(engine)[name].ty
    return TypedFunc(fty).call(store, func, ())


def test_host_handles_go_out_come_back_borrowed_and_owned_and_close_on_drop() -> None:
    closed: list[int] = []
    table: ResourceTable[int] = ResourceTable("r", close=closed.append)
    store, component, found = _instance(table)
    assert _call(store, component, found, "run") == 7 * 100 + 9
    assert closed == [7]  # dropped by the guest; 9 was taken by the host, not closed
    assert table.live(store) == 0
    seen = found[2]
    assert [type(h) for h in seen] == [GuestHandle, GuestHandle]
    assert all(h.address == 0 for h in seen)  # resolved and freed, once each


def test_a_handle_resolves_once() -> None:
    table: ResourceTable[int] = ResourceTable("r")
    store, component, found = _instance(table)
    with pytest.raises(wasmtime.WasmtimeError, match="already converted"):
        _call(store, component, found, "twice")


def test_add_returns_a_host_handle_of_the_table_type() -> None:
    table: ResourceTable[str] = ResourceTable("r")
    store = wasmtime.Store()
    handle = table.add(store, "x")
    assert isinstance(handle, HostHandle)
    assert (handle.type_id, handle.owned) == (table.type_id, True)
    assert table.get(store, handle) == "x"
    with pytest.raises(LookupError):  # another instance's store cannot use it
        table.get(wasmtime.Store(), handle)
