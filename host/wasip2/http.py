"""`wasi:http/types` and `outgoing-handler`: requests in, responses out, as streams.

The request body is a `Source` the server fills from ASGI `receive` as the
guest reads; the response goes to a `ResponseSink` as the guest writes it.
Outbound requests go through `outbound` (host/capabilities/outbound.py: the
component's allow-list and the shared httpx client, with its limits and error
codes): the request body is buffered (at most `MAX_EARLY_BODY_BYTES`) and sent
when the guest first waits for the response, whose body is buffered too
(`OutboundLimits.max_response_bytes`) and read by the guest in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime
import wasmtime.component as wc

from host.fields import is_field_name, is_field_value
from host.limits import MAX_FIELD_BYTES_PER_REQUEST
from host.runtime.marshal import Err, HostHandle, Ok
from host.wasip2.io import (
    WRITE_BUDGET,
    BytesSource,
    InputStream,
    OutputStream,
    Pollable,
    Source,
)
from host.wasip2.resources import Functions, Tables

# Bytes a guest may write to a response body before `response-outparam.set`
# gives it a destination, or to an outbound request body; they wait in host
# memory until then.
MAX_EARLY_BODY_BYTES = 16 * WRITE_BUDGET


class ResponseSink(Protocol):
    """Where a response goes: the server sends the head at the first write or finish."""

    def head(self, status: int, headers: list[tuple[str, bytes]]) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


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
    body: Source
    consumed: bool = False


@dataclass
class IncomingBody:
    stream: InputStream
    taken: bool = False


@dataclass
class Exchange:
    """One request's response side, as `response-outparam.set` and the body fill it."""

    sink: ResponseSink
    responded: bool = False
    error: Any = None  # the error-code the guest answered with, if it did
    finished: bool = False


@dataclass
class OutgoingBody:
    """Writes made before the response is set wait here; later ones go to the sink."""

    exchange: Exchange | None = None
    early: list[bytes] = field(default_factory=list)
    early_bytes: int = 0
    stream_taken: bool = False
    finished: bool = False

    def write(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.sink.write(data)
            return
        self.early_bytes += len(data)
        if self.early_bytes > MAX_EARLY_BODY_BYTES:
            raise wasmtime.WasmtimeError(
                f"more than {MAX_EARLY_BODY_BYTES} bytes of response body written before "
                "response-outparam.set")
        self.early.append(data)

    def attach(self, exchange: Exchange) -> None:
        self.exchange = exchange
        for chunk in self.early:
            exchange.sink.write(chunk)
        self.early.clear()
        if self.finished:
            self.finish()

    def finish(self) -> None:
        self.finished = True
        if self.exchange is not None:
            self.exchange.sink.finish()
            self.exchange.finished = True


@dataclass
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: OutgoingBody | None = None


@dataclass
class OutgoingRequest:
    headers: Fields
    method: Any = field(default_factory=lambda: wc.Variant("get"))
    scheme: Any = None
    authority: str | None = None
    path_with_query: str | None = None
    body: OutgoingBody | None = None


@dataclass
class IncomingResponse:
    status: int
    headers: list[tuple[str, bytes]]
    body: bytes
    consumed: bool = False


@dataclass
class FutureResponse:
    """An outbound request, sent when the guest first waits for its response."""

    request: OutgoingRequest
    result: Ok | Err | None = None
    taken: bool = False

    def sendable(self) -> bool:
        body = self.request.body
        return body is None or body.finished


class _FuturePollable(Pollable):
    def __init__(self, future: FutureResponse, send: Callable[[FutureResponse], None]) -> None:
        self.future = future
        self.send = send

    def ready(self) -> bool:
        return self.future.result is not None or self.future.sendable()

    def block(self) -> None:
        if self.future.result is None:
            if not self.future.sendable():
                raise wasmtime.WasmtimeError(
                    "waiting for an outbound response before finishing its request body")
            self.send(self.future)


# Outbound calls: a `spinhost:http` request record in, Ok((status, headers, body)) or
# Err(error-code) out (host/capabilities/outbound.py, `Outbound.handle`).
Outbound = Callable[[Any, Any], Ok | Err]


_METHODS = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "DELETE": "delete",
            "CONNECT": "connect", "OPTIONS": "options", "TRACE": "trace", "PATCH": "patch"}


