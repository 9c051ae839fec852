"""The OCI image spec as far as app images need it: media types, descriptors, manifests.

Parsing checks shapes, never content: a document reaches these functions
already verified against its digest (host/oci/digest.py), and every malformed
field is an OciError naming where it was found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from host.errors import OciError

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

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")


def check_tag(tag: str, where: str) -> str:
    """A tag as the distribution spec allows it (also what `ref.name` holds here)."""
    if not _TAG.match(tag):
        raise OciError(f"{where}: invalid tag {tag!r} (letters, digits, '_', '.', '-'; "
                       "at most 128, not starting with '.' or '-')")
    return tag


def digest_hex(digest: str, where: str) -> str:
    """The hex part of a `sha256:` digest (safe as a file name); anything else is refused."""
    if not _DIGEST.match(digest):
        raise OciError(f"{where}: unsupported digest {digest!r} (expected sha256:<64 hex digits>)")
    return digest[len("sha256:"):]


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
