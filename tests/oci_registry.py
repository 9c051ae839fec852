"""A real OCI registry for the tests: Debian's `docker-registry`, once per session.

The distribution client is tested against the real server (CNCF distribution,
what Docker Hub and most registries run), not a fake: a missing binary fails
the tests rather than skipping them. It listens on loopback only and stores
blobs under a temporary directory the tests may read (and tamper with).

`AuthProxy` puts a login in front of it: Basic, or the Bearer token challenge
with its own token endpoint, forwarding authorised requests unchanged. The
registry itself only supports token auth with signed JWTs, which would need
keys and a token service; the proxy exercises the same client flow.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 20.0
POLL_INTERVAL_SECONDS = 0.05
INSTALL_HINT = "apt-get install -y docker-registry skopeo umoci"


def _binary() -> str:
    binary = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)
    if binary is None:
        pytest.fail(f"docker-registry is not installed; install it: {INSTALL_HINT}",
                    pytrace=False)
    return binary


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    storage: Path  # the registry's filesystem storage root

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's filesystem layout)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def start_registry(workdir: Path) -> tuple[subprocess.Popen[bytes], Registry]:
    binary = _binary()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    log_path = workdir / "registry.log"
    for _attempt in range(3):  # another process may grab the port between probe and bind
        address = f"127.0.0.1:{free_port()}"
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {address}\n"
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], cwd=workdir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1.0).status_code == 200:
                    return proc, Registry(address, storage)
            except httpx.HTTPError:
                pass
            time.sleep(POLL_INTERVAL_SECONDS)
        stop_process(proc)
    log_tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"docker-registry did not answer /v2/ within {START_TIMEOUT_SECONDS}s:\n"
                f"{log_tail}", pytrace=False)


@pytest.fixture(scope="session", name="oci_registry")
def oci_registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """`oci_registry`: a private docker-registry on a loopback port, for the whole session.

    Import `oci_registry_fixture` into a test module to use it there."""
    proc, registry = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield registry
    finally:
        stop_process(proc)


class AuthProxy:
    """Loopback proxy requiring a login (`basic` or `bearer`) before reaching `upstream`."""

    def __init__(self, upstream: str, scheme: str, username: str, password: str) -> None:
        self.upstream = upstream
        self.scheme = scheme
        self.credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.token = secrets.token_hex(16)
        self.token_requests: list[str] = []  # query strings the token endpoint received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AuthProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                if self.path.startswith("/token"):
                    proxy.token_requests.append(self.path.partition("?")[2])
                    if auth != f"Basic {proxy.credentials}":
                        self._reply(401, {})
                    else:
                        self._reply(200, {"Content-Type": "application/json"},
                                    b'{"token": "%s"}' % proxy.token.encode())
                    return
                wanted = (f"Bearer {proxy.token}" if proxy.scheme == "bearer"
                          else f"Basic {proxy.credentials}")
                if auth != wanted:
                    if proxy.scheme == "bearer":
                        challenge = (f'Bearer realm="http://{proxy.address}/token",'
                                     f'service="test-registry",scope="repository:x:pull"')
                    else:
                        challenge = 'Basic realm="test-registry"'
                    self._reply(401, {"WWW-Authenticate": challenge,
                                      "Content-Type": "application/json"},
                                b'{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}')
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("authorization", "connection", "content-length")}
                upstream = httpx.request(self.command, f"http://{proxy.upstream}{self.path}",
                                         headers=headers, content=body, timeout=30.0)
                keep = {k: v for k, v in upstream.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding",
                                             "connection", "content-encoding")}
                self._reply(upstream.status_code, keep, upstream.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
