"""Hostile clients (loopback only, bounded in count and time): the host keeps
answering a well-behaved client throughout."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import HostProcess, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "hostile"
[[trigger.http]]
route = "/..."
component = "fixed"
[component.fixed]
source = "fixed.wasm"
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path],
         cache_dir: Path):
    directory = tmp_path_factory.mktemp("hostile")
    write_app(directory, MANIFEST, {"fixed.wasm": wat_components["fixed"]})
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir)]) as process:
        yield process


def _address(host: HostProcess) -> tuple[str, int]:
    hostname, port = host.base_url.removeprefix("http://").rsplit(":", 1)
    return hostname, int(port)


def _well_behaved(host: HostProcess, n: int = 5) -> None:
    with host.client() as client:
        for _ in range(n):
            r = client.get("/ok")
            assert (r.status_code, r.text) == (200, "fixed response")


def test_slow_client_sending_headers_byte_by_byte(host: HostProcess) -> None:
    stop = threading.Event()
    started = threading.Event()

    def slowloris() -> None:
        with socket.create_connection(_address(host)) as s:
            for n, byte in enumerate(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200):
                if stop.is_set():
                    return
                s.send(bytes([byte]))
                if n == 20:  # mid-header: the host is now holding a half-sent request
                    started.set()
                time.sleep(0.005)  # the attack itself: one byte at a time

    worker = threading.Thread(target=slowloris)
    worker.start()
    try:
        assert started.wait(10)
        _well_behaved(host)
    finally:
        stop.set()
        worker.join(timeout=10)


def test_many_idle_connections(host: HostProcess) -> None:
    idle = [socket.create_connection(_address(host)) for _ in range(200)]
    try:
        _well_behaved(host)
    finally:
        for s in idle:
            s.close()


def test_oversized_headers_and_garbage(host: HostProcess) -> None:
    with socket.create_connection(_address(host)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 431")
    with socket.create_connection(_address(host)) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        s.settimeout(10)
        assert s.recv(64).startswith(b"HTTP/1.1 400")
    _well_behaved(host)


def test_huge_declared_body_is_refused_without_reading(host: HostProcess) -> None:
    with socket.create_connection(_address(host)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\npartial")
        s.settimeout(10)
        assert s.recv(64).startswith(b"HTTP/1.1 413")
    _well_behaved(host)
