"""host/tracing.py through a real `host up`: spans arrive at an in-test OTLP/HTTP endpoint.

The endpoint is a loopback HTTP server decoding each export request with
opentelemetry-proto (what the exporter itself encodes with). A request span
carries its route and component and continues an incoming `traceparent`; an
outbound call (ours, and wasi:http's) is its child span and the upstream gets
that span's `traceparent`; a key-value call is a child span too.
"""

from __future__ import annotations

import gzip
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from host import tracing
from host.errors import ConfigError
from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.loopback import Upstream, upstream_server
from tests.test_component_wasi_http import FETCH, build

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint: every span exported to it, with its resource's attributes."""

    spans: list[tuple[dict[str, Any], Span]]
    arrived: threading.Condition


class _Receiver(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.arrived:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend((resource, s) for s in scope_spans.spans)
            self.server.arrived.notify_all()
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), _Receiver)
    server.spans, server.arrived = [], threading.Condition()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wait_for_span(collector: Collector, name: str, kind: int = Span.SPAN_KIND_SERVER,
                  timeout: float = 15.0) -> Span:
    def matching() -> list[Span]:
        return [s for _, s in collector.spans if s.name == name and s.kind == kind]

    with collector.arrived:
        collector.arrived.wait_for(matching, timeout)
        found = matching()
    assert found, f"no span {name!r} among {[s.name for _, s in collector.spans]}"
    return found[-1]


def traced_env(collector: Collector, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
               OTEL_BSP_SCHEDULE_DELAY="50", **extra)
    return env


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


def test_request_span_continues_the_callers_trace(collector: Collector, tmp_path: Path,
                                                  cache_dir: Path,
                                                  wat_components: dict[str, Path]) -> None:
    app = write_app(tmp_path / "app", """spin_manifest_version = 2
[application]
name = "traced"
[[trigger.http]]
route = "/echo/..."
component = "echo"
[[trigger.http]]
route = "/trap"
component = "trap"
[component.echo]
source = "echo.wasm"
[component.trap]
source = "trap.wasm"
""", {"echo.wasm": wat_components["echo"], "trap.wasm": wat_components["trap"]})
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)],
                     env=traced_env(collector)) as host, host.client() as client:
        r = client.post("/echo/a?token=SECRET", content=b"hi",
                        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert r.status_code == 200
        span = wait_for_span(collector, "POST /echo/...")
        assert client.get("/trap").status_code == 500
        trapped = wait_for_span(collector, "GET /trap")
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.kind == Span.SPAN_KIND_SERVER
    found = attributes(span.attributes)
    assert found["http.route"] == "/echo/..." and found["spin.component_id"] == "echo"
    assert found["http.response.status_code"] == 200 and found["url.path"] == "/echo/a"
    assert found["http.request.method"] == "POST"
    assert "SECRET" not in str(found)
    resource = next(r for r, s in collector.spans if s.name == "POST /echo/...")
    assert resource["service.name"] == "spinhost"
    # No traceparent: a new trace, no parent.
    assert trapped.parent_span_id == b"" and trapped.trace_id.hex() != TRACE_ID
    assert attributes(trapped.attributes)["error.type"] == "trap"
    assert trapped.status.code == trapped.status.STATUS_CODE_ERROR


def test_outbound_and_key_value_calls_are_child_spans(collector: Collector, tmp_path: Path,
                                                      cache_dir: Path,
                                                      upstream: Upstream) -> None:
    port = upstream.server_address[1]
    probe = built_app("capability-probe") / "capability-probe.wasm"
    app = write_app(tmp_path / "app", f"""spin_manifest_version = 2
[application]
name = "probe-traced"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "probe.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
""", {"probe.wasm": probe})
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1"],
                     env=traced_env(collector, OTEL_SERVICE_NAME="probe-svc")
                     ) as host, host.client() as client:
        got = client.get("/http", params={"url": f"http://127.0.0.1:{port}/x?y=1"},
                         headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}).json()
        assert got["status"] == 201
        outbound = wait_for_span(collector, "GET", Span.SPAN_KIND_CLIENT)
        request = wait_for_span(collector, "GET /...")
        assert client.post("/kv/set?key=k", content=b"v").status_code == 200
        kv_request = wait_for_span(collector, "POST /...")
        with collector.arrived:
            kv_calls = [s for _, s in collector.spans if s.trace_id == kv_request.trace_id
                        and s.name.startswith("wasi:keyvalue/")]
    assert outbound.kind == Span.SPAN_KIND_CLIENT
    assert outbound.trace_id.hex() == TRACE_ID
    assert outbound.parent_span_id == request.span_id
    assert request.parent_span_id.hex() == PARENT_ID
    found = attributes(outbound.attributes)
    assert found["server.address"] == "127.0.0.1" and found["server.port"] == port
    assert found["http.response.status_code"] == 201
    # The upstream got the outbound span's context, not the caller's.
    assert upstream.traceparents == [f"00-{TRACE_ID}-{outbound.span_id.hex()}-01"]
    names = {s.name for s in kv_calls}
    assert any(name.endswith("#open") for name in names)
    assert any(name.endswith("#[method]bucket.set") for name in names), names
    assert all(s.parent_span_id == kv_request.span_id for s in kv_calls)
    resource = next(r for r, s in collector.spans if s.span_id == outbound.span_id)
    assert resource["service.name"] == "probe-svc"


