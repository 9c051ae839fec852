"""`wasi:filesystem/types|preopens`: the component's `files`, read-only at guest "/".

The staged tree (host/capabilities/files.py: regular files and directories
only, every symlink resolved at staging and every file inside the app) is the
one preopen. Paths resolve against the descriptor they are given, as WASI
says: an absolute path, a `..` above that descriptor, or any symlink met on the
way answers `not-permitted`. Each step is opened with `O_NOFOLLOW` below the
previous directory's file descriptor, so what is checked is what is opened.

A descriptor is a path, not an open OS file: a guest could otherwise make the
host hold thousands of its file descriptors. Each call opens what it needs and
closes it before returning. Reads return at most `MAX_READ` bytes a call.

Errors are the ones wasmtime's own WASI gives for a read-only preopen
(`DirPerms::READ`, `FilePerms::READ`): opening with `write`, `create` or
`truncate`, and every change to a directory, answer `not-permitted`; writing
through a file descriptor answers `bad-descriptor`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.runtime.marshal import Err, Ok
from host.wasip2.io import CHUNK, InputStream, StreamFailed
from host.wasip2.resources import Functions, Tables

MAX_READ = CHUNK  # most bytes one `read` or stream read returns

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# No O_DIRECTORY below the root: with it, Linux answers ENOTDIR for a symlink, not ELOOP.
# O_NONBLOCK: never wait on a FIFO (staging puts none there; this is not the place to hang).
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SYNC_FLAGS = frozenset({"file-integrity-sync", "data-integrity-sync", "requested-write-sync"})

# errno -> error-code, as wasmtime maps them; anything else is `io`.
_ERRNO = {
    errno.EPIPE: "pipe", errno.EPERM: "not-permitted", errno.ENOENT: "no-entry",
    errno.ENOMEM: "insufficient-memory", errno.EIO: "io", errno.EBADF: "bad-descriptor",
    errno.EBUSY: "busy", errno.EACCES: "access", errno.ENOTDIR: "not-directory",
    errno.EISDIR: "is-directory", errno.EINVAL: "invalid", errno.EEXIST: "exist",
    errno.EFBIG: "file-too-large", errno.ENOSPC: "insufficient-space",
    errno.ESPIPE: "invalid-seek", errno.EMLINK: "too-many-links",
    errno.ENAMETOOLONG: "name-too-long", errno.ENOTEMPTY: "not-empty",
    errno.ELOOP: "not-permitted",  # O_NOFOLLOW met a symlink: never followed
    errno.EOVERFLOW: "overflow", errno.EILSEQ: "illegal-byte-sequence",
    errno.ENOTSUP: "unsupported", errno.EALREADY: "already",
    errno.EINPROGRESS: "in-progress", errno.EINTR: "interrupted",
}
_TYPES = (
    (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular-file"),
    (stat.S_ISLNK, "symbolic-link"), (stat.S_ISCHR, "character-device"),
    (stat.S_ISBLK, "block-device"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
)


class FsError(Exception):
    """A call's `error-code`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class FileReadFailed(StreamFailed):
    """A read through `read-via-stream` failed; `filesystem-error-code` gives `code`."""

    def __init__(self, code: str) -> None:
        super().__init__(f"reading the file failed: {code}")
        self.code = code


def _code(exc: OSError) -> str:
    return _ERRNO.get(exc.errno or 0, "io")


@dataclass(frozen=True)
class Node:
    """A descriptor: a file or directory of the tree, by its path below the root."""

    tree: FileTree
    parts: tuple[str, ...]
    is_dir: bool
    identity: tuple[int, int]  # (st_dev, st_ino) when opened


