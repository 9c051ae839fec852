"""A real `host up` on loopback serving tiny WAT components (fast; no guest toolchain)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import HostProcess, run_host, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "wat-app"
version = "2.0.1"

[[trigger.http]]
route = "/echo/:name/..."
component = "echo"

[[trigger.http]]
route = "/fixed"
component = "fixed"

[[trigger.http]]
route = "/trap"
component = "trap"

[[trigger.http]]
route = "/counter"
component = "counter"

[[trigger.http]]
route = "/bad-status"
component = "status"

[[trigger.http]]
route = "/loop"
component = "loop"

[[trigger.http]]
route = { private = true }
component = "fixed"

[[trigger.http]]
route = "/.well-known/spin"
component = "fixed"

[[trigger.http]]
route = "/teapot"
static_response = { status_code = 418, headers = { x-tea = "earl grey" }, body = "short" }

[component.echo]
source = "echo.wasm"
[component.fixed]
source = "fixed.wasm"
description = "always the same"
[component.trap]
source = "trap.wasm"
[component.counter]
source = "counter.wasm"
[component.status]
source = "status-999.wasm"
[component.loop]
source = "spin.wasm"
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("wat-app")
    write_app(directory, MANIFEST, {f"{name}.wasm": path for name, path in
                                    wat_components.items()})
    return directory


@pytest.fixture(scope="module")
def host(app_dir: Path, cache_dir: Path):
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "1"]) as process:
        yield process


@pytest.fixture
def client(host: HostProcess):
    with host.client() as c:
        yield c


def test_startup_lists_routes_in_precedence_order(host: HostProcess) -> None:
    lines = host.lines
    start = lines.index("Available Routes:")
    base = host.base_url
    assert f"Serving {base}" in lines[start - 1]
    assert lines[start + 1:start + 11] == [
        f"  fixed: {base}/.well-known/spin",
        "    always the same",
        f"  status: {base}/bad-status",
        f"  counter: {base}/counter",
        f"  echo: {base}/echo/:name (wildcard)",
        f"  fixed: {base}/fixed",
        "    always the same",
        f"  loop: {base}/loop",
        f"  http-trigger1: {base}/teapot",
        f"  trap: {base}/trap",
    ]
    # private routes are not listed
    assert not any(line.startswith("  ") for line in lines[start + 11:])


def test_echo_gets_body_and_spin_headers(client: httpx.Client, host: HostProcess) -> None:
    r = client.post("/echo/alice/a%20b/c/?q=1", content=b"payload",
                    headers={"x-custom": "v", "spin-full-url": "forged", "SPIN-Path-Info": "x"})
    assert r.status_code == 200
    assert r.content == b"payload"
    h = r.headers  # the WAT echo answers with the headers it was given
    port = host.base_url.rsplit(":", 1)[1]
    assert h.get_list("spin-full-url") == [f"http://127.0.0.1:{port}/echo/alice/a%20b/c/?q=1"]
    assert h.get_list("spin-path-info") == ["/a%20b/c/"]
    assert h["spin-matched-route"] == "/echo/:name/..."
    assert h["spin-raw-component-route"] == "/echo/:name/..."
    assert h["spin-component-route"] == "/echo/:name"
    assert h["spin-base-path"] == "/"
    assert h["spin-path-match-name"] == "alice"
    assert h["spin-client-addr"].startswith("127.0.0.1:")
    assert h["x-custom"] == "v"
    assert "server" not in h


def test_fixed_response_has_exact_headers(client: httpx.Client) -> None:
    r = client.get("/fixed")
    assert r.status_code == 200
    assert r.text == "fixed response"
    names = sorted(k for k in r.headers.keys() if k != "date")
    assert names == ["content-length", "content-type"]
    assert r.headers["content-type"] == "text/plain"


def test_static_response(client: httpx.Client) -> None:
    r = client.get("/teapot")
    assert (r.status_code, r.text, r.headers["x-tea"]) == (418, "short", "earl grey")
    assert "content-type" not in r.headers


def test_builtin_endpoints(client: httpx.Client) -> None:
    health = client.get("/.well-known/spin/health")
    assert (health.status_code, health.text) == (200, "OK")
    assert "content-type" not in health.headers
    info = client.get("/.well-known/spin/info")
    assert info.headers["content-type"] == "application/json"
    assert info.json() == {"name": "wat-app", "version": "2.0.1"}
    for path in ("/.well-known/spin/", "/.well-known/spin/health/", "/.well-known/spin/fie"):
        r = client.get(path)
        assert (r.status_code, r.content, r.headers["content-length"]) == (404, b"", "0"), path
    # Without the trailing slash the path is routed normally.
    assert client.get("/.well-known/spin").text == "fixed response"


def test_unmatched_is_404_with_empty_body(client: httpx.Client) -> None:
    r = client.get("/nothing/here")
    assert (r.status_code, r.content, r.headers["content-length"]) == (404, b"", "0")
    assert "content-type" not in r.headers


def test_trap_is_500_and_the_host_keeps_serving(client: httpx.Client, host: HostProcess) -> None:
    r = client.get("/trap")
    assert (r.status_code, r.content) == (500, b"")
    assert host.wait_for_output("Error processing request: component trap")
    assert "unreachable" in host.output
    assert client.get("/fixed").status_code == 200
    assert client.get("/trap").status_code == 500
    assert client.get("/fixed").status_code == 200


def test_invalid_status_from_guest_is_500(client: httpx.Client, host: HostProcess) -> None:
    r = client.get("/bad-status")
    assert (r.status_code, r.content) == (500, b"")
    assert host.wait_for_output("invalid status code 999")


def test_fresh_instance_per_request(client: httpx.Client) -> None:
    bodies = [client.get("/counter").text for _ in range(12)]
    assert bodies == ["1"] * 12


def test_infinite_loop_hits_the_deadline(client: httpx.Client, host: HostProcess) -> None:
    r = client.get("/loop")
    assert (r.status_code, r.content) == (504, b"")
    assert host.wait_for_output("Error processing request: component loop: deadline of 1 s")
    assert client.get("/fixed").status_code == 200


def test_private_route_is_unreachable(client: httpx.Client) -> None:
    # `fixed` has a private trigger; only its public routes answer.
    assert client.get("/private").status_code == 404


def test_second_start_hits_the_compile_cache(app_dir: Path, cache_dir: Path,
                                             host: HostProcess) -> None:
    assert host.wait_for_output("echo: ")
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)]) as again:
        text = again.output
        assert "echo: loaded from compile cache" in text
        assert "compiled in" not in text
        with again.client() as c:
            assert c.get("/fixed").text == "fixed response"


def test_check_validates_and_prints_routes(app_dir: Path, cache_dir: Path) -> None:
    result = run_host("check", "-f", str(app_dir), "--cache-dir", str(cache_dir))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "  echo: /echo/:name (wildcard)" in result.stdout


def test_check_rejects_missing_component_file(tmp_path: Path,
                                              wat_components: dict[str, Path]) -> None:
    write_app(tmp_path, MANIFEST.replace("trap.wasm", "missing.wasm"),
              {f"{name}.wasm": path for name, path in wat_components.items()})
    result = run_host("check", "-f", str(tmp_path), "--disable-cache")
    assert result.returncode == 1
    assert "[component.trap] source" in result.stderr
    assert "missing.wasm does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_rejects_component_without_our_export(tmp_path: Path,
                                                    wat_components: dict[str, Path]) -> None:
    (tmp_path / "core.wasm").write_bytes(b"\0asm\x01\0\0\0")  # a core module, not a component
    write_app(tmp_path, """spin_manifest_version = 2
