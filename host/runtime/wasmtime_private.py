"""Every private piece of wasmtime-py the host relies on, behind one small module.

The host calls the wasmtime C API directly where wasmtime-py's public API is
too slow (typed component calls, host imports: host/runtime/calls.py and
marshal.py) or lacks a feature (stdin from memory for WAGI). That needs
wasmtime-py internals, which may change in any release: they are named here
and nowhere else, and tests/test_wasmtime_private.py checks each one's shape,
so a wasmtime-py upgrade that changes them fails that test by name instead of
crashing a request. (marshal.py also calls `ValType._tagged()` and the
resource types' `convert_to_c`/`convert_from_c`; the test checks those too.)
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi  # the ctypes bindings of the C API
from wasmtime.component import _enter
from wasmtime.component._enter import catch_exceptions, maybe_raise_last_exn

from host.limits import (
    POOLING_CORE_INSTANCES_PER_INSTANCE,
    POOLING_MAX_PER_COMPONENT,
    POOLING_TABLE_ELEMENTS,
    POOLING_TABLE_KEEP_RESIDENT,
    POOLING_TABLES_PER_INSTANCE,
    PoolingLimits,
)

_CONTEXT_PTR = ctypes.POINTER(ffi.wasmtime_context_t)


class HostCallStore(wasmtime.StoreContext):
    """The store a host import runs in, valid during that call only.

    Made from the raw context address wasmtime passes, without building a ctypes
    pointer unless a callee needs one (`_context()`); `key` is the address.
    """

    __slots__ = ("key", "_ptr")

    def __init__(self, address: int) -> None:
        self.key = address
        self._ptr: Any = None

    def _context(self) -> Any:
        if self.key == 0:
            raise ValueError("caller is no longer valid")
        if self._ptr is None:
            self._ptr = ctypes.cast(self.key, _CONTEXT_PTR)
        return self._ptr

    def _invalidate(self) -> None:
        self.key = 0
        self._ptr = None


def trap_from(exc: BaseException) -> int:
    """A `wasmtime_error_t *` (address) for an exception raised by a host import.

    As wasmtime-py's own `catch_exceptions`: a WasmtimeError travels as itself;
    any other exception is parked where `maybe_raise_last_exn` finds it.
    """
    if not isinstance(exc, wasmtime.WasmtimeError):
        _enter.LAST_EXCEPTION = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        exc = wasmtime.WasmtimeError("python exception")
    return ctypes.cast(exc._consume(), ctypes.c_void_p).value or 0

__all__ = [
    "HostCallStore",
    "ResourceCalls",
    "catch_exceptions",
    "context_address",
    "error_from_ptr",
    "ffi",
    "func_address",
    "maybe_raise_last_exn",
    "set_pooling_allocator",
    "set_stdin_bytes",
    "trap_from",
    "WasiEnv",
]


class ResourceCalls:
    """The C API's resource-handle calls, every pointer a plain address.

    wasmtime-py wraps each handle crossing a host call in two Python objects
    (ResourceAny, ResourceHost) with finalizers, and converts them with ~6 ctypes
    calls made through pointer types: about a fifth of a wasi:http request's host
    time went there. host/runtime/marshal.py uses these instead.
    """

    _v = ctypes.c_void_p
    any_delete = ctypes.CFUNCTYPE(None, _v)(("wasmtime_component_resource_any_delete", ffi.dll))
    any_to_host = ctypes.CFUNCTYPE(_v, _v, _v, _v)(
        ("wasmtime_component_resource_any_to_host", ffi.dll))
    host_new = ctypes.CFUNCTYPE(_v, ctypes.c_bool, ctypes.c_uint32, ctypes.c_uint32)(
        ("wasmtime_component_resource_host_new", ffi.dll))
    host_delete = ctypes.CFUNCTYPE(None, _v)(("wasmtime_component_resource_host_delete", ffi.dll))
    host_rep = ctypes.CFUNCTYPE(ctypes.c_uint32, _v)(
        ("wasmtime_component_resource_host_rep", ffi.dll))
    host_type = ctypes.CFUNCTYPE(ctypes.c_uint32, _v)(
        ("wasmtime_component_resource_host_type", ffi.dll))
    host_owned = ctypes.CFUNCTYPE(ctypes.c_bool, _v)(
        ("wasmtime_component_resource_host_owned", ffi.dll))
    host_to_any = ctypes.CFUNCTYPE(_v, _v, _v, _v)(
        ("wasmtime_component_resource_host_to_any", ffi.dll))


def context_address(store: wasmtime.Store | wasmtime.StoreContext) -> int:
    """The address of a store's `wasmtime_context_t`: what raw C calls take, and a
    key that is the same for the store in every host call it makes."""
    if type(store) is HostCallStore:
        return store.key
    return ctypes.cast(store._context(), ctypes.c_void_p).value or 0


def func_address(func: wc.Func) -> int:
    """The address of a component function's `wasmtime_component_func_t`."""
    return ctypes.addressof(func._func)


