"""host/capabilities/files.py: the staged guest tree holds exactly the selected files,
and nothing outside the app directory can be reached through it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from host.capabilities.files import _glob_regex, stage_files
from host.errors import ComponentError
from host.manifest import FilePattern, Manifest, parse_manifest


def manifest(app: Path, files: str, exclude: str = "") -> Manifest:
    """A one-component manifest at `app/spin.toml` with the given TOML values."""
    text = f"""spin_manifest_version = 2
[application]
name = "app"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
files = {files}
"""
    if exclude:
        text += f"exclude_files = {exclude}\n"
    return parse_manifest(text, app / "spin.toml")


def stage(app: Path, root: Path, files: str, exclude: str = "") -> Path | None:
    m = manifest(app, files, exclude)
    return stage_files(m, m.components["web"], root)


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (files: their text, directories: "/")."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            assert not path.is_symlink(), f"staged tree must not hold symlinks: {path}"
            rel = path.relative_to(root).as_posix()
            out[rel] = "/" if path.is_dir() else path.read_text()
    return out


def write(base: Path, *names: str) -> None:
    for name in names:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    write(app, "a.txt", "b.txt", "static/index.html", "static/css/site.css",
          "static/secret/key.pem", "static/secret/deep/x.pem", "assets/logo.png",
          "assets/img/icon.png", "src/main.rs")
    (app / "spin.toml").write_text("")
    return app


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    write(out, "secret.txt", "dir/secret.txt")
    return out


def test_no_files_returns_none(app: Path, tmp_path: Path) -> None:
    m = manifest(app, "[]")
    assert stage_files(m, m.components["web"], tmp_path / "root") is None
    assert not (tmp_path / "root").exists()


def test_full_selection_and_nothing_else(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = '["static/**/*", "a.txt", { source = "assets", destination = "/data" }]'
    result = stage(app, root, files, '["static/secret/*"]')
    assert result == root
    assert tree(root) == {
        "a.txt": "a.txt",
        "static": "/", "static/index.html": "static/index.html",
        "static/css": "/", "static/css/site.css": "static/css/site.css",
        "data": "/", "data/logo.png": "assets/logo.png",
        "data/img": "/", "data/img/icon.png": "assets/img/icon.png",
    }


def test_glob_selects_nested_files_only(app: Path, tmp_path: Path) -> None:
    stage(app, tmp_path / "r", '["static/**/*.pem"]')
    assert {k for k, v in tree(tmp_path / "r").items() if v != "/"} == {
        "static/secret/key.pem", "static/secret/deep/x.pem"}
    stage(app, tmp_path / "r", '["*.txt", "static/?ndex.htm[kl]"]')
    assert tree(tmp_path / "r") == {"a.txt": "a.txt", "b.txt": "b.txt", "static": "/",
                                    "static/index.html": "static/index.html"}


def test_plain_file_and_plain_directory(app: Path, tmp_path: Path) -> None:
    stage(app, tmp_path / "r", '["b.txt", "assets"]')
    assert tree(tmp_path / "r") == {"b.txt": "b.txt", "assets": "/",
                                    "assets/logo.png": "assets/logo.png", "assets/img": "/",
                                    "assets/img/icon.png": "assets/img/icon.png"}


def test_file_mapping_and_hard_link(app: Path, tmp_path: Path) -> None:
    stage(app, tmp_path / "r", '[{ source = "src/main.rs", destination = "/etc/main.rs" }]')
    assert tree(tmp_path / "r") == {"etc": "/", "etc/main.rs": "src/main.rs"}
    assert (tmp_path / "r/etc/main.rs").stat().st_ino == (app / "src/main.rs").stat().st_ino


def test_directory_mapped_at_root(app: Path, tmp_path: Path) -> None:
    stage(app, tmp_path / "r", '[{ source = "assets/img", destination = "/" }]')
    assert tree(tmp_path / "r") == {"icon.png": "assets/img/icon.png"}


@pytest.mark.parametrize("exclude, left", [
    ('["static/secret/*"]', {"static/index.html", "static/css/site.css"}),
    ('["static/secret"]', {"static/index.html", "static/css/site.css"}),  # a dir: all below it
    ('["**/*.pem", "**/css/**"]', {"static/index.html"}),
    ('["*.html", "static/css/site.css"]', {"static/secret/key.pem", "static/secret/deep/x.pem"}),
])
def test_exclude_files(app: Path, tmp_path: Path, exclude: str, left: set[str]) -> None:
    stage(app, tmp_path / "r", '["static"]', exclude)
    assert {k for k, v in tree(tmp_path / "r").items() if v != "/"} == left


def test_exclude_applies_to_named_files_and_mappings(app: Path, tmp_path: Path) -> None:
    stage(app, tmp_path / "r", '["a.txt", "b.txt", { source = "assets", destination = "/d" }]',
          '["a.txt", "assets/img/*"]')
    assert tree(tmp_path / "r") == {"b.txt": "b.txt", "d": "/", "d/logo.png": "assets/logo.png"}


def test_glob_regex_follows_glob_crate_rules() -> None:
    assert _glob_regex("static/secret/*").fullmatch("static/secret/a/b")  # `*` crosses `/`
    assert _glob_regex("a/**/b").fullmatch("a/b")
    assert _glob_regex("a/**/b").fullmatch("a/x/y/b")
    assert _glob_regex("[!a]?").fullmatch("b/")
    assert not _glob_regex("[!a]x").fullmatch("ax")
    assert _glob_regex("[]]").fullmatch("]")
    assert _glob_regex("a[").fullmatch("a[")
    assert not _glob_regex("a.txt").fullmatch("abtxt")


def error(app: Path, tmp_path: Path, files: str, exclude: str = "") -> str:
    with pytest.raises(ComponentError) as info:
        stage(app, tmp_path / "r", files, exclude)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{app / 'spin.toml'}: [component.web] ")
    return message


@pytest.mark.parametrize("files", ['["../outside/secret.txt"]', '["static/../../outside/*"]',
                                   '["../*"]', '["/etc/passwd"]', '["/etc/*"]'])
def test_dotdot_and_absolute_patterns_refused(app: Path, tmp_path: Path, outside: Path,
                                              files: str) -> None:
    message = error(app, tmp_path, files)
    assert "files:" in message and "is not allowed" in message and files[2:-2] in message


@pytest.mark.parametrize("pattern", ["..", ".", "a/..", ""])
def test_dot_patterns_refused(app: Path, tmp_path: Path, pattern: str) -> None:
    m = manifest(app, '["a.txt"]')
    component = dataclasses.replace(m.components["web"], files=(FilePattern(pattern),))
    with pytest.raises(ComponentError, match="is not allowed"):
        stage_files(m, component, tmp_path / "r")


def test_absolute_and_dotdot_source_refused(app: Path, tmp_path: Path, outside: Path) -> None:
    message = error(app, tmp_path, f'[{{ source = "{outside}", destination = "/x" }}]')
    assert f'"{outside}" is not allowed' in message
    message = error(app, tmp_path, '[{ source = "../outside", destination = "/x" }]')
    assert '"../outside" is not allowed' in message


def test_dotdot_destination_refused(app: Path, tmp_path: Path) -> None:
    message = error(app, tmp_path, '[{ source = "a.txt", destination = "/../../x.txt" }]')
    assert 'destination "/../../x.txt"' in message


def test_file_symlink_outside_refused(app: Path, tmp_path: Path, outside: Path) -> None:
    (app / "static/link.txt").symlink_to(outside / "secret.txt")
    for files in ('["static/*"]', '["static/link.txt"]', '["static"]',
                  '[{ source = "static/link.txt", destination = "/x" }]'):
        message = error(app, tmp_path, files)
        assert "static/link.txt" in message and "outside the app directory" in message
    assert not (tmp_path / "r/x").exists()


def test_directory_symlink_outside_refused(app: Path, tmp_path: Path, outside: Path) -> None:
    (app / "static/evil").symlink_to(outside / "dir")
    for files in ('["static/**/*"]', '["static"]', '["**/*.txt"]', '["static/evil/*"]',
                  '[{ source = "static", destination = "/s" }]'):
        message = error(app, tmp_path, files)
        assert "static/evil" in message and "outside the app directory" in message
    # Excluding the link is the way to keep the rest of the directory.
    stage(app, tmp_path / "r", '["static"]', '["static/evil"]')
    assert "static/evil" not in tree(tmp_path / "r")


def test_app_directory_itself_reached_through_dotdot_symlink(app: Path, tmp_path: Path,
                                                              outside: Path) -> None:
    (app / "up").symlink_to(app.parent)
    message = error(app, tmp_path, '["up/outside/secret.txt"]')
    assert "outside the app directory" in message


def test_symlinks_inside_are_followed_as_copies(app: Path, tmp_path: Path) -> None:
    (app / "static/alias.txt").symlink_to(app / "a.txt")
    (app / "static/loop").symlink_to(app / "static")  # a cycle: skipped, not followed forever
    (app / "linked").symlink_to(app / "assets")
    stage(app, tmp_path / "r", '["static/**/*.txt", "linked"]')
    assert tree(tmp_path / "r") == {"static": "/", "static/alias.txt": "a.txt", "linked": "/",
                                    "linked/logo.png": "assets/logo.png", "linked/img": "/",
                                    "linked/img/icon.png": "assets/img/icon.png"}


def test_nonexistent_path_error(app: Path, tmp_path: Path) -> None:
    message = error(app, tmp_path, '["missing.txt"]')
    assert 'files: "missing.txt" does not exist and doesn\'t appear to be a glob pattern' in message
    message = error(app, tmp_path, '[{ source = "nope", destination = "/n" }]')
    assert 'source "nope" does not exist' in message


def test_glob_matching_nothing_is_empty(app: Path, tmp_path: Path) -> None:
    assert stage(app, tmp_path / "r", '["nothing/**/*"]') == tmp_path / "r"
    assert tree(tmp_path / "r") == {}


def test_conflicts_refused(app: Path, tmp_path: Path) -> None:
    message = error(app, tmp_path, '["a.txt", { source = "b.txt", destination = "/a.txt" }]')
    assert "guest path /a.txt" in message
    message = error(app, tmp_path, '[{ source = "a.txt", destination = "/" }]')
    assert 'cannot be mounted at "/"' in message
    message = error(app, tmp_path, '[{ source = "a.txt", destination = "/static" }, "static"]')
    assert "collides" in message
    # The same host file selected twice is fine.
    stage(app, tmp_path / "r", '["a.txt", "*.txt", { source = "a.txt", destination = "/a.txt" }]')
    assert tree(tmp_path / "r") == {"a.txt": "a.txt", "b.txt": "b.txt"}


def test_exclude_files_must_be_relative(app: Path, tmp_path: Path) -> None:
    message = error(app, tmp_path, '["a.txt"]', '["/abs/*"]')
    assert 'exclude_files: "/abs/*" is not allowed' in message


def test_restaging_empties_the_old_tree(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    stage(app, root, '["static/**/*"]')
    (root / "stray.txt").write_text("left over")
    stage(app, root, '["a.txt"]')
    assert tree(root) == {"a.txt": "a.txt"}
    assert (app / "static/index.html").read_text() == "static/index.html"  # sources untouched


def test_staging_root_inside_app_is_not_selected(app: Path) -> None:
    root = app / ".spin" / "files" / "web"
    stage(app, root, '["**/*.txt"]')
    stage(app, root, '["**/*.txt"]')
    assert tree(root) == {"a.txt": "a.txt", "b.txt": "b.txt"}


def test_staging_root_may_not_be_the_app_directory(app: Path, tmp_path: Path) -> None:
    for root in (app, tmp_path):
        with pytest.raises(ComponentError, match="is or contains the app directory"):
            stage(app, root, '["a.txt"]')
    assert (app / "a.txt").exists()
