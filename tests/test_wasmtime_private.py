"""host/runtime/wasmtime_private.py: the wasmtime-py internals the host uses still have
the shape it relies on. A failure here after a wasmtime-py upgrade names the symbol
that changed; fix host/runtime/wasmtime_private.py (or marshal.py) before serving."""

from __future__ import annotations

import ctypes
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc

from host.runtime import wasmtime_private as private
from host.runtime.wasmtime_private import ffi

ROOT = Path(__file__).resolve().parent.parent

# C API bindings (`wasmtime._ffi`) the host names, with what each must be.
FFI_TYPES = ["wasm_byte_t", "wasm_byte_vec_t", "wasm_name_t", "wasmtime_error_t",
             "wasmtime_component_val_t", "wasmtime_component_valrecord_entry_t",
             "wasmtime_component_vallist_t", "wasmtime_component_valrecord_t",
             "wasmtime_component_valflags_t"]
FFI_FUNCTIONS = ["wasi_config_set_stdin_bytes", "wasi_config_set_env", "wasm_byte_vec_new",
                 "wasm_byte_vec_new_uninitialized", "wasmtime_component_val_delete",
                 "wasmtime_component_val_new", "wasmtime_component_valflags_new_uninit",
                 "wasmtime_component_vallist_new_uninit",
                 "wasmtime_component_valrecord_new_uninit",
                 "wasmtime_component_linker_instance_add_func", "wasmtime_error_new",
                 # the pooling allocator (set_pooling_allocator)
                 "wasmtime_pooling_allocation_config_new",
                 "wasmtime_pooling_allocation_config_delete",
                 "wasmtime_pooling_allocation_strategy_set",
                 *(f"wasmtime_pooling_allocation_config_{name}_set" for name in (
                     "total_component_instances", "total_core_instances", "total_memories",
                     "total_tables", "max_memory_size", "table_elements",
                     "max_core_instances_per_component", "max_memories_per_component",
                     "max_tables_per_component", "max_memories_per_module",
                     "max_tables_per_module", "table_keep_resident"))]
# Looked up in the shared library by name (host/runtime/calls.py).
DLL_SYMBOLS = ["wasmtime_component_func_call", "wasmtime_component_func_post_return",
               "wasmtime_component_val_delete",
               # ResourceCalls
               "wasmtime_component_resource_any_delete", "wasmtime_component_resource_any_to_host",
               "wasmtime_component_resource_host_new", "wasmtime_component_resource_host_delete",
               "wasmtime_component_resource_host_rep", "wasmtime_component_resource_host_type",
               "wasmtime_component_resource_host_owned",
               "wasmtime_component_resource_host_to_any"]
KINDS = ["BOOL", "S8", "U8", "S16", "U16", "S32", "U32", "S64", "U64", "F32", "F64", "CHAR",
         "STRING", "LIST", "RECORD", "TUPLE", "VARIANT", "ENUM", "OPTION", "RESULT", "FLAGS",
         "RESOURCE"]

# name -> (callable, its parameter names)
SIGNATURES: dict[str, tuple[Any, list[str]]] = {
    "wasmtime.component._enter.catch_exceptions": (private.catch_exceptions,
                                                    ["store_raw", "func"]),
    "wasmtime.component._enter.maybe_raise_last_exn": (private.maybe_raise_last_exn, []),
    "wasmtime.WasmtimeError._from_ptr": (wasmtime.WasmtimeError._from_ptr, ["ptr"]),
    "wasmtime.Store._context": (wasmtime.Store._context, ["self"]),
    "wasmtime.StoreContext._context": (wasmtime.StoreContext._context, ["self"]),
    "wasmtime.component.VariantType._tagged": (wc.VariantType._tagged, ["self"]),
    "wasmtime.component.OptionType._tagged": (wc.OptionType._tagged, ["self"]),
    "wasmtime.component.ResultType._tagged": (wc.ResultType._tagged, ["self"]),
    "wasmtime.component.OwnType.convert_to_c": (wc.OwnType.convert_to_c,
                                                ["self", "store", "val", "ptr"]),
    "wasmtime.component.OwnType.convert_from_c": (wc.OwnType.convert_from_c, ["self", "c"]),
    "wasmtime.component.BorrowType.convert_to_c": (wc.BorrowType.convert_to_c,
                                                   ["self", "store", "val", "ptr"]),
    "wasmtime.component.BorrowType.convert_from_c": (wc.BorrowType.convert_from_c,
                                                     ["self", "c"]),
}

ONE_FUNC = """(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f"))))"""


@pytest.mark.parametrize("name", FFI_TYPES)
def test_ffi_type_exists(name: str) -> None:
    value = getattr(ffi, name, None)
    assert isinstance(value, type) and issubclass(value, ctypes.Structure | ctypes._SimpleCData), (
        f"wasmtime._ffi.{name} is gone or no longer a ctypes type")


