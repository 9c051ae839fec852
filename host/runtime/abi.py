"""The one place that turns HTTP values into component calls and back.

The incoming handler's function type is compiled into codecs once per
component (`HandlerExport.find`); each request then lowers one tuple, makes
one raw `wasmtime_component_func_call` and lifts one tuple (host/runtime/calls.py,
host/runtime/marshal.py). Nothing on this path asks wasmtime for types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime
import wasmtime.component as wc

from host.runtime.calls import TypedFunc, export_func_type
from host.runtime.marshal import RecordCodec
from host.runtime.wasmtime_private import context_address

WIT_PACKAGE = "spinhost:http@0.1.0"
INCOMING_HANDLER = "spinhost:http/incoming-handler@0.1.0"
HANDLE = "handle"

Headers = list[tuple[str, bytes]]

# WIT `method` values by upper-case HTTP verb, built once; others are `other(verb)`.
_METHODS = {
    m.upper(): wc.Variant(m)
    for m in ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")
}
_SCHEMES = {"http": wc.Variant("HTTP"), "https": wc.Variant("HTTPS")}


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
    """The handler's export index and compiled codecs, made once per component."""

    func: wc.ExportIndex
    typed: TypedFunc
    lift_response: Callable[[int], tuple[Any, ...]]  # the response record as a tuple

    @classmethod
    def find(cls, component: wc.Component, engine: wasmtime.Engine) -> HandlerExport:
        interface = component.get_export_index(INCOMING_HANDLER)
        func = component.get_export_index(HANDLE, interface) if interface else None
        if func is None:
            raise ExportNotFound(f"{INCOMING_HANDLER}#{HANDLE}")
        fty = export_func_type(component, engine, INCOMING_HANDLER, HANDLE)
        signature = describe_func(fty)
        if signature != HANDLE_SIGNATURE:
            # Checked once here, so every value lifted per request has the shape
            # call_handler unpacks: a mismatch is a start-up error, not a 500.
            raise ExportNotFound(f"{INCOMING_HANDLER}#{HANDLE} is `{signature}`, not "
                                 f"`{HANDLE_SIGNATURE}` (the world in wit/, {WIT_PACKAGE})")
        typed = TypedFunc(fty)
        assert isinstance(typed.result, RecordCodec)
        return cls(func, typed, typed.result.lift_tuple)

    def bind(self, store: wasmtime.Store, instance: wc.Instance) -> BoundHandler:
        func = instance.get_func(store, self.func)
        if func is None:  # pragma: no cover - find() checked the component
            raise ExportNotFound(f"{INCOMING_HANDLER}#{HANDLE}")
        return BoundHandler(self.typed, self.lift_response, store, func,
                            context_address(store))


@dataclass(frozen=True)
class BoundHandler:
    """The handler of one instance, ready to call (addresses resolved once)."""

    typed: TypedFunc
    lift_response: Callable[[int], tuple[Any, ...]]
    store: wasmtime.Store
    func: wc.Func
    context: int


def describe_func(fty: wc.FuncType) -> str:
    """A function type in WIT-like text, names included, e.g. `func(x: u16) -> string`."""
    params = ", ".join(f"{name}: {describe_type(ty)}" for name, ty in fty.params)
    result = f" -> {describe_type(fty.result)}" if fty.result is not None else ""
    return f"func({params}){result}"


def describe_type(ty: Any) -> str:
    """A component value type in WIT-like text, structurally (records spelled out)."""
    if isinstance(ty, wc.ListType):
        return f"list<{describe_type(ty.element)}>"
    if isinstance(ty, wc.OptionType):
        return f"option<{describe_type(ty.payload)}>"
    if isinstance(ty, wc.TupleType):
        return f"tuple<{', '.join(describe_type(t) for t in ty.elements)}>"
    if isinstance(ty, wc.RecordType):
        return "record { " + ", ".join(f"{n}: {describe_type(t)}" for n, t in ty.fields) + " }"
    if isinstance(ty, wc.VariantType):
        cases = (name if t is None else f"{name}({describe_type(t)})" for name, t in ty.cases)
        return "variant { " + ", ".join(cases) + " }"
    if isinstance(ty, wc.ResultType):
        return f"result<{describe_type(ty.ok) if ty.ok else '_'}, " \
               f"{describe_type(ty.err) if ty.err else '_'}>"
    if isinstance(ty, wc.EnumType):
        return "enum { " + ", ".join(ty.names) + " }"
    if isinstance(ty, wc.FlagsType):
        return "flags { " + ", ".join(ty.names) + " }"
    return type(ty).__name__.lower()  # scalars: U16 -> u16, String -> string


_HEADERS = "list<tuple<string, list<u8>>>"
HANDLE_SIGNATURE = (
    "func(request: record { method: variant { get, head, post, put, delete, connect, "
    "options, trace, patch, other(string) }, scheme: option<variant { HTTP, HTTPS, "
    "other(string) }>, authority: option<string>, path-with-query: option<string>, "
    f"headers: {_HEADERS}, body: list<u8> }}) -> record {{ status: u16, headers: {_HEADERS}, "
    "body: list<u8> }"
)


def exported_names(component: wc.Component, engine: wasmtime.Engine) -> list[str]:
    return sorted(component.type.exports(engine))


def imported_names(component: wc.Component, engine: wasmtime.Engine) -> list[str]:
    return sorted(component.type.imports(engine))


def call_handler(handler: BoundHandler, request: HttpRequest) -> HttpResponse:
    """Call `incoming-handler.handle`; raises wasmtime errors on traps."""
    method = _METHODS.get(request.method) or wc.Variant("other", request.method)
    scheme = _SCHEMES.get(request.scheme) or wc.Variant("other", request.scheme)
    args = ((method, scheme, request.authority, request.path_with_query, request.headers,
             request.body),)
    status, headers, body = handler.typed.call(handler.store, handler.func, args,
                                               handler.context, handler.lift_response)
    return HttpResponse(status, headers, body)
