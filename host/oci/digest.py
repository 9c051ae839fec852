"""sha256 digests, and checking a blob against its descriptor as its bytes pass.

Whatever reads a blob (a layout, a registry download, the cache) reads it
through `BlobCheck` or `VerifyingReader`: a blob longer than its descriptor
says is refused at the first extra byte, one that hashes differently at the end.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import IO

from host.errors import OciError
from host.oci.spec import Descriptor

CHUNK_BYTES = 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class BlobCheck:
    """Counts and hashes a blob's bytes as they pass; `finish` compares with the descriptor."""

    def __init__(self, descriptor: Descriptor, where: str) -> None:
        self.descriptor = descriptor
        self.where = where
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.descriptor.size:
            raise OciError(f"{self.where}: blob {self.descriptor.digest} is larger than the "
                           f"{self.descriptor.size} bytes its descriptor says; it was tampered "
                           "with or corrupted, refusing it")
        self._hash.update(chunk)

    def finish(self) -> None:
        actual = "sha256:" + self._hash.hexdigest()
        if self.size != self.descriptor.size or actual != self.descriptor.digest:
            raise OciError(f"{self.where}: blob {self.descriptor.digest} does not match its "
                           f"digest ({self.size} bytes hashing to {actual}); it was tampered "
                           "with or corrupted, refusing it")


class VerifyingReader(io.BufferedIOBase):
    """A read-only stream over a blob that checks it: call `finish` after the last read."""

    def __init__(self, raw: IO[bytes], descriptor: Descriptor, where: str) -> None:
        super().__init__()
        self.raw = raw
        self.check = BlobCheck(descriptor, where)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.raw.read(-1 if size is None else size)
        self.check.update(data)
        return data

    def finish(self) -> None:
        """Read whatever the consumer left (tar padding, gzip trailer), then verify."""
        while self.read(CHUNK_BYTES):
            pass
        self.check.finish()