@pytest.mark.parametrize("name", FFI_FUNCTIONS)
def test_ffi_function_exists(name: str) -> None:
    assert callable(getattr(ffi, name, None)), f"wasmtime._ffi.{name} is gone"


@pytest.mark.parametrize("name", DLL_SYMBOLS)
def test_dll_exports_symbol(name: str) -> None:
    assert hasattr(ffi.dll, name), f"wasmtime._ffi.dll has no symbol {name}"


def test_callback_type_is_a_ctypes_function_type() -> None:
    callback = getattr(ffi, "wasmtime_component_func_callback_t", None)
    assert callback is not None and hasattr(callback, "_argtypes_"), (
        "wasmtime._ffi.wasmtime_component_func_callback_t is gone or not a CFUNCTYPE")
    assert len(callback._argtypes_) == 7, (
        "wasmtime_component_func_callback_t: expected 7 arguments (env, context, type, "
        f"args, nargs, results, nresults), got {len(callback._argtypes_)}")


@pytest.mark.parametrize("kind", KINDS)
def test_component_value_kind_constant(kind: str) -> None:
    assert hasattr(ffi, f"WASMTIME_COMPONENT_{kind}"), f"wasmtime._ffi.WASMTIME_COMPONENT_{kind}"


def test_component_value_layout() -> None:
    """marshal.py writes these C structs byte by byte."""
    val, entry = ffi.wasmtime_component_val_t, ffi.wasmtime_component_valrecord_entry_t
    assert ctypes.sizeof(val) == 32, "wasmtime_component_val_t is no longer 32 bytes"
    assert val.of.offset == 8, "wasmtime_component_val_t.of no longer at offset 8"
    assert ctypes.sizeof(entry) == 48, "wasmtime_component_valrecord_entry_t: not 48 bytes"
    assert entry.val.offset == 16, "wasmtime_component_valrecord_entry_t.val: not at 16"
    assert ctypes.sizeof(ffi.wasm_name_t) == 16, "wasm_name_t is no longer 16 bytes"


@pytest.mark.parametrize("name", SIGNATURES)
def test_private_signature(name: str) -> None:
    func, expected = SIGNATURES[name]
    params = list(inspect.signature(func).parameters)
    assert params == expected, f"{name}: parameters {params}, expected {expected}"


def test_live_objects_have_the_private_handles() -> None:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    instance = wc.Linker(engine).instantiate(store, wc.Component(engine, ONE_FUNC))
    func = instance.get_func(store, "f")
    assert func is not None
    assert isinstance(getattr(func, "_func", None), ctypes.Structure), (
        "wasmtime.component.Func._func is gone or no longer the C struct")
    assert private.func_address(func) == ctypes.addressof(func._func)
    assert private.context_address(store) != 0, "Store._context() gives no address"
    func(store)  # still callable after our look at its internals


def test_error_from_ptr_takes_an_address() -> None:
    message = b"boom"
    ptr = ffi.wasmtime_error_new(ctypes.create_string_buffer(message))
    error = private.error_from_ptr(ctypes.cast(ptr, ctypes.c_void_p).value or 0)
    assert isinstance(error, wasmtime.WasmtimeError)
    assert "boom" in str(error)


def test_no_other_module_touches_wasmtime_internals() -> None:
    """The point of the module: a wasmtime-py upgrade needs to look in one place."""
    private_import = re.compile(r"wasmtime(\.component)?\._|from wasmtime(\.component)? "
                                r"import _|\._context\(\)|\._func\b|\._from_ptr\b")
    offenders = []
    for path in sorted((ROOT / "host").rglob("*.py")):
        if path.name == "wasmtime_private.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private_import.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "wasmtime-py internals outside wasmtime_private.py:\n" + "\n".join(
        offenders)


def test_a_host_call_store_is_a_store_context_keyed_by_its_address() -> None:
    store = wasmtime.Store()
    address = private.context_address(store)
    during_call = private.HostCallStore(address)
    assert isinstance(during_call, wasmtime.StoreContext)
    assert private.context_address(during_call) == address
    assert ctypes.cast(during_call._context(), ctypes.c_void_p).value == address
    during_call._invalidate()
    with pytest.raises(ValueError):
        during_call._context()


def test_trap_from_carries_a_wasmtime_error_and_parks_any_other() -> None:
    error = private.error_from_ptr(private.trap_from(wasmtime.WasmtimeError("own message")))
    assert "own message" in str(error)
    boom = KeyError("boom")
    assert "python exception" in str(private.error_from_ptr(private.trap_from(boom)))
    with pytest.raises(KeyError):
        private.maybe_raise_last_exn()  # the parked exception surfaces with its call
