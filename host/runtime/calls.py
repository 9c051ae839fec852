"""Calling component exports and defining host imports through typed codecs.

Both directions skip wasmtime-py's per-call type introspection: the function
type is compiled into codecs once (`TypedFunc`), and each call goes straight to
`wasmtime_component_func_call` (exports) or arrives at our own C trampoline
(imports), with raw addresses.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import wasmtime
import wasmtime.component as wc

from host.runtime.marshal import VAL_SIZE, Arena, Codec, Heap, Scalar, compile_type
from host.runtime.wasmtime_private import (
    HostCallStore,
    context_address,
    error_from_ptr,
    ffi,
    func_address,
    maybe_raise_last_exn,
    trap_from,
)

_c_void_p = ctypes.c_void_p
_func_call = ctypes.CFUNCTYPE(_c_void_p, _c_void_p, _c_void_p, _c_void_p, ctypes.c_size_t,
                              _c_void_p, ctypes.c_size_t)(
    ("wasmtime_component_func_call", ffi.dll))
_post_return = ctypes.CFUNCTYPE(_c_void_p, _c_void_p, _c_void_p)(
    ("wasmtime_component_func_post_return", ffi.dll))
_val_delete = ctypes.CFUNCTYPE(None, _c_void_p)(("wasmtime_component_val_delete", ffi.dll))
_addressof = ctypes.addressof
_string_at = ctypes.string_at
_memmove = ctypes.memmove


def _raise(err: int) -> None:
    error = error_from_ptr(err)
    maybe_raise_last_exn()  # a Python exception raised inside a host import wins
    raise error


class TypedFunc:
    """A component function type compiled into codecs."""

    def __init__(self, fty: wc.FuncType) -> None:
        self.params: list[Codec] = [compile_type(t) for _, t in fty.params]
        result = fty.result
        self.result: Codec | None = compile_type(result) if result is not None else None

    def call(self, store: wasmtime.Store, func: wc.Func, args: tuple[Any, ...],
             context: int | None = None, lift: Callable[[int], Any] | None = None) -> Any:
        """Call an export; `lift` may replace the result codec (e.g. a tuple fast path).

        Parameters live in a Python-owned arena that wasmtime only reads; the
        result is C-owned and freed here exactly once, also when lifting fails.
        """
        params = self.params
        n = len(params)
        if len(args) != n:
            raise TypeError(f"expected {n} arguments, got {len(args)}")
        arena = Arena(store)
        results = ffi.wasmtime_component_val_t()
        raddr = _addressof(results)
        has_result = self.result is not None
        ctx = context if context is not None else context_address(store)
        fptr = func_address(func)
        try:
            view, addr = arena.vals(n)
            for i in range(n):
                params[i].lower(args[i], view, i * VAL_SIZE, arena)
            err = _func_call(fptr, ctx, addr, n, raddr if has_result else None,
                             1 if has_result else 0)
        finally:
            arena.release()  # also when lowering failed half-way
        if err:
            _raise(err)
        value = None
        if has_result:
            try:
                value = (lift or self.result.lift_at)(raddr)  # type: ignore[union-attr]
            finally:
                _val_delete(raddr)
        err = _post_return(fptr, ctx)
        if err:
            _raise(err)
        return value


def export_func_type(component: wc.Component, engine: wasmtime.Engine, interface: str,
                     name: str) -> wc.FuncType:
    """The type of `interface#name` exported by `component`."""
    item: Any = component.type.exports(engine)[interface].ty
    fty: wc.FuncType = item.exports(engine)[name].ty
    return fty


def import_func_types(component: wc.Component, engine: wasmtime.Engine,
                      interface: str) -> dict[str, wc.FuncType]:
    """Function types of an interface the component imports ({} if it does not)."""
    imports = component.type.imports(engine)
    if interface not in imports:
        return {}
    ty: Any = imports[interface].ty
    return {name: item.ty for name, item in ty.exports(engine).items()
            if isinstance(item.ty, wc.FuncType)}


# ---------------------------------------------------------------------------
# Host imports

HostFunc = Callable[..., Any]
# The ctypes callback of every defined host function, by key: alive until
# wasmtime drops the definition (it calls `_finalize` with the key).
_REGISTERED: dict[int, Any] = {}
_next_id = [1]


# The callback as wasmtime calls it, with every pointer as a plain address:
# ctypes then builds no pointer objects for the arguments (wasmtime-py's own
# callback type takes POINTER(...) arguments, ~1 us each per host call).
_callback_t = ctypes.CFUNCTYPE(ctypes.c_size_t, _c_void_p, _c_void_p, _c_void_p, _c_void_p,
                               ctypes.c_size_t, _c_void_p, ctypes.c_size_t)
_finalizer_t = ctypes.CFUNCTYPE(None, _c_void_p)
_add_func = ctypes.CFUNCTYPE(_c_void_p, _c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                             _callback_t, _c_void_p, _finalizer_t)(
    ("wasmtime_component_linker_instance_add_func", ffi.dll))
_ValView = ctypes.c_char * VAL_SIZE


def _trampoline(typed: TypedFunc, func: HostFunc) -> Any:
    """The C callback for one host function, specialised to its type once.

    A host call costs ~2 us in ctypes and this function: the shapes most
    calls have (no parameters, a scalar or no result: `monotonic-clock.now`
    is 18 of a JS request's 40 calls) skip the generic steps."""
    params = typed.params
    result = typed.result
    scalar = result if isinstance(result, Scalar) else None

    def lift(args: int, nargs: int) -> list[Any]:
        # Arguments belong to wasmtime (it frees them): read, never free.
        data = _string_at(args, nargs * VAL_SIZE)
        return [codec.lift(data, i * VAL_SIZE, args + i * VAL_SIZE)
                for i, codec in enumerate(params)]

    def call(env, context, ty, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
        store = HostCallStore(context)
        try:
            value = func(store, *lift(args, nargs)) if nargs else func(store)
            if scalar is not None:
                # A scalar node owns nothing: written in place, even half-way.
                scalar.lower(value, _ValView.from_address(results), 0, None)  # type: ignore
            elif result is not None:
                # Results are handed to wasmtime, which frees them: C-owned nodes
                # only, and the node is moved in whole once lowering succeeded.
                tmp = _ValView()
                result.lower(value, tmp, 0, Heap(store))
                _memmove(results, tmp, VAL_SIZE)
            return 0
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind into wasmtime
            return trap_from(exc)
        finally:
            store._invalidate()

    return _callback_t(call)


@_finalizer_t
def _finalize(env):  # type: ignore[no-untyped-def]
    if _REGISTERED is not None:  # None while the interpreter shuts down
        _REGISTERED.pop(env or 0, None)


def define_func(instance: wc.LinkerInstance, name: str, fty: wc.FuncType,
                func: HostFunc) -> None:
    """Define host import `name` as `func(store, *args) -> result` on a linker instance."""
    key = _next_id[0]
    _next_id[0] += 1
    callback = _REGISTERED[key] = _trampoline(TypedFunc(fty), func)
    encoded = name.encode()
    err = _add_func(ctypes.cast(instance.ptr(), _c_void_p), encoded, len(encoded), callback,
                    key, _finalize)
    if err:
        raise error_from_ptr(err)
