"""Blob-store backends: the small interface every blob container is served through.

One backend object is one container, the place a `blob_containers` label
names: a directory (`file_system`, host/backends/blob_files.py) or an S3
bucket (`s3`, host/backends/blob_s3.py). The capability
(host/capabilities/blobstore.py) checks grants and limits and checks every
object name with `check_object_name` before a backend sees it; backends
store names as they are and never trust them as paths.

Object bytes move in chunks both ways: a `Reader` hands out at most what is
asked per read, an `Upload` takes writes as they come and makes the object
appear whole, or not at all, at `commit`. Every failure is a `BackendError`
whose message the guest sees as the interface's `error` string.

Which class serves a runtime config's `[blob_store.LABEL] type` is
`BLOB_STORE_TYPES`; the module is imported only when a container uses it
(botocore only for S3).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from host.errors import BackendError

if TYPE_CHECKING:
    from host.limits import BlobStoreLimits
    from host.runtime_config import BlobStoreConfig

BLOB_STORE_TYPES = {
    "file_system": "host.backends.blob_files:FileContainer",
    "s3": "host.backends.blob_s3:S3Container",
}

# S3's limit on a key, applied to every backend so an app moves between them unchanged.
MAX_NAME_BYTES = 1024
# `end` of a range that reads to the end of the object (u64::MAX, as guests pass it).
TO_END = 2**64 - 1


class ObjectNotFound(BackendError):
    """The object does not exist (object-info, get-data, copy and move sources)."""


class ContainerNotFound(BackendError):
    """The container (directory, bucket) does not exist, or no longer does."""


def check_object_name(name: str) -> str | None:
    """Why `name` cannot name an object, or None. Names are untrusted guest input:
    any UTF-8 text (`/` and `..` included: no backend reads them as a path), but
    not empty, not over MAX_NAME_BYTES and without control characters (S3 lists
    names in XML, which cannot carry most of them)."""
    if not name:
        return "object names must not be empty"
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        return f"object name of {size} bytes exceeds the limit of {MAX_NAME_BYTES} bytes"
    if any(c < " " or c == "\x7f" for c in name):
        return "object names must not contain control characters (U+0000-U+001F, U+007F)"
    return None


@dataclass(frozen=True)
class ObjectStat:
    size: int
    created_at: int  # nanoseconds since the Unix epoch (the last write, on every backend)


class Reader(Protocol):
    """A range of one object's bytes, read in order."""

    size: int  # bytes in the range

    def read(self, max_bytes: int) -> bytes | None:
        """At least one byte, at most `max_bytes`; None at the end."""
        ...

    def close(self) -> None: ...


class Upload(Protocol):
    """An object being written: invisible until `commit`, gone after `abort`."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None:
        """Discard what was written; never raises."""
        ...


class Listing(Protocol):
    """The names of a container's objects, in no particular order, read in pages."""

    def read(self, count: int) -> tuple[list[str], bool]:
        """Up to `count` names, and whether the listing has ended."""
        ...

    def skip(self, count: int) -> tuple[int, bool]: ...

    def close(self) -> None: ...


class BlobContainer(Protocol):
    #: For start-up logs and error messages, e.g. `file_system /app/.spin/blob_store/photos`.
    description: str

    def exists(self) -> bool: ...

    def create(self) -> None:
        """Make the container; a BackendError if it exists."""
        ...

    def delete(self) -> None:
        """Remove the container with every object in it."""
        ...

    def created_at(self) -> int: ...

    def stat(self, name: str) -> ObjectStat:
        """ObjectNotFound when there is no such object."""
        ...

    def read(self, name: str, start: int, end: int) -> Reader:
        """Bytes `start`..`end` (inclusive, clamped to the object's size); the bytes
        read are those of the object when `read` returned, whatever happens to it later."""
        ...

    def upload(self, name: str) -> Upload: ...

    def delete_object(self, name: str) -> None:
        """No error when the object does not exist."""
        ...

    def list(self) -> Listing: ...

    def clear(self) -> None: ...

    def copy_within(self, source: BlobContainer, name: str, dest_name: str,
                    move: bool) -> bool:
        """Copy (or move) `source`'s object `name` here as `dest_name` without moving
        its bytes through the host, if this backend can (same kind of store); False
        when it cannot, and the caller streams it."""
        ...

    def close(self) -> None: ...


class BlobContainerType(Protocol):
    """How a backend class is made from its runtime-config table."""

    @classmethod
    def from_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> BlobContainer:
        """Open the container's store (create its directory, make a client); a
        failure is a BackendError."""
        ...

    @classmethod
    def check_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> str:
        """Validate without side effects (no directory, no connection); the description."""
        ...


def blob_store_type(name: str) -> BlobContainerType:
    """The backend class for a runtime config `type` (one of BLOB_STORE_TYPES)."""
    module, _, name = BLOB_STORE_TYPES[name].partition(":")
    return cast(BlobContainerType, getattr(importlib.import_module(module), name))
