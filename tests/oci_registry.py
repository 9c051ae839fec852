"""A real OCI registry for the tests: Debian's `docker-registry`, once per session.

The distribution client is tested against the real server (CNCF distribution,
what Docker Hub and most registries run), not a fake: a missing binary fails
the tests rather than skipping them. It listens on loopback only and stores
blobs under a temporary directory the tests may read (and tamper with).

`AuthProxy` puts a login in front of it: Basic, or the Bearer token challenge
with its own token endpoint, forwarding authorised requests unchanged.
`start_registry(auth=...)` makes the registry itself require a login:
`htpasswd_auth` (its `auth: htpasswd:` with a bcrypt file from `htpasswd -B`,
Debian's apache2-utils) or `token_auth` (its `auth: token:`: JWTs it verifies
against a certificate, issued by `TokenServer`, signed RS256 with `openssl`).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 20.0
POLL_INTERVAL_SECONDS = 0.05
INSTALL_HINT = "apt-get install -y docker-registry skopeo umoci apache2-utils openssl"
TOKEN_SERVICE = "test-registry"
TOKEN_ISSUER = "spinhost-tests"
TOKEN_LIFETIME_SECONDS = 300


def _binary(name: str = "docker-registry") -> str:
    binary = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if binary is None:
        pytest.fail(f"{name} is not installed; install it: {INSTALL_HINT}", pytrace=False)
    return binary


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    storage: Path  # the registry's filesystem storage root

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's filesystem layout)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def htpasswd_auth(workdir: Path, users: dict[str, str]) -> str:
    """The registry's `auth:` section for Basic logins of `users` (bcrypt, as it requires)."""
    path = workdir / "htpasswd"
    lines = []
    for user, password in users.items():
        result = subprocess.run([_binary("htpasswd"), "-nbB", user, password], text=True,
                                capture_output=True, check=True, timeout=30)
        lines.append(result.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return f"auth:\n  htpasswd:\n    realm: {TOKEN_SERVICE}\n    path: {path}\n"


def token_auth(realm: str, cert: Path) -> str:
    """The registry's `auth:` section trusting tokens signed by `cert`'s key."""
    return (f"auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n"
            f"    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {cert}\n")


def start_registry(workdir: Path, auth: str = "") -> tuple[subprocess.Popen[bytes], Registry]:
    binary = _binary()
    ready = (200, 401) if auth else (200,)
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
            + auth
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], cwd=workdir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1.0).status_code in ready:
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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A distribution token service: Basic login (or an OAuth2 refresh token) -> a JWT.

    `users` may have every scope they ask for; anyone else gets a token granting
    nothing, as real token services answer anonymous requests. Tokens are signed
    RS256 by `openssl dgst` with a key whose self-signed certificate (`cert`) the
    registry trusts; the header carries it as `x5c`.
    """

    def __init__(self, workdir: Path, users: dict[str, str],
                 refresh_tokens: dict[str, str] | None = None) -> None:
        self.users = users
        self.refresh_tokens = refresh_tokens or {}  # refresh token -> user
        self.key, self.cert = workdir / "token.key", workdir / "token.pem"
        subprocess.run([_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
                        "-subj", f"/CN={TOKEN_ISSUER}"], capture_output=True, check=True,
                       timeout=60)
        pem = self.cert.read_text().splitlines()
        self._x5c = "".join(line for line in pem if not line.startswith("-----"))
        self.requests: list[dict[str, list[str]]] = []  # each request's query or form
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes if subject else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self._x5c]}
        claims = {"iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE, "iat": now,
                  "nbf": now - 10, "exp": now + TOKEN_LIFETIME_SECONDS,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = (f"{_b64url(json.dumps(header).encode())}."
                         f"{_b64url(json.dumps(claims).encode())}")
        signature = subprocess.run([_binary("openssl"), "dgst", "-sha256", "-sign",
                                    str(self.key)], input=signing_input.encode(),
                                   capture_output=True, check=True, timeout=30).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                params = parse_qs(self.path.partition("?")[2])
                service.requests.append(params)
                subject = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if service.users.get(user) != password:
                        self._reply(401, {"details": "incorrect username or password"})
                        return
                    subject = user
                self._token(subject, params.get("scope", []))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                service.requests.append(form)
                refresh = form.get("refresh_token", [""])[0]
                if form.get("grant_type") != ["refresh_token"] or \
                        refresh not in service.refresh_tokens:
                    self._reply(401, {"details": "invalid refresh token"})
                    return
                scopes = [s for scope in form.get("scope", []) for s in scope.split(" ")]
                self._token(service.refresh_tokens[refresh], scopes)

            def _token(self, subject: str, scopes: list[str]) -> None:
                token = service.sign(subject, scopes)
                self._reply(200, {"token": token, "access_token": token,
                                  "expires_in": TOKEN_LIFETIME_SECONDS})

        return Handler
