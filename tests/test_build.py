"""host/build.py: `host build` runs build commands like `spin build`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import HostProcess, run_host, write_app

HEAD = """spin_manifest_version = 2
[application]
name = "b"
[[trigger.http]]
route = "/..."
component = "first"
[[trigger.http]]
route = "/second"
component = "second"
"""


def test_runs_commands_in_order_in_workdir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_app(tmp_path, HEAD + """
[component.first]
source = "first.wasm"
[component.first.build]
command = ["echo one > order.txt", "echo two >> order.txt", "echo streamed-output"]
[component.second]
source = "second.wasm"
[component.second.build]
command = "pwd > where.txt"
workdir = "sub"
""")
    result = run_host("build", "-f", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "order.txt").read_text() == "one\ntwo\n"
    assert (tmp_path / "sub" / "where.txt").read_text().strip() == str(tmp_path / "sub")
    assert "Building component first with `echo one > order.txt`" in result.stdout
    assert "streamed-output" in result.stdout
    assert "Finished building all components" in result.stdout


def test_stops_at_first_failure_with_its_exit_code(tmp_path: Path) -> None:
    write_app(tmp_path, HEAD + """
[component.first]
source = "first.wasm"
[component.first.build]
command = ["exit 3", "touch should-not-exist"]
[component.second]
source = "second.wasm"
[component.second.build]
command = "touch second-ran"
""")
    result = run_host("build", "-f", str(tmp_path))
    assert result.returncode == 3
    assert "Build command for component first failed with status 3: `exit 3`" in result.stderr
    assert not (tmp_path / "should-not-exist").exists()
    assert not (tmp_path / "second-ran").exists()


def test_component_filter_and_unknown_id(tmp_path: Path) -> None:
    write_app(tmp_path, HEAD + """
[component.first]
source = "first.wasm"
[component.first.build]
command = "touch first-ran"
[component.second]
source = "second.wasm"
[component.second.build]
command = "touch second-ran"
""")
    assert run_host("build", "-f", str(tmp_path), "-c", "second").returncode == 0
    assert (tmp_path / "second-ran").exists() and not (tmp_path / "first-ran").exists()
    result = run_host("build", "-f", str(tmp_path), "-c", "third")
    assert result.returncode == 1
    assert 'no component named "third"' in result.stderr


def test_up_build_builds_then_serves(tmp_path: Path, wat_components: dict[str, Path],
                                     cache_dir: Path) -> None:
    fixed = wat_components["fixed"]
    write_app(tmp_path, f"""spin_manifest_version = 2
[application]
name = "b"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "out/web.wasm"
[component.web.build]
command = "mkdir -p out && cp '{fixed}' out/web.wasm"
""")
    with HostProcess(["-f", str(tmp_path), "--build", "--cache-dir", str(cache_dir)]) as host:
        with host.client() as client:
            assert client.get("/anything").text == "fixed response"
