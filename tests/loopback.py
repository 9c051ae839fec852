"""Loopback helpers shared by tests: free ports and a scriptable upstream HTTP server."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a helper server; kill it if it does not stop within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Upstream(http.server.ThreadingHTTPServer):
    """An outbound-call target: records what it saw (and sets `arrived`); `/slow...`
    waits for `release`."""

    seen: list[dict[str, object]]
    arrived: threading.Event  # set once a request has been recorded in `seen`
    answered: list[str]  # paths it has answered (a `/slow` one only once released)
    traceparents: list[str | None]  # each request's `traceparent` header, in order
    release: threading.Event


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "probe": self.headers.get("x-probe"), "body": body.decode()})
        self.server.traceparents.append(self.headers.get("traceparent"))
        self.server.arrived.set()
        if self.path.startswith("/slow"):
            self.server.release.wait(30)
        payload = f"upstream saw {self.command} {self.path}".encode()
        if self.path.startswith("/big"):
            payload = b"x" * (3 * 1024 * 1024)
        self.server.answered.append(self.path)
        self.send_response(201)
        self.send_header("content-type", "text/plain")
        self.send_header("x-upstream", "yes")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), _Handler)
    server.seen, server.answered, server.release = [], [], threading.Event()
    server.traceparents = []
    server.arrived = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