class FileTree:
    """The staged files of one component; read-only, and unchanged while the host runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Directory listings, shared by every instance: what directory-entry
        # streams hold is bounded by the tree, not by how many a guest opens.
        self._listings: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}

    def resolve(self, base: Node, path: str) -> tuple[str, ...]:
        """`path` below `base`, normalised; `not-permitted` for what would leave it."""
        if path.startswith("/"):
            raise FsError("not-permitted")
        if not path:
            raise FsError("no-entry")
        if "\0" in path:
            raise FsError("invalid")
        parts: list[str] = []
        for name in path.split("/"):
            if name == "..":
                if not parts:
                    raise FsError("not-permitted")
                parts.pop()
            elif name not in ("", "."):
                parts.append(name)
        return base.parts + tuple(parts)

    @contextmanager
    def opened(self, parts: tuple[str, ...]) -> Iterator[int]:
        """An OS file descriptor for `parts`, walked one name at a time without
        following symlinks; closed on leaving."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
            try:
                for name in parts:  # below a file: ENOTDIR at the next step
                    fd, parent = os.open(name, _OPEN_FLAGS, dir_fd=fd), fd
                    os.close(parent)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise FsError(_code(exc)) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def node(self, parts: tuple[str, ...], trailing_slash: bool = False) -> Node:
        with self.opened(parts) as fd:
            st = _fstat(fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        if trailing_slash and not is_dir:
            raise FsError("not-directory")
        return Node(self, parts, is_dir, (st.st_dev, st.st_ino))

    def stat(self, parts: tuple[str, ...]) -> os.stat_result:
        with self.opened(parts) as fd:
            return _fstat(fd)

    def read(self, node: Node, length: int, offset: int) -> bytes:
        with self.opened(node.parts) as fd:
            try:
                return os.pread(fd, min(length, MAX_READ), offset)
            except OSError as exc:
                raise FsError(_code(exc)) from None

    def listing(self, node: Node) -> tuple[tuple[str, str], ...]:
        """(type, name) of each entry of a directory, sorted by name."""
        listing = self._listings.get(node.parts)
        if listing is None:
            with self.opened(node.parts) as fd:
                try:
                    with os.scandir(fd) as entries:
                        listing = tuple(sorted(((_entry_type(e), e.name) for e in entries),
                                            key=lambda entry: entry[1]))
                except OSError as exc:
                    raise FsError(_code(exc)) from None
            self._listings[node.parts] = listing
        return listing


def _fstat(fd: int) -> os.stat_result:
    try:
        return os.fstat(fd)
    except OSError as exc:
        raise FsError(_code(exc)) from None


def _entry_type(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symbolic-link"
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    if entry.is_file(follow_symlinks=False):
        return "regular-file"
    return "unknown"


def _type(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "unknown")


def _datetime(ns: int) -> tuple[int, int] | None:
    return divmod(ns, 1_000_000_000) if ns >= 0 else None


def _stat_record(st: os.stat_result) -> tuple[Any, ...]:
    return (_type(st.st_mode), st.st_nlink, st.st_size, _datetime(st.st_atime_ns),
            _datetime(st.st_mtime_ns), _datetime(st.st_ctime_ns))


def _hash(identity: tuple[int, int]) -> tuple[int, int]:
    digest = hashlib.blake2b(b"%d:%d" % identity, digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


class FileSource:
    """A file read from `offset` on, for `read-via-stream`."""

    def __init__(self, node: Node, offset: int) -> None:
        self.node = node
        self.offset = offset

    def read(self, max_bytes: int) -> bytes | None:
        try:
            data = self.node.tree.read(self.node, max_bytes, self.offset)
        except FsError as exc:
            raise FileReadFailed(exc.code) from None
        self.offset += len(data)
        return data or None


@dataclass
class DirectoryEntries:
    entries: tuple[tuple[str, str], ...]
    next: int = 0


def _calls(func: Any) -> Any:
    """`func`'s result as Ok, its FsError as Err(code)."""
    def call(*args: Any) -> Any:
        try:
            return Ok(func(*args))
        except FsError as exc:
            return Err(exc.code)
    return call


def functions(t: Tables, root: Path | None = None) -> Functions:
    tree = FileTree(root) if root is not None else None

    def node(s: Any, h: Any) -> Node:
        n: Node = t.get("descriptor", s, h)
        return n

    def file(s: Any, h: Any) -> Node:
        n = node(s, h)
        if n.is_dir:
            raise FsError("bad-descriptor")
        return n

    def directory(s: Any, h: Any) -> Node:
        n = node(s, h)
        if not n.is_dir:
            raise FsError("not-directory")
        return n

    def get_directories(s: Any) -> list[tuple[Any, str]]:
        if tree is None:
            return []
        return [(t.add("descriptor", s, tree.node(())), "/")]

    def read_via_stream(s: Any, h: Any, offset: int) -> Any:
        return t.add("input-stream", s, InputStream(FileSource(file(s, h), offset)))

    def read(s: Any, h: Any, length: int, offset: int) -> tuple[bytes, bool]:
        f = file(s, h)
        data = f.tree.read(f, length, offset) if length else b""
        return data, not data  # end of file only when nothing was left, as wasmtime

    # What would change the tree. wasmtime checks the kind of descriptor first.
    def directory_read_only(s: Any, h: Any, *args: Any) -> None:
        directory(s, h)
        raise FsError("not-permitted")

    def file_read_only(s: Any, h: Any, *args: Any) -> None:
        file(s, h)
        raise FsError("not-permitted")

    def read_only(s: Any, h: Any, *args: Any) -> None:
        node(s, h)
        raise FsError("not-permitted")

    def not_writable(s: Any, h: Any, *args: Any) -> None:
        file(s, h)
        raise FsError("bad-descriptor")

    def nothing_to_do(s: Any, h: Any, *args: Any) -> None:
        node(s, h)

    def advise(s: Any, h: Any, *args: Any) -> None:
        file(s, h)

    def flags(s: Any, h: Any) -> set[str]:
        node(s, h)
        return {"read"}

    def get_type(s: Any, h: Any) -> str:
        return "directory" if node(s, h).is_dir else "regular-file"

    def stat_of(s: Any, h: Any) -> tuple[Any, ...]:
        n = node(s, h)
        return _stat_record(n.tree.stat(n.parts))

    def stat_at(s: Any, h: Any, path_flags: set[str], path: str) -> tuple[Any, ...]:
        d = directory(s, h)
        return _stat_record(d.tree.stat(d.tree.resolve(d, path)))

    def open_at(s: Any, h: Any, path_flags: set[str], path: str, open_flags: set[str],
                descriptor_flags: set[str]) -> Any:
        d = directory(s, h)
        if {"create", "truncate"} & open_flags or "write" in descriptor_flags:
            raise FsError("not-permitted")
        if _SYNC_FLAGS & descriptor_flags:
            raise FsError("unsupported")
        if {"directory", "exclusive"} <= open_flags:
            raise FsError("invalid")
        opened = d.tree.node(d.tree.resolve(d, path), trailing_slash=path.endswith("/"))
        if "directory" in open_flags and not opened.is_dir:
            raise FsError("not-directory")
        return t.add("descriptor", s, opened)

    def readlink_at(s: Any, h: Any, path: str) -> str:
        d = directory(s, h)
        parts = d.tree.resolve(d, path)
        if not parts:
            raise FsError("invalid")
        with d.tree.opened(parts[:-1]) as parent:
            try:
                return os.readlink(parts[-1], dir_fd=parent)
            except OSError as exc:
                raise FsError(_code(exc)) from None

    def read_directory(s: Any, h: Any) -> Any:
        d = directory(s, h)
        return t.add("directory-entry-stream", s, DirectoryEntries(d.tree.listing(d)))

    def next_entry(s: Any, h: Any) -> tuple[str, str] | None:
        stream: DirectoryEntries = t.get("directory-entry-stream", s, h)
        if stream.next >= len(stream.entries):
            return None
        stream.next += 1
        return stream.entries[stream.next - 1]

    def metadata_hash(s: Any, h: Any) -> tuple[int, int]:
        return _hash(node(s, h).identity)

    def metadata_hash_at(s: Any, h: Any, path_flags: set[str], path: str) -> tuple[int, int]:
        d = directory(s, h)
        return _hash(d.tree.node(d.tree.resolve(d, path)).identity)

    def same(s: Any, h: Any, other: Any) -> bool:
        return node(s, h).identity == node(s, other).identity

    def error_code(s: Any, e: Any) -> str | None:
        error = t.get("error", s, e)
        return error.code if isinstance(error, FileReadFailed) else None

    T, D = "wasi:filesystem/types", "[method]descriptor."
    calls = {
        "read-via-stream": read_via_stream,
        "write-via-stream": not_writable,
        "append-via-stream": not_writable,
        "advise": advise,
        "sync-data": nothing_to_do,
        "sync": nothing_to_do,
        "get-flags": flags,
        "get-type": get_type,
        "set-size": file_read_only,
        "set-times": read_only,
        "read": read,
        "write": not_writable,
        "read-directory": read_directory,
        "create-directory-at": directory_read_only,
        "stat": stat_of,
        "stat-at": stat_at,
        "set-times-at": directory_read_only,
        "link-at": directory_read_only,
        "open-at": open_at,
        "readlink-at": readlink_at,
        "remove-directory-at": directory_read_only,
        "rename-at": directory_read_only,
        "symlink-at": directory_read_only,
        "unlink-file-at": directory_read_only,
        "metadata-hash": metadata_hash,
        "metadata-hash-at": metadata_hash_at,
    }
    return {
        **{(T, D + name): _calls(func) for name, func in calls.items()},
        (T, "[method]descriptor.is-same-object"): same,
        (T, "[method]directory-entry-stream.read-directory-entry"): _calls(next_entry),
        (T, "filesystem-error-code"): error_code,
        ("wasi:filesystem/preopens", "get-directories"): get_directories,
    }
