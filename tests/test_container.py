"""Container citizenship: configuration from the environment, JSON logs, a
read-only compile cache, and a compile cache shared by several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps import built_app
from tests.conftest import ROOT, HostProcess, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "container"
[[trigger.http]]
route = "/echo"
component = "echo"
[component.echo]
source = "echo.wasm"
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("container-app")
    write_app(directory, MANIFEST, {"echo.wasm": wat_components["echo"]})
    return directory


def test_every_flag_can_come_from_the_environment(app_dir: Path, cache_dir: Path) -> None:
    env = {**os.environ, "SPINHOST_MAX_BODY_BYTES": "10", "SPINHOST_POOL_SIZE": "1",
           "SPINHOST_CACHE_DIR": str(cache_dir), "SPINHOST_QUIET": "true"}
    with HostProcess(["-f", str(app_dir)], env=env) as host, host.client() as c:
        assert c.post("/echo", content=b"x" * 10).status_code == 200
        assert c.post("/echo", content=b"x" * 11).status_code == 413
        assert "instances ready" not in host.output  # SPINHOST_QUIET
    # A flag on the command line wins over the environment.
    with HostProcess(["-f", str(app_dir), "--max-body-bytes", "100"], env=env) as host, \
            host.client() as c:
        assert c.post("/echo", content=b"x" * 50).status_code == 200


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SPINHOST_POOL_SIZE", "many", "SPINHOST_POOL_SIZE='many': not a valid value for "
                                   "--pool-size"),
    ("SPINHOST_QUIET", "maybe", "SPINHOST_QUIET='maybe': expected true or false"),
    ("SPINHOST_LOG_FORMAT", "xml", "SPINHOST_LOG_FORMAT='xml': choose from plain, json"),
])
def test_bad_environment_values_are_usage_errors(app_dir: Path, name: str, value: str,
                                                 message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "host", "up", "-f", str(app_dir)],
                            cwd=ROOT, env={**os.environ, name: value}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_json_logs_are_one_object_per_line(cache_dir: Path) -> None:
    with HostProcess(["-f", str(built_app("echo")), "--cache-dir", str(cache_dir),
                      "--log-format", "json", "--log-dir", ""]) as host, host.client() as c:
        assert c.get("/anything").status_code == 200
        assert host.wait_for_output('"stream": "stdout"')
    records = [json.loads(line) for line in host.lines if line.strip()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    serving = next(r for r in records if r["message"].startswith("Serving "))
    assert serving["url"] == host.base_url and serving["routes"]
    echoed = [r for r in records if r.get("component") == "echo"]
    assert echoed and echoed[0]["stream"] in ("stdout", "stderr")


def test_unwritable_cache_still_serves_and_says_so(app_dir: Path, tmp_path: Path) -> None:
    # Tests run as root, which ignores permission bits: a cache path under a
    # regular file is unwritable for everyone, like a read-only volume.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(blocker / "cache")]) as host, \
            host.client() as c:
        assert c.post("/echo", content=b"hi").content == b"hi"
    assert "cannot write compile cache" in host.output
    assert "compiled at every start" in host.output


def test_two_processes_share_an_empty_compile_cache(tmp_path: Path) -> None:
    """The node volume case: pods of one app start at once on an empty cache."""
    cache = tmp_path / "node-cache"
    app = built_app("hello-python")
    hosts = [HostProcess(["-f", str(app), "--cache-dir", str(cache), "--pool-size", "1"])
             for _ in range(2)]
    try:
        for host in hosts:  # both spawned before either has compiled
            host.start_async()
        for host in hosts:
            host.wait_started()
            with host.client() as c:
                assert c.get("/hello").status_code == 200
    finally:
        for host in hosts:
            host.stop()
    names = sorted(p.name for p in cache.iterdir())
    artifacts = [n for n in names if n.endswith(".cwasm")]
    assert len(artifacts) == 1, names
    assert names == sorted([*artifacts, artifacts[0].replace(".cwasm", ".lock")])  # no temp
    # The compile lock: one process compiled, the other waited and loaded.
    assert sum("compiling hello-python.wasm" in h.output for h in hosts) == 1
    assert sum("loaded from compile cache" in h.output for h in hosts) == 1
    # A third process finds it: no compile step at all.
    with HostProcess(["-f", str(app), "--cache-dir", str(cache), "--pool-size", "1"]) as host:
        assert "loaded from compile cache" in host.output and "compiling" not in host.output
