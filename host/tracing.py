"""OpenTelemetry traces, configured by the standard `OTEL_*` variables as in Spin.

On only when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
is set and not empty, and `OTEL_SDK_DISABLED` is not (Spin's rule). Spans go
out over OTLP/HTTP protobuf (Spin's default protocol; `grpc` is refused at
start-up), batched on a background thread (`OTEL_BSP_*`); every other
exporter setting (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._CERTIFICATE`,
`..._COMPRESSION`), the resource (`OTEL_SERVICE_NAME`, default `spinhost`;
`OTEL_RESOURCE_ATTRIBUTES`) and the propagators (`OTEL_PROPAGATORS`, default
W3C trace context and baggage) are read by the OpenTelemetry SDK itself. The
SDK is imported only when tracing is on: a host without an endpoint pays
nothing at start-up, and nothing per request (no wrapper is installed).

What is traced:

- a span per request (`RequestTracing`, kind server): named `METHOD ROUTE` as
  Spin names it, with the route as written in the manifest, the component,
  the status and, for a failed guest call, `error.type` (trap, deadline,
  guest, host). An incoming `traceparent` is continued. Never the query string
  or a header value.
- a child span per capability host call (`host_call`, wrapped once at link
  time in host/capabilities: key-value, SQLite, Redis, variables), named
  `INTERFACE#FUNCTION`. host/server.py runs each guest call in a copy of the
  request's context, so these find their parent on the guest thread.
- a consumer span per Redis message and component (`message`, the Redis
  trigger), named `CHANNEL receive` with `messaging.*` attributes, the
  component and, when the handler failed, `error.type` (trap, deadline, error);
  its host calls are its children. Never the payload.
- a client span per outbound HTTP request (`outbound`, both our
  outgoing-handler and wasi:http's, which share `Outbound.handle`), named by
  its method as Spin does, with the destination's scheme, host and port; the
  request carries its `traceparent` (`inject`), replacing any the guest set.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from host.errors import ConfigError

if TYPE_CHECKING:  # host.server is not imported here: host/capabilities imports this module
    from host.server import Receive, Scope, Send

log = logging.getLogger("host.tracing")

DEFAULT_SERVICE_NAME = "spinhost"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
COMPONENT_ATTRIBUTE = "spin.component_id"

# Set by `start`: the process's tracer and the SDK pieces the hooks use. None: tracing off.
_tracer: Any = None
_otel: Any = None  # the opentelemetry modules, imported by `start`


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (Spin's rule)."""
    return any(environ.get(name) for name in ENDPOINTS) and not environ.get("OTEL_SDK_DISABLED")


def check(environ: Mapping[str, str]) -> None:
    """Refuse, at start-up, an OTLP protocol this host does not speak."""
    if not enabled(environ):
        return
    for name in PROTOCOLS:
        protocol = environ.get(name)
        if protocol:
            if protocol != "http/protobuf":
                raise ConfigError(
                    f"{name}={protocol!r}: this host exports traces over http/protobuf only "
                    "(an OpenTelemetry collector's port 4318); unset it or set http/protobuf")
            return


class Tracing:
    """Tracing for this process; `close` sends what is still batched."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def close(self) -> None:
        global _tracer
        _tracer = None
        try:
            self.provider.shutdown()
        except Exception as exc:  # an unreachable collector must not fail the exit
            log.warning("tracing: could not send the last spans: %s", exc)


def start(environ: Mapping[str, str], version: str) -> Tracing | None:
    """Set up this process's tracer if the environment asks for traces."""
    global _tracer, _otel
    if not enabled(environ):
        return None
    from types import SimpleNamespace

    from opentelemetry import context, propagate, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_VERSION: version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _otel = SimpleNamespace(context=context, propagate=propagate, trace=trace,
                            SpanKind=trace.SpanKind, Status=trace.Status,
                            StatusCode=trace.StatusCode)
    _tracer = provider.get_tracer("spinhost", version)
    return Tracing(provider)


def active() -> bool:
    return _tracer is not None


