"""Resource tables of the host-defined WASI interfaces, and linking them by import name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wasmtime
import wasmtime.component as wc

from host.capabilities import _UNRESOLVED, ResourceTable, _canonical, _guarded, store_key
from host.runtime.calls import define_func
from host.runtime.marshal import Err, HostHandle, Ok

# Interfaces defined by the host: all those whose signatures use wasi:io resources.
INTERFACES = frozenset({
    "wasi:io/error", "wasi:io/poll", "wasi:io/streams",
    "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types", "wasi:filesystem/preopens",
    "wasi:sockets/network", "wasi:sockets/instance-network", "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket", "wasi:sockets/udp", "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types", "wasi:http/outgoing-handler",
    "wasi:blobstore/blobstore", "wasi:blobstore/container", "wasi:blobstore/types",
})
# Interfaces defined only at these versions: drafts whose shapes differ from the
# ones implemented are refused at start-up, not linked by name.
BLOBSTORE_VERSIONS = ("0.2.0-draft", "0.2.0-draft-2024-09-01")
VERSIONS = {
    "wasi:blobstore/blobstore": BLOBSTORE_VERSIONS,
    "wasi:blobstore/container": BLOBSTORE_VERSIONS,
    "wasi:blobstore/types": BLOBSTORE_VERSIONS,
}

KINDS = (
    "error", "pollable", "input-stream", "output-stream", "fields", "incoming-request",
    "outgoing-request", "request-options", "response-outparam", "incoming-response",
    "incoming-body", "future-trailers", "outgoing-response", "outgoing-body",
    "future-incoming-response", "descriptor", "directory-entry-stream", "network",
    "tcp-socket", "udp-socket", "incoming-datagram-stream", "outgoing-datagram-stream",
    "resolve-address-stream", "container", "stream-object-names", "incoming-value",
    "outgoing-value",
)
# WIT names that are aliases (`use ... as`) of a kind above.
ALIASES = {"io-error": "error", "headers": "fields", "trailers": "fields",
           "incoming-value-async-body": "input-stream"}

HostFunc = Callable[..., Any]
Functions = dict[tuple[str, str], HostFunc]  # (interface without version, name) -> function


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if close is not None:
        close()


class Tables:
    """One ResourceTable per resource kind; entries belong to the store that made them.

    A value with a `close` method (an input stream over an open file or an
    HTTP response, an upload) is closed when the guest drops its handle or the
    instance is discarded."""

    def __init__(self) -> None:
        self.by_kind: dict[str, ResourceTable[Any]] = {
            kind: ResourceTable(kind, _close) for kind in KINDS}
        self.held: dict[int, int] = {}  # store key -> bytes charged (`charge`)

    def limit(self, kind: str, max_live: int) -> None:
        """At most `max_live` handles of `kind` per store (before any is made)."""
        self.by_kind[kind].max_live = max_live

    def __getitem__(self, kind: str) -> ResourceTable[Any]:
        return self.by_kind[ALIASES.get(kind, kind)]

    def add(self, kind: str, store: Any, value: Any) -> HostHandle:
        return self.by_kind[kind].add(store, value)

    def get(self, kind: str, store: Any, handle: Any) -> Any:
        return self.by_kind[kind].get(store, handle)

    def take(self, kind: str, store: Any, handle: Any) -> Any:
        return self.by_kind[kind].take(store, handle)

    def charge(self, store: Any, size: int, limit: int, what: str) -> None:
        """Count `size` more bytes of `what` held for this store; trap past `limit`."""
        key = store_key(store)
        held = self.held.get(key, 0) + size
        if held > limit:
            raise wasmtime.WasmtimeError(
                f"the guest made the host hold more than {limit} bytes of {what} "
                "for one request")
        self.held[key] = held

    def release_store(self, key: int) -> None:
        for table in self.by_kind.values():
            table.release_store(key)
        self.held.pop(key, None)


def unversioned(name: str) -> str:
    return name.split("@", 1)[0]


def _resolve(store: Any, value: Any) -> Any:
    # wasmtime requires every borrow lent to the host to be released before the
    # call returns, and `to_host` on a borrowed handle works once only: convert
    # each handle exactly once, here, before the implementation sees it.
    if isinstance(value, _UNRESOLVED):
        return value.to_host(store)
    if isinstance(value, list) and value and isinstance(value[0], _UNRESOLVED):
        return [v.to_host(store) for v in value]
    if isinstance(value, (Ok, Err)) and isinstance(value.value, _UNRESOLVED):
        return type(value)(value.value.to_host(store))
    if isinstance(value, wc.Variant) and isinstance(value.payload, _UNRESOLVED):
        return wc.Variant(value.tag, value.payload.to_host(store))
    return value


def _resolving(fty: wc.FuncType, func: HostFunc) -> HostFunc:
    if not any(_holds_resource(ty) for _, ty in fty.params):
        return func  # no handle to resolve (monotonic-clock.now: 18 calls per JS request)

    def call(store: Any, *args: Any) -> Any:
        return func(store, *[_resolve(store, a) for a in args])
    return call


def _holds_resource(ty: Any) -> bool:
    """Whether a value of this type may carry a resource handle."""
    if isinstance(ty, (wc.OwnType, wc.BorrowType)):
        return True
    if isinstance(ty, wc.ListType):
        return _holds_resource(ty.element)
    if isinstance(ty, wc.OptionType):
        return _holds_resource(ty.payload)
    if isinstance(ty, wc.ResultType):
        return any(t is not None and _holds_resource(t) for t in (ty.ok, ty.err))
    if isinstance(ty, wc.VariantType):
        return any(t is not None and _holds_resource(t) for _, t in ty.cases)
    if isinstance(ty, wc.RecordType):
        return any(_holds_resource(t) for _, t in ty.fields)
    if isinstance(ty, wc.TupleType):
        return any(_holds_resource(t) for t in ty.elements)
    return False


def _unsupported(interface: str, name: str) -> HostFunc:
    def trap(store: Any, *args: Any) -> Any:
        raise wasmtime.WasmtimeError(f"{interface}#{name} is not supported by this host")
    return trap


class WasiHost:
    """The host-defined WASI interfaces for one component: tables plus functions."""

    def __init__(self, component_id: str, tables: Tables, functions: Functions) -> None:
        self.component_id = component_id
        self.tables = tables
        self.functions = functions

    def link(self, linker: wc.Linker, component: wc.Component,
             engine: wasmtime.Engine) -> list[str]:
        """Define every host interface the component imports, at its exact import name
        (a lower 0.2.x than wasmtime's own would otherwise lose to it); the names."""
        defined = []
        for name, item in component.type.imports(engine).items():
            base = unversioned(name)
            if base not in INTERFACES or name.partition("@")[2] not in VERSIONS.get(
                    base, (name.partition("@")[2],)):
                continue
            ty: Any = item.ty
            exports: dict[str, Any] = ty.exports(engine)
            with linker.root() as root, root.add_instance(name) as instance:
                for export_name, export in exports.items():
                    if isinstance(export.ty, wc.ResourceType):
                        self.tables[export_name].define(instance, export_name)
                for export_name, export in exports.items():
                    if not isinstance(export.ty, wc.FuncType):
                        continue
                    func = (self.functions.get((base, export_name))
                            or _unsupported(name, export_name))
                    define_func(instance, export_name, export.ty, _guarded(
                        self.component_id, name, export_name,
                        _resolving(export.ty, _canonical(export.ty, func))))
            defined.append(name)
        return defined

    def release(self, store: Any) -> None:
        self.tables.release_store(store_key(store))
