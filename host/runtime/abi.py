"""The one place that turns HTTP values into wasmtime component values and back.

Everything that builds or reads wasmtime values for our WIT lives here, so the
typed fast marshaller (a later step) replaces this module alone. This version
uses wasmtime-py's generic conversion, which is correct for every type but
re-reads the function type on each call and converts `list<u8>` one byte at a
time in Python (about 0.8 s per MiB). `_install_bulk_bytes` replaces just that
conversion with one memory copy each way (see `_bytes_to_c`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi
from wasmtime.component._types import ListType

WIT_PACKAGE = "spinhost:http@0.1.0"
INCOMING_HANDLER = "spinhost:http/incoming-handler@0.1.0"
HANDLE = "handle"

Headers = list[tuple[str, bytes]]

# WIT `method` cases by upper-case HTTP verb; any other verb is `other(verb)`.
_METHODS = {
    m.upper(): m
    for m in ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")
}


@dataclass(frozen=True)
class HttpRequest:
    method: str  # as received, e.g. "GET" or "PURGE"
    scheme: str  # "http" or "https"
    authority: str | None
    path_with_query: str
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Headers
    body: bytes


class ExportNotFound(Exception):
    """The component does not export our incoming handler."""


@dataclass(frozen=True)
class HandlerExport:
    """Export indices looked up once per component, reused for every instance."""

    interface: wc.ExportIndex
    func: wc.ExportIndex

    @classmethod
    def find(cls, component: wc.Component) -> HandlerExport:
        interface = component.get_export_index(INCOMING_HANDLER)
        if interface is None:
            raise ExportNotFound(INCOMING_HANDLER)
        func = component.get_export_index(HANDLE, interface)
        if func is None:
            raise ExportNotFound(f"{INCOMING_HANDLER}#{HANDLE}")
        return cls(interface, func)

    def bind(self, store: wasmtime.Store, instance: wc.Instance) -> wc.Func:
        func = instance.get_func(store, self.func)
        if func is None:  # pragma: no cover - find() checked the component
            raise ExportNotFound(f"{INCOMING_HANDLER}#{HANDLE}")
        return func


def exported_names(component: wc.Component, engine: wasmtime.Engine) -> list[str]:
    return sorted(component.type.exports(engine))


def imported_names(component: wc.Component, engine: wasmtime.Engine) -> list[str]:
    return sorted(component.type.imports(engine))


def call_handler(store: wasmtime.Store, func: wc.Func, request: HttpRequest) -> HttpResponse:
    """Call `incoming-handler.handle` with `request`; raises wasmtime errors on traps."""
    value = func(store, _lower_request(request))
    response = _lift_response(value)
    func.post_return(store)
    return response


def _variant(tag: str, payload: object = None) -> wc.Variant:
    return wc.Variant(tag, payload)


def _lower_request(request: HttpRequest) -> wc.Record:
    case = _METHODS.get(request.method)
    scheme = {"http": "HTTP", "https": "HTTPS"}.get(request.scheme)
    record = wc.Record()
    # WIT field names are kebab-case, so they are set through __dict__.
    record.__dict__.update({
        "method": _variant(case) if case else _variant("other", request.method),
        "scheme": _variant(scheme) if scheme else _variant("other", request.scheme),
        "authority": request.authority,
        "path-with-query": request.path_with_query,
        "headers": [(name, bytes(value)) for name, value in request.headers],
        "body": bytes(request.body),
    })
    return record


def _lift_response(value: Any) -> HttpResponse:
    headers = [(str(name), bytes(v)) for name, v in value.headers]
    return HttpResponse(int(value.status), headers, bytes(value.body))


# -- bulk list<u8> -----------------------------------------------------------
# A `wasmtime_component_val_t` is 32 bytes: the kind byte at offset 0, the
# payload at offset 8. A list<u8> is an array of them, so a body is lowered by
# writing the kind and the bytes into a buffer with two strided slice
# assignments and copying it into the C array at once; lifting reads every
# 32nd byte back out.

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_PAYLOAD_OFFSET = ffi.wasmtime_component_val_t.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value


def _bytes_to_c(value: bytes, ptr: Any) -> None:
    n = len(value)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        buf = bytearray(n * _VAL_SIZE)
        buf[0::_VAL_SIZE] = bytes((_U8,)) * n
        buf[_PAYLOAD_OFFSET::_VAL_SIZE] = value
        ctypes.memmove(raw.data, (ctypes.c_char * len(buf)).from_buffer(buf), len(buf))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def _bytes_from_c(c: Any) -> bytes:
    n = c.of.list.size
    try:
        if not n:
            return b""
        raw = ctypes.string_at(c.of.list.data, n * _VAL_SIZE)
        if raw[0::_VAL_SIZE].count(_U8) != n:  # pragma: no cover - wasmtime invariant
            raise TypeError("list<u8> holds non-u8 values")
        return raw[_PAYLOAD_OFFSET::_VAL_SIZE]
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _install_bulk_bytes() -> None:
    generic_to_c = ListType.convert_to_c
    generic_from_c = ListType.convert_from_c

    def convert_to_c(self: ListType, store: Any, val: Any, ptr: Any) -> None:
        if isinstance(val, bytes) and self._is_bytes():
            _bytes_to_c(val, ptr)
        else:
            generic_to_c(self, store, val, ptr)

    def convert_from_c(self: ListType, c: Any) -> Any:
        if c.kind == ffi.WASMTIME_COMPONENT_LIST.value and self._is_bytes():
            return _bytes_from_c(c)
        return generic_from_c(self, c)

    ListType.convert_to_c = convert_to_c  # type: ignore[method-assign]
    ListType.convert_from_c = convert_from_c  # type: ignore[method-assign]


_install_bulk_bytes()
