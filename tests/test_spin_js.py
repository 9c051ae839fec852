"""Spin's JS template served unchanged by a real `host up`: apps/spin-js, built by npm
@spinframework/build-tools 1.0.7 (componentize-js 0.19.3), exporting
wasi:http/incoming-handler@0.2.3 and importing WASI 0.2.12: hello, echo of a body with its
digest, outbound fetch allowed and denied."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.loopback import upstream_server

pytestmark = pytest.mark.toolchain


def test_spin_js_template_app(cache_dir: Path, tmp_path: Path) -> None:
    wasm = built_app("spin-js") / "dist" / "spin-js.wasm"
    body = os.urandom(1024 * 1024)
    with upstream_server() as upstream:
        port = upstream.server_address[1]
        write_app(tmp_path, f"""spin_manifest_version = 2
[application]
name = "spin-js"
[[trigger.http]]
route = "/..."
component = "spin-js"
[component.spin-js]
source = "{wasm}"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
""")
        with HostProcess(["-f", str(tmp_path), "--cache-dir", str(cache_dir)]) as host, \
                host.client() as client:
            hello = client.get("/")
            echo = client.post("/echo?a=1", content=body, headers={"x-custom": "v"})
            allowed = client.get("/fetch", params={"url": f"http://127.0.0.1:{port}/up"})
            denied = client.get("/fetch", params={"url": f"http://127.0.0.1:{port + 1}/"})
    assert (hello.status_code, hello.text) == (200, "Hello, Spin!")
    assert hello.headers["content-type"] == "text/plain"
    doc = echo.json()
    assert (doc["method"], doc["path"], doc["query"]) == ("POST", "/echo", "?a=1")
    assert doc["headers"]["x-custom"] == "v"
    assert doc["headers"]["spin-path-info"] == "/echo"
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert (allowed.status_code, allowed.text) == (201, "upstream saw GET /up")
    assert denied.status_code == 502 and denied.text.startswith("fetch failed")
    assert [seen["path"] for seen in upstream.seen] == ["/up"]
