"""`host new`, `host add`, `host templates list` (host/new.py).

The toolchain tests generate an app from every template, build it with `host build`
and serve it with a real `host up`. Builds are cached like tests/apps.py does: the
key is every generated file (template, NAME and values included) plus the toolchain
versions, so a warm run only copies the .wasm files in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from host.cli import main
from host.manifest import FileSource, load_manifest
from host.new import Parameter, kebab_case, list_templates, resolve_values
from tests.apps import _cache_root
from tests.conftest import ROOT, HostProcess

TEMPLATES = ["http-py", "http-js", "http-ts", "http-py-spinhost", "wagi-c"]
HELLO = {
    "http-py": "Hello from Python!",
    "http-js": "Hello from JavaScript!",
    "http-ts": "Hello from TypeScript!",
    "http-py-spinhost": "Hello from Python!\n",
    "wagi-c": "Hello from C!\n",
}
_SKIP_DIRS = {"node_modules", "dist", "build", "__pycache__", ".spin"}


def host(*args: str, cwd: Path = ROOT, timeout: float = 900
         ) -> subprocess.CompletedProcess[str]:
    """Run `python -m host ARGS` with this checkout's host, stdin not a terminal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "host", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


class Ran:
    """The outcome of an in-process `host` command (the fast tests: no interpreter start)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., Ran]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompts

    def run(*args: str, cwd: Path = ROOT) -> Ran:
        monkeypatch.chdir(cwd)
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)
    return run


def refused(result: subprocess.CompletedProcess[str] | Ran, code: int, needle: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def _node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return "none"


def build_key(app_dir: Path) -> str:
    digest = hashlib.sha256()
    for tool in ("componentize-py", "ziglang"):
        digest.update(f"{tool} {version(tool)}\n".encode())
    digest.update(f"node {_node_version()}\n".encode())
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir)
        if path.is_file() and path.suffix != ".wasm" and not _SKIP_DIRS.intersection(rel.parts):
            digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def built(app_dir: Path) -> Path:
    """Run `host build` on a generated app, or copy its outputs from the cache."""
    manifest = load_manifest(app_dir)
    outputs = [c.source.path for c in manifest.components.values()
               if isinstance(c.source, FileSource)]
    key = build_key(app_dir)
    cached = {out: _cache_root() / f"new-{key}-{out.as_posix().replace('/', '_')}"
              for out in outputs}
    if all(path.is_file() for path in cached.values()):
        for out, path in cached.items():
            (app_dir / out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, app_dir / out)
        return app_dir
    result = host("build", "-f", str(app_dir))
    assert result.returncode == 0, f"host build failed:\n{result.stdout}\n{result.stderr}"
    for out, path in cached.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        shutil.copyfile(app_dir / out, tmp)
        os.replace(tmp, path)
    return app_dir


def new_app(run: Callable[..., Ran | subprocess.CompletedProcess[str]], tmp_path: Path,
            template: str, name: str, *values: str) -> Path:
    args = [f"--value={v}" for v in values]
    result = run("new", template, name, "--accept-defaults", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / name


def test_templates_list_prints_id_and_description() -> None:
    result = host("templates", "list")  # a real process: exit code, stdout
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for template in list_templates():
        assert any(line.split()[0] == template.id and template.description in line
                   for line in lines), template.id
    assert sorted(t.id for t in list_templates()) == sorted(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_manifest_loads_with_build_and_watch(cli: Callable[..., Ran], template: str,
                                                        tmp_path: Path) -> None:
    description = 'Says "hi" \\ to ünïcode'
    app = new_app(cli, tmp_path, template, "My_App", f"project-description={description}",
                  "http-path=/api/...")
    manifest = load_manifest(app)
    assert manifest.application.name == "My_App"
    assert manifest.application.description == description
    assert [t.route for t in manifest.triggers] == ["/api/..."]
    component = manifest.components["my-app"]
    assert component.build is not None and component.build.commands and component.build.watch
    assert not any(".spin" in p.parts for p in app.rglob("*"))
    assert ".spin/" in (app / ".gitignore").read_text()
    if (app / "package.json").exists():
        assert json.loads((app / "package.json").read_text())["description"] == description
        lock = json.loads((app / "package-lock.json").read_text())
        assert lock["name"] == lock["packages"][""]["name"] == "my-app"


@pytest.mark.toolchain
@pytest.mark.parametrize("template", TEMPLATES)
def test_new_builds_and_serves_on_first_up(template: str, tmp_path: Path,
                                           cache_dir: Path) -> None:
    app = built(new_app(host, tmp_path, template, f"hello-{template}",
                        "project-description=made by test_new"))
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)]) as up, \
            up.client() as client:
        root, deeper = client.get("/"), client.get("/some/path")
    assert root.status_code == 200, up.output
    assert root.text == HELLO[template]
    assert root.headers["content-type"].startswith("text/plain")
    assert deeper.status_code == 200 and deeper.text.startswith(HELLO[template])


@pytest.mark.toolchain
def test_add_serves_both_routes(tmp_path: Path, cache_dir: Path) -> None:
    app = new_app(host, tmp_path, "wagi-c", "first", "http-path=/first/...")
    before = (app / "spin.toml").read_text()
    result = host("add", "http-py-spinhost", "second", "-f", str(app), "--accept-defaults",
                  "--value", "http-path=/second/...")
    assert result.returncode == 0, result.stdout + result.stderr
    after = (app / "spin.toml").read_text()
    assert after.startswith(before)  # appended, not reformatted
    manifest = load_manifest(app)
    assert list(manifest.components) == ["first", "second"]
    second = manifest.components["second"]
    assert second.build is not None and second.build.workdir == "second"
    assert (app / "second" / "app.py").is_file() and (app / "second" / "wit").is_dir()
    assert not (app / "second" / "spin.toml").exists()

    built(app)
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)]) as up, \
            up.client() as client:
        first, second_response = client.get("/first"), client.get("/second/x")
    assert (first.status_code, first.text) == (200, HELLO["wagi-c"]), up.output
    assert (second_response.status_code, second_response.text) == (200, "Hello from Python!\n")


@pytest.mark.parametrize("template", TEMPLATES)
def test_add_each_template_to_an_app(cli: Callable[..., Ran], template: str,
                                     tmp_path: Path) -> None:
    app = new_app(cli, tmp_path, "wagi-c", "base", "http-path=/")
    before = (app / "spin.toml").read_bytes()
    result = cli("add", template, "extra_one", "-f", str(app / "spin.toml"),
                  "--accept-defaults")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (app / "spin.toml").read_bytes().startswith(before)
    manifest = load_manifest(app)
    component = manifest.components["extra-one"]
    assert isinstance(component.source, FileSource)
    assert component.source.path.parts[0] == "extra_one"
    assert component.build is not None and component.build.workdir == "extra_one"
    assert [t.route for t in manifest.triggers] == ["/", "/..."]


# ---------------------------------------------------------------------------
# What is refused, with one line and no traceback


@pytest.mark.parametrize("name", ["1app", "my app", "a/b", "app.x", "-app", "_app", "app-2", ""])
def test_new_refuses_a_bad_name(cli: Callable[..., Ran], name: str, tmp_path: Path) -> None:
    result = cli("new", "wagi-c", "--accept-defaults", "--", name, cwd=tmp_path)
    refused(result, 2, "invalid name")
    assert list(tmp_path.iterdir()) == []


def test_new_writes_to_name_or_output(cli: Callable[..., Ran], tmp_path: Path) -> None:
    assert (new_app(cli, tmp_path, "wagi-c", "plain") / "spin.toml").is_file()
    (tmp_path / "empty").mkdir()
    result = cli("new", "wagi-c", "other", "-a", "--output", "empty", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_manifest(tmp_path / "empty").application.name == "other"


def test_new_refuses_a_non_empty_directory(cli: Callable[..., Ran], tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    refused(cli("new", "http-js", "taken", "-a", cwd=tmp_path), 1, "not empty")
    refused(cli("new", "http-js", "x", "-a", "-o", "taken", cwd=tmp_path), 1, "not empty")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("value", "needle"), [
    ("http-path", "expected KEY=VALUE"),
    ("=x", "expected KEY=VALUE"),
    ("colour=blue", 'no parameter "colour"'),
    ("http-path=api", "does not match"),
    ("http-path=/a b", "does not match"),
    ("http-path=/*x", "invalid http-path"),
])
def test_new_refuses_a_bad_value(cli: Callable[..., Ran], value: str, needle: str,
                                 tmp_path: Path) -> None:
    refused(cli("new", "http-py", "app", "-a", "--value", value, cwd=tmp_path), 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_an_unknown_template_and_a_missing_name(cli: Callable[..., Ran],
                                                            tmp_path: Path) -> None:
    refused(cli("new", "http-cobol", "app", cwd=tmp_path), 2, "wagi-c")
    refused(cli("new", "wagi-c", cwd=tmp_path), 2, "required: NAME")
    # options may come between TEMPLATE and NAME
    assert cli("new", "wagi-c", "-a", "late", cwd=tmp_path).returncode == 0


def test_add_refuses_duplicates_and_leaves_the_app_alone(cli: Callable[..., Ran],
                                                         tmp_path: Path) -> None:
    app = new_app(cli, tmp_path, "wagi-c", "first")  # route /...
    before = (app / "spin.toml").read_bytes()
    refused(cli("add", "wagi-c", "first", "-f", str(app), "-a",
                 "--value", "http-path=/other"), 1, 'component named "first" already exists')
    for route in ("/...", "/*"):
        refused(cli("add", "http-js", "second", "-f", str(app), "-a",
                     "--value", f"http-path={route}"), 1, "already served by first")
    refused(cli("add", "wagi-c", "third", "-f", str(app), "-a", "-o", str(tmp_path / "out"),
                 "--value", "http-path=/third"), 1, "inside the app's directory")
    assert (app / "spin.toml").read_bytes() == before
    assert sorted(p.name for p in app.iterdir()) == [".gitignore", "main.c", "spin.toml"]
    refused(cli("add", "wagi-c", "x", "-f", str(tmp_path / "nowhere"), "-a"), 1,
            "no such file")


def test_add_keeps_comments_and_layout(cli: Callable[..., Ran], tmp_path: Path) -> None:
    text = ('spin_manifest_version = 2\n# a comment the user wrote\n[application]\n'
            'name    =   "kept"   # aligned\n\n[[trigger.http]]\nroute = "/"\n'
            'component = "home"\n[component.home]\nsource = "home.wasm"')  # no final newline
    (tmp_path / "spin.toml").write_text(text)
    result = cli("add", "http-ts", "api", "-a", "--value", "http-path=/api/...", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after = (tmp_path / "spin.toml").read_text()
    assert after.startswith(text + "\n\n[[trigger.http]]\n")
    assert tomllib.loads(after)["component"]["api"]["source"] == "api/dist/api.wasm"


# ---------------------------------------------------------------------------
# Units


@pytest.mark.parametrize(("name", "kebab"), [
    ("hello", "hello"), ("hello_world", "hello-world"), ("HelloWorld", "hello-world"),
    ("my-App", "my-app"), ("HTTPServer", "http-server"), ("app2go", "app2go"),
])
def test_kebab_case(name: str, kebab: str) -> None:
    assert kebab_case(name) == kebab


def test_prompts_until_a_valid_answer() -> None:
    template = next(t for t in list_templates() if t.id == "http-py")
    answers = iter(["", "no-slash", "/api/..."])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    values = resolve_values(template, {}, ask)
    assert values == {"project-description": "", "http-path": "/api/..."}
    assert asked == ["Description: ", "HTTP path [/...]: ", "HTTP path [/...]: "]
    assert Parameter("p", "P", "d").check("anything") is None
    assert resolve_values(template, {"http-path": "/x"}, None)["http-path"] == "/x"

