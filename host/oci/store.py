"""`resolve_app`: an image reference or layout -> a verified app unpacked on disk.

Pulled blobs are kept content-addressed in `CACHE/oci/blobs/sha256/`, apps
unpacked in `CACHE/oci/apps/<manifest digest hex>/`. Both are written under
temporary names and renamed into place, so several host processes (pods on a
node) can share one cache, and an app directory that exists is complete and was
verified. Unpacking accepts only regular files and directories at relative
paths, within size limits: an absolute path, `..`, a link or a device in a
layer refuses the whole image, because any of them could write or expose
something outside the app directory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from host.errors import OciError
from host.limits import OciLimits
from host.oci.atomic import DIR_MODE, FILE_MODE, os_errors, temp_dir, temp_file
from host.oci.digest import CHUNK_BYTES, VerifyingReader
from host.oci.image import MANIFEST_NAME, RUNTIME_CONFIG_NAME
from host.oci.layout import LocalLayout
from host.oci.registry import REF_SYNTAX, RegistryClient, parse_reference
from host.oci.spec import GZIP_LAYER_TYPES, TAR_LAYER_TYPES, Descriptor, ImageManifest, check_tag
from host.runtime.engine import default_cache_dir as _compile_cache_dir


@dataclass(frozen=True)
class ResolvedApp:
    """An app ready for `host up`: its unpacked manifest and where it came from."""

    manifest_path: Path
    digest: str  # the image manifest's digest
    source: str  # the registry reference, or the layout's absolute path
    runtime_config: Path | None = None  # the image's /runtime-config.toml, if it has one


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/spinhost` (images go to its `oci/`, next to `compiled/`)."""
    return _compile_cache_dir().parent


def resolve_app(ref_or_layout: str, cache_dir: Path, insecure: bool | None = None,
                username: str | None = None, password: str | None = None,
                limits: OciLimits | None = None,
                allow_insecure_remote: bool | None = None) -> ResolvedApp:
    """The app of a layout (`PATH` or `PATH:TAG`, directory or `.tar`) or registry reference.

    Layouts are read in place, every blob verified; references are pulled into
    the cache (blobs already there are verified and reused). Either way the app
    is unpacked once per manifest digest under `cache_dir/oci/apps/`.
    """
    with os_errors(f"{ref_or_layout} (cache {cache_dir})"):
        return _resolve(ref_or_layout, cache_dir, insecure, username, password, limits,
                        allow_insecure_remote)


def _resolve(ref_or_layout: str, cache_dir: Path, insecure: bool | None,
             username: str | None, password: str | None,
             limits: OciLimits | None, allow_insecure_remote: bool | None) -> ResolvedApp:
    apps_dir = cache_dir / "oci" / "apps"
    local, tag = _local_layout(ref_or_layout)
    if local is not None:
        with LocalLayout(local, limits) as layout:
            manifest = layout.manifest(tag)
            layout.verify(manifest)
            app_dir = unpack_app(manifest, layout.open_blob, apps_dir, str(local), limits)
        return _resolved(app_dir, manifest.digest, str(local.resolve()))
    try:
        reference = parse_reference(ref_or_layout)
    except OciError:
        raise OciError(f"{ref_or_layout}: no such OCI image layout (directory or .tar), and "
                       f"not a registry reference ({REF_SYNTAX})") from None
    if reference.digest:  # pinned and already unpacked: no need to ask the registry
        app_dir = apps_dir / reference.digest.removeprefix("sha256:")
        if (app_dir / MANIFEST_NAME).is_file():
            return _resolved(app_dir, reference.digest, str(reference))
    blob_dir = cache_dir / "oci" / "blobs" / "sha256"
    with RegistryClient(reference, insecure, username, password, limits=limits,
                        allow_insecure_remote=allow_insecure_remote) as client:
        manifest = client.get_manifest()
        app_dir = apps_dir / manifest.descriptor.hex
        if not (app_dir / MANIFEST_NAME).is_file():
            blob_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(blob_dir / manifest.descriptor.hex, manifest.raw)
            for blob in manifest.blobs:
                client.fetch_blob(blob, blob_dir)

            def open_blob(descriptor: Descriptor) -> VerifyingReader:
                raw = (blob_dir / descriptor.hex).open("rb")
                return VerifyingReader(raw, descriptor, str(reference))

            app_dir = unpack_app(manifest, open_blob, apps_dir, str(reference), limits)
    return _resolved(app_dir, manifest.digest, str(reference))


