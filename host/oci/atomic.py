"""Files written under temporary names and renamed into place, and OS errors as OciError.

A build, pull or unpack that fails half-way leaves only a temporary name
behind, never a partial file or directory at the destination.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from host.errors import OciError

FILE_MODE = 0o644  # what tempfile would otherwise make 0600: images are not secrets
DIR_MODE = 0o755


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
