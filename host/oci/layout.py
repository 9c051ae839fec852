"""OCI image layouts: media types, digests, verified reading and atomic writing.

Every blob leaves `LocalLayout` checked against its sha256 digest, so a
tampered layout is refused wherever it is used (push, `resolve_app`). Layouts
are written into a staging directory beside the destination and moved into
place only when complete, so a failed build or pull leaves nothing behind.
Tar archives (image layers and `.tar` layouts) are written reproducibly: the
same inputs give the same bytes, hence the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

from host.oci import OciError

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = frozenset({MEDIA_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MEDIA_INDEX, DOCKER_INDEX})
GZIP_LAYER_TYPES = frozenset({MEDIA_LAYER_GZIP, DOCKER_LAYER_GZIP})
TAR_LAYER_TYPES = frozenset({MEDIA_LAYER_TAR})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"

# Spin's convention for Wasm images (oci-distribution's Architecture::Wasm, Os::Wasip1).
WASM_ARCHITECTURE = "wasm"
WASM_OS = "wasip1"

LAYOUT_VERSION = "1.0.0"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what registries must accept, at least
CHUNK_BYTES = 1024 * 1024
GZIP_LEVEL = 6  # fixed: part of a layer's digest; 9 is 4x slower for 1% less
FILE_MODE = 0o644  # what tempfile would otherwise make 0600: images are not secrets
DIR_MODE = 0o755

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")


def check_tag(tag: str, where: str) -> str:
    """A tag as the distribution spec allows it (also what `ref.name` holds here)."""
    if not _TAG.match(tag):
        raise OciError(f"{where}: invalid tag {tag!r} (letters, digits, '_', '.', '-'; "
                       "at most 128, not starting with '.' or '-')")
    return tag


@contextmanager
def os_errors(where: str) -> Iterator[None]:
    """Filesystem failures (permissions, a full disk) as one-line errors, not tracebacks."""
    try:
        yield
    except OSError as exc:
        name = f" ({exc.filename})" if exc.filename else ""
        raise OciError(f"{where}: {exc.strerror or exc}{name}") from None


def temp_file(directory: Path, prefix: str) -> tuple[int, str]:
    """A new temporary file in `directory` (for an atomic rename), readable by all."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
    os.fchmod(fd, FILE_MODE)
    return fd, name


def temp_dir(directory: Path, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(dir=directory, prefix=prefix))
    path.chmod(DIR_MODE)
    return path


