"""`host oci build`: an app directory -> an app-only OCI image, without Docker.

The image has one layer whose root is the app directory, holding exactly what
`host up` reads: `/spin.toml` (verbatim), every component's `.wasm` and the
files its `files`/`exclude_files` select, each at its path relative to the app
directory, so the manifest resolves identically after unpacking; optionally
`/runtime-config.toml` (where containerd-shim-spin looks for it). Nothing else
of the directory (`.spin/`, sources, build output) gets in. The layer and every
JSON document are reproducible, so the same app always has the same digests.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from host.capabilities.files import FileSelection, stage_files
from host.errors import ConfigError
from host.manifest import Component, FileMapping, FileSource, Manifest, UrlSource, load_manifest
from host.oci.archive import gzip_file, write_tar
from host.oci.atomic import os_errors
from host.oci.digest import file_digest
from host.oci.spec import (
    ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    WASM_ARCHITECTURE,
    WASM_OS,
    Descriptor,
    canonical_json,
    check_tag,
)
from host.oci.writer import LayoutWriter

MANIFEST_NAME = "spin.toml"  # where containerd-shim-spin and `resolve_app` look
RUNTIME_CONFIG_NAME = "runtime-config.toml"
CREATED = "1970-01-01T00:00:00Z"  # fixed, or every build would get a new digest
DEFAULT_TAG = "latest"
DEFAULT_PLATFORM = f"{WASM_OS}/{WASM_ARCHITECTURE}"
_PLATFORM = re.compile(r"([a-z0-9_]+)/([a-z0-9_]+)\Z")


@dataclass(frozen=True)
class ImageInfo:
    """What `build_image` wrote. Sizes are in bytes; `total_size` = manifest + config + layer."""

    path: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digest: str
    layer_size: int
    total_size: int
    files: tuple[str, ...]  # paths in the image, relative to its root


def build_image(manifest_path: Path | None, out: Path, tag: str = DEFAULT_TAG,
                runtime_config: Path | None = None,
                platform: str = DEFAULT_PLATFORM) -> ImageInfo:
    """Write the app of `manifest_path` (a spin.toml or its directory; None: ./spin.toml)
    as an image layout.

    `out` is a layout directory (replaced if it already holds a layout), or a
    `.tar` of one when it ends in `.tar`. Errors in the app (a source outside
    the app directory, a bad `files` entry) raise ConfigError/ComponentError
    before anything is written. `platform` (`OS/ARCH`) goes into the config:
    Spin's `wasip1/wasm` by default; tools that turn images into Linux
    runtime bundles (`umoci unpack`) accept only `linux/...`.
    """
    check_tag(tag, "--tag")
    matched = _PLATFORM.match(platform)
    if not matched:
        raise ConfigError(f"--platform {platform!r}: expected OS/ARCH, e.g. {DEFAULT_PLATFORM}")
    os_name, architecture = matched.groups()
    manifest = load_manifest(manifest_path)
    files, dirs = app_files(manifest, runtime_config)
    with os_errors(str(out)), LayoutWriter(out) as writer:
        tar_path = writer.staging / "layer.tar"
        with tar_path.open("wb") as f:
            write_tar(f, files, dirs)
        diff_id = file_digest(tar_path)
        gz_path = writer.staging / "layer.tar.gz"
        gzip_file(tar_path, gz_path)
        tar_path.unlink()
        layer = writer.add_blob_file(gz_path, MEDIA_LAYER_GZIP)
        annotations = {ANNOTATION_TITLE: manifest.application.name}
        if manifest.application.version:
            annotations[ANNOTATION_VERSION] = manifest.application.version
        config = writer.add_blob(canonical_json({
            "created": CREATED,
            "architecture": architecture,
            "os": os_name,
            "config": {"Labels": annotations},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }), MEDIA_CONFIG)
        image_manifest = writer.add_blob(canonical_json({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
            "annotations": annotations,
        }), MEDIA_MANIFEST)
        writer.commit([Descriptor(
            MEDIA_MANIFEST, image_manifest.digest, image_manifest.size,
            annotations={ANNOTATION_REF_NAME: tag},
            platform={"architecture": architecture, "os": os_name},
        )])
    return ImageInfo(
        path=out, tag=tag, manifest_digest=image_manifest.digest, config_digest=config.digest,
        layer_digest=layer.digest, layer_size=layer.size,
        total_size=image_manifest.size + config.size + layer.size,
        files=tuple(str(p) for p in sorted(files, key=lambda p: p.parts)),
    )


class _Contents:
    """The image's files (image path -> host file) and explicitly named directories."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.app = manifest.dir.resolve()
        self.files: dict[PurePosixPath, Path] = {}
        self.dirs: set[PurePosixPath] = set()

    def add(self, path: PurePosixPath, host_file: Path, what: str) -> None:
        earlier = self.files.setdefault(path, host_file)
        if earlier != host_file:
            raise ConfigError(f"{self.manifest.path}: {what} puts {host_file} at /{path} in the "
                              f"image, where {earlier} already is; rename one of them")

    def check_tree(self) -> None:
        """A path cannot be a file and a directory at once."""
        for path in self.files:
            for parent in path.parents:
                if parent in self.files:
                    raise ConfigError(f"{self.manifest.path}: /{parent} is a file in the image "
                                      f"but also the directory of /{path}; rename one")
        for d in self.dirs:
            if d in self.files:
                raise ConfigError(f"{self.manifest.path}: /{d} is both a file and a directory "
                                  "in the image; rename one")