def error_from_ptr(ptr: Any) -> wasmtime.WasmtimeError:
    """Take ownership of a `wasmtime_error_t *` as a WasmtimeError (int or pointer)."""
    if isinstance(ptr, int):
        ptr = ctypes.cast(ptr, ctypes.POINTER(ffi.wasmtime_error_t))
    return wasmtime.WasmtimeError._from_ptr(ptr)


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """stdin from memory (the C API has it; wasmtime-py only offers files)."""
    vec = ffi.wasm_byte_vec_t()
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data),
                          ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ffi.wasm_byte_t)))
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), vec)  # takes ownership of the bytes


def set_concurrency_support(config: wasmtime.Config, enabled: bool) -> None:
    """`Config::concurrency_support` (the C API has it; wasmtime-py does not)."""
    ffi.wasmtime_config_concurrency_support_set(config.ptr(), enabled)


def set_pooling_allocator(config: wasmtime.Config, pooling: PoolingLimits) -> None:
    """wasmtime's pooling instance allocator (the C API has it; wasmtime-py does not).

    Every instance still starts fresh: a dropped instance's memory slot is reset to
    its component's image (or zeros) before reuse, tables and instance state too
    (tests/test_engine.py checks it). Keep-resident: host/limits.py says why.
    """
    pc = ffi.wasmtime_pooling_allocation_config_new()
    try:
        n = pooling.instances
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(pc, n)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(
            pc, n * POOLING_CORE_INSTANCES_PER_INSTANCE)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pc, pooling.memories)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(
            pc, n * POOLING_TABLES_PER_INSTANCE)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pc, pooling.memory_bytes)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pc, POOLING_TABLE_ELEMENTS)
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(
            pc, POOLING_TABLE_KEEP_RESIDENT)
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(
            pc, POOLING_MAX_PER_COMPONENT)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(
            pc, POOLING_MAX_PER_COMPONENT)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(
            pc, POOLING_MAX_PER_COMPONENT)
        # wasmtime's default is 1 of each per core module; multi-memory modules exist.
        ffi.wasmtime_pooling_allocation_config_max_memories_per_module_set(pc, 8)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_module_set(pc, 8)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pc)  # copies the config
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pc)

class WasiEnv:
    """Environment variables converted to C strings once, set on many WasiConfigs
    (wasmtime-py's `WasiConfig.env` converts them again on every assignment)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.count = len(pairs)
        self._names = _char_array([name for name, _ in pairs])
        self._values = _char_array([value for _, value in pairs])

    def apply(self, wasi: wasmtime.WasiConfig) -> None:
        if self.count and not ffi.wasi_config_set_env(wasi.ptr(), self.count, self._names,
                                                      self._values):  # copies the strings
            raise wasmtime.WasmtimeError("failed to configure environment")


def _char_array(strings: list[str]) -> Any:
    array = (ctypes.c_char_p * len(strings))(*(s.encode() for s in strings))
    return ctypes.cast(array, ctypes.POINTER(ctypes.POINTER(ctypes.c_char)))
