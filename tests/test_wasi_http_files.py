"""`files` for standard wasi:http components: host/wasip2/filesystem.py serves the staged
tree read-only at guest "/". Unit tests call the host functions as a guest would; the
end-to-end tests read files through apps/spin-python (Python's `open`) under `host up`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc

from host.capabilities import store_key
from host.capabilities.files import stage_files
from host.manifest import parse_manifest
from host.runtime.marshal import Err, Ok
from host.wasip2 import filesystem, io
from host.wasip2.resources import Tables
from tests import wat
from tests.apps import built_app
from tests.conftest import HostProcess, run_host, write_app

T = "wasi:filesystem/types"
MiB = 1024 * 1024
BIG = bytes(range(256)) * (4 * 1024 + 3)  # > 1 MiB, not a multiple of any chunk
NO_CHANGE = wc.Variant("no-change")


class Guest:
    """Calls the host-defined filesystem and streams the way a component would."""

    def __init__(self, root: Path | None) -> None:
        self.tables = Tables()
        self.functions = {**io.functions(self.tables),
                          **filesystem.functions(self.tables, root)}
        self.store = wasmtime.Store()

    def call(self, interface: str, name: str, *args: Any) -> Any:
        return self.functions[(interface, name)](self.store, *args)

    def d(self, method: str, *args: Any) -> Any:
        return self.call(T, f"[method]descriptor.{method}", *args)

    def preopens(self) -> list[tuple[Any, str]]:
        result: list[tuple[Any, str]] = self.call("wasi:filesystem/preopens",
                                                   "get-directories")
        return result

    def root(self) -> Any:
        [(handle, name)] = self.preopens()
        assert name == "/"
        return handle

    def open(self, path: str, base: Any = None, open_flags: frozenset[str] = frozenset(),
             flags: frozenset[str] = frozenset({"read"})) -> Any:
        return self.d("open-at", self.root() if base is None else base, {"symlink-follow"},
                      path, set(open_flags), set(flags))

    def read_file(self, path: str) -> bytes:
        """Like wasi-libc: read-via-stream, then blocking reads until closed."""
        stream = self.d("read-via-stream", self.open(path).value, 0).value
        out = bytearray()
        while True:
            result = self.call("wasi:io/streams", "[method]input-stream.blocking-read",
                               stream, 1 << 20)
            if isinstance(result, Err):
                assert result.value.tag == "closed"
                return bytes(out)
            assert 0 < len(result.value) <= io.CHUNK
            out += result.value

    def listing(self, directory: Any) -> list[tuple[str, str]]:
        stream = self.d("read-directory", directory).value
        entries = []
        while (entry := self.call(T, "[method]directory-entry-stream.read-directory-entry",
                                  stream).value) is not None:
            entries.append(entry)
        return entries

    def release(self) -> None:
        self.tables.release_store(store_key(self.store))


def write(base: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def stage(app: Path, root: Path, files: str) -> Path:
    manifest = parse_manifest(f"""spin_manifest_version = 2