def app_files(manifest: Manifest, runtime_config: Path | None = None
              ) -> tuple[Mapping[PurePosixPath, Path], set[PurePosixPath]]:
    """What the image holds: (image path -> host file, directories named by `files`)."""
    contents = _Contents(manifest)
    contents.add(PurePosixPath(MANIFEST_NAME), manifest.path.resolve(), "the manifest")
    if runtime_config is not None:
        if not runtime_config.is_file():
            raise ConfigError(f"--runtime-config-file {runtime_config}: no such file")
        contents.add(PurePosixPath(RUNTIME_CONFIG_NAME), runtime_config.resolve(),
                     "--runtime-config-file")
    for cid in sorted(manifest.components):
        component = manifest.components[cid]
        _add_source(contents, component)
        if component.files:
            _add_files(contents, component)
    contents.check_tree()
    return contents.files, contents.dirs


def _add_source(contents: _Contents, component: Component) -> None:
    where = f"{contents.manifest.path}: [component.{component.id}] source"
    source = component.source
    if not isinstance(source, FileSource):
        kind = "url" if isinstance(source, UrlSource) else "registry"
        raise ConfigError(f"{where}: {kind} sources cannot be packed into an image; download "
                          "the .wasm into the app directory and set source to its path")
    text = source.path.as_posix()
    rel = os.path.normpath(text)
    real = (contents.manifest.dir / source.path).resolve()
    if (source.path.is_absolute() or rel == ".." or rel.startswith("../")
            or (real != contents.app and contents.app not in real.parents)):
        raise ConfigError(f'{where}: "{text}" is outside the app directory {contents.app} '
                          f"(it resolves to {real}); an image holds only the app directory: "
                          "build or copy the .wasm inside it and name it by a relative path")
    if not real.is_file():
        raise ConfigError(f'{where}: "{text}" does not exist or is not a file (resolved: '
                          f"{real}); build the app first (`host build`)")
    contents.add(PurePosixPath(rel), real, f"component {component.id!r} source")


def _add_files(contents: _Contents, component: Component) -> None:
    """The host files `stage_files` selects, at their app-relative (not guest) paths."""
    manifest = contents.manifest
    with tempfile.TemporaryDirectory(prefix="spinhost-oci-") as tmp:
        # The full check `host up` does (globs, excludes, collisions, symlinks leaving the app).
        stage_files(manifest, component, Path(tmp) / "root")
    for entry in component.files:
        # One selection per entry, so each guest path maps back to its host path unambiguously.
        stager = FileSelection(manifest, component)
        if isinstance(entry, FileMapping):
            text, source = entry.source, PurePosixPath(entry.source)
            stager.mapping(entry.source, entry.destination)
            strip = len(PurePosixPath(entry.destination).relative_to("/").parts)
            named = True
        else:
            text, source = entry.pattern, PurePosixPath(entry.pattern)
            stager.pattern(entry.pattern)
            strip = None
            named = os.path.lexists(stager.app.joinpath(*source.parts))
        what = f'[component.{component.id}] files entry "{text}"'
        for guest, (real, _entry) in stager.chosen.items():
            path = guest if strip is None else source.joinpath(*guest.parts[strip:])
            contents.add(path, real, what)
        if named:
            host = stager.app.joinpath(*source.parts)
            if stager.excluded(host):
                raise ConfigError(f"{manifest.path}: {what} is removed by exclude_files, so "
                                  "it would be missing from the image and the manifest would "
                                  "not load there; drop it from files or from exclude_files")
            if host.resolve().is_dir():
                contents.dirs.add(source)  # exists after unpacking even if nothing below is chosen
