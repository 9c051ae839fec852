"""The one place that turns HTTP values into wasmtime component values and back.

Everything that builds or reads wasmtime values for our WIT lives here, so the
typed fast marshaller (a later step) replaces this module alone. This version
uses wasmtime-py's generic conversion: correct for every type, but it re-reads
the function type on each call and copies `list<u8>` byte by byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import wasmtime
import wasmtime.component as wc

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
    record = wc.Record()
    case = _METHODS.get(request.method)
    method = _variant(case) if case else _variant("other", request.method)
    scheme = {"http": "HTTP", "https": "HTTPS"}.get(request.scheme)
    setattr(record, "method", method)
    setattr(
        record,
        "scheme",
        _variant(scheme) if scheme else _variant("other", request.scheme),
    )
    setattr(record, "authority", request.authority)
    setattr(record, "path-with-query", request.path_with_query)
    setattr(record, "headers", [(name, value) for name, value in request.headers])
    setattr(record, "body", bytes(request.body))
    return record


def _lift_response(value: object) -> HttpResponse:
    status = getattr(value, "status")
    headers: Sequence[tuple[str, bytes]] = getattr(value, "headers")
    body: bytes = getattr(value, "body")
    return HttpResponse(int(status), [(str(n), bytes(v)) for n, v in headers], bytes(body))
