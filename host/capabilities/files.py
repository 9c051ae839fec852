"""`files` and `exclude_files`: a component's read-only view of its app directory.

As Spin does, the selected files are staged into one directory per component
(hard links when possible) that the executor mounts read-only at guest `/`, so
the guest sees exactly what the manifest names and nothing else of the host.
Every selected path is resolved (symlinks followed) and must stay inside the app
directory: a stray `..`, absolute path or symlink would otherwise hand the guest
any file the host user can read.

Globs follow Spin's `glob` crate with default options. In `files`, `*`, `?` and
`[...]`/`[!...]` match within one path component (dotfiles included), `**`
matches zero or more directories, and symlinked directories inside the app are
followed (a link back to an ancestor is skipped). `exclude_files` match the path
relative to the app directory, where `*` and `?` also match `/` and `**/` matches
zero or more directories.

Stricter than Spin: `..` components and absolute paths are refused even when they
would land inside the app directory; an exclusion also removes explicitly named
files and, when it matches a directory, everything beneath it; two different
host files staged at one guest path are an error (Spin lets one win).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import wasmtime

from host.capabilities import AppContext, Capability, Factor
from host.errors import ComponentError
from host.manifest import Component, FileMapping, Manifest

_GLOB_CHARS = frozenset("*?[]")


class FilesFactor(Factor):
    """Stages each component's files under one temporary directory per app."""

    manifest_keys = ("files", "exclude_files")

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self._staging: Path | None = None

    def for_component(self, component: Component) -> Files | None:
        if not component.files:
            return None
        if self.app.check_only:
            select_files(self.app.manifest, component)  # every check, nothing copied
            return None
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="spinhost-files-"))
        root = stage_files(self.app.manifest, component, self._staging / component.id)
        return Files(component.id, root) if root is not None else None

    def close(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


class Files(Capability):
    """No host functions: the staged files, preopened read-only at guest `/`."""

    def __init__(self, component_id: str, root: Path) -> None:
        super().__init__(component_id)
        self.root = root

    def prepare(self, wasi: wasmtime.WasiConfig) -> None:
        wasi.preopen_dir(str(self.root), "/", fs_mutable=False)


def select_files(manifest: Manifest, component: Component) -> FileSelection:
    """The component's files, resolved and checked, without copying anything."""
    selection = FileSelection(manifest, component)
    try:
        selection.select_all(component)
    except OSError as exc:
        raise selection.fail("files", f"{exc}; check that path and its permissions") from None
    return selection


def stage_files(manifest: Manifest, component: Component, root: Path) -> Path | None:
    """Build `root` as the component's guest filesystem; None if it has no `files`.

    `root` is emptied first so nothing from an earlier start stays visible.
    """
    if not component.files:
        return None
    selection = FileSelection(manifest, component)
    real_root = root.resolve()
    if real_root == selection.app or real_root in selection.app.parents:
        raise selection.fail("files", f"staging directory {root} is or contains the app "
                             "directory and would be emptied; choose another")
    try:
        if root.is_symlink() or root.is_file():
            root.unlink()
        elif root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        selection.select_all(component)  # after emptying: root may lie inside the app
        selection.copy_to(root)
    except OSError as exc:
        raise selection.fail("files", f"{exc}; check that path and its permissions") from None
    return root


class FileSelection:
    """Selects one component's files: guest path -> (resolved host file, manifest entry).

    Public for `host oci build`, which packs the same selection at app-relative
    paths so the manifest resolves identically in the image.
    """

    def __init__(self, manifest: Manifest, component: Component) -> None:
        self.where = f"{manifest.path}: [component.{component.id}]"
        self.app = manifest.dir.resolve()
        self.chosen: dict[PurePosixPath, tuple[Path, str]] = {}
        self.excludes = [_glob_regex(str(self.relative(p, "exclude_files")))
                         for p in component.exclude_files]

    def select_all(self, component: Component) -> None:
        for entry in component.files:
            if isinstance(entry, FileMapping):
                self.mapping(entry.source, entry.destination)
            else:
                self.pattern(entry.pattern)

    def fail(self, key: str, message: str) -> ComponentError:
        return ComponentError(f"{self.where} {key}: {message}")

    def relative(self, text: str, key: str) -> PurePosixPath:
        """`text` as a path relative to the app directory; refuses whatever could leave it."""
        path = PurePosixPath(text)
        if path.is_absolute() or not path.parts or ".." in path.parts:
            raise self.fail(key, f'"{text}" is not allowed: name a path relative to the app '
                            f'directory {self.app}, without ".." (move the files inside it)')
        return path

    def pattern(self, pattern: str) -> None:
        rel = self.relative(pattern, "files")
        host = self.app.joinpath(*rel.parts)
        if os.path.lexists(host):
            self.select(host, rel, pattern, named=True)
        elif _GLOB_CHARS & set(pattern):
            for path in self.glob(self.app, rel.parts, pattern, frozenset()):
                self.select(path, self.rel(path), pattern, named=False, recurse=False)
        else:
            raise self.fail("files", f'"{pattern}" does not exist and doesn\'t appear to be a '
                            f"glob pattern; fix the path (relative to {self.app})")

    def mapping(self, source: str, destination: str) -> None:
        rel = self.relative(source, "files")
        dest = PurePosixPath(destination)
        if not dest.is_absolute() or ".." in dest.parts:
            raise self.fail("files", f'destination "{destination}" (source "{source}") must be '
                            'an absolute guest path without ".."')
        host = self.app.joinpath(*rel.parts)
        if not os.path.lexists(host):
            raise self.fail("files", f'source "{source}" does not exist; fix the path '
                            f"(relative to {self.app})")
        self.select(host, dest.relative_to("/"), source, named=True)

    def select(self, path: Path, guest: PurePosixPath, entry: str, named: bool,
               recurse: bool = True, seen: frozenset[Path] = frozenset()) -> None:
        """Choose file `path` for `guest`; walk a directory if `recurse`."""
        if self.excluded(path):
            return
        real = self.inside(path, entry)
        if real.is_dir():
            if recurse:
                children, seen = self.children(path, entry, seen)
                for child in children:
                    self.select(child, guest / child.name, entry, False, True, seen)
        elif real.is_file():
            if not guest.parts:
                raise self.fail("files", f'"{entry}" is a file and cannot be mounted at "/"; '
                                "give the destination a file name")
            earlier = self.chosen.setdefault(guest, (real, entry))
            if earlier[0] != real:
                raise self.fail("files", f'"{entry}" and "{earlier[1]}" put different files at '
                                f"guest path /{guest}; remove or exclude one")
        elif named:
            raise self.fail("files", f'"{entry}" is not a regular file or directory')

    def glob(self, base: Path, parts: tuple[str, ...], entry: str,
             seen: frozenset[Path]) -> Iterator[Path]:
        """Expand pattern components under `base` (files and directories alike)."""
        if not parts:
            yield base
            return
        head, rest = parts[0], parts[1:]
        if not _GLOB_CHARS & set(head):
            if os.path.lexists(base / head):
                yield from self.glob(base / head, rest, entry, seen)
            return
        children, below = self.children(base, entry, seen)
        if head == "**":
            yield from self.glob(base, rest, entry, seen)
            for child in children:
                if child.is_dir():
                    yield from self.glob(child, parts, entry, below)
        else:
            regex = _glob_regex(head)
            for child in children:
                if regex.fullmatch(child.name):
                    yield from self.glob(child, rest, entry, below)

    def children(self, directory: Path, entry: str,
                 seen: frozenset[Path]) -> tuple[list[Path], frozenset[Path]]:
        """A directory's entries, sorted and unexcluded, and `seen` plus it (loop guard)."""
        if not directory.is_dir() or self.excluded(directory):
            return [], seen
        real = self.inside(directory, entry)
        if real in seen:
            return [], seen  # a symlink back to an ancestor
        entries = sorted(c for c in directory.iterdir() if not self.excluded(c))
        return entries, seen | {real}

    def inside(self, path: Path, entry: str) -> Path:
        """`path` with symlinks resolved; an error unless it is in the app directory."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise self.fail("files", f'"{entry}": cannot resolve {self.rel(path)}: {exc}') from None
        if real != self.app and self.app not in real.parents:
            raise self.fail("files", f'"{entry}" selects {self.rel(path)}, which resolves to '
                            f"{real}, outside the app directory {self.app}; files must be inside "
                            "it (replace the symlink with a copy, or exclude it)")
        return real

    def rel(self, path: Path) -> PurePosixPath:
        return PurePosixPath(*path.relative_to(self.app).parts)

    def excluded(self, path: Path) -> bool:
        """Whether `path`, or a directory above it, matches an `exclude_files` glob."""
        rel = self.rel(path)
        if not rel.parts:
            return False
        names = [str(rel), *(str(p) for p in rel.parents[:-1])]
        return any(regex.fullmatch(name) for regex in self.excludes for name in names)

    def copy_to(self, root: Path) -> None:
        """Hard-link (or copy) every chosen file to `root/<guest path>`."""
        for guest, (real, entry) in sorted(self.chosen.items()):
            dest = root.joinpath(*guest.parts)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(real, dest)
                except FileExistsError:
                    raise
                except OSError:  # another filesystem, or hard links not permitted
                    shutil.copy2(real, dest)
            except (FileExistsError, NotADirectoryError):
                raise self.fail("files", f'"{entry}" at guest path /{guest} collides with a file '
                                "another entry puts on its path; change a destination") from None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob crate pattern (default options, `*`/`?` match `/`) to a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        end = -1
        if c == "[":  # a `]` right after `[` or `[!` is a literal member
            start = i + 2 if pattern.startswith("[!", i) else i + 1
            end = pattern.find("]", start + 1)
        if end != -1:
            body = pattern[i + 1:end].replace("\\", "\\\\").replace("[", "\\[")
            if body.startswith(("!", "^")):
                body = ("^" if body[0] == "!" else "\\^") + body[1:]
            out.append(f"[{body}]")
            i = end
        else:
            out.append({"*": ".*", "?": "."}.get(c, re.escape(c)))
        i += 1
    return re.compile("".join(out), re.DOTALL)
