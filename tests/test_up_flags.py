"""`spin up`'s runtime flags through a real `host up`: --variable, --key-value,
--sqlite, --follow, and `host build -u` passing them on.

The guest for the stores and variables is apps/capability-probe (it reports
what it reads as JSON); --follow uses two tiny WAGI programs that print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import wat
from tests.apps import built_app
from tests.conftest import ROOT, HostProcess, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "up-flags"
[variables]
greeting = { required = true }
token = { default = "default-token" }
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "probe.wasm"
key_value_stores = ["default"]
sqlite_databases = ["default"]
[component.probe.variables]
greeting = "{{ greeting }}"
token = "{{ token }}"
"""

# Files named in flags are relative to the current directory, as in Spin: these
# tests run the host elsewhere than the checkout, which must still be the one imported.
THIS_HOST = {"PYTHONPATH": str(ROOT)}

SCHEMA = """CREATE TABLE notes (body TEXT NOT NULL);
INSERT INTO notes VALUES ('from the file');
"""


@pytest.fixture(scope="module")
def probe_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("up-flags")
    wasm = built_app("capability-probe") / "capability-probe.wasm"
    write_app(directory, MANIFEST, {"probe.wasm": wasm})
    (directory / "vars.json").write_text(json.dumps({"greeting": "from-json",
                                                     "token": "json-token"}))
    (directory / "vars.toml").write_text('token = "toml-token"\n')
    (directory / "token.txt").write_text("file-token")
    (directory / "schema.sql").write_text(SCHEMA)
    return directory


def flags(state_dir: str) -> list[str]:
    return ["--state-dir", state_dir, "--pool-size", "1",
            "--variable", "@vars.json", "--variable", "@vars.toml",
            "--variable", "token=@token.txt", "--variable", "greeting=last one wins",
            "--key-value", "k1=v1", "--key-value", "k2=a=b",
            "--sqlite", "@schema.sql", "--sqlite", "INSERT INTO notes VALUES ('a statement')"]


def check_app(host: HostProcess) -> None:
    with host.client() as c:
        assert c.get("/config?key=greeting").json() == {"value": "last one wins"}
        assert c.get("/config?key=token").json() == {"value": "file-token"}
        assert c.get("/kv/get?key=k1").content == b"v1"
        assert c.get("/kv/get?key=k2").content == b"a=b"
        rows = c.post("/sqlite", json={"sql": "SELECT body FROM notes ORDER BY body"}).json()
        assert rows["rows"] == [["a statement"], ["from the file"]]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_variables_key_values_and_sqlite_at_start_up(probe_app: Path, cache_dir: Path,
                                                     tmp_path: Path, workers: str) -> None:
    env = {**os.environ, "SPIN_VARIABLE_GREETING": "from the environment", **THIS_HOST}
    state = str(tmp_path / "state")
    # With files in a state dir, the statements run once (a second CREATE TABLE fails);
    # the first worker runs them.
    with HostProcess(["-f", str(probe_app), "--cache-dir", str(cache_dir), "--workers",
                      workers, *flags(state)], cwd=probe_app, env=env) as host:
        for _ in range(int(workers) * 2):
            check_app(host)
        assert "Ran 2 SQLite statement(s) (--sqlite)" in host.output
    # In memory (no state dir): every worker has its own stores, each seeded.
    with HostProcess(["-f", str(probe_app), "--cache-dir", str(cache_dir), "--workers",
                      workers, *flags("")], cwd=probe_app, env=env) as host:
        for _ in range(int(workers) * 4):
            check_app(host)


def up(app: Path, *args: str, cwd: Path = ROOT, command: tuple[str, ...] = ("up",)
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *command, "-f", str(app), *args],
                          cwd=cwd, env={**os.environ, **THIS_HOST}, capture_output=True,
                          text=True, timeout=120)


