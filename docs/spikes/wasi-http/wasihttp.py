"""Spike: a Python-side wasi:http 0.2 + wasi:io host on wasmtime-py 50.

Everything whose WIT mentions wasi:io resources (streams, pollable, error) is
defined here as host resources on our C trampoline (host.runtime.calls.define_func);
the rest of WASI (environment, exit, random, wall-clock, terminal-*) stays
wasmtime's own (`linker.add_wasip2()`), shadowed where we redefine.

Functions are looked up by (interface without version, function name), so one
implementation serves every 0.2.x version a component imports; the FuncType
comes from the component's own import (one linker per component, as in
host/executors/component.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import wasmtime
import wasmtime.component as wc

sys.path.insert(0, "/work/main")
from host.capabilities import ResourceTable, _canonical, store_key  # noqa: E402
from host.runtime.calls import TypedFunc, define_func, export_func_type  # noqa: E402
from host.runtime.marshal import Err, Ok  # noqa: E402

CHUNK = 64 * 1024          # most bytes one read returns
WRITE_BUDGET = 64 * 1024   # what check-write grants


def V(tag: str, payload: Any = None) -> wc.Variant:
    return wc.Variant(tag, payload)


CLOSED = V("closed")

# ---------------------------------------------------------------------------
# Host state behind each resource kind


class Pollable:
    def ready(self) -> bool:
        return True

    def block(self) -> None:
        pass


class Deadline(Pollable):
    def __init__(self, at_ns: int) -> None:
        self.at = at_ns

    def ready(self) -> bool:
        return time.monotonic_ns() >= self.at

    def block(self) -> None:
        left = self.at - time.monotonic_ns()
        if left > 0:
            time.sleep(left / 1e9)


class InputStream:
    """Bytes pulled on demand from `source` (an iterator of chunks)."""

    def __init__(self, source: Iterator[bytes]) -> None:
        self.source = source
        self.pending = b""
        self.eof = False
        self.peak = 0

    def _fill(self) -> None:
        if not self.pending and not self.eof:
            try:
                self.pending = next(self.source)
            except StopIteration:
                self.eof = True

    def read(self, n: int) -> bytes | None:
        self._fill()
        if not self.pending:
            return None if self.eof else b""
        n = min(n, CHUNK)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


class OutputStream:
    """Chunks pushed to `sink(bytes)` as the guest writes them."""

    def __init__(self, sink: Callable[[bytes], None], on_drop: Callable[[], None] = lambda: None
                 ) -> None:
        self.sink = sink
        self.on_drop = on_drop
        self.closed = False


@dataclass
class Fields:
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    immutable: bool = False


@dataclass
class IncomingRequest:
    method: str
    path_with_query: str | None
    scheme: str | None
    authority: str | None
    headers: list[tuple[str, bytes]]
    body: Iterator[bytes]
    consumed: bool = False


@dataclass
class IncomingBody:
    stream: InputStream
    taken: bool = False


@dataclass
class Exchange:
    """One request's response side: what `response-outparam.set` fills in."""

    status: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    error: Any = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    keep_chunks: bool = True
    finished: bool = False
    on_chunk: Callable[[bytes], None] | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.on_chunk is not None:
            self.on_chunk(data)
        elif self.keep_chunks:
            self.chunks.append(data)


@dataclass
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: OutgoingBody | None = None
    body_taken: bool = False


@dataclass
class OutgoingBody:
    """Buffers writes made before the response is set, then streams to the exchange."""

    exchange: Exchange | None = None
    early: list[bytes] = field(default_factory=list)
    stream_taken: bool = False

    def write(self, data: bytes) -> None:
        if self.exchange is None:
            self.early.append(data)
        else:
            self.exchange.write(data)

    def attach(self, exchange: Exchange) -> None:
        self.exchange = exchange
        for chunk in self.early:
            exchange.write(chunk)
        self.early.clear()


@dataclass
class Outparam:
    exchange: Exchange


# ---------------------------------------------------------------------------
# Resource tables (one per kind; reps are per table, entries per store)

