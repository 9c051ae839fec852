"""The example apps, built with real toolchains and served by a real `host up`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.apps import built_app
from tests.conftest import HostProcess

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def echo_host(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    app_dir = built_app("echo")
    log_dir = tmp_path_factory.mktemp("echo-logs")
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "-L", str(log_dir),
                      "-e", "FROM_CLI=yes", "-e", "GREETING=overridden"],
                     env={"PATH": "/usr/bin:/bin", "HOST_SECRET": "must-not-leak"}) as host:
        host.log_dir = log_dir  # type: ignore[attr-defined]
        yield host


def test_hello_python(cache_dir: Path) -> None:
    with HostProcess(["-f", str(built_app("hello-python")), "--cache-dir", str(cache_dir)]) as h:
        with h.client() as client:
            r = client.get("/hello")
            assert r.status_code == 200
            assert r.text == "Hello from Python\n"
            assert r.headers["content-type"] == "text/plain"
            assert client.get("/other").status_code == 404


def test_hello_ts(cache_dir: Path) -> None:
    with HostProcess(["-f", str(built_app("hello-ts")), "--cache-dir", str(cache_dir)]) as h:
        with h.client() as client:
            r = client.get("/hello-ts")
            assert r.status_code == 200
            assert r.text.startswith("Hello from TypeScript")
            assert r.headers["content-type"].startswith("text/plain")


def test_echo_reports_what_it_received(echo_host: HostProcess) -> None:
    body = bytes(range(256)) * 40
    with echo_host.client() as client:
        r = client.put("/some/path%20x?a=1&b=2", content=body,
                       headers=[("x-rep", "one"), ("x-rep", "two"),
                                ("spin-full-url", "forged"), ("spin-client-addr", "1.2.3.4:5")])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    seen = r.json()
    assert seen["method"] == "PUT"
    assert seen["path_with_query"] == "/some/path%20x?a=1&b=2"
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = seen["headers"]
    assert headers["x-rep"] == ["one", "two"]
    assert headers["spin-full-url"] == f"{echo_host.base_url}/some/path%20x?a=1&b=2"
    assert headers["spin-client-addr"].startswith("127.0.0.1:")
    assert headers["spin-path-info"] == "/some/path%20x"
    assert headers["spin-matched-route"] == "/..."
    assert headers["spin-component-route"] == ""
    assert headers["spin-raw-component-route"] == "/..."
    assert headers["spin-base-path"] == "/"


def test_echo_environment_is_manifest_plus_cli_only(echo_host: HostProcess) -> None:
    with echo_host.client() as client:
        env = client.get("/").json()["env"]
    assert env == {"GREETING": "overridden", "APP_MODE": "echo", "FROM_CLI": "yes"}


def test_echo_fresh_instance_every_request(echo_host: HostProcess) -> None:
    with echo_host.client() as client:
        seen = [client.get(f"/n/{i}").json()["requests_seen"] for i in range(10)]
    assert seen == [1] * 10


def test_echo_output_is_captured(echo_host: HostProcess) -> None:
    with echo_host.client() as client:
        client.post("/captured", content=b"12345")
    assert echo_host.wait_for_output("[echo] echo: POST /captured")
    assert echo_host.wait_for_output("[echo] echo: 5 body bytes")
    log_dir: Path = echo_host.log_dir  # type: ignore[attr-defined]
    assert "echo: POST /captured" in (log_dir / "echo_stdout.txt").read_text()
    assert "echo: 5 body bytes" in (log_dir / "echo_stderr.txt").read_text()


def test_hello_wagi(cache_dir: Path) -> None:
    with HostProcess(["-f", str(built_app("hello-wagi")), "--cache-dir", str(cache_dir)]) as h:
        with h.client() as client:
            r = client.get("/hello-wagi")
            assert (r.status_code, r.text) == (200, "Hello, world!\n")
            assert r.headers["content-type"] == "text/plain"
            seen = client.post("/wagi-env/a/b?x=1&y=2", content=b"posted").json()
    assert seen["argv"] == ["/wagi-env/a/b", "x=1", "y=2"]
    assert seen["stdin"] == "posted"
    env = seen["env"]
    assert env["GREETING"] == "hello from the manifest"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == (
        "/wagi-env", "/a/b", "x=1&y=2")
    assert env["REQUEST_METHOD"] == "POST" and env["CONTENT_LENGTH"] == "6"


def test_components_see_only_their_own_environment(cache_dir: Path, tmp_path: Path) -> None:
    wasm = built_app("echo") / "echo.wasm"
    (tmp_path / "spin.toml").write_text(f"""spin_manifest_version = 2
[application]
name = "two"
[[trigger.http]]
route = "/a"
component = "a"
[[trigger.http]]
route = "/b"
component = "b"
[component.a]
source = "{wasm}"
environment = {{ ONLY_A = "a-secret" }}
[component.b]
source = "{wasm}"
environment = {{ ONLY_B = "b-secret" }}
""")
    with HostProcess(["-f", str(tmp_path), "--cache-dir", str(cache_dir)],
                     env={"PATH": "/usr/bin:/bin", "HOST_ONLY": "x"}) as h:
        with h.client() as client:
            assert client.get("/a").json()["env"] == {"ONLY_A": "a-secret"}
            assert client.get("/b").json()["env"] == {"ONLY_B": "b-secret"}
