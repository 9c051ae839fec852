"""apps/hello-proxy-python (componentize-py, the standard wasi:http/proxy world) through a
real `host up`, and the same component under `wasmtime serve`, the reference server."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import duplex
from tests.apps import built_app, wasmtime_cli
from tests.conftest import HostProcess, write_app

MiB = 1024 * 1024
HELLO = "Hello from componentize-py\n"

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def component() -> Path:
    return built_app("hello-proxy-python") / "hello-proxy-python.wasm"


@pytest.fixture(scope="module")
def host(component: Path, cache_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    directory = tmp_path_factory.mktemp("hello-proxy-python")
    write_app(directory, f"""spin_manifest_version = 2
[application]
name = "hello-proxy-python"
[[trigger.http]]
route = "/..."
component = "hello-proxy-python"
[component.hello-proxy-python]
source = "{component}"
""")
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir),
                      "--state-dir", ""]) as process:
        yield process


@pytest.fixture(scope="module")
def wasmtime_serve(component: Path) -> Iterator[str]:
    """`wasmtime serve` on a free loopback port; its base URL."""
    proc = subprocess.Popen(
        [str(wasmtime_cli()), "serve", "-S", "cli=y", "--addr", "127.0.0.1:0", str(component)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        seen = []
        while True:
            line = lines.get(timeout=120)
            seen.append(line)
            found = re.search(r"Serving HTTP on (http://[\d.]+:\d+)", line)
            if found:
                break
            assert line, "wasmtime serve exited:\n" + "".join(seen)
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_hello(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/")
        missing = client.get("/nope")
    assert r.status_code == 200
    assert r.text == HELLO
    assert r.headers["content-type"] == "text/plain"
    assert missing.status_code == 404


def test_headers_describe_method_path_query_and_repeated_headers(host: HostProcess) -> None:
    with host.client() as client:
        r = client.request("PATCH", "/headers?a=1&b=two", headers=[
            ("x-test", "one"), ("x-test", "two"), ("x-other", "3")])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    seen = r.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("PATCH", "/headers", "a=1&b=two")
    assert seen["headers"]["x-test"] == ["one", "two"]
    assert seen["headers"]["x-other"] == ["3"]
    assert seen["headers"]["spin-path-info"] == ["/headers"]


def test_a_4_mib_body_echoes_intact(host: HostProcess) -> None:
    body = os.urandom(4 * MiB)
    # Read while sending: the guest writes each chunk back before it reads the next.
    status, headers, content = duplex.post(host.base_url, "/echo", body)
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(body).hexdigest()


def test_the_same_component_answers_under_wasmtime_serve(wasmtime_serve: str) -> None:
    with httpx.Client(base_url=wasmtime_serve, timeout=30) as client:
        hello = client.get("/")
        seen = client.get("/headers?q=1", headers={"x-test": "yes"}).json()
    assert (hello.status_code, hello.text) == (200, HELLO)
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/headers", "q=1")
    assert seen["headers"]["x-test"] == ["yes"]
    body = os.urandom(4 * MiB)
    status, _, content = duplex.post(wasmtime_serve, "/echo", body)
    assert status == 200
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(body).hexdigest()
