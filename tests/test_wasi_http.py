"""Standard wasi:http components served by a real `host up`: apps/hello-js (componentize-js
fetch-event handler) and WAT components, streaming both ways, faults, drain, refusals."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import duplex, wat
from tests.apps import built_app
from tests.conftest import HostProcess, run_host, wait_refused, write_app
from tests.loopback import upstream_server
from tests.procmem import peak_growth, reset_peak

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wasi-http")
    return {"trap.wasm": wat.build_wasi_http(wat.WASI_HTTP_TRAP, out / "trap.wasm")}


def _manifest(hello_js: Path, extra: str = "") -> str:
    return f"""spin_manifest_version = 2
[application]
name = "wasi-http"
[[trigger.http]]
route = "/hello-js/..."
component = "hello-js"
[component.hello-js]
source = "{hello_js}"
[[trigger.http]]
route = "/trap"
component = "trap"
[component.trap]
source = "trap.wasm"
{extra}"""


@pytest.fixture(scope="module")
def app_dir(components: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    hello_js = built_app("hello-js") / "dist" / "hello-js.wasm"
    directory = tmp_path_factory.mktemp("wasi-http-app")
    write_app(directory, _manifest(hello_js), components)
    return directory


@pytest.fixture(scope="module")
def host(app_dir: Path, cache_dir: Path) -> Iterator[HostProcess]:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "hello-js=5"]) as process:
        yield process


pytestmark = pytest.mark.toolchain


def test_hello(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/hello-js")
    assert r.status_code == 200
    assert r.text == "Hello from componentize-js\n"
    assert r.headers["content-type"] == "text/plain"
    assert host.wait_for_output("[hello-js] hello-js: GET /hello-js")  # stdout to the logs


def test_a_4_mib_body_echoes_intact_in_bounded_host_memory(host: HostProcess) -> None:
    body = os.urandom(4 * MiB)
    with host.client() as client:
        client.get("/hello-js")  # warm: first-request allocations are not the body's
    baseline = reset_peak(host.pid)
    # Read while sending: the guest streams the body back as it reads it.
    status, _, content = duplex.post(host.base_url, "/hello-js/echo", body)
    growth = peak_growth(host.pid, baseline)
    assert status == 200
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(body).hexdigest()
    # Streamed in chunks: the host never holds the body whole (a list<u8> value
    # cost ~80 bytes per byte). Guest memory included; measured about +5 MiB.
    assert growth < 4 * len(body), f"peak grew {growth / MiB:.1f} MiB"


def test_a_response_written_in_many_chunks_arrives_chunked(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/hello-js/chunks", params={"n": "200"})
    assert r.status_code == 200
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.text == "".join(f"chunk {i}\n" for i in range(200))


def _open_echo(base_url: str) -> socket.socket:
    """A chunked POST to the echo route, headers sent, body still open."""
    hostname, port = base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((hostname, int(port)), timeout=20)
    sock.sendall(b"POST /hello-js/echo HTTP/1.1\r\nHost: test\r\n"
                 b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
    return sock


def _send_chunk(sock: socket.socket, data: bytes) -> None:
    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def _read_until(sock: socket.socket, received: bytearray, needle: bytes) -> None:
    while needle not in received:
        data = sock.recv(65536)
        assert data, f"connection closed before {needle!r}; got {bytes(received)!r}"
        received += data


def test_bodies_stream_both_ways(host: HostProcess) -> None:
    # The guest echoes the first part before the client has sent the second: the
    # request body reaches it as it arrives, the response leaves as it is written.
    with _open_echo(host.base_url) as sock:
        received = bytearray()
        _send_chunk(sock, b"first part;")
        _read_until(sock, received, b"first part;")
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in received.lower()
        _send_chunk(sock, b"second part.")
        sock.sendall(b"0\r\n\r\n")
        _read_until(sock, received, b"\r\n0\r\n\r\n")
    assert b"second part." in received


def test_a_looping_guest_answers_504_and_the_next_request_succeeds(host: HostProcess) -> None:
    with host.client() as client:
        assert client.get("/hello-js/loop").status_code == 504
        assert client.get("/hello-js").status_code == 200
    assert host.wait_for_output("deadline of 5 s exceeded")


def test_a_trapping_guest_answers_500_and_the_next_request_succeeds(host: HostProcess) -> None:
    with host.client() as client:
        assert client.get("/trap").status_code == 500
        assert client.get("/trap").status_code == 500
        assert client.get("/hello-js").status_code == 200
    assert host.wait_for_output("wasm trap: wasm `unreachable` instruction executed")


def test_outbound_wasi_http_is_denied_with_the_interfaces_error(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/hello-js/fetch", params={"url": "https://example.com/"})
    assert r.status_code == 502  # the guest's own answer: it got an error, not a trap
    assert r.text.startswith("fetch failed")
    assert host.wait_for_output("disallowed destination 'https://example.com'")


def test_outbound_wasi_http_reaches_an_allowed_host(cache_dir: Path, tmp_path: Path) -> None:
    hello_js = built_app("hello-js") / "dist" / "hello-js.wasm"
    with upstream_server() as upstream:
        port = upstream.server_address[1]
        write_app(tmp_path, f"""spin_manifest_version = 2
[application]
name = "outbound"
[[trigger.http]]
route = "/hello-js/..."
component = "hello-js"
[component.hello-js]
source = "{hello_js}"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
""")
        with HostProcess(["-f", str(tmp_path), "--cache-dir", str(cache_dir)]) as host, \
                host.client() as client:
            allowed = client.get("/hello-js/fetch",
                                 params={"url": f"http://127.0.0.1:{port}/x?y=1"})
            denied = client.get("/hello-js/fetch",
                                params={"url": f"http://127.0.0.1:{port + 1}/"})
    assert allowed.status_code == 200
    assert allowed.text == "201 upstream saw GET /x?y=1"
    assert upstream.seen[0]["probe"] == "hello-js"  # the guest's header went out
    assert denied.status_code == 502 and denied.text.startswith("fetch failed")
    assert len(upstream.seen) == 1


def test_sigterm_drains_a_streaming_request_and_exits_0(app_dir: Path, cache_dir: Path) -> None:
    host = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)]).start()
    try:
        with _open_echo(host.base_url) as sock:
            received = bytearray()
            _send_chunk(sock, b"before;")
            _read_until(sock, received, b"before;")  # the guest is running now
            host.send_signal(signal.SIGTERM)
            assert wait_refused(host.base_url)  # draining: no new connections
            _send_chunk(sock, b"after.")
            sock.sendall(b"0\r\n\r\n")
            _read_until(sock, received, b"\r\n0\r\n\r\n")
        assert b"after." in received
        assert host.wait(timeout=20) == 0
    finally:
        host.stop()


def test_a_wasi03_handler_is_refused_at_start(tmp_path: Path) -> None:
    component = wat.build_wasi03_handler(tmp_path)
    write_app(tmp_path, """spin_manifest_version = 2
[application]
name = "wasi03"
[[trigger.http]]
route = "/..."
component = "new"
[component.new]
source = "wasi03.wasm"
""")
    assert component.is_file()
    for command in ("check", "up"):
        args = [command, "-f", str(tmp_path)]
        if command == "up":
            args += ["--listen", "127.0.0.1:0"]
        result = run_host(*args, timeout=60)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if "wasi:http/handler" in line]
        assert len(lines) == 1, result.stderr
        assert "WASI 0.3" in lines[0]
        assert "Spin SDK 3.4.1" in lines[0] and "wasi:http/proxy@0.2.x" in lines[0]
        assert "instances ready" not in result.stdout  # refused before instantiating