def digest_hex(digest: str, where: str) -> str:
    """The hex part of a `sha256:` digest (safe as a file name); anything else is refused."""
    if not _DIGEST.match(digest):
        raise OciError(f"{where}: unsupported digest {digest!r} (expected sha256:<64 hex digits>)")
    return digest[len("sha256:"):]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest or index says a blob is."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    @property
    def hex(self) -> str:
        return self.digest[len("sha256:"):]

    @classmethod
    def parse(cls, value: object, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise OciError(f"{where}: expected a descriptor object, got {type(value).__name__}")
        media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise OciError(f"{where}: descriptor without a mediaType or digest string")
        digest_hex(digest, where)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OciError(f"{where}: descriptor {digest} has no valid size")
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise OciError(f"{where}: descriptor {digest} has malformed annotations")
        platform = value.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise OciError(f"{where}: descriptor {digest} has a malformed platform")
        return cls(media_type, digest, size, annotations, platform)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    def describe_platform(self) -> str:
        p = self.platform or {}
        return f"{p.get('os', '?')}/{p.get('architecture', '?')}"


@dataclass(frozen=True)
class ImageManifest:
    """A verified image manifest: its own descriptor, raw bytes, config and layers."""

    descriptor: Descriptor
    raw: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


def canonical_json(value: object) -> bytes:
    """Compact JSON with sorted keys: the same document always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_json(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OciError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise OciError(f"{where}: expected a JSON object")
    return data


def media_type_of(raw: bytes, fallback: str, where: str) -> str:
    value = parse_json(raw, where).get("mediaType", fallback)
    return value if isinstance(value, str) else fallback


def parse_manifest(raw: bytes, descriptor: Descriptor, where: str) -> ImageManifest:
    """`raw` (already verified against `descriptor`) as an image manifest."""
    data = parse_json(raw, where)
    media_type = data.get("mediaType", descriptor.media_type)
    if media_type not in MANIFEST_TYPES:
        raise OciError(f"{where}: {descriptor.digest} is a {media_type!r}, not an image manifest")
    if data.get("schemaVersion") != 2:
        raise OciError(f"{where}: manifest {descriptor.digest} is not schemaVersion 2")
    config = Descriptor.parse(data.get("config"), f"{where} config")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise OciError(f"{where}: manifest {descriptor.digest} has no layers")
    annotations = data.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    return ImageManifest(
        descriptor=descriptor, raw=raw, config=config,
        layers=tuple(Descriptor.parse(x, f"{where} layer {i}") for i, x in enumerate(layers)),
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def parse_index(raw: bytes, where: str) -> list[Descriptor]:
    data = parse_json(raw, where)
    manifests = data.get("manifests")
    if not isinstance(manifests, list):
        raise OciError(f"{where}: an image index needs a `manifests` list")
    return [Descriptor.parse(m, f"{where} manifests[{i}]") for i, m in enumerate(manifests)]


def select_tag(entries: Sequence[Descriptor], tag: str | None, where: str) -> Descriptor:
    """The layout entry tagged `tag`; without one, the only entry or `latest`."""
    tags = sorted({e.annotations.get(ANNOTATION_REF_NAME, "") for e in entries} - {""})
    if tag is None:
        if len(entries) == 1:
            return entries[0]
        tag = "latest"
    for entry in entries:
        if entry.annotations.get(ANNOTATION_REF_NAME) == tag:
            return entry
    if not entries:
        raise OciError(f"{where}: the layout holds no image")
    raise OciError(f"{where}: no image tagged {tag!r}; tags: {', '.join(tags) or 'none'}")


def select_platform(entries: Sequence[Descriptor], where: str) -> Descriptor:
    """From a multi-platform index: the wasm/wasip1 entry, or the only one."""
    for entry in entries:
        p = entry.platform or {}
        if p.get("architecture") == WASM_ARCHITECTURE and p.get("os") in (WASM_OS, "wasi"):
            return entry
    if len(entries) == 1:
        return entries[0]
    found = ", ".join(e.describe_platform() for e in entries) or "none"
    raise OciError(f"{where}: the image index has no {WASM_OS}/{WASM_ARCHITECTURE} entry "
                   f"(platforms: {found})")


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


def copy_verified(src: IO[bytes], dest: Path, descriptor: Descriptor, where: str) -> None:
    """Write `src` to `dest` through a temporary file; `dest` appears only if it verifies."""
    reader = VerifyingReader(src, descriptor, where)
    fd, tmp = temp_file(dest.parent, f".{descriptor.hex[:16]}.tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := reader.read(CHUNK_BYTES):
                out.write(chunk)
        reader.check.finish()
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


def write_tar(out: IO[bytes], files: Mapping[PurePosixPath, Path],
              dirs: Iterable[PurePosixPath] = ()) -> None:
    """A reproducible tar of `files` (archive path -> host file) plus their directories.

    Sorted entries, mtime 0, uid/gid 0, no owner names, mode 0644 files / 0755
    directories: only the content and the paths reach the bytes.
    """
    all_dirs = {p for path in (*files, *dirs) for p in path.parents if p.parts}
    all_dirs.update(d for d in dirs if d.parts)
    entries = sorted([(d.parts, d, None) for d in all_dirs]
                     + [(p.parts, p, src) for p, src in files.items()])
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _parts, path, src in entries:
            info = tarfile.TarInfo(str(path))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if src is None:
                info.type = tarfile.DIRTYPE
                info.mode = DIR_MODE
                tar.addfile(info)
            else:
                with src.open("rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    info.mode = FILE_MODE
                    tar.addfile(info, f)


def gzip_file(src: Path, dest: Path) -> None:
    """Reproducible gzip: no file name, mtime 0, fixed level."""
    with src.open("rb") as f, dest.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                          compresslevel=GZIP_LEVEL) as gz:
        shutil.copyfileobj(f, gz, CHUNK_BYTES)


class LocalLayout:
    """A read-only image layout, a directory or a `.tar` of one; blobs are verified on read."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        with self._open(name) as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise OciError(f"{self.path}: {name} is larger than {MAX_MANIFEST_BYTES} bytes")
        return data

    def index(self) -> list[Descriptor]:
        return parse_index(self._read("index.json"), f"{self.path}: index.json")

    def tags(self) -> list[str]:
        return sorted({e.annotations.get(ANNOTATION_REF_NAME, "") for e in self.index()} - {""})

    def open_blob(self, descriptor: Descriptor) -> VerifyingReader:
        """A checking stream over a blob; the caller must call `finish()` at the end."""
        name = f"blobs/sha256/{digest_hex(descriptor.digest, str(self.path))}"
        return VerifyingReader(self._open(name), descriptor, f"{self.path}")

    def read_blob(self, descriptor: Descriptor, limit: int | None = MAX_MANIFEST_BYTES) -> bytes:
        """A whole blob in memory, verified; `limit` guards against huge JSON documents."""
        if limit is not None and descriptor.size > limit:
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

    def copy_blob(self, descriptor: Descriptor, dest: Path) -> None:
        with self._open(f"blobs/sha256/{descriptor.hex}") as src:
            copy_verified(src, dest, descriptor, str(self.path))

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


class LayoutWriter:
    """Builds a layout in a staging directory beside `out`; `commit` moves it into place.

    `out` ending in `.tar` gets a reproducible tar of the layout; otherwise `out`
    becomes the layout directory, replacing an earlier layout (never other data).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.as_tar = out.suffix == ".tar"
        if self.as_tar and out.is_dir():
            raise OciError(f"{out}: is a directory; a .tar output must be a file path")
        if not self.as_tar and (out.exists() or out.is_symlink()):
            if not out.is_dir() or out.is_symlink() or not (
                    (out / "oci-layout").is_file() or not any(out.iterdir())):
                raise OciError(f"{out}: exists and is not an OCI image layout; refusing to "
                               "replace it (choose another output path)")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = temp_dir(out.parent, f".{out.name}.tmp-")
        self.blob_dir = self.staging / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True)

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(data)
        (self.blob_dir / digest_hex(digest, "blob")).write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def add_blob_file(self, path: Path, media_type: str) -> Descriptor:
        """Move `path` into the layout under its digest."""
        digest = file_digest(path)
        size = path.stat().st_size
        os.replace(path, self.blob_dir / digest_hex(digest, "blob"))
        return Descriptor(media_type, digest, size)

    def commit(self, manifests: Sequence[Descriptor]) -> None:
        """Write `oci-layout` and `index.json`, then move the layout into place."""
        (self.staging / "oci-layout").write_bytes(
            canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        (self.staging / "index.json").write_bytes(canonical_json({
            "schemaVersion": 2, "mediaType": MEDIA_INDEX,
            "manifests": [m.to_json() for m in manifests],
        }))
        if self.as_tar:
            files = {PurePosixPath(p.relative_to(self.staging).as_posix()): p
                     for p in self.staging.rglob("*") if p.is_file()}
            fd, tmp = temp_file(self.out.parent, f".{self.out.name}.tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    write_tar(f, files)
                os.replace(tmp, self.out)
            except BaseException:
                os.unlink(tmp)
                raise
            shutil.rmtree(self.staging)
            return
        if self.out.exists():
            old = temp_dir(self.out.parent, f".{self.out.name}.old-")
            os.replace(self.out, old)
            os.rename(self.staging, self.out)
            shutil.rmtree(old)
        else:
            os.rename(self.staging, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
