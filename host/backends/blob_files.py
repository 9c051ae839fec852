"""The `file_system` blob backend: one directory per container.

Layout of a container's directory (the embedded default is
`<state dir>/blob_store/<label>/`):

    .container              marker; its modification time is the container's created-at
    .upload-XXXXXXXX        an object being written (removed at finish or abort)
    photos%2Fcat.jpg        the object "photos/cat.jpg"
    aaaa...+/bbbb...+/cc    an object whose name is over 80 bytes: 80 bytes per level

An object's file name is its name's UTF-8 bytes with every byte outside
`A-Z a-z 0-9 - _ .` written as `%XX`, and a leading `.` as `%2E`. So no file
name the guest chooses contains `/`, is `.` or `..`, starts with `.` (the
host's own files) or is empty, and every name maps to exactly one path inside
the directory, whatever it holds (`../../etc/passwd` is the file
`%2E.%2F..%2Fetc%2Fpasswd`). Names longer than 80 bytes are split every 80
bytes into directories ending in `+` (which the encoding never makes), so a
path segment stays under the 255-byte file-name limit for names up to the
1024 bytes every backend allows.

An object is written to a temp file in the same directory and renamed over its
name at finish (after fsync), so a reader sees the old object or the new one,
never part of one; a write that fails, is abandoned or whose instance traps is
removed. Readers hold the file open: a range being read stays readable when
the object is replaced or deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from urllib.parse import unquote_to_bytes

from host.backends import check_file
from host.backends.blobs import ContainerNotFound, ObjectNotFound, ObjectStat
from host.deadline import expired
from host.errors import BackendError
from host.limits import BlobStoreLimits
from host.runtime_config import BlobStoreConfig

MARKER = ".container"
UPLOAD_PREFIX = ".upload-"
SEGMENT_BYTES = 80  # name bytes per path segment: at most 240 characters once encoded
DIR_SUFFIX = "+"
# Temp files of writes older than this are a crashed process's: removed at start-up.
STALE_UPLOAD_SECONDS = 24 * 3600
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def encode_name(name: str) -> str:
    """The relative path of object `name` (see the module docstring)."""
    raw = name.encode()
    segments = []
    for i in range(0, len(raw), SEGMENT_BYTES):
        text = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw[i:i + SEGMENT_BYTES])
        segments.append("%2E" + text[1:] if text.startswith(".") else text)
    return "/".join([s + DIR_SUFFIX for s in segments[:-1]] + segments[-1:])


def decode_name(parts: list[str]) -> str | None:
    """The object name of a relative path's parts, or None if no name encodes to it."""
    if any(not p.endswith(DIR_SUFFIX) for p in parts[:-1]):
        return None
    raw = b"".join(unquote_to_bytes(p.removesuffix(DIR_SUFFIX)) for p in parts[:-1])
    try:
        return (raw + unquote_to_bytes(parts[-1])).decode()
    except UnicodeDecodeError:
        return None


class FileReader:
    def __init__(self, fd: int, start: int, size: int) -> None:
        self.fd: int | None = fd
        self.offset = start
        self.size = size
        self.left = size

    def read(self, max_bytes: int) -> bytes | None:
        if self.fd is None or self.left <= 0:
            self.close()
            return None
        try:
            data = os.pread(self.fd, min(max_bytes, self.left), self.offset)
        except OSError as exc:
            self.close()
            raise BackendError(f"reading the object failed: {exc.strerror}") from None
        if not data:  # truncated under us: cannot happen to our files, which are replaced
            self.close()
            return None
        self.offset += len(data)
        self.left -= len(data)
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class FileUpload:
    def __init__(self, container: FileContainer, name: str) -> None:
        self.container = container
        self.name = name
        try:
            fd, path = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=container.root)
        except FileNotFoundError:
            raise container.gone() from None
        except OSError as exc:
            raise BackendError(f"{container.description}: cannot write: {exc.strerror}") from None
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.path = Path(path)

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            self.abort()
            raise BackendError(f"{self.container.description}: writing failed: "
                               f"{exc.strerror}") from None

    def commit(self) -> None:
        target = self.container.root / encode_name(self.name)
        try:
            os.fsync(self.file.fileno())
            self.file.close()
            for _attempt in range(3):  # a delete may remove an emptied parent meanwhile
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(self.path, target)
                    return
                except FileNotFoundError:
                    if not self.path.exists():
                        raise
            raise BackendError(f"{self.container.description}: cannot store the object")
        except FileNotFoundError:
            self.abort()
            raise self.container.gone() from None
        except OSError as exc:
            self.abort()
            raise BackendError(f"{self.container.description}: cannot store the object: "
                               f"{exc.strerror}") from None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class FileListing:
    """Walks the directory as the guest reads, one open directory per level."""

    def __init__(self, root: Path) -> None:
        self._entries = _walk(root, [])
        self._next: str | None = None
        self._ended = False
        self._advance()

    def _advance(self) -> None:
        try:
            self._next = next(self._entries)
        except StopIteration:
            self._next, self._ended = None, True
        except OSError as exc:
            self.close()
            raise BackendError(f"listing the container failed: {exc.strerror}") from None

    def read(self, count: int) -> tuple[list[str], bool]:
        names: list[str] = []
        while self._next is not None and len(names) < count and not expired():
            names.append(self._next)
            self._advance()
        return names, self._ended

    def skip(self, count: int) -> tuple[int, bool]:
        names, ended = self.read(count)
        return len(names), ended

    def close(self) -> None:
        self._entries.close()
        self._next, self._ended = None, True


