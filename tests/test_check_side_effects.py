"""`host check` validates an app and its runtime config without side effects: no
database file or directory is created, no Redis connection is made, no staged files.

An unreachable Redis is not an error for `host check`: it checks the app and its
configuration, not the environment it runs in (a build machine or CI job usually
cannot reach the production Redis); `host up` still PINGs at start-up and fails
loudly. The URL itself is parsed as the client would parse it.
"""

from __future__ import annotations

import select
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.app import AppSettings, load_app
from host.errors import ComponentError, ConfigError
from host.grants import Grants
from host.manifest import load_manifest
from host.runtime.engine import Engine
from host.runtime_config import parse_runtime_config
from tests import wat
from tests.conftest import run_host, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "check"
[[trigger.http]]
route = "/..."
component = "echo"
[component.echo]
source = "echo.wasm"
key_value_stores = ["default", "cache", "local"]
sqlite_databases = ["default", "billing"]
files = ["static/*"]
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts nothing: a connection attempt stays in its backlog."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def connected(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "cache" not in p.relative_to(root).parts}


def make_app(root: Path, redis_port: int) -> tuple[Path, Path]:
    app_dir = root / "app"
    (app_dir / "static").mkdir(parents=True)
    (app_dir / "static" / "index.html").write_text("hi")
    wat.build_component(wat.ECHO, app_dir / "echo.wasm")
    manifest = write_app(app_dir, MANIFEST)
    config = root / "runtime-config.toml"
    config.write_text(f"""
[key_value_store.cache]
type = "redis"
url = "redis://user:s3cret@127.0.0.1:{redis_port}/0"
[key_value_store.local]
type = "spin"
path = "new/kv/local.db"
[sqlite_database.billing]
type = "spin"
path = "new/db/billing.db"
""")
    return manifest, config


def test_check_only_load_creates_nothing_and_connects_nowhere(
        tmp_path: Path, listener: socket.socket) -> None:
    manifest_path, config = make_app(tmp_path, listener.getsockname()[1])
    manifest = load_manifest(manifest_path)
    runtime_config = parse_runtime_config(tomllib.loads(config.read_text()), config)
    before = tree(tmp_path)
    lines: list[str] = []
    settings = AppSettings(pool_size=1, runtime_config=runtime_config, check_only=True,
                           state_dir=tmp_path / "app" / ".spin")
    app = load_app(manifest, Engine(None), settings, report=lines.append)
    app.close()
    assert tree(tmp_path) == before
    assert not connected(listener)
    assert not any("Storing default" in line for line in lines)
    assert any("redis redis://user:***@127.0.0.1" in line and "not opened" in line
               for line in lines), lines
    assert not any("s3cret" in line for line in lines)


def test_host_check_creates_nothing_connects_nowhere_and_exits_0(
        tmp_path: Path, listener: socket.socket) -> None:
    manifest, config = make_app(tmp_path, listener.getsockname()[1])
    before = tree(tmp_path)
    result = run_host("check", "-f", str(manifest), "--cache-dir", str(tmp_path / "cache"),
                      "--runtime-config-file", str(config))
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == before
    assert not connected(listener)
    assert "Storing default key-value data" not in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize(("grants", "config", "error", "message"), [
    ('key_value_stores = ["cache"]',
     '[key_value_store.cache]\ntype = "redis"\nurl = "redis://h:port/0"\n',
     ConfigError, "invalid Redis URL redis://h:port/0"),
    ('key_value_stores = ["local"]',
     '[key_value_store.local]\ntype = "spin"\npath = "afile/kv.db"\n',
     ConfigError, "afile is not a directory"),
    ('sqlite_databases = ["billing"]',
     '[sqlite_database.billing]\ntype = "spin"\npath = "afile/x/db.db"\n',
     ConfigError, "afile is not a directory"),
    ('sqlite_databases = ["billing"]',
     '[sqlite_database.billing]\ntype = "spin"\npath = "adir"\n',
     ConfigError, "adir exists and is not a file"),
    ('sqlite_databases = ["billing"]', "",
     ComponentError, 'unknown sqlite_databases label "billing"'),
    ('files = ["../outside.txt"]', "", ComponentError, r"\[component.echo\] files"),
])
def test_check_only_still_fails_loudly(tmp_path: Path, grants: str, config: str,
                                       error: type[Exception], message: str) -> None:
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    (tmp_path / "outside.txt").write_text("")
    text = MANIFEST.split("key_value_stores")[0] + grants + "\n"
    manifest = load_manifest(write_app(tmp_path / "app", text))
    runtime_config = parse_runtime_config(tomllib.loads(config), tmp_path / "rc.toml")
    with pytest.raises(error, match=message):
        app = Grants(manifest, AppSettings(runtime_config=runtime_config, check_only=True))
        try:
            app.for_component(manifest.components["echo"])
        finally:
            app.close()
