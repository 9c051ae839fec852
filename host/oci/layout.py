"""Reading OCI image layouts (a directory or a `.tar` of one), every blob verified.

Every blob leaves `LocalLayout` checked against its sha256 digest, so a
tampered layout is refused wherever it is used (push, `resolve_app`).
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO

from host.errors import OciError
from host.limits import OciLimits
from host.oci.digest import CHUNK_BYTES, VerifyingReader
from host.oci.spec import (
    ANNOTATION_REF_NAME,
    INDEX_TYPES,
    Descriptor,
    ImageManifest,
    digest_hex,
    media_type_of,
    parse_index,
    parse_json,
    parse_manifest,
    select_platform,
    select_tag,
)


class LocalLayout:
    """A read-only image layout, a directory or a `.tar` of one; blobs are verified on read."""

    def __init__(self, path: Path, limits: OciLimits | None = None) -> None:
        self.path = path
        self.limits = limits or OciLimits()
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            pass
        elif path.is_file():
            try:
                self._tar = tarfile.open(path)
                for member in self._tar.getmembers():
                    if member.isfile():
                        self._members[str(PurePosixPath(member.name))] = member
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise OciError(f"{path}: not an OCI image layout (directory or tar): "
                               f"{exc}") from None
        else:
            raise OciError(f"{path}: no such OCI image layout (directory or .tar)")
        data = parse_json(self._read("oci-layout"), f"{path}: oci-layout")
        if "imageLayoutVersion" not in data:
            raise OciError(f"{path}: oci-layout has no imageLayoutVersion")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> LocalLayout:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _open(self, name: str) -> IO[bytes]:
        if self._tar is None:
            try:
                return (self.path / name).open("rb")
            except OSError as exc:
                raise OciError(f"{self.path}: cannot read {name}: {exc.strerror}") from None
        member = self._members.get(name)
        stream = self._tar.extractfile(member) if member is not None else None
        if stream is None:
            raise OciError(f"{self.path}: the layout has no file {name}")
        return stream

    def _read(self, name: str) -> bytes:
        limit = self.limits.max_manifest_bytes
        with self._open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise OciError(f"{self.path}: {name} is larger than {limit} bytes")
        return data

    def index(self) -> list[Descriptor]:
        return parse_index(self._read("index.json"), f"{self.path}: index.json")

    def tags(self) -> list[str]:
        return sorted({e.annotations.get(ANNOTATION_REF_NAME, "") for e in self.index()} - {""})

    def open_blob(self, descriptor: Descriptor) -> VerifyingReader:
        """A checking stream over a blob; the caller must call `finish()` at the end."""
        name = f"blobs/sha256/{digest_hex(descriptor.digest, str(self.path))}"
        return VerifyingReader(self._open(name), descriptor, f"{self.path}")

    def read_blob(self, descriptor: Descriptor, bounded: bool = True) -> bytes:
        """A whole blob in memory, verified; `bounded`: at most `max_manifest_bytes`,
        against huge JSON documents."""
        if bounded and descriptor.size > self.limits.max_manifest_bytes:
            raise OciError(f"{self.path}: blob {descriptor.digest} is too large to read "
                           f"into memory ({descriptor.size} bytes)")
        reader = self.open_blob(descriptor)
        chunks = []
        try:
            while chunk := reader.read(CHUNK_BYTES):
                chunks.append(chunk)
            reader.check.finish()
        finally:
            reader.raw.close()
        return b"".join(chunks)

    def manifest(self, tag: str | None = None) -> ImageManifest:
        """The image tagged `tag` (default: the only one, or `latest`), verified."""
        where = str(self.path)
        descriptor = select_tag(self.index(), tag, where)
        raw = self.read_blob(descriptor)
        media_type = media_type_of(raw, descriptor.media_type, where)
        if media_type in INDEX_TYPES:  # a multi-platform image: one level down
            descriptor = select_platform(parse_index(raw, where), where)
            raw = self.read_blob(descriptor)
        return parse_manifest(raw, descriptor, where)

    def verify(self, manifest: ImageManifest) -> None:
        """Check every blob the manifest names (config and layers) against its digest."""
        for descriptor in manifest.blobs:
            reader = self.open_blob(descriptor)
            try:
                reader.finish()
            finally:
                reader.raw.close()
