"""host/cli.py: parse and dispatch; a bad variable stops only the commands that read it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from host import __version__
from tests.conftest import ROOT, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "cli"
[[trigger.http]]
route = "/..."
component = "echo"
[component.echo]
source = "echo.wasm"
[component.echo.build]
command = "echo built"
"""

BAD = {**os.environ, "SPINHOST_MAX_BODY_BYTES": "abc"}


def host(*args: str, env: dict[str, str] = BAD) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_bad_variable_does_not_break_other_commands(tmp_path: Path, cache_dir: Path,
                                                      wat_components: dict[str, Path]) -> None:
    write_app(tmp_path, MANIFEST, {"echo.wasm": wat_components["echo"]})
    result = host("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"host {__version__}")
    assert host("build", "-f", str(tmp_path)).returncode == 0
    result = host("check", "-f", str(tmp_path), "--cache-dir", str(cache_dir))
    assert result.returncode == 0, result.stderr


def test_host_up_with_a_bad_variable_exits_2_naming_it(tmp_path: Path) -> None:
    write_app(tmp_path, MANIFEST)
    for args in (["up", "-f", str(tmp_path)], ["build", "-u", "-f", str(tmp_path)]):
        result = host(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "Error: SPINHOST_MAX_BODY_BYTES='abc': not a valid value for --max-body-bytes")


def test_no_command_prints_help_and_exits_2() -> None:
    result = host(env=dict(os.environ))
    assert result.returncode == 2 and "COMMAND" in result.stdout


def test_a_state_dir_that_cannot_hold_the_logs_is_one_error_line(
        tmp_path: Path, cache_dir: Path, wat_components: dict[str, Path]) -> None:
    write_app(tmp_path, MANIFEST, {"echo.wasm": wat_components["echo"]})
    (tmp_path / "a-file").write_text("")
    result = host("up", "-f", str(tmp_path), "--cache-dir", str(cache_dir), "--listen",
                  "127.0.0.1:0", "--state-dir", str(tmp_path / "a-file" / "state"),
                  env=dict(os.environ))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f'Error: cannot write the logs of component "echo" to {tmp_path}/a-file/state/logs: '
        "Not a directory (--log-dir, --state-dir)")