def test_bad_runtime_flags_are_one_line(probe_app: Path, cache_dir: Path,
                                        tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"greeting": 1}')
    (tmp_path / "broken.toml").write_text("greeting = \n")
    common = ["--cache-dir", str(cache_dir), "--listen", "127.0.0.1:0", "--state-dir", ""]
    cases = [
        (["--variable", "greeting"], 1, "--variable 'greeting': expected KEY=VALUE, "
                                        "KEY=@FILE, @FILE.json or @FILE.toml"),
        (["--variable", "@vars.yaml"], 1, "--variable '@vars.yaml': variable files must "
                                          "end in .json or .toml"),
        (["--variable", "@missing.json"], 1, "--variable '@missing.json': cannot read "
                                             "missing.json: No such file or directory"),
        (["--variable", "greeting=@missing.txt"], 1,
         "--variable 'greeting=@missing.txt': cannot read missing.txt: No such file or "
         "directory"),
        (["--variable", "@bad.json"], 1,
         "--variable '@bad.json': bad.json: expected a table of NAME = \"string value\""),
        (["--key-value", "novalue"], 1, "--key-value 'novalue': expected KEY=VALUE"),
        (["--sqlite", "@missing.sql"], 1, "--sqlite '@missing.sql': cannot read "
                                          "missing.sql: No such file or directory"),
        (["--sqlite", "@schema.sql:"], 1, "--sqlite '@schema.sql:': database label is empty "
                                          "(expected @FILE:LABEL)"),
        (["--variable", "greeting=x", "--sqlite", "CREAT TABLE x (y)"], 1,
         "--sqlite 'CREAT TABLE x (y)': near \"CREAT\": syntax error (SQLite database "
         '"default", sqlite in memory)'),
        (["--variable", "greeting=x", "--follow", "nope"], 1,
         f"--follow 'nope': no component \"nope\" in {probe_app}/spin.toml (components: "
         "probe)"),
        (["--follow", "probe", "-q"], 1, "--follow and -q/--quiet cannot be used together"),
    ]
    for args, code, message in cases:
        result = up(probe_app, *common, *args, cwd=tmp_path)
        assert (result.returncode, result.stderr.strip().splitlines()[-1:]) == (
            code, [f"Error: {message}"]), (args, result.stderr)
        assert "Traceback" not in result.stderr
    broken = up(probe_app, *common, "--variable", "@broken.toml", cwd=tmp_path)
    assert broken.returncode == 1
    assert broken.stderr.strip().startswith("Error: --variable '@broken.toml': broken.toml: "
                                            "not valid TOML: ")
    # `host build -u` checks the flags it passes on before building.
    result = up(probe_app, "-u", "--key-value", "novalue", command=("build",))
    assert (result.returncode, result.stderr.strip()) == (
        1, "Error: --key-value 'novalue': expected KEY=VALUE")
    result = up(probe_app, "--listen", "127.0.0.1:0", command=("build",))
    assert result.returncode == 2 and "unrecognized arguments: --listen" in result.stderr


FOLLOW_MANIFEST = """spin_manifest_version = 2
[application]
name = "follow"
[[trigger.http]]
route = "/a"
component = "a"
executor = { type = "wagi" }
[[trigger.http]]
route = "/b"
component = "b"
executor = { type = "wagi" }
[component.a]
source = "a.wasm"
[component.a.build]
command = "echo building"
[component.b]
source = "b.wasm"
"""


def printer(name: str) -> str:
    """A WAGI program that writes `NAME says hi` to stderr, then answers."""
    line = f"{name} says hi\\0a"
    return f"""(module {wat._WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: text/plain\\0a\\0aok")
  (data (i32.const 2048) "{line}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const {len(name) + 9}))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $write (i32.const 1024) (i32.const 28))))
"""


@pytest.fixture(scope="module")
def follow_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("follow")
    write_app(directory, FOLLOW_MANIFEST)
    for name in ("a", "b"):
        wat.build_module(printer(name), directory / f"{name}.wasm")
    return directory


@pytest.mark.parametrize("how", ["up", "build -u"])
def test_follow_echoes_only_the_components_named(follow_app: Path, cache_dir: Path,
                                                 how: str) -> None:
    args = ["--cache-dir", str(cache_dir), "--follow", "b"]
    if how == "up":
        host = HostProcess(["-f", str(follow_app), *args])
    else:  # host up's flags after `host build -u`, as with spin build -u
        host = HostProcess(args, command=("build", "-f", str(follow_app), "-u"))
    with host, host.client() as client:
        assert client.get("/a").text == "ok"
        assert client.get("/b").text == "ok"
        assert host.wait_for_output("[b] b says hi")
        assert client.get("/b").text == "ok"
        assert host.wait_for_count("[b] b says hi", 2)
    assert "[a]" not in host.output
    assert "a says hi" in (follow_app / ".spin" / "logs" / "a_stderr.txt").read_text()
    assert ("building" in host.output) == (how == "build -u")