def _resolved(app_dir: Path, digest: str, source: str) -> ResolvedApp:
    runtime_config = app_dir / RUNTIME_CONFIG_NAME
    return ResolvedApp(app_dir / MANIFEST_NAME, digest, source,
                       runtime_config if runtime_config.is_file() else None)


def _local_layout(text: str) -> tuple[Path | None, str | None]:
    """`PATH` or `PATH:TAG` when PATH exists; (None, None) for anything else."""
    if os.path.lexists(text):
        return Path(text), None
    head, colon, tail = text.rpartition(":")
    if colon and head and "/" not in tail and os.path.lexists(head):
        return Path(head), check_tag(tail, text)
    return None, None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = temp_file(path.parent, f".{path.name[:16]}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def unpack_app(manifest: ImageManifest, open_blob: Callable[[Descriptor], VerifyingReader],
               apps_dir: Path, where: str, limits: OciLimits | None = None) -> Path:
    """`apps_dir/<manifest hex>/` with the image's layers applied in order (once).

    Built in a temporary directory and renamed into place: a concurrent process
    unpacking the same image either wins the rename or finds the finished copy.
    """
    final = apps_dir / manifest.descriptor.hex
    if (final / MANIFEST_NAME).is_file():
        return final
    apps_dir.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(apps_dir, ".tmp-")
    try:
        budget = _Budget(where, limits or OciLimits())
        for layer in manifest.layers:
            reader = open_blob(layer)
            try:
                extract_layer(reader, layer, tmp, where, budget)
                reader.finish()
            finally:
                reader.raw.close()
        if not (tmp / MANIFEST_NAME).is_file():
            raise OciError(f"{where}: the image has no /{MANIFEST_NAME}; it is not a spinhost "
                           "app image (build one with `host oci build`)")
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if not (final / MANIFEST_NAME).is_file():
                raise OciError(f"{where}: cannot move the unpacked app to {final} "
                               f"({exc.strerror}); remove that directory") from None
            shutil.rmtree(tmp)  # another process unpacked it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class _Budget:
    """Caps what one image may unpack: a small layer can decompress to a huge tree."""

    def __init__(self, where: str, limits: OciLimits) -> None:
        self.where = where
        self.max_bytes = limits.max_unpacked_bytes
        self.max_entries = limits.max_unpacked_entries
        self.bytes = 0
        self.entries = 0

    def take(self, size: int) -> None:
        self.bytes += size
        self.entries += 1
        if self.bytes > self.max_bytes or self.entries > self.max_entries:
            raise OciError(f"{self.where}: the image unpacks to more than {self.max_bytes} "
                           f"bytes or {self.max_entries} entries; refusing it")


def _safe_path(name: str, layer: Descriptor, where: str) -> PurePosixPath | None:
    """A layer entry's path relative to the app root; None for the root itself."""
    if name.startswith("/"):
        raise OciError(f"{where}: layer {layer.digest} has an absolute path {name!r}; "
                       "refusing the image")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OciError(f"{where}: layer {layer.digest} has a path leaving the app directory "
                       f"({name!r}); refusing the image")
    if any(p.startswith(".wh.") for p in parts):
        raise OciError(f"{where}: layer {layer.digest} has a whiteout entry {name!r}; layers "
                       "that delete files are not supported in app images")
    return PurePosixPath(*parts) if parts else None


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    return f"entry of type {member.type!r}"


def extract_layer(reader: VerifyingReader, layer: Descriptor, root: Path, where: str,
                  budget: _Budget) -> None:
    """Apply one tar (or tar+gzip) layer to `root`: regular files and directories only."""
    if layer.media_type not in GZIP_LAYER_TYPES | TAR_LAYER_TYPES:
        raise OciError(f"{where}: layer {layer.digest} has media type {layer.media_type!r}; "
                       "app images have tar(+gzip) layers (a Spin registry artifact is not "
                       "supported: build the image with `host oci build`)")
    try:
        with (tarfile.open(fileobj=reader, mode="r|gz") if layer.media_type in GZIP_LAYER_TYPES
              else tarfile.open(fileobj=reader, mode="r|")) as tar:
            for member in tar:
                path = _safe_path(member.name, layer, where)
                if not (member.isdir() or member.isreg()):
                    raise OciError(f"{where}: layer {layer.digest}: {member.name!r} is a "
                                   f"{_kind(member)}; app images may hold only regular files "
                                   "and directories, refusing the image")
                if path is None:
                    continue
                budget.take(member.size if member.isreg() else 0)
                target = root.joinpath(*path.parts)
                if member.isdir():
                    target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
                target.chmod(FILE_MODE)
    except OciError:
        raise
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise OciError(f"{where}: layer {layer.digest} cannot be unpacked: {exc}") from None
