"""`wasi:io/error|poll|streams`: pollables and byte streams, moved in bounded chunks.

Streams hand bytes across in chunks of at most `CHUNK` bytes (a body never
crosses as one value: the C API costs ~80 bytes of host memory per byte of a
value). Reads and writes block the guest's thread; every wait is bounded by
the request's deadline (host/deadline.py) and ends in a trap when it passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import wasmtime
import wasmtime.component as wc

from host.deadline import DeadlineExceeded, time_left
from host.runtime.marshal import Err, HostHandle, Ok
from host.wasip2.resources import Functions, Tables

CHUNK = 64 * 1024  # most bytes one read returns
WRITE_BUDGET = 64 * 1024  # what check-write permits at a time
MAX_WAIT_SECONDS = 3600.0  # a wait outside any request (none should happen)

CLOSED = wc.Variant("closed")


class StreamFailed(Exception):
    """The other end of a stream failed (client gone, body too large): the guest gets
    `last-operation-failed` with this message as its `error`."""


def bounded_wait(seconds: float) -> float:
    """`seconds`, or what is left of the request's deadline; traps once it has passed."""
    try:
        return time_left(seconds)
    except DeadlineExceeded:
        raise wasmtime.WasmtimeError("the request's deadline passed in a host call") from None


class Pollable:
    """Always ready: streams block in read/write themselves, bounded by the deadline."""

    at: int | None = None

    def ready(self) -> bool:
        return True

    def block(self) -> None:
        pass


class Deadline(Pollable):
    def __init__(self, at_ns: int) -> None:
        self.at = at_ns

    def ready(self) -> bool:
        assert self.at is not None
        return time.monotonic_ns() >= self.at

    def block(self) -> None:
        assert self.at is not None
        left = (self.at - time.monotonic_ns()) / 1e9
        if left > 0:
            time.sleep(bounded_wait(left))
            bounded_wait(MAX_WAIT_SECONDS)  # woke at the request's deadline: trap


class Source(Protocol):
    def read(self, max_bytes: int) -> bytes | None:
        """At least one byte (blocking), at most `max_bytes`; None at the end."""


class EmptySource:
    def read(self, max_bytes: int) -> bytes | None:
        return None


class BytesSource:
    """Bytes already in host memory (an outbound response body), read in chunks."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def read(self, max_bytes: int) -> bytes | None:
        if not self.data:
            return None
        out, self.data = bytes(self.data[:max_bytes]), self.data[max_bytes:]
        return out


class InputStream:
    def __init__(self, source: Source) -> None:
        self.source = source

    def close(self) -> None:
        """The guest dropped the stream, or its instance is discarded: a source holding
        an open file or connection (a blob being read) lets it go."""
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


class OutputStream:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.closed = False


def functions(t: Tables) -> Functions:
    def failed(store: Any, exc: StreamFailed) -> Err:
        # the exception itself: `filesystem-error-code` reads a file error's code from it
        return Err(wc.Variant("last-operation-failed", t.add("error", store, exc)))

    def read(s: Any, h: Any, n: int) -> Any:
        try:
            data = t.get("input-stream", s, h).source.read(max(1, min(n, CHUNK)))
        except StreamFailed as exc:
            return failed(s, exc)
        return Err(CLOSED) if data is None else Ok(data)

    def skip(s: Any, h: Any, n: int) -> Any:
        result = read(s, h, n)
        return Ok(len(result.value)) if isinstance(result, Ok) else result

    def check_write(s: Any, h: Any) -> Any:
        return Err(CLOSED) if t.get("output-stream", s, h).closed else Ok(WRITE_BUDGET)

    def write(s: Any, h: Any, data: bytes) -> Any:
        out = t.get("output-stream", s, h)
        if out.closed:
            return Err(CLOSED)
        try:
            out.write(data)
        except StreamFailed as exc:
            out.closed = True
            return failed(s, exc)
        return Ok(None)

    def flush(s: Any, h: Any) -> Any:
        return Err(CLOSED) if t.get("output-stream", s, h).closed else Ok(None)

    def zeroes(s: Any, h: Any, n: int) -> Any:
        return write(s, h, bytes(min(n, WRITE_BUDGET)))

    def splice(s: Any, h: Any, src: Any, n: int) -> Any:
        result = read(s, src, n)
        if isinstance(result, Err):
            return result
        written = write(s, h, result.value)
        return written if isinstance(written, Err) else Ok(len(result.value))

    def subscribe(s: Any, h: Any) -> HostHandle:
        return t.add("pollable", s, Pollable())

    def poll(s: Any, handles: list[Any]) -> list[int]:
        if not handles:
            raise wasmtime.WasmtimeError("wasi:io/poll#poll: empty list")
        pollables = [t.get("pollable", s, h) for h in handles]
        while True:
            ready = [i for i, p in enumerate(pollables) if p.ready()]
            if ready:
                return ready
            min(pollables, key=lambda p: p.at or 0).block()

    E, P, S = "wasi:io/error", "wasi:io/poll", "wasi:io/streams"
    return {
        (E, "[method]error.to-debug-string"): lambda s, e: str(t.get("error", s, e)),
        (P, "[method]pollable.ready"): lambda s, p: t.get("pollable", s, p).ready(),
        (P, "[method]pollable.block"): lambda s, p: t.get("pollable", s, p).block(),
        (P, "poll"): poll,
        (S, "[method]input-stream.read"): read,
        (S, "[method]input-stream.blocking-read"): read,
        (S, "[method]input-stream.skip"): skip,
        (S, "[method]input-stream.blocking-skip"): skip,
        (S, "[method]input-stream.subscribe"): subscribe,
        (S, "[method]output-stream.check-write"): check_write,
        (S, "[method]output-stream.write"): write,
        (S, "[method]output-stream.blocking-write-and-flush"): write,
        (S, "[method]output-stream.flush"): flush,
        (S, "[method]output-stream.blocking-flush"): flush,
        (S, "[method]output-stream.subscribe"): subscribe,
        (S, "[method]output-stream.write-zeroes"): zeroes,
        (S, "[method]output-stream.blocking-write-zeroes-and-flush"): zeroes,
        (S, "[method]output-stream.splice"): splice,
        (S, "[method]output-stream.blocking-splice"): splice,
    }
