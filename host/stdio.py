"""Capture of component stdout/stderr: echoed with an id prefix and kept in log files.

As in Spin, output goes to `LOG_DIR/<component>_stdout.txt` and `_stderr.txt`
(appended) and to the host's terminal, each line prefixed with the component id.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO, TextIO

from host import logs
from host.errors import ConfigError

# Output without a newline is held back until one comes, up to this much.
MAX_LINE_BYTES = 64 * 1024


class ComponentStdio:
    """Sinks for one component's two output streams; shared by its instances."""

    def __init__(self, component_id: str, log_dir: Path | None, echo: TextIO | None) -> None:
        self.component_id = component_id
        self._echo = echo
        self._lock = threading.Lock()
        self._files: dict[str, BinaryIO] = {}
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        if log_dir is not None:
            try:
                log_dir.mkdir(parents=True, exist_ok=True)
                for stream in ("stdout", "stderr"):
                    self._files[stream] = open(log_dir / f"{component_id}_{stream}.txt", "ab")  # noqa: SIM115
            except OSError as exc:
                self.close()
                raise ConfigError(f'cannot write the logs of component "{component_id}" to '
                                  f"{log_dir}: {exc.strerror or exc} (--log-dir, "
                                  "--state-dir)") from None

    def stdout(self, data: bytes) -> None:
        self._write("stdout", data)

    def stderr(self, data: bytes) -> None:
        self._write("stderr", data)

    def _write(self, stream: str, data: bytes) -> None:
        with self._lock:
            f = self._files.get(stream)
            if f is not None:
                f.write(data)
                f.flush()
            if self._echo is None:
                return
            lines = (self._partial[stream] + data).split(b"\n")
            partial = lines.pop()
            if len(partial) > MAX_LINE_BYTES:  # no newline in sight: echo it in pieces
                lines.append(partial)
                partial = b""
            self._partial[stream] = partial
            for line in lines:  # each in one write: other workers share the stream
                text = line.decode("utf-8", errors="replace").rstrip("\r")
                logs.component_line(self._echo, self.component_id, stream, text)

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()