class RequestTracing:
    """ASGI wrapper: a server span per request, continuing an incoming `traceparent`."""

    def __init__(self, app: Any) -> None:
        from host import server

        self.app = app
        self.keys = (server.ROUTE_KEY, server.COMPONENT_KEY, server.FAILURE_KEY)
        self.watch = server.ResponseWatch
        self.fields = {name.encode() for name in _otel.propagate.get_global_textmap().fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _tracer is None:
            await self.app(scope, receive, send)
            return
        otel = _otel
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in self.fields}
        parent = otel.propagate.extract(carrier)
        method = scope["method"]
        path = scope.get("raw_path") or scope["path"].encode()
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path.split(b"?", 1)[0].decode("latin-1"),
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.name": "http",
        }
        client = scope.get("client")
        if client:
            attributes["network.peer.address"], attributes["network.peer.port"] = client[:2]
        span = _tracer.start_span(method, context=parent, kind=otel.SpanKind.SERVER,
                                  attributes=attributes)
        watch = self.watch(send)
        token = otel.context.attach(otel.trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, watch)
        except BaseException as exc:
            span.record_exception(exc)
            watch.raised()
            raise
        finally:
            status = watch.status
            otel.context.detach(token)
            route_key, component_key, failure_key = self.keys
            route = scope.get(route_key)
            if route is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            component = scope.get(component_key)
            if component is not None:
                span.set_attribute(COMPONENT_ATTRIBUTE, component)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            failure = scope.get(failure_key)
            if failure is not None:
                span.set_attribute("error.type", failure)
            if failure is not None or (status is not None and status >= 500):
                span.set_status(otel.Status(otel.StatusCode.ERROR))
            span.end()


def host_call(component_id: str, interface: str, name: str,
              func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a capability's host function) in a child span when tracing is on; as it
    is otherwise (decided at link time: nothing per call)."""
    if _tracer is None:
        return func
    span_name = f"{interface}#{name}"
    attributes = {COMPONENT_ATTRIBUTE: component_id}

    def traced(store: Any, *args: Any) -> Any:
        tracer = _tracer
        if tracer is None:
            return func(store, *args)
        with tracer.start_as_current_span(span_name, kind=_otel.SpanKind.CLIENT,
                                          attributes=attributes):
            return func(store, *args)
    return traced


@contextlib.contextmanager
def outbound(component_id: str, method: str, scheme: str, host: str,
             port: int) -> Iterator[Any]:
    """A client span around one outbound HTTP request (None when tracing is off); the
    caller records the outcome with `outbound_result`."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes = {COMPONENT_ATTRIBUTE: component_id, "http.request.method": method,
                  "url.scheme": scheme, "server.address": host, "server.port": port}
    with tracer.start_as_current_span(method, kind=_otel.SpanKind.CLIENT,
                                      attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def message(component_id: str, channel: str) -> Iterator[Any]:
    """A consumer span around one Redis message handled by one component (None when
    tracing is off); the caller records a failure with `message_failed`."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes = {COMPONENT_ATTRIBUTE: component_id, "messaging.system": "redis",
                  "messaging.operation": "receive", "messaging.destination.name": channel}
    with tracer.start_as_current_span(f"{channel} receive", kind=_otel.SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


def message_failed(span: Any, error: str) -> None:
    if span is None:
        return
    span.set_attribute("error.type", error)
    span.set_status(_otel.Status(_otel.StatusCode.ERROR))


def outbound_result(span: Any, status: int | None, error: str | None) -> None:
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(_otel.Status(_otel.StatusCode.ERROR))


def inject(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with the current trace context (`traceparent`...) in place of any the
    guest set; unchanged when tracing is off."""
    if _tracer is None:
        return headers
    carrier: dict[str, str] = {}
    _otel.propagate.inject(carrier)
    if not carrier:
        return headers
    names = {name.lower().encode() for name in carrier}
    kept = [(name, value) for name, value in headers if name.lower() not in names]
    return kept + [(name.encode(), value.encode()) for name, value in carrier.items()]