[application]
name = "app"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
files = {files}
""", app / "spin.toml")
    staged = stage_files(manifest, manifest.components["web"], root)
    assert staged is not None
    return staged


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    write(app, {"hello.txt": b"hello\n", "static/big.bin": BIG, "static/css/site.css": b"x{}",
                "secret.txt": b"not granted"})
    write(tmp_path / "outside", {"secret.txt": b"outside the app"})
    return stage(app, tmp_path / "root", '["hello.txt", "static/**/*"]')


@pytest.fixture
def guest(staged: Path) -> Iterator[Guest]:
    guest = Guest(staged)
    yield guest
    guest.release()


def test_no_files_no_preopen() -> None:
    assert Guest(None).preopens() == []


def test_read_with_offsets_and_end_of_file(guest: Guest) -> None:
    file = guest.open("hello.txt").value
    assert guest.d("read", file, 100, 0) == Ok((b"hello\n", False))
    assert guest.d("read", file, 3, 2) == Ok((b"llo", False))
    assert guest.d("read", file, 100, 6) == Ok((b"", True))
    big = guest.open("static/big.bin").value
    data, eof = guest.d("read", big, 10 * MiB, 5).value  # capped per call: host memory bounded
    assert (data, eof) == (BIG[5:5 + filesystem.MAX_READ], False)


def test_read_via_stream_returns_the_whole_file_in_bounded_chunks(guest: Guest) -> None:
    assert guest.read_file("hello.txt") == b"hello\n"
    assert guest.read_file("static/big.bin") == BIG
    assert guest.read_file("./static/css/../css/site.css") == b"x{}"


def test_only_the_granted_files_are_there(guest: Guest) -> None:
    root = guest.root()
    assert guest.listing(root) == [("regular-file", "hello.txt"), ("directory", "static")]
    static = guest.open("static", open_flags=frozenset({"directory"})).value
    assert guest.listing(static) == [("regular-file", "big.bin"), ("directory", "css")]
    assert guest.open("secret.txt") == Err("no-entry")
    assert guest.open("hello.txt/", open_flags=frozenset()) == Err("not-directory")
    assert guest.open("hello.txt", open_flags=frozenset({"directory"})) == Err("not-directory")


def test_stat_type_flags_and_identity(guest: Guest, staged: Path) -> None:
    root, file = guest.root(), guest.open("static/big.bin").value
    kind, links, size, atime, mtime, ctime = guest.d("stat", file).value
    assert (kind, size) == ("regular-file", len(BIG))
    assert links >= 2  # hard-linked from the app directory
    assert mtime == divmod((staged / "static/big.bin").stat().st_mtime_ns, 10**9)
    assert guest.d("stat-at", root, set(), "static").value[0] == "directory"
    assert guest.d("stat-at", root, set(), "nope") == Err("no-entry")
    assert guest.d("get-type", root) == Ok("directory")
    assert guest.d("get-type", file) == Ok("regular-file")
    assert guest.d("get-flags", root) == Ok({"read"})
    assert guest.d("get-flags", file) == Ok({"read"})
    again = guest.open("static/css/../big.bin").value
    assert guest.d("is-same-object", file, again) is True
    assert guest.d("is-same-object", file, root) is False
    assert guest.d("metadata-hash", file) == guest.d("metadata-hash", again)
    assert guest.d("metadata-hash-at", root, set(), "static/big.bin") == \
        guest.d("metadata-hash", file)
    assert guest.d("metadata-hash", file) != guest.d("metadata-hash", root)
    assert guest.d("advise", file, 0, 10, "sequential") == Ok(None)
    assert guest.d("sync", file) == Ok(None)
    assert guest.d("sync-data", root) == Ok(None)


@pytest.mark.parametrize("path", [
    "../outside/secret.txt", "..", "/etc/passwd", "/hello.txt", "static/../../secret.txt",
    "static/css/../../../root/hello.txt",
])
def test_paths_cannot_leave_the_descriptor(guest: Guest, path: str) -> None:
    assert guest.open(path) == Err("not-permitted")
    assert guest.d("stat-at", guest.root(), {"symlink-follow"}, path) == Err("not-permitted")
    assert guest.d("metadata-hash-at", guest.root(), set(), path) == Err("not-permitted")


def test_dotdot_is_relative_to_the_descriptor_not_the_preopen(guest: Guest) -> None:
    static = guest.open("static").value
    assert guest.open("../hello.txt", base=static) == Err("not-permitted")
    assert guest.open("css/../big.bin", base=static).value is not None


def test_symlinks_are_never_followed(guest: Guest, staged: Path, tmp_path: Path) -> None:
    # Staging resolves symlinks, so the tree has none; one planted there anyway
    # (outside, or even inside the root) is refused, as a file and as a directory.
    (staged / "out.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (staged / "outdir").symlink_to(tmp_path / "outside")
    (staged / "inside.txt").symlink_to(staged / "hello.txt")
    for path in ("out.txt", "outdir/secret.txt", "outdir", "inside.txt"):
        assert guest.open(path) == Err("not-permitted"), path
        assert guest.d("stat-at", guest.root(), {"symlink-follow"}, path) == \
            Err("not-permitted")
    assert ("symbolic-link", "out.txt") in guest.listing(guest.root())


def test_nothing_can_be_written(guest: Guest, staged: Path) -> None:
    before = sorted(p.relative_to(staged) for p in staged.rglob("*"))
    root, file = guest.root(), guest.open("hello.txt").value
    for open_flags, flags in [({"create"}, {"read"}), ({"truncate"}, {"read"}),
                              (set(), {"read", "write"}), ({"create", "exclusive"}, {"write"})]:
        for path in ("hello.txt", "new.txt"):
            assert guest.d("open-at", root, set(), path, open_flags, flags) == \
                Err("not-permitted")
    assert guest.d("write", file, b"x", 0) == Err("bad-descriptor")
    assert guest.d("write-via-stream", file, 0) == Err("bad-descriptor")
    assert guest.d("append-via-stream", file) == Err("bad-descriptor")
    assert guest.d("set-size", file, 0) == Err("not-permitted")
    assert guest.d("set-times", file, NO_CHANGE, NO_CHANGE) == Err("not-permitted")
    for method, args in [
        ("create-directory-at", ("d",)), ("unlink-file-at", ("hello.txt",)),
        ("remove-directory-at", ("static",)), ("symlink-at", ("hello.txt", "l")),
        ("rename-at", ("hello.txt", root, "moved.txt")),
        ("link-at", (set(), "hello.txt", root, "l")),
        ("set-times-at", (set(), "hello.txt", NO_CHANGE, NO_CHANGE)),
    ]:
        assert guest.d(method, root, *args) == Err("not-permitted"), method
        assert guest.d(method, file, *args) == Err("not-directory"), method
    assert (staged / "hello.txt").read_bytes() == b"hello\n"
    assert sorted(p.relative_to(staged) for p in staged.rglob("*")) == before


def test_kinds_of_descriptor_are_checked(guest: Guest) -> None:
    root, file = guest.root(), guest.open("hello.txt").value
    assert guest.d("read", root, 1, 0) == Err("bad-descriptor")
    assert guest.d("read-via-stream", root, 0) == Err("bad-descriptor")
    assert guest.d("read-directory", file) == Err("not-directory")
    assert guest.d("open-at", file, set(), "x", set(), {"read"}) == Err("not-directory")
    assert guest.d("open-at", root, set(), "static", {"directory", "exclusive"}, {"read"}) \
        == Err("invalid")
    assert guest.d("open-at", root, set(), "hello.txt", set(), {"read", "data-integrity-sync"}) \
        == Err("unsupported")


def test_a_failed_stream_read_names_its_filesystem_error(guest: Guest, staged: Path) -> None:
    stream = guest.d("read-via-stream", guest.open("hello.txt").value, 0).value
    (staged / "hello.txt").unlink()  # only the host can do this
    result = guest.call("wasi:io/streams", "[method]input-stream.read", stream, 10)
    assert isinstance(result, Err) and result.value.tag == "last-operation-failed"
    error = result.value.payload
    assert guest.call(T, "filesystem-error-code", error) == "no-entry"
    assert "no-entry" in guest.call("wasi:io/error", "[method]error.to-debug-string", error)


def test_descriptors_hold_no_host_file_descriptors(guest: Guest) -> None:
    before = len(os.listdir("/proc/self/fd"))
    handles = [guest.open("static/big.bin").value for _ in range(500)]
    streams = [guest.d("read-via-stream", h, 0).value for h in handles[:100]]
    listings = [guest.d("read-directory", guest.root()).value for _ in range(100)]
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(handles) + len(streams) + len(listings) == 700


# --- end to end: Python's open() in apps/spin-python, under a real host up ----------------

SPIN_MANIFEST = """spin_manifest_version = 2
[application]
name = "files"
[[trigger.http]]
route = "/..."
component = "py"
[component.py]
source = "{source}"
files = ["static/**/*", {{ source = "data", destination = "/mnt/data" }}]
exclude_files = ["static/private.txt"]
"""
ONE_MIB = os.urandom(MiB)


@pytest.fixture(scope="module")
def files_host(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
               ) -> Iterator[HostProcess]:
    source = built_app("spin-python") / "spin-python.wasm"
    app = tmp_path_factory.mktemp("files-app")
    write(app, {"static/hello.txt": b"hello from a file\n", "static/private.txt": b"excluded",
                "data/1mib.bin": ONE_MIB, "not-granted.txt": b"not granted"})
    outside = tmp_path_factory.mktemp("outside")
    write(outside, {"secret.txt": b"outside secret"})
    (app / "static" / "link.txt").symlink_to(app / "static" / "hello.txt")  # inside: staged
    write_app(app, SPIN_MANIFEST.format(source=source))
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)]) as process:
        yield process


def _read(host: HostProcess, path: str) -> tuple[int, bytes]:
    with host.client() as client:
        r = client.get("/file", params={"path": path}, timeout=60)
    return r.status_code, r.content


@pytest.mark.toolchain
@pytest.mark.parametrize(("path", "content"), [
    ("/static/hello.txt", b"hello from a file\n"),
    ("static/hello.txt", b"hello from a file\n"),  # relative to the guest's cwd, "/"
    ("/static/./link.txt", b"hello from a file\n"),
    ("/mnt/data/1mib.bin", ONE_MIB),
    ("/mnt/data/../../static/hello.txt", b"hello from a file\n"),
])
def test_granted_files_read_exactly(files_host: HostProcess, path: str, content: bytes) -> None:
    assert _read(files_host, path) == (200, content)


@pytest.mark.toolchain
@pytest.mark.parametrize(("path", "error"), [
    ("/static/missing.txt", b"FileNotFoundError"),
    ("/static/private.txt", b"FileNotFoundError"),  # excluded
    ("/not-granted.txt", b"FileNotFoundError"),
    ("/spin.toml", b"FileNotFoundError"),
    ("/static", b"IsADirectoryError"),
])
def test_what_is_not_granted_is_not_there(files_host: HostProcess, path: str,
                                          error: bytes) -> None:
    status, body = _read(files_host, path)
    assert status == 404 and error in body, body


@pytest.mark.toolchain
@pytest.mark.parametrize("path", [
    "../not-granted.txt", "/../not-granted.txt", "/static/../../not-granted.txt",
    "../../../../etc/passwd", "/mnt/../../../etc/hostname",
])
def test_dotdot_cannot_leave_the_files(files_host: HostProcess, path: str) -> None:
    status, body = _read(files_host, path)
    assert (status, body) == (404, b"file error: PermissionError: Operation not permitted\n")


@pytest.mark.toolchain
def test_a_symlink_out_of_the_app_stops_start_up(tmp_path: Path) -> None:
    component = wat.build_wasi_http(wat.WASI_HTTP_TRAP, tmp_path / "trap.wasm")
    (tmp_path / "outside.txt").write_text("outside")
    app = tmp_path / "app"
    (app / "static").mkdir(parents=True)
    (app / "static" / "escape.txt").symlink_to(tmp_path / "outside.txt")
    write_app(app, """spin_manifest_version = 2
[application]
name = "files"
[[trigger.http]]
route = "/..."
component = "trap"
[component.trap]
source = "trap.wasm"
files = ["static/**/*"]
""", {"trap.wasm": component})
    result = run_host("up", "-f", str(app), "--listen", "127.0.0.1:0", timeout=120)
    assert result.returncode != 0
    assert "outside the app directory" in result.stderr