def _method(method: str) -> wc.Variant:
    tag = _METHODS.get(method)
    return wc.Variant(tag) if tag else wc.Variant("other", method)


def _scheme(scheme: str) -> wc.Variant:
    known = {"http": "HTTP", "https": "HTTPS"}.get(scheme)
    return wc.Variant(known) if known else wc.Variant("other", scheme)


def _denied() -> Err:
    return Err(wc.Variant("HTTP-request-denied"))


def _wasi_error(error: Any) -> Any:
    # Our error-code mirrors wasi:http's; DNS-error carries a record there.
    if isinstance(error, wc.Variant) and error.tag == "DNS-error":
        return wc.Variant("DNS-error", (None, None))
    return error


def functions(t: Tables, outbound: Outbound | None = None) -> Functions:
    H = "wasi:http/types"
    invalid = Err(wc.Variant("invalid-syntax"))
    immutable = Err(wc.Variant("immutable"))

    def fields(s: Any, h: Any) -> Fields:
        found: Fields = t.get("fields", s, h)
        return found

    def charge(s: Any, entries: list[tuple[str, bytes]]) -> None:
        t.charge(s, sum(len(n) + len(v) for n, v in entries), MAX_FIELD_BYTES_PER_REQUEST,
                 "header fields")

    def new_fields(s: Any, entries: list[tuple[str, bytes]], immutable: bool = False) -> Any:
        charge(s, entries)
        return t.add("fields", s, Fields(entries, immutable))

    def valid(name: str, value: bytes) -> bool:
        return is_field_name(name.encode("latin-1", "replace")) and is_field_value(value)

    def from_list(s: Any, entries: list[tuple[str, bytes]]) -> Any:
        if not all(valid(n, bytes(v)) for n, v in entries):
            return invalid
        return Ok(new_fields(s, [(n.lower(), bytes(v)) for n, v in entries]))

    def fields_set(s: Any, h: Any, name: str, values: list[bytes]) -> Any:
        f = fields(s, h)
        if f.immutable:
            return immutable
        if not all(valid(name, v) for v in values):
            return invalid
        name = name.lower()
        added = [(name, v) for v in values]
        charge(s, added)
        f.entries = [(n, v) for n, v in f.entries if n != name] + added
        return Ok(None)

    def fields_delete(s: Any, h: Any, name: str) -> Any:
        f = fields(s, h)
        if f.immutable:
            return immutable
        f.entries = [(n, v) for n, v in f.entries if n != name.lower()]
        return Ok(None)

    def fields_append(s: Any, h: Any, name: str, value: bytes) -> Any:
        f = fields(s, h)
        if f.immutable:
            return immutable
        if not valid(name, value):
            return invalid
        charge(s, [(name, value)])
        f.entries.append((name.lower(), value))
        return Ok(None)

    def request(s: Any, h: Any) -> IncomingRequest:
        found: IncomingRequest = t.get("incoming-request", s, h)
        return found

    def scheme(s: Any, h: Any) -> Any:
        value = request(s, h).scheme
        return None if value is None else _scheme(value)

    def consume(s: Any, h: Any) -> Any:
        r = request(s, h)
        if r.consumed:
            return Err(None)
        r.consumed = True
        return Ok(t.add("incoming-body", s, IncomingBody(InputStream(r.body))))

    def body_stream(s: Any, h: Any) -> Any:
        b = t.get("incoming-body", s, h)
        if b.taken:
            return Err(None)
        b.taken = True
        return Ok(t.add("input-stream", s, b.stream))

    def body_finish(s: Any, h: Any) -> Any:
        t.take("incoming-body", s, h)
        return t.add("future-trailers", s, None)

    def response(s: Any, h: Any) -> OutgoingResponse:
        found: OutgoingResponse = t.get("outgoing-response", s, h)
        return found

    def new_response(s: Any, headers: Any) -> Any:
        f = t.take("fields", s, headers)
        f.immutable = True
        return t.add("outgoing-response", s, OutgoingResponse(f))

    def set_status(s: Any, h: Any, code: int) -> Any:
        if not 100 <= code <= 599:
            return Err(None)
        response(s, h).status = code
        return Ok(None)

    def new_body(owner: OutgoingResponse | OutgoingRequest, s: Any) -> Any:
        if owner.body is not None:
            return Err(None)
        owner.body = OutgoingBody()
        return Ok(t.add("outgoing-body", s, owner.body))

    def body_write(s: Any, h: Any) -> Any:
        b = t.get("outgoing-body", s, h)
        if b.stream_taken:
            return Err(None)
        b.stream_taken = True
        return Ok(t.add("output-stream", s, OutputStream(b.write)))

    def outgoing_finish(s: Any, h: Any, trailers: Any) -> Any:
        body = t.take("outgoing-body", s, h)
        if trailers is not None:
            t.take("fields", s, trailers)  # trailers are not sent over HTTP/1.1 here
        body.finish()
        return Ok(None)

    def outparam_set(s: Any, h: Any, result: Any) -> None:
        exchange: Exchange = t.take("response-outparam", s, h).exchange
        exchange.responded = True
        # result<own<outgoing-response>, error-code> lifts untagged: a handle for
        # ok, an error-code variant for err.
        if isinstance(result, Ok | Err):
            result = result.value
        if not isinstance(result, (HostHandle, wc.ResourceHost)):
            exchange.error = result
            return
        r: OutgoingResponse = t.take("outgoing-response", s, result)
        exchange.sink.head(r.status, list(r.headers.entries))
        if r.body is None:
            exchange.sink.finish()
            exchange.finished = True
        else:
            r.body.attach(exchange)

    def new_request(s: Any, headers: Any) -> Any:
        f = t.take("fields", s, headers)
        f.immutable = True
        return t.add("outgoing-request", s, OutgoingRequest(f))

    def outgoing_request(s: Any, h: Any) -> OutgoingRequest:
        found: OutgoingRequest = t.get("outgoing-request", s, h)
        return found

    def handle(s: Any, req: Any, options: Any) -> Any:
        request = t.take("outgoing-request", s, req)
        if options is not None:
            t.take("request-options", s, options)
        if outbound is None:
            return _denied()
        return Ok(t.add("future-incoming-response", s, FutureResponse(request)))

    def send(s: Any, future: FutureResponse) -> None:
        assert outbound is not None
        r = future.request
        record = wc.Record()
        record.__dict__.update({
            "method": r.method, "scheme": r.scheme, "authority": r.authority,
            "path-with-query": r.path_with_query, "headers": list(r.headers.entries),
            "body": b"".join(r.body.early) if r.body is not None else b""})
        result = outbound(s, record)
        if isinstance(result, Ok):
            status, headers, body = result.value
            future.result = Ok(IncomingResponse(status, headers, body))
        else:
            future.result = Err(_wasi_error(result.value))

    def future(s: Any, h: Any) -> FutureResponse:
        found: FutureResponse = t.get("future-incoming-response", s, h)
        return found

    def future_get(s: Any, h: Any) -> Any:
        f = future(s, h)
        if f.taken:
            return Err(None)  # some(err): already taken
        if f.result is None:
            if not f.sendable():
                return None
            send(s, f)
        f.taken = True
        result = f.result
        if isinstance(result, Ok):
            return Ok(Ok(t.add("incoming-response", s, result.value)))
        return Ok(result)

    def incoming_response(s: Any, h: Any) -> IncomingResponse:
        found: IncomingResponse = t.get("incoming-response", s, h)
        return found

    def response_consume(s: Any, h: Any) -> Any:
        r = incoming_response(s, h)
        if r.consumed:
            return Err(None)
        r.consumed = True
        body = IncomingBody(InputStream(BytesSource(r.body)))
        return Ok(t.add("incoming-body", s, body))

    def setter(name: str) -> Callable[..., Any]:
        def set_field(s: Any, h: Any, value: Any) -> Any:
            setattr(outgoing_request(s, h), name, value)
            return ok
        return set_field

    ok = Ok(None)
    return {
        (H, "[constructor]fields"): lambda s: new_fields(s, []),
        (H, "[static]fields.from-list"): from_list,
        (H, "[method]fields.get"):
            lambda s, h, name: [v for n, v in fields(s, h).entries if n == name.lower()],
        (H, "[method]fields.has"):
            lambda s, h, name: any(n == name.lower() for n, _ in fields(s, h).entries),
        (H, "[method]fields.set"): fields_set,
        (H, "[method]fields.delete"): fields_delete,
        (H, "[method]fields.append"): fields_append,
        (H, "[method]fields.entries"): lambda s, h: list(fields(s, h).entries),
        (H, "[method]fields.clone"):
            lambda s, h: new_fields(s, list(fields(s, h).entries)),
        (H, "[method]incoming-request.method"): lambda s, h: _method(request(s, h).method),
        (H, "[method]incoming-request.path-with-query"):
            lambda s, h: request(s, h).path_with_query,
        (H, "[method]incoming-request.scheme"): scheme,
        (H, "[method]incoming-request.authority"): lambda s, h: request(s, h).authority,
        (H, "[method]incoming-request.headers"):
            lambda s, h: new_fields(s, list(request(s, h).headers), True),
        (H, "[method]incoming-request.consume"): consume,
        (H, "[method]incoming-body.stream"): body_stream,
        (H, "[static]incoming-body.finish"): body_finish,
        (H, "[method]future-trailers.subscribe"): lambda s, h: t.add("pollable", s, Pollable()),
        (H, "[method]future-trailers.get"): lambda s, h: Ok(Ok(None)),
        (H, "[constructor]outgoing-response"): new_response,
        (H, "[method]outgoing-response.status-code"): lambda s, h: response(s, h).status,
        (H, "[method]outgoing-response.set-status-code"): set_status,
        (H, "[method]outgoing-response.headers"):
            lambda s, h: t.add("fields", s, response(s, h).headers),
        (H, "[method]outgoing-response.body"): lambda s, h: new_body(response(s, h), s),
        (H, "[method]outgoing-body.write"): body_write,
        (H, "[static]outgoing-body.finish"): outgoing_finish,
        (H, "[static]response-outparam.set"): outparam_set,
        (H, "http-error-code"): lambda s, e: None,
        # Outbound requests: built, then denied by `outgoing-handler.handle`.
        (H, "[constructor]outgoing-request"): new_request,
        (H, "[method]outgoing-request.headers"):
            lambda s, h: t.add("fields", s, outgoing_request(s, h).headers),
        (H, "[method]outgoing-request.body"):
            lambda s, h: new_body(outgoing_request(s, h), s),
        (H, "[method]outgoing-request.set-method"): setter("method"),
        (H, "[method]outgoing-request.set-path-with-query"): setter("path_with_query"),
        (H, "[method]outgoing-request.set-scheme"): setter("scheme"),
        (H, "[method]outgoing-request.set-authority"): setter("authority"),
        (H, "[method]outgoing-request.method"): lambda s, h: outgoing_request(s, h).method,
        (H, "[method]outgoing-request.path-with-query"):
            lambda s, h: outgoing_request(s, h).path_with_query,
        (H, "[method]outgoing-request.scheme"): lambda s, h: outgoing_request(s, h).scheme,
        (H, "[method]outgoing-request.authority"):
            lambda s, h: outgoing_request(s, h).authority,
        (H, "[method]future-incoming-response.subscribe"):
            lambda s, h: t.add("pollable", s, _FuturePollable(
                future(s, h), lambda f: send(s, f))),
        (H, "[method]future-incoming-response.get"): future_get,
        (H, "[method]incoming-response.status"): lambda s, h: incoming_response(s, h).status,
        (H, "[method]incoming-response.headers"):
            lambda s, h: new_fields(s, list(incoming_response(s, h).headers), True),
        (H, "[method]incoming-response.consume"): response_consume,
        (H, "[constructor]request-options"): lambda s: t.add("request-options", s, None),
        (H, "[method]request-options.set-connect-timeout"): lambda s, h, d: ok,
        (H, "[method]request-options.set-first-byte-timeout"): lambda s, h, d: ok,
        (H, "[method]request-options.set-between-bytes-timeout"): lambda s, h, d: ok,
        ("wasi:http/outgoing-handler", "handle"): handle,
    }


@dataclass
class Outparam:
    exchange: Exchange
