"""Shared fixtures: WAT components built at test time and a real `host up` process."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import wat
from tests.mqtt_server import mqtt_broker, subscriber  # noqa: F401
from tests.postgres_server import postgres_port  # noqa: F401
from tests.redis_server import clean_redis_url, redis_url  # noqa: F401
from tests.s3_server import s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wat_components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny test component, built once per test session."""
    out = tmp_path_factory.mktemp("wat")
    bodies = {
        "echo": wat.ECHO,
        "fixed": wat.FIXED,
        "trap": wat.TRAP,
        "counter": wat.COUNTER,
        "spin": wat.SPIN,
        "status-999": wat.status(999),
    }
    return {name: wat.build_component(body, out / f"{name}.wasm") for name, body in bodies.items()}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


class HostProcess:
    """A `python -m host up` subprocess on a free loopback port.

    Tests wait for events, not time: `wait_for_output` returns as soon as the line
    is printed (a guest that prints when it starts tells a test its request has
    reached the guest), `output_closed` is set once the output has been read to
    its end, and `wait` returns the exit status.
    """

    def __init__(self, args: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
                 verify: ssl.SSLContext | bool = True,
                 command: tuple[str, ...] = ("up",)) -> None:
        self.args = args
        self.command = command  # e.g. ("build", "-f", APP, "-u"): the args are host up's
        self.verify = verify  # https: e.g. a context trusting the test's own certificate
        self.listen = listen
        self.cwd = cwd
        self.env = env
        self.lines: list[str] = []
        self.base_url = ""
        self.output_closed = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._serving = threading.Event()
        self._printed = threading.Condition()

    def start(self, timeout: float = 120.0) -> HostProcess:
        self.start_async()
        return self.wait_started(timeout)

    def start_async(self) -> None:
        """Spawn the process; `wait_started` waits until it serves."""
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "host", *self.command, "--listen", self.listen, *self.args],
            cwd=self.cwd or ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def wait_started(self, timeout: float = 120.0) -> HostProcess:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not self._serving.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("host did not start:\n" + self.output)
        while True:  # ready when the health endpoint answers
            try:
                health = httpx.get(self.base_url + "/.well-known/spin/health", verify=self.verify)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("host did not become healthy:\n" + self.output)
            time.sleep(0.05)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                found = re.search(r'Serving (https?://[^\s"]+)', line)
                if found:
                    self.base_url = found.group(1)
                if line.startswith("Available Routes:") or '"routes": [' in line:  # plain, JSON
                    self._serving.set()
                with self._printed:
                    self.lines.append(line.rstrip("\n"))
                    self._printed.notify_all()
        finally:
            with self._printed:
                self.output_closed.set()
                self._printed.notify_all()

    @property
    def _started(self) -> subprocess.Popen[str]:
        assert self._proc is not None, "the host process was not started"
        return self._proc

    @property
    def pid(self) -> int:
        return self._started.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while the process runs."""
        return self._started.poll()

    def send_signal(self, sig: int) -> None:
        self._started.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; its exit status (subprocess.TimeoutExpired
        if it is still running after `timeout` seconds)."""
        return self._started.wait(timeout)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_output(self, needle: str, timeout: float = 10.0) -> bool:
        """True as soon as `needle` is in the output; False if the output ends, or
        `timeout` seconds pass, without it."""
        with self._printed:
            return self._printed.wait_for(
                lambda: needle in self.output or self.output_closed.is_set(), timeout
            ) and needle in self.output

    def wait_for_count(self, needle: str, count: int, timeout: float = 10.0) -> bool:
        """True as soon as `needle` has been printed `count` times (in lines)."""
        def seen() -> int:
            return sum(needle in line for line in self.lines)

        with self._printed:
            return self._printed.wait_for(
                lambda: seen() >= count or self.output_closed.is_set(), timeout
            ) and seen() >= count

    def children(self) -> list[int]:
        """Pids of the processes this host started (its workers with --workers N)."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return sorted(found)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0, verify=self.verify)

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def __enter__(self) -> HostProcess:
        # Already started (e.g. by a helper that returns a running host): do not
        # spawn a second process that __exit__ would not stop.
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_refused(base_url: str, timeout: float = 10.0) -> bool:
    """True once `base_url`'s listener refuses connections (a draining host closes
    it as soon as it gets its signal); False if it still accepts after `timeout`."""
    hostname, port = base_url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((hostname.strip("[]"), int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.01)
    return False


def run_host(*args: str, cwd: Path | None = None, timeout: float = 300.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a non-serving `host` command (check, build) to completion."""
    return subprocess.run([sys.executable, "-m", "host", *args], cwd=cwd or ROOT, text=True,
                          capture_output=True, timeout=timeout, env=env)


def write_app(directory: Path, manifest: str, components: dict[str, Path] | None = None) -> Path:
    """Write a spin.toml (and copy component files next to it); return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in (components or {}).items():
        (directory / name).write_bytes(source.read_bytes())
    path = directory / "spin.toml"
    path.write_text(manifest)
    return path


@contextlib.contextmanager
def grants_through_variable(directory: Path, scheme: str,
                            host_port: str) -> Iterator[tuple[Any, Any]]:
    """(Grants, component) of a one-component app whose allowed_outbound_hosts
    reaches `scheme://host_port` through a variable, beside an https entry: what
    each outbound capability's factor must resolve and keep for its scheme."""
    from host.app import AppSettings
    from host.grants import Grants
    from host.manifest import load_manifest

    path = write_app(directory, f"""spin_manifest_version = 2
[application]
name = "{scheme}-factor"
[variables]
peer = {{ default = "{host_port}" }}
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
allowed_outbound_hosts = ["{scheme}://{{{{ peer }}}}", "https://example.com"]
""")
    (directory / "c.wasm").write_bytes(b"")
    manifest = load_manifest(path)
    grants = Grants(manifest, AppSettings(), factors=None)
    try:
        yield grants, manifest.components["c"]
    finally:
        grants.close()


def write_spin_python_app(directory: Path, name: str, allowed: str, extra: str = "") -> Path:
    """An app serving apps/spin-python (Spin SDK for Python) at "/...", granted
    `allowed` (TOML-quoted allowed_outbound_hosts entries); `extra`: more tables
    (variables). The end-to-end tests of each outbound capability use it."""
    from tests.apps import built_app

    return write_app(directory, f"""spin_manifest_version = 2
[application]
name = "{name}"
[[trigger.http]]
route = "/..."
component = "spin-python"
[component.spin-python]
source = "spin-python.wasm"
allowed_outbound_hosts = [{allowed}]
{extra}""", {"spin-python.wasm": built_app("spin-python") / "spin-python.wasm"})


@pytest.fixture
def host_process() -> Iterator[type[HostProcess]]:
    yield HostProcess
