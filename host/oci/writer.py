"""Writing OCI image layouts atomically: staged beside the destination, moved in when complete.

A failed build or pull leaves nothing behind; a `.tar` output is a
reproducible archive of the layout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType

from host.errors import OciError
from host.oci.archive import write_tar
from host.oci.atomic import temp_dir, temp_file
from host.oci.digest import file_digest, sha256_digest
from host.oci.spec import LAYOUT_VERSION, MEDIA_INDEX, Descriptor, canonical_json, digest_hex


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
