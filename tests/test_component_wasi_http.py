"""Components of our own world (`spinhost:http`) that import `wasi:http` (componentize-js
apps do, for `fetch`) get the host's own wasi:http (host/wasip2), so their outbound
requests go through `allowed_outbound_hosts` like everyone else's; an import nothing
provides stops start-up naming it, never traps later."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import wat
from tests.conftest import HostProcess, run_host, write_app
from tests.loopback import Upstream, upstream_server

# The request record comes by pointer (wat.py: path-with-query at 40: is-some, ptr, len);
# `handle` returns a pointer to the response record (status u16 at 0, no headers, no body).
# The guest sends `GET http://<the last segment of its path>/wasi-http-probe`
# through wasi:http and answers the upstream's status, 403 for `HTTP-request-denied`
# (error-code case 15), 502 for any other error-code, 500 if the response is missing.
FETCH = """(module
  (import "wasi:http/types@0.2.10" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.10" "[constructor]outgoing-request"
    (func $request (param i32) (result i32)))
  (import "wasi:http/types@0.2.10" "[method]outgoing-request.set-scheme"
    (func $set_scheme (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.10" "[method]outgoing-request.set-authority"
    (func $set_authority (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.10" "[method]outgoing-request.set-path-with-query"
    (func $set_path (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.10" "[method]future-incoming-response.get"
    (func $get (param i32 i32)))
  (import "wasi:http/types@0.2.10" "[method]incoming-response.status"
    (func $status (param i32) (result i32)))
  (import "wasi:http/outgoing-handler@0.2.10" "handle"
    (func $handle (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 8192))
  (data (i32.const 100) "/wasi-http-probe")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  (func $error_status (param $code i32) (result i32)
    (select (i32.const 403) (i32.const 502) (i32.eq (local.get $code) (i32.const 15))))
  (func $fetch (param $req i32) (result i32)
    (local $out i32) (local $start i32) (local $end i32)
    (local.set $out (call $request (call $fields)))
    (drop (call $set_scheme (local.get $out) (i32.const 1) (i32.const 0) (i32.const 0)
                            (i32.const 0)))
    (local.set $end (i32.add (i32.load offset=44 (local.get $req))
                             (i32.load offset=48 (local.get $req))))
    (local.set $start (local.get $end))
    (block $found (loop $back
      (br_if $found (i32.eq (i32.load8_u (i32.sub (local.get $start) (i32.const 1)))
                            (i32.const 47)))  ;; "/"
      (local.set $start (i32.sub (local.get $start) (i32.const 1)))
      (br $back)))
    (drop (call $set_authority (local.get $out) (i32.const 1) (local.get $start)
                               (i32.sub (local.get $end) (local.get $start))))
    (drop (call $set_path (local.get $out) (i32.const 1) (i32.const 100) (i32.const 16)))
    (call $handle (local.get $out) (i32.const 0) (i32.const 0) (i32.const 2000))
    (if (i32.load8_u (i32.const 2000))
      (then (return (call $error_status (i32.load8_u (i32.const 2008))))))
    (call $get (i32.load (i32.const 2008)) (i32.const 3000))
    (if (i32.eqz (i32.load8_u (i32.const 3000))) (then (return (i32.const 500))))
    (if (i32.load8_u (i32.const 3008)) (then (return (i32.const 500))))
    (if (i32.load8_u (i32.const 3016))
      (then (return (call $error_status (i32.load8_u (i32.const 3024))))))
    (call $status (i32.load (i32.const 3024))))
  (func (export "spinhost:http/incoming-handler@0.1.0#handle") (param $req i32) (result i32)
    (i64.store (i32.const 1000) (i64.const 0))
    (i64.store (i32.const 1008) (i64.const 0))
    (i32.store16 (i32.const 1000) (call $fetch (local.get $req)))
    (i32.const 1000)))
"""

# Imports an interface no capability provides: start-up must name it.
UNKNOWN_IMPORT = """(module
  (import "test:unknown/thing@1.0.0" "poke" (func))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
  (func (export "spinhost:http/incoming-handler@0.1.0#handle") (param i32) (result i32)
    (i32.const 1000)))
"""


def build(core_wat: str, out: Path, imports: str, deps: str = "") -> Path:
    """A component of our `handler` world that also imports `imports`."""
    wit_dir = out.parent / f"{out.stem}-wit"
    shutil.copytree(wat.WASI_HTTP_WIT / "deps", wit_dir / "deps")
    shutil.copy(wat.WIT_DIR / "http.wit", wit_dir / "deps" / "spinhost-http.wit")
    if deps:
        (wit_dir / "deps" / "extra.wit").write_text(deps)
    (wit_dir / "world.wit").write_text(
        "package test:spinhost-fetch;\n"
        f"world handler {{ export spinhost:http/incoming-handler@0.1.0; {imports} }}\n")
    source = out.with_suffix(".wat")
    source.write_text(core_wat)
    return wat.assemble(source, out, wit_dir, "handler")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture(scope="module")
def fetch_host(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory,
               cache_dir: Path) -> Iterator[HostProcess]:
    directory = tmp_path_factory.mktemp("spinhost-fetch")
    component = build(FETCH, directory / "build" / "fetch.wasm",
                      "import wasi:http/outgoing-handler@0.2.10;")
    port = upstream.server_address[1]
    write_app(directory, f"""spin_manifest_version = 2
[application]
name = "spinhost-fetch"
[[trigger.http]]
route = "/allowed/..."
component = "allowed"
[component.allowed]
source = "fetch.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
[[trigger.http]]
route = "/denied/..."
component = "denied"
[component.denied]
source = "fetch.wasm"
[[trigger.http]]
route = "/everywhere/..."
component = "everywhere"
[component.everywhere]
source = "fetch.wasm"
allowed_outbound_hosts = ["*://*:*"]
""", {"fetch.wasm": component})
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir)]) as process:
        yield process


def _seen(upstream: Upstream) -> list[object]:
    return [r["path"] for r in upstream.seen]


def test_an_allowed_wasi_http_call_goes_through(fetch_host: HostProcess,
                                                upstream: Upstream) -> None:
    port = upstream.server_address[1]
    before = len(upstream.seen)
    with fetch_host.client() as client:
        r = client.get(f"/allowed/127.0.0.1:{port}")
    assert r.status_code == 201  # the upstream's own status
    assert _seen(upstream)[before:] == ["/wasi-http-probe"]


def test_a_denied_wasi_http_call_is_refused_not_trapped(fetch_host: HostProcess,
                                                        upstream: Upstream) -> None:
    port = upstream.server_address[1]
    before = len(upstream.seen)
    with fetch_host.client() as client:
        # no allowed_outbound_hosts at all; and a port the allowed one does not list
        assert client.get(f"/denied/127.0.0.1:{port}").status_code == 403
        assert client.get(f"/allowed/127.0.0.1:{port + 1}").status_code == 403
    assert len(upstream.seen) == before
    assert fetch_host.wait_for_output(  # Spin's line, naming the component
        'component "denied": A component tried to make an outbound network connection to '
        f"disallowed destination 'http://127.0.0.1:{port}'")


def test_every_host_allowed_still_goes_through_the_allow_list(
        fetch_host: HostProcess, upstream: Upstream) -> None:
    port = upstream.server_address[1]
    before = len(upstream.seen)
    with fetch_host.client() as client:
        assert client.get(f"/everywhere/127.0.0.1:{port}").status_code == 201
    assert _seen(upstream)[before:] == ["/wasi-http-probe"]


def test_an_unprovided_import_stops_start_up_naming_it(tmp_path: Path) -> None:
    component = build(UNKNOWN_IMPORT, tmp_path / "build" / "unknown.wasm",
                      "import test:unknown/thing@1.0.0;",
                      "package test:unknown@1.0.0;\ninterface thing { poke: func(); }\n")
    write_app(tmp_path, """spin_manifest_version = 2
[application]
name = "unknown"
[[trigger.http]]
route = "/..."
component = "unknown"
[component.unknown]
source = "unknown.wasm"
""", {"unknown.wasm": component})
    result = run_host("up", "-f", str(tmp_path), "--listen", "127.0.0.1:0", timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "test:unknown" in line]
    assert lines == ['Error: component "unknown" imports test:unknown/thing@1.0.0, which '
                     "this host does not provide (build against the world in wit/)"], \
        result.stderr