KINDS = ["error", "pollable", "input-stream", "output-stream", "fields", "incoming-request",
         "outgoing-request", "request-options", "response-outparam", "incoming-response",
         "incoming-body", "future-trailers", "outgoing-response", "outgoing-body",
         "future-incoming-response", "descriptor", "directory-entry-stream", "network",
         "tcp-socket", "udp-socket", "incoming-datagram-stream", "outgoing-datagram-stream",
         "resolve-address-stream"]
ALIASES = {"io-error": "error", "headers": "fields", "trailers": "fields"}

# Interfaces defined here (everything tied to wasi:io resources); others come from wasip2.
HOST_INTERFACES = {
    "wasi:io/error", "wasi:io/poll", "wasi:io/streams",
    "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types", "wasi:filesystem/preopens",
    "wasi:sockets/network", "wasi:sockets/instance-network", "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket", "wasi:sockets/udp", "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types", "wasi:http/outgoing-handler",
}


TRACE = bool(__import__("os").environ.get("WASIHTTP_TRACE"))


def _traced(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def call(store: Any, *args: Any) -> Any:
        shown = [a.rep if isinstance(a, wc.ResourceHost) else
                 (f"any(own={a.owned})" if isinstance(a, wc.ResourceAny) else
                  (f"<{len(a)} bytes>" if isinstance(a, bytes) and len(a) > 32 else a))
                 for a in args]
        try:
            r = func(store, *args)
        except BaseException as exc:
            print("TRACE", label, shown, "raised", exc, file=sys.stderr)
            raise
        print("TRACE", label, shown, "->", _show(r), file=sys.stderr)
        return r
    return call


def _show(r: Any) -> Any:
    if isinstance(r, wc.ResourceHost):
        return f"host(rep={r.rep}, own={r.owned})"
    if isinstance(r, wc.Variant):
        return f"{r.tag}({_show(r.payload)})"
    if isinstance(r, (Ok, Err)):
        return f"{type(r).__name__}({_show(r.value)})"
    if isinstance(r, bytes) and len(r) > 32:
        return f"<{len(r)} bytes>"
    return r


def _resolve(store: Any, a: Any) -> Any:
    if isinstance(a, wc.ResourceAny):
        return a.to_host(store)  # exactly once: it ends a borrow / moves an own
    if isinstance(a, list) and a and isinstance(a[0], wc.ResourceAny):
        return [x.to_host(store) for x in a]
    if isinstance(a, (Ok, Err)) and isinstance(a.value, wc.ResourceAny):
        return type(a)(a.value.to_host(store))
    if isinstance(a, wc.Variant) and isinstance(a.payload, wc.ResourceAny):
        return wc.Variant(a.tag, a.payload.to_host(store))
    return a


def _resolving(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every resource handle the guest passes is turned into a ResourceHost before the
    implementation runs. wasmtime requires each borrow lent to the host to be released
    before the call returns ("borrow handles still remain at the end of the call"), and
    `to_host` on a borrowed ResourceAny works once only ("unknown handle index")."""
    def call(store: Any, *args: Any) -> Any:
        return func(store, *[_resolve(store, a) for a in args])
    return call


def unversioned(name: str) -> str:
    return name.split("@", 1)[0]


@dataclass
class StoreState:
    """Per-store (per-request) host state."""

    stdout: Callable[[bytes], None] = lambda b: sys.stdout.buffer.write(b)
    stderr: Callable[[bytes], None] = lambda b: sys.stderr.buffer.write(b)


class WasiHttpHost:
    def __init__(self) -> None:
        self.t: dict[str, ResourceTable[Any]] = {k: ResourceTable(k) for k in KINDS}
        self.states: dict[int, StoreState] = {}
        self.drops: dict[str, int] = {}  # drop-callback counts, for the pitfalls report
        self.lock = threading.Lock()
        for kind, table in self.t.items():
            table._close = self._closer(kind)
        self.impl = self._implementations()

    def _closer(self, kind: str) -> Callable[[Any], None]:
        def close(value: Any) -> None:
            self.drops[kind] = self.drops.get(kind, 0) + 1
            if isinstance(value, OutputStream):
                value.on_drop()
        return close

    def table(self, resource_name: str) -> ResourceTable[Any]:
        return self.t[ALIASES.get(resource_name, resource_name)]

    # -- linking -------------------------------------------------------------

    def link(self, linker: wc.Linker, component: wc.Component, engine: wasmtime.Engine,
             version_override: str | None = None) -> list[str]:
        """Define every HOST_INTERFACES import of `component`; returns the names defined."""
        defined = []
        for name, item in component.type.imports(engine).items():
            base = unversioned(name)
            if base not in HOST_INTERFACES:
                continue
            target = name if version_override is None else f"{base}@{version_override}"
            exports = item.ty.exports(engine)
            with linker.root() as root, root.add_instance(target) as inst:
                for export_name, export in exports.items():
                    if isinstance(export.ty, wc.ResourceType):
                        table = self.table(export_name)
                        inst.add_resource(export_name, table.type,
                                          lambda _s, rep, table=table: table.drop(rep))
                for export_name, export in exports.items():
                    if isinstance(export.ty, wc.FuncType):
                        func = self.impl.get((base, export_name)) or self._unsupported(
                            name, export_name)
                        func = _resolving(_canonical(export.ty, func))
                        if TRACE:
                            func = _traced(f"{base}#{export_name}", func)
                        define_func(inst, export_name, export.ty, func)
            defined.append(target)
        return defined

    @staticmethod
    def _unsupported(interface: str, func: str) -> Callable[..., Any]:
        def trap(store: Any, *args: Any) -> Any:
            raise wasmtime.WasmtimeError(f"{interface}#{func} is not supported by this host")
        return trap

    # -- per request ---------------------------------------------------------

    def new_request(self, store: wasmtime.Store, req: IncomingRequest,
                    exchange: Exchange) -> tuple[wc.ResourceHost, wc.ResourceHost]:
        self.states[store_key(store)] = StoreState()
        return (self.t["incoming-request"].add(store, req),
                self.t["response-outparam"].add(store, Outparam(exchange)))

    def release(self, store: wasmtime.Store) -> None:
        key = store_key(store)
        self.states.pop(key, None)
        for table in self.t.values():
            table.release_store(key)

    # -- implementations -----------------------------------------------------

    def _implementations(self) -> dict[tuple[str, str], Callable[..., Any]]:
        t = self.t
        get = lambda kind: t[kind].get  # noqa: E731
        add = lambda kind: t[kind].add  # noqa: E731
        impl: dict[tuple[str, str], Callable[..., Any]] = {}

        def reg(interface: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def deco(f: Callable[..., Any]) -> Callable[..., Any]:
                impl[(interface, name)] = f
                return f
            return deco

        # wasi:io/error
        reg("wasi:io/error", "[method]error.to-debug-string")(
            lambda s, e: str(get("error")(s, e)))

        # wasi:io/poll
        reg("wasi:io/poll", "[method]pollable.ready")(lambda s, p: get("pollable")(s, p).ready())
        reg("wasi:io/poll", "[method]pollable.block")(lambda s, p: get("pollable")(s, p).block())

        @reg("wasi:io/poll", "poll")
        def poll(s: Any, handles: list[Any]) -> list[int]:
            if not handles:
                raise wasmtime.WasmtimeError("poll: empty list")
            ps = [get("pollable")(s, h) for h in handles]
            while True:
                ready = [i for i, p in enumerate(ps) if p.ready()]
                if ready:
                    return ready
                min(ps, key=lambda p: getattr(p, "at", 0)).block()

        # wasi:io/streams: input
        def read(s: Any, h: Any, n: int) -> Any:
            data = get("input-stream")(s, h).read(n)
            return Err(CLOSED) if data is None else Ok(data)

        S = "wasi:io/streams"
        reg(S, "[method]input-stream.read")(read)
        reg(S, "[method]input-stream.blocking-read")(read)  # in-memory source: never empty

        def skip(s: Any, h: Any, n: int) -> Any:
            data = get("input-stream")(s, h).read(n)
            return Err(CLOSED) if data is None else Ok(len(data))

        reg(S, "[method]input-stream.skip")(skip)
        reg(S, "[method]input-stream.blocking-skip")(skip)
        reg(S, "[method]input-stream.subscribe")(lambda s, h: add("pollable")(s, Pollable()))

        # wasi:io/streams: output
        def check_write(s: Any, h: Any) -> Any:
            return Err(CLOSED) if get("output-stream")(s, h).closed else Ok(WRITE_BUDGET)

        def write(s: Any, h: Any, data: bytes) -> Any:
            out = get("output-stream")(s, h)
            if out.closed:
                return Err(CLOSED)
            out.sink(data)
            return Ok(None)

        def flush(s: Any, h: Any) -> Any:
            return Err(CLOSED) if get("output-stream")(s, h).closed else Ok(None)

        def zeroes(s: Any, h: Any, n: int) -> Any:
            return write(s, h, bytes(n))

        def splice(s: Any, h: Any, src: Any, n: int) -> Any:
            data = get("input-stream")(s, src).read(n)
            if data is None:
                return Err(CLOSED)
            r = write(s, h, data)
            return r if isinstance(r, Err) else Ok(len(data))

        reg(S, "[method]output-stream.check-write")(check_write)
        reg(S, "[method]output-stream.write")(write)
        reg(S, "[method]output-stream.blocking-write-and-flush")(write)
        reg(S, "[method]output-stream.flush")(flush)
        reg(S, "[method]output-stream.blocking-flush")(flush)
        reg(S, "[method]output-stream.subscribe")(lambda s, h: add("pollable")(s, Pollable()))
        reg(S, "[method]output-stream.write-zeroes")(zeroes)
        reg(S, "[method]output-stream.blocking-write-zeroes-and-flush")(zeroes)
        reg(S, "[method]output-stream.splice")(splice)
        reg(S, "[method]output-stream.blocking-splice")(splice)

        # wasi:cli stdio
        reg("wasi:cli/stdin", "get-stdin")(lambda s: add("input-stream")(s, InputStream(iter(()))))
        reg("wasi:cli/stdout", "get-stdout")(lambda s: add("output-stream")(s, OutputStream(
            self.states.get(store_key(s), StoreState()).stdout)))
        reg("wasi:cli/stderr", "get-stderr")(lambda s: add("output-stream")(s, OutputStream(
            self.states.get(store_key(s), StoreState()).stderr)))

        # wasi:clocks/monotonic-clock
        M = "wasi:clocks/monotonic-clock"
        reg(M, "now")(lambda s: time.monotonic_ns())
        reg(M, "resolution")(lambda s: 1)
        reg(M, "subscribe-instant")(lambda s, at: add("pollable")(s, Deadline(at)))
        reg(M, "subscribe-duration")(
            lambda s, d: add("pollable")(s, Deadline(time.monotonic_ns() + d)))

        # wasi:filesystem: no preopens in the spike (the executor maps `files` here)
        reg("wasi:filesystem/preopens", "get-directories")(lambda s: [])
        reg("wasi:filesystem/types", "filesystem-error-code")(lambda s, e: None)

        # wasi:sockets: denied with the interfaces' own error codes
        reg("wasi:sockets/instance-network", "instance-network")(
            lambda s: add("network")(s, object()))
        reg("wasi:sockets/tcp-create-socket", "create-tcp-socket")(
            lambda s, fam: Err("access-denied"))
        reg("wasi:sockets/udp-create-socket", "create-udp-socket")(
            lambda s, fam: Err("access-denied"))
        reg("wasi:sockets/ip-name-lookup", "resolve-addresses")(
            lambda s, net, name: Err("permanent-resolver-failure"))

        # wasi:http/types: fields
        H = "wasi:http/types"
        F = get("fields")

        def immutable_check(f: Fields) -> Any:
            return Err(V("immutable")) if f.immutable else None

        reg(H, "[constructor]fields")(lambda s: add("fields")(s, Fields()))
        reg(H, "[static]fields.from-list")(
            lambda s, entries: Ok(add("fields")(s, Fields([(n.lower(), bytes(v))
                                                           for n, v in entries]))))
        reg(H, "[method]fields.get")(
            lambda s, h, name: [v for n, v in F(s, h).entries if n == name.lower()])
        reg(H, "[method]fields.has")(
            lambda s, h, name: any(n == name.lower() for n, _ in F(s, h).entries))

        @reg(H, "[method]fields.set")
        def fields_set(s: Any, h: Any, name: str, values: list[bytes]) -> Any:
            f = F(s, h)
            if f.immutable:
                return Err(V("immutable"))
            name = name.lower()
            f.entries = [(n, v) for n, v in f.entries if n != name] + [(name, v) for v in values]
            return Ok(None)

        @reg(H, "[method]fields.delete")
        def fields_delete(s: Any, h: Any, name: str) -> Any:
            f = F(s, h)
            if f.immutable:
                return Err(V("immutable"))
            f.entries = [(n, v) for n, v in f.entries if n != name.lower()]
            return Ok(None)

        @reg(H, "[method]fields.append")
        def fields_append(s: Any, h: Any, name: str, value: bytes) -> Any:
            f = F(s, h)
            if f.immutable:
                return Err(V("immutable"))
            f.entries.append((name.lower(), value))
            return Ok(None)

        reg(H, "[method]fields.entries")(lambda s, h: list(F(s, h).entries))
        reg(H, "[method]fields.clone")(lambda s, h: add("fields")(s, Fields(list(F(s, h).entries))))

        # incoming-request
        R = get("incoming-request")
        reg(H, "[method]incoming-request.method")(lambda s, h: _method(R(s, h).method))
        reg(H, "[method]incoming-request.path-with-query")(lambda s, h: R(s, h).path_with_query)
        def req_scheme(s: Any, h: Any) -> Any:
            sch = R(s, h).scheme  # a borrowed ResourceAny converts to host ONCE per call
            return None if sch is None else _scheme(sch)

        reg(H, "[method]incoming-request.scheme")(req_scheme)
        reg(H, "[method]incoming-request.authority")(lambda s, h: R(s, h).authority)
        reg(H, "[method]incoming-request.headers")(
            lambda s, h: add("fields")(s, Fields(list(R(s, h).headers), immutable=True)))

        @reg(H, "[method]incoming-request.consume")
        def consume(s: Any, h: Any) -> Any:
            r = R(s, h)
            if r.consumed:
                return Err(None)
            r.consumed = True
            return Ok(add("incoming-body")(s, IncomingBody(InputStream(r.body))))

        @reg(H, "[method]incoming-body.stream")
        def body_stream(s: Any, h: Any) -> Any:
            b = get("incoming-body")(s, h)
            if b.taken:
                return Err(None)
            b.taken = True
            return Ok(add("input-stream")(s, b.stream))

        @reg(H, "[static]incoming-body.finish")
        def body_finish(s: Any, h: Any) -> Any:
            t["incoming-body"].take(s, h)
            return add("future-trailers")(s, None)

        reg(H, "[method]future-trailers.subscribe")(lambda s, h: add("pollable")(s, Pollable()))
        reg(H, "[method]future-trailers.get")(lambda s, h: Ok(Ok(None)))

        # outgoing-response / outgoing-body / response-outparam
        reg(H, "[constructor]outgoing-response")(
            lambda s, headers: add("outgoing-response")(
                s, OutgoingResponse(_immutable(t["fields"].take(s, headers)))))
        O = get("outgoing-response")
        reg(H, "[method]outgoing-response.status-code")(lambda s, h: O(s, h).status)

        @reg(H, "[method]outgoing-response.set-status-code")
        def set_status(s: Any, h: Any, code: int) -> Any:
            if not 100 <= code <= 999:
                return Err(None)
            O(s, h).status = code
            return Ok(None)

        reg(H, "[method]outgoing-response.headers")(
            lambda s, h: add("fields")(s, O(s, h).headers))  # same Fields object, immutable

        @reg(H, "[method]outgoing-response.body")
        def response_body(s: Any, h: Any) -> Any:
            r = O(s, h)
            if r.body_taken:
                return Err(None)
            r.body_taken = True
            r.body = OutgoingBody()
            return Ok(add("outgoing-body")(s, r.body))

        @reg(H, "[method]outgoing-body.write")
        def body_write(s: Any, h: Any) -> Any:
            b = get("outgoing-body")(s, h)
            if b.stream_taken:
                return Err(None)
            b.stream_taken = True
            return Ok(add("output-stream")(s, OutputStream(b.write)))

        @reg(H, "[static]outgoing-body.finish")
        def outgoing_finish(s: Any, h: Any, trailers: Any) -> Any:
            b = t["outgoing-body"].take(s, h)
            if trailers is not None:
                t["fields"].take(s, trailers)
            if b.exchange is not None:
                b.exchange.finished = True
            return Ok(None)

        @reg(H, "[static]response-outparam.set")
        def outparam_set(s: Any, h: Any, response: Any) -> None:
            ex = t["response-outparam"].take(s, h).exchange
            # result<own<outgoing-response>, error-code> lifts untagged (the two payload
            # classes differ): a resource handle for ok, a wc.Variant for err.
            if isinstance(response, Ok):
                response = response.value
            if not isinstance(response, wc.ResourceHost):
                ex.error = response.value if isinstance(response, Err) else response
                return
            r = t["outgoing-response"].take(s, response)
            ex.status, ex.headers = r.status, list(r.headers.entries)
            if r.body is not None:
                r.body.attach(ex)
            else:
                ex.finished = True

        reg(H, "http-error-code")(lambda s, e: None)

        # outbound: denied in the spike
        reg("wasi:http/outgoing-handler", "handle")(
            lambda s, req, opts: Err(V("HTTP-request-denied")))
        return impl


_METHODS = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "DELETE": "delete",
            "CONNECT": "connect", "OPTIONS": "options", "TRACE": "trace", "PATCH": "patch"}


def _method(m: str) -> wc.Variant:
    tag = _METHODS.get(m)
    return V(tag) if tag else V("other", m)


def _scheme(sch: str) -> wc.Variant:
    return V({"http": "HTTP", "https": "HTTPS"}.get(sch, "other"),
             None if sch in ("http", "https") else sch)


def _immutable(f: Fields) -> Fields:
    f.immutable = True
    return f


# ---------------------------------------------------------------------------
# Calling the export


def find_handler(component: wc.Component, engine: wasmtime.Engine) -> str:
    for name in component.type.exports(engine):
        if name.startswith("wasi:http/incoming-handler@0.2."):
            return name
    raise LookupError("no wasi:http/incoming-handler@0.2.x export")


class Handler:
    """An instantiated component plus its typed `handle` export."""

    def __init__(self, host: WasiHttpHost, linker: wc.Linker, component: wc.Component,
                 engine: wasmtime.Engine, wasi_env: dict[str, str] | None = None) -> None:
        self.host = host
        self.store = wasmtime.Store(engine)
        wasi = wasmtime.WasiConfig()
        wasi.env = list((wasi_env or {}).items())
        self.store.set_wasi(wasi)
        self.instance = linker.instantiate(self.store, component)
        iface = find_handler(component, engine)
        idx = self.instance.get_export_index(self.store, iface)
        fidx = self.instance.get_export_index(self.store, "handle", idx)
        self.func = self.instance.get_func(self.store, fidx)
        self.typed = TypedFunc(export_func_type(component, engine, iface, "handle"))

    def handle(self, req: IncomingRequest, exchange: Exchange | None = None) -> Exchange:
        exchange = exchange or Exchange()
        r, o = self.host.new_request(self.store, req, exchange)
        self.typed.call(self.store, self.func, (r, o))
        return exchange

    def close(self) -> None:
        self.host.release(self.store)
        self.store.close()


def make_linker(host: WasiHttpHost, component: wc.Component, engine: wasmtime.Engine,
                version_override: str | None = None) -> wc.Linker:
    linker = wc.Linker(engine)
    linker.add_wasip2()
    linker.allow_shadowing = True
    host.link(linker, component, engine, version_override)
    return linker