[application]
name = "x"
[[trigger.http]]
route = "/..."
component = "core"
[component.core]
source = "core.wasm"
""")
    result = run_host("check", "-f", str(tmp_path), "--disable-cache")
    assert result.returncode == 1
    assert 'component "core" is a core WebAssembly module' in result.stderr
    assert 'executor = { type = "wagi" }' in result.stderr


def test_check_rejects_component_exporting_something_else(tmp_path: Path) -> None:
    from tests import wat

    wat.build_non_handler(tmp_path)
    write_app(tmp_path, """spin_manifest_version = 2
[application]
name = "x"
[[trigger.http]]
route = "/..."
component = "other"
[component.other]
source = "other.wasm"
""")
    result = run_host("check", "-f", str(tmp_path), "--disable-cache")
    assert result.returncode == 1
    assert ('component "other" does not export spinhost:http/incoming-handler@0.1.0 '
            "or wasi:http/incoming-handler@0.2.x (it exports: run)") in result.stderr


def test_up_with_bad_manifest_exits_1_with_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, MANIFEST.replace('name = "wat-app"', "name = 3"))
    result = run_host("up", "-f", str(tmp_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {tmp_path / 'spin.toml'}: [application] key 'name': "
                     "expected a string, got 3"]


def test_port_in_use_and_find_free_port(app_dir: Path, cache_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_host("up", "-f", str(app_dir), "--listen", f"127.0.0.1:{port}")
        assert result.returncode == 1
        assert f"127.0.0.1:{port} is already in use" in result.stderr
        assert "--find-free-port" in result.stderr
        process = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                               "--find-free-port"], listen=f"127.0.0.1:{port}")
        with process:
            assert process.base_url != f"http://127.0.0.1:{port}"
            assert int(process.base_url.rsplit(":", 1)[1]) in range(port + 1, port + 10)


def test_sigterm_drains_and_exits_0(app_dir: Path, cache_dir: Path) -> None:
    process = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)]).start()
    with process.client() as client:
        assert client.get("/fixed").status_code == 200
    assert process.stop() == 0


def test_instance_reuse_is_opt_in_and_says_so(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--pool-size", "1",
                      "--max-instance-reuse-count", "3"]) as host:
        assert "guest state (globals, memory) is shared" in host.output
        with host.client() as client:
            counts = [client.get("/counter").text for _ in range(6)]
            assert client.get("/trap").status_code == 500
            assert client.get("/trap").status_code == 500  # a trapped instance is dropped
    # One instance serves three requests, then a fresh one takes over.
    assert counts == ["1", "2", "3", "1", "2", "3"]


def test_body_over_the_copy_budget_is_500_with_a_clear_log(app_dir: Path,
                                                          cache_dir: Path) -> None:
    # Copying 4 MiB through component values takes most of a second before
    # wasmtime gives up: a deadline well clear of that keeps this about the budget.
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "30"]) as host, host.client() as client:
        r = client.post("/echo/x/", content=bytes(4 << 20))
        assert (r.status_code, r.content) == (500, b"")
        assert host.wait_for_output("body too large for one component call")
        assert client.post("/echo/x/", content=b"small").content == b"small"
