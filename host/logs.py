"""Where the host's own lines go: plain text by default, JSON lines on request.

Containers collect stdout/stderr; a log pipeline wants one JSON object per
line. Everything the host says goes through here: logging records, the
start-up lines (`info`), the route table, component output echoed with its
component id, and the access log (`access`).

Every line leaves in one write(2) of the whole line (`write_lines`): worker
processes (`--workers`) share the host's stdout and stderr, and a line written
in pieces (`print` writes the text and its newline separately when the stream
is unbuffered) could be split by another process's line. Writes of up to
PIPE_BUF (4096 bytes) to a pipe are atomic; a longer line is still one write,
which only a full pipe can split.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

FORMATS = ("plain", "json")

# Libraries whose INFO and DEBUG lines carry URLs with their query strings or
# headers: httpx logs every request URL at INFO (outbound calls, registry
# upload locations with their state tokens), httpcore traces headers at DEBUG.
# They speak at WARNING and above; host.outbound logs each call without them.
# watchfiles says "N changes detected" at INFO; host watch says what it does instead.
LIBRARY_LOGGERS = ("httpx", "httpcore", "urllib3", "redis", "watchfiles")

_format = "plain"


def configure(fmt: str, quiet: bool) -> None:
    global _format
    _format = fmt
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time (it may be replaced, e.g. by pytest),
    each record in one write."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_lines(sys.stderr, self.format(record))
        except Exception:
            self.handleError(record)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def write_lines(stream: TextIO, text: str) -> None:
    """Write `text` and a newline with one write(2) to `stream`'s file descriptor, after
    whatever the stream has buffered; streams without one (tests' captures) get a
    plain write."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        stream.write(text + "\n")
        stream.flush()
        return
    stream.flush()
    data = (text + "\n").encode("utf-8", errors="replace")
    while data:  # a blocking write is whole unless interrupted by a signal
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Only errors for the duration: a worker loading the app after another one has
    already said everything start-up has to say (warnings included)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _record(level: str, logger: str, message: str, **fields: Any) -> str:
    entry = {"time": _now(), "level": level, "logger": logger, "message": message}
    entry.update(fields)
    return json.dumps(entry, ensure_ascii=False)


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return _record(record.levelname, record.name, message)


def info(line: str) -> None:
    """A start-up line (stderr), e.g. "probe: 4 instances ready"."""
    write_lines(sys.stderr, _record("INFO", "host", line) if _format == "json" else line)


def serving(base_url: str, routes: list[str]) -> None:
    """The banner and route table, on stdout (scripts and tests wait for it)."""
    if _format == "json":
        write_lines(sys.stdout, _record(
            "INFO", "host", f"Serving {base_url}", url=base_url,
            routes=[r.strip() for r in routes if r.startswith("  ") and ": " in r]))
        return
    banner = "\x1b[1;32mServing\x1b[0m" if sys.stdout.isatty() else "Serving"
    write_lines(sys.stdout, "\n".join([f"\n{banner} {base_url}", "Available Routes:", *routes]))


def component_line(echo: TextIO, component_id: str, stream: str, text: str) -> None:
    """One line a component wrote, echoed with its id."""
    if _format == "json":
        write_lines(echo, _record("INFO", "component", text, component=component_id,
                                  stream=stream))
    else:
        write_lines(echo, f"[{component_id}] {text}")


def access(method: str, path: str, status: int | None, component: str | None,
           seconds: float, sent: int) -> None:
    """One request, on stdout: `GET /hello 200 hello 0.42ms 18B` (`-` for no status or
    no component). `path` has no query; the caller escapes what is not printable."""
    ms = round(seconds * 1000, 3)
    if _format == "json":
        write_lines(sys.stdout, _record(
            "INFO", "access", f"{method} {path} {status if status is not None else '-'}",
            method=method, path=path, status=status, component=component, duration_ms=ms,
            bytes=sent))
        return
    write_lines(sys.stdout, f"{method} {path} {status if status is not None else '-'} "
                            f"{component or '-'} {ms:.2f}ms {sent}B")
