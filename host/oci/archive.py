"""Reproducible tar and gzip: the same inputs give the same bytes, hence the same digests."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from host.oci.atomic import DIR_MODE, FILE_MODE
from host.oci.digest import CHUNK_BYTES

GZIP_LEVEL = 6  # fixed: part of a layer's digest; 9 is 4x slower for 1% less


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
