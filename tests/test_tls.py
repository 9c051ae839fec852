"""host/tls.py and `host up --tls-cert/--tls-key` through a real server, with a
certificate made by openssl at test time."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, HostProcess, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "tls"
[[trigger.http]]
route = "/echo/..."
component = "echo"
[component.echo]
source = "echo.wasm"
"""

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl makes the test certificates (make test "
                                       "installs it)")


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
         "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture
def app(tmp_path: Path, wat_components: dict[str, Path]) -> Path:
    return write_app(tmp_path / "app", MANIFEST, {"echo.wasm": wat_components["echo"]})


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@pytest.mark.parametrize("workers", [1, 2])
def test_https_with_the_certificate_and_https_urls_for_components(
        app: Path, cache_dir: Path, certificate: tuple[Path, Path], workers: int) -> None:
    cert, key = certificate
    args = ["-f", str(app), "--cache-dir", str(cache_dir), "--workers", str(workers)]
    env = dict(os.environ)
    if workers == 1:
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    else:  # Spin's variables; each worker wraps the inherited socket itself
        env.update(SPIN_TLS_CERT=str(cert), SPIN_TLS_KEY=str(key))
    with HostProcess(args, env=env, verify=trusting(cert)) as host:
        assert host.base_url.startswith("https://127.0.0.1:")
        assert f"  echo: {host.base_url}/echo (wildcard)" in host.output
        port = host.base_url.rsplit(":", 1)[1]
        with host.client() as client:
            for _ in range(2 * workers):
                r = client.get("/echo/a?q=1")
                assert r.status_code == 200
                # The WAT echo answers with the request headers it was given.
                assert r.headers["spin-full-url"] == f"https://127.0.0.1:{port}/echo/a?q=1"
        with pytest.raises(httpx.TransportError):  # plain HTTP is not spoken there
            httpx.get(f"http://127.0.0.1:{port}/echo/a", timeout=5)
        with pytest.raises(httpx.ConnectError):  # nor is the certificate trusted by default
            httpx.get(f"{host.base_url}/echo/a", timeout=5)


def up(app: Path, cache_dir: Path, *args: str,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host", "up", "-f", str(app), "--cache-dir", str(cache_dir),
         "--listen", "127.0.0.1:0", *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=120)


def test_bad_tls_settings_are_one_line_before_serving(
        app: Path, cache_dir: Path, certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = certificate
    _, other_key = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    encrypted = tmp_path / "encrypted-key.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-out", str(encrypted), "-aes256",
                    "-passout", "pass:secret"], check=True, capture_output=True)
    missing = tmp_path / "missing.pem"
    cases: list[tuple[list[str], dict[str, str], int, str]] = [
        (["--tls-cert", str(cert)], {}, 1,
         f"--tls-cert {cert}: --tls-key (or SPIN_TLS_KEY) is missing: give both or neither"),
        (["--tls-key", str(key)], {}, 1,
         f"--tls-key {key}: --tls-cert (or SPIN_TLS_CERT) is missing: give both or neither"),
        ([], {"SPIN_TLS_KEY": str(key)}, 2,
         f"SPIN_TLS_KEY='{key}' (--tls-key): --tls-cert (or SPIN_TLS_CERT) is missing: give "
         "both or neither"),
        (["--tls-cert", str(missing), "--tls-key", str(key)], {}, 1,
         f"--tls-cert {missing}: cannot read it: No such file or directory"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], {}, 1,
         f"--tls-key {other_key} is not the key of --tls-cert {cert}"),
        (["--tls-cert", str(garbage), "--tls-key", str(key)], {}, 1,
         f"--tls-cert {garbage}: not a PEM certificate"),
        (["--tls-cert", str(cert), "--tls-key", str(garbage)], {}, 1,
         f"--tls-key {garbage}: not a PEM private key"),
        (["--tls-cert", str(cert), "--tls-key", str(encrypted)], {}, 1,
         f"--tls-key {encrypted}: the key is encrypted; give it without a passphrase "
         "(e.g. openssl pkey -in KEY -out KEY.plain)"),
    ]
    # The check runs once, before any worker starts: the same with --workers 2.
    for args, env, code, message in cases:
        workers = ["--workers", "2"] if "is not the key" in message else []
        result = up(app, cache_dir, *args, *workers, env=env)
        assert (result.returncode, result.stderr.strip().splitlines()[-1:]) == (
            code, [f"Error: {message}"]), result.stderr
        assert "Traceback" not in result.stderr
        assert "Serving" not in result.stdout