def _walk(directory: Path, parts: list[str]) -> Generator[str, None, None]:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue  # the marker and writes in progress
            if entry.name.endswith(DIR_SUFFIX):
                if entry.is_dir(follow_symlinks=False):
                    yield from _walk(Path(entry.path), [*parts, entry.name])
            elif entry.is_file(follow_symlinks=False):
                name = decode_name([*parts, entry.name])
                if name is not None:
                    yield name


class FileContainer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"file_system {root}"

    @classmethod
    def at(cls, root: Path) -> FileContainer:
        """The container at `root`, made if missing (start-up: a granted container
        exists from the start); writes a crashed process left are removed."""
        container = cls(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            marker = root / MARKER
            if not marker.exists():
                marker.touch()
            cutoff = time.time() - STALE_UPLOAD_SECONDS
            for entry in os.scandir(root):
                if entry.name.startswith(UPLOAD_PREFIX) and entry.stat().st_mtime < cutoff:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        except OSError as exc:
            raise BackendError(f"cannot create the container directory {root}: "
                               f"{exc.strerror}") from None
        return container

    @classmethod
    def from_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> FileContainer:
        assert config.path is not None
        return cls.at(config.path)

    @classmethod
    def check_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> str:
        assert config.path is not None
        if config.path.exists() and not config.path.is_dir():
            raise BackendError(f"{config.path} exists and is not a directory")
        check_file(config.path / MARKER)
        return f"file_system {config.path}"

    def gone(self) -> ContainerNotFound:
        return ContainerNotFound(f"{self.description}: the container does not exist")

    def _path(self, name: str) -> Path:
        return self.root / encode_name(name)

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True)
            (self.root / MARKER).touch()
        except FileExistsError:
            raise BackendError(f"{self.description}: the container already exists") from None
        except OSError as exc:
            raise BackendError(f"{self.description}: {exc.strerror}") from None

    def delete(self) -> None:
        if not self.exists():
            raise self.gone()
        try:
            shutil.rmtree(self.root)
        except OSError as exc:
            raise BackendError(f"{self.description}: cannot delete: {exc.strerror}") from None

    def created_at(self) -> int:
        try:
            return (self.root / MARKER).stat().st_mtime_ns
        except FileNotFoundError:
            if not self.exists():
                raise self.gone() from None
            return self.root.stat().st_mtime_ns

    def stat(self, name: str) -> ObjectStat:
        try:
            st = os.stat(self._path(name), follow_symlinks=False)
        except FileNotFoundError:
            raise self._missing(name) from None
        except OSError as exc:
            raise BackendError(f"{self.description}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise self._missing(name)
        return ObjectStat(st.st_size, st.st_mtime_ns)

    def _missing(self, name: str) -> BackendError:
        if not self.exists():
            return self.gone()
        return ObjectNotFound(f"no object named {name!r}")

    def read(self, name: str, start: int, end: int) -> FileReader:
        try:
            fd = os.open(self._path(name), _OPEN)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise self._missing(name) from None
            raise BackendError(f"{self.description}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._missing(name)
        except BaseException:
            os.close(fd)
            raise
        stop = min(end + 1, st.st_size)
        return FileReader(fd, start, max(0, stop - start))

    def upload(self, name: str) -> FileUpload:
        return FileUpload(self, name)

    def delete_object(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            if not self.exists():
                raise self.gone() from None
            return
        except IsADirectoryError:
            return  # an encoded name is never a directory: nothing of the guest's is there
        except OSError as exc:
            raise BackendError(f"{self.description}: {exc.strerror}") from None
        self._prune(path)

    def list(self) -> FileListing:
        if not self.exists():
            raise self.gone()
        return FileListing(self.root)

    def clear(self) -> None:
        listing = self.list()
        try:
            while True:
                names, ended = listing.read(1000)
                for name in names:
                    self.delete_object(name)
                if ended:
                    return
                if expired():
                    raise BackendError(f"{self.description}: clear: the request's deadline "
                                       "passed before every object was deleted")
        finally:
            listing.close()

    def copy_within(self, source: object, name: str, dest_name: str, move: bool) -> bool:
        if not isinstance(source, FileContainer):
            return False
        if not move:
            return False  # streamed by the caller: a copy is a new file written in chunks
        target = self._path(dest_name)
        source.stat(name)  # ObjectNotFound before anything changes
        if not self.exists():
            raise self.gone()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source._path(name), target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False  # another filesystem: copied, then deleted
            raise BackendError(f"{self.description}: cannot move the object: "
                               f"{exc.strerror}") from None
        if source.root != self.root or encode_name(name) != encode_name(dest_name):
            source._prune(source._path(name))
        return True

    def _prune(self, path: Path) -> None:
        """Remove the levels of a long name that `path`'s removal emptied."""
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def close(self) -> None:
        pass
