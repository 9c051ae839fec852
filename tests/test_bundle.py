"""`host run-bundle`: the container entry a containerd shim would start.

Bundles here are written by hand (config.json + rootfs/), as `umoci unpack`
makes them; tests/test_oci.py also serves a bundle umoci made from our image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps import built_app
from tests.conftest import ROOT, wait_refused
from tests.loopback import Upstream, free_port, upstream_server


def make_bundle(directory: Path, app_dir: Path | None, env: list[str],
                cwd: str = "/") -> Path:
    rootfs = directory / "rootfs"
    rootfs.mkdir(parents=True)
    if app_dir is not None:
        for item in app_dir.iterdir():
            if item.name in (".spin", "__pycache__", ".gitignore"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy)(item, rootfs / item.name)
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": True},
            "process": {"args": ["/"], "env": env, "cwd": cwd}}
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


class Bundled:
    """`python -m host run-bundle DIR` in a subprocess; ready when it serves."""

    def __init__(self, bundle: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "host", "run-bundle", str(bundle), *args], cwd=ROOT,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Serving http" in line:
                self.serving.set()

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.serving.wait(0.05):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


def test_bundle_serves_with_its_env_and_drains_on_sigterm(tmp_path: Path, cache_dir: Path,
                                                          upstream: Upstream) -> None:
    port, up = free_port(), upstream.server_address[1]
    app = tmp_path / "app"
    shutil.copytree(built_app("capability-probe"), app,
                    ignore=shutil.ignore_patterns(".spin", "__pycache__"))
    manifest = app / "spin.toml"
    manifest.write_text(manifest.read_text().replace(
        'allowed_outbound_hosts = ["http://{{ api_host }}:*"]',
        f'allowed_outbound_hosts = ["http://{{{{ api_host }}}}:{up}"]'))
    bundle = make_bundle(tmp_path / "bundle", app, [
        f"SPIN_HTTP_LISTEN_ADDR=127.0.0.1:{port}",
        "TOKEN=from-plain-env",  # the shim maps FOO to SPIN_VARIABLE_FOO for app variables
        f"SPINHOST_CACHE_DIR={cache_dir}", "SPINHOST_POOL_SIZE=1",
    ])
    host = Bundled(bundle)
    try:
        host.wait_serving()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/config?key=token").json() == {"value": "from-plain-env"}
        assert httpx.get(f"{base}/files?path=/static/hello.txt").json() == {
            "content": "hello file\n"}
        assert httpx.get(f"{base}/kv/incr?key=n").json() == {"value": 1}
        assert (bundle / "rootfs" / ".spin" / "sqlite_key_value.db").is_file()
        # A slow request in flight when SIGTERM arrives is answered, then exit 0.
        result: dict[str, object] = {}
        caller = threading.Thread(target=lambda: result.update(httpx.get(
            f"{base}/http", params={"url": f"http://127.0.0.1:{up}/slow"}, timeout=30).json()))
        caller.start()
        assert upstream.arrived.wait(30)  # the guest is now waiting on the upstream
        host.proc.send_signal(signal.SIGTERM)
        assert wait_refused(base)  # the listener is closed at once...
        assert host.proc.poll() is None  # ...and the process drains the in-flight request
        upstream.release.set()
        caller.join(30)
        assert result["status"] == 201
        assert host.proc.wait(timeout=30) == 0
    finally:
        host.stop()


def test_bundle_with_read_only_root_serves_from_memory(tmp_path: Path, cache_dir: Path) -> None:
    port = free_port()
    bundle = make_bundle(tmp_path / "bundle", built_app("kv-counter"),
                         [f"SPIN_HTTP_LISTEN_ADDR=127.0.0.1:{port}",
                          f"SPINHOST_CACHE_DIR={cache_dir}"])
    (bundle / "rootfs" / ".spin").write_text("a file where the state dir would go")
    host = Bundled(bundle)
    try:
        host.wait_serving()
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "1\n"
        assert "is not writable" in host.output and "in memory" in host.output
    finally:
        assert host.stop() == 0


def test_bundle_without_spin_toml_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", None, [])
    (bundle / "rootfs" / "app.wasm").write_bytes(b"\0asm")
    result = subprocess.run([sys.executable, "-m", "host", "run-bundle", str(bundle)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "not a Spin app: no spin.toml at the root of its filesystem" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("config", "message"), [
    (None, "not an OCI runtime bundle (no config.json)"),
    ("{", "cannot read the runtime spec"),
    ('{"process": {"env": ["NOEQUALS"]}}', "process.env entry 'NOEQUALS': expected KEY=VALUE"),
    ('{"process": {"cwd": "/../.."}}', "leaves the container's root"),
    ('{"root": {"path": "missing"}}', "is not a directory"),
])
def test_bad_bundles_are_clear_errors(tmp_path: Path, config: str | None, message: str) -> None:
    bundle = make_bundle(tmp_path / "bundle", built_app("hello-python"), [])
    if config is None:
        (bundle / "config.json").unlink()
    else:
        (bundle / "config.json").write_text(config)
    result = subprocess.run([sys.executable, "-m", "host", "run-bundle", str(bundle)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
