"""The deadline of the request a guest call is serving, for the host calls it makes.

wasmtime's epoch deadline interrupts wasm only: a guest blocked in a host
function (an SQL statement, a Redis command, an outbound HTTP request) is not
interrupted. So the executor records the request's deadline here for the
duration of the guest call, and every host function that may block bounds
itself by `time_left()`; when it returns, the guest is back in wasm past its
epoch deadline and traps, and the client gets its 504 at the deadline.

Host functions run synchronously on the thread that called into the guest, so
a thread-local is exactly "the request this host call belongs to".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


class DeadlineExceeded(Exception):
    """A host call found its request's deadline already passed."""


@contextmanager
def request_deadline(seconds: float) -> Iterator[float]:
    """Host calls made inside this block end at most `seconds` from now.

    Yields the deadline (a `time.monotonic()` value): a call that returns
    after it is late, even if the guest finished before wasm noticed.
    """
    previous = getattr(_current, "at", None)
    _current.at = at = time.monotonic() + seconds
    try:
        yield at
    finally:
        _current.at = previous


def deadline() -> float | None:
    """The `time.monotonic()` value at which the current request ends; None outside one."""
    at: float | None = getattr(_current, "at", None)
    return at


def time_left(ceiling: float) -> float:
    """Seconds a blocking host call may take: `ceiling`, or less if the request ends sooner.

    Raises DeadlineExceeded when nothing is left, so callers answer their
    interface's timeout error instead of starting work that cannot finish.
    """
    at = deadline()
    if at is None:
        return ceiling
    left = at - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the request's deadline has passed")
    return min(ceiling, left)


def expired() -> bool:
    """Whether the current request's deadline has passed (cheap: for progress handlers)."""
    at = deadline()
    return at is not None and time.monotonic() >= at