def test_wasi_http_outbound_carries_traceparent(collector: Collector, tmp_path: Path,
                                                cache_dir: Path, upstream: Upstream) -> None:
    port = upstream.server_address[1]
    component = build(FETCH, tmp_path / "build" / "fetch.wasm",
                      "import wasi:http/outgoing-handler@0.2.10;")
    app = write_app(tmp_path / "app", f"""spin_manifest_version = 2
[application]
name = "fetch-traced"
[[trigger.http]]
route = "/allowed/..."
component = "allowed"
[component.allowed]
source = "fetch.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
""", {"fetch.wasm": component})
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--workers", "2"],
                     env=traced_env(collector)) as host, host.client() as client:
        assert client.get(f"/allowed/127.0.0.1:{port}").status_code == 201
        outbound = wait_for_span(collector, "GET", Span.SPAN_KIND_CLIENT)
        request = wait_for_span(collector, "GET /allowed/...")
    assert outbound.parent_span_id == request.span_id
    assert outbound.trace_id == request.trace_id
    [sent] = upstream.traceparents
    assert sent is not None  # flags: sampled, and 02 for a random trace id (W3C level 2)
    assert sent.startswith(f"00-{outbound.trace_id.hex()}-{outbound.span_id.hex()}-")


def test_on_only_with_an_endpoint() -> None:
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                "OTEL_SDK_DISABLED": "true"})
    tracing.check({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})  # no endpoint: not read
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"):
        tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                   "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})  # the traces one wins



def test_each_redis_message_is_a_consumer_span(collector: Collector, tmp_path: Path,
                                               cache_dir: Path, clean_redis_url: str) -> None:
    import redis

    from tests import wat

    printer = wat.build_redis_handler(tmp_path / "wat" / "printer.wasm")
    address = clean_redis_url.rsplit("/", 1)[0]
    app = write_app(tmp_path / "app", f"""spin_manifest_version = 2
[application]
name = "redis-traced"
[application.trigger.redis]
address = "{address}"
[[trigger.redis]]
channel = "orders"
component = "printer"
[component.printer]
source = "printer.wasm"
""", {"printer.wasm": printer})
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--state-dir", ""],
                     env=traced_env(collector)) as host:
        assert host.wait_for_output(f"Active Channels on {address}:")
        client = redis.Redis.from_url(clean_redis_url)
        try:
            assert client.publish("orders", "SECRET-payload") == 1
            assert host.wait_for_output("[printer] got SECRET-payload")
            assert client.publish("orders", "trap") == 1
        finally:
            client.close()
        assert host.wait_for_output("wasm trap")

        def received() -> list[Span]:
            return [s for _, s in collector.spans
                    if s.name == "orders receive" and s.kind == Span.SPAN_KIND_CONSUMER]

        with collector.arrived:
            collector.arrived.wait_for(lambda: len(received()) >= 2, 15)
        ok, trapped = received()[:2]
        assert host.stop() == 0
    for span in (ok, trapped):
        found = attributes(span.attributes)
        assert found["spin.component_id"] == "printer"
        assert found["messaging.system"] == "redis"
        assert found["messaging.destination.name"] == "orders"
        assert "SECRET" not in str(found)
        assert span.parent_span_id == b""  # each message starts its own trace
    assert "error.type" not in attributes(ok.attributes)
    assert attributes(trapped.attributes)["error.type"] == "trap"
    assert trapped.status.code == trapped.status.STATUS_CODE_ERROR
