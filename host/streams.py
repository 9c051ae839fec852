"""Request and response bodies streamed between the event loop and a guest's thread.

A wasi:http guest runs on a worker thread and reads its request body and
writes its response body through host calls. `AsgiBody` answers each read
with the next chunk ASGI `receive` gives (nothing is buffered ahead: uvicorn
stops reading the socket until the guest asks), and `AsgiResponse` posts each
write for ASGI `send` on the loop, waiting while more than 256 KiB are unsent
(the client is slow). So a request holds about one chunk of its request body
and at most 256 KiB of its response body in host memory. Every wait is bounded
by the request's deadline.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

import wasmtime

from host.fields import is_field_name, is_field_value
from host.wasip2.io import MAX_WAIT_SECONDS, StreamFailed, bounded_wait

Message = MutableMapping[str, Any]
T = TypeVar("T")

# Response body bytes a guest may have posted to the loop but not yet sent.
MAX_UNSENT_BYTES = 256 * 1024

# Response headers the host computes itself; a guest's copies are dropped.
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


def response_head(status: int, headers: list[tuple[str, bytes]]
                  ) -> list[tuple[bytes, bytes]]:
    """A guest's status and headers checked, as sent to the client (hop-by-hop ones
    dropped); ValueError naming what is malformed. Both executors' responses."""
    if not 100 <= status <= 599:
        raise ValueError(f"invalid status code {status}")
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        raw = name.lower().encode("utf-8")
        if not is_field_name(raw):
            raise ValueError(f"invalid response header name {name!r}")
        if not is_field_value(value):
            raise ValueError(f"invalid value for response header {name!r}")
        if raw not in HOP_BY_HOP:
            out.append((raw, value))
    return out


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the event loop and wait for it, at most until the deadline."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout=bounded_wait(MAX_WAIT_SECONDS))
    except TimeoutError:
        future.cancel()
        raise wasmtime.WasmtimeError("the request's deadline passed in a host call") from None
    except BaseException:
        future.cancel()
        raise


async def _call(func: Callable[[], Awaitable[T]]) -> T:
    return await func()


class AsgiBody:
    """The request body as a `wasi:io` input-stream source, pulled as the guest reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 receive: Callable[[], Awaitable[Message]], limit: int) -> None:
        self.loop = loop
        self.receive = receive
        self.limit = limit
        self.size = 0
        self.more = True
        self.pending = b""

    def read(self, max_bytes: int) -> bytes | None:
        while not self.pending:
            if not self.more:
                return None
            message = _on_loop(self.loop, _call(self.receive))
            if message["type"] == "http.disconnect":
                self.more = False
                raise StreamFailed("the client disconnected")
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.limit:
                self.more = False
                raise StreamFailed(f"request body larger than {self.limit} bytes "
                                   "(--max-body-bytes)")
            self.more = bool(message.get("more_body", False))
            self.pending = chunk
        out, self.pending = self.pending[:max_bytes], self.pending[max_bytes:]
        return out


class AsgiResponse:
    """A `ResponseSink`: the head goes out with the first body write (chunked) or at
    finish (with a content-length), then every write as it comes.

    Messages are posted to the event loop without waiting for each `send`: a
    small response (head, body, end) costs the guest's thread no round trip to
    the loop at all (each round trip measured ~50-100 us of CPU). The loop
    sends them in order (`_drain`); the server awaits `drained()` once the guest
    has returned. Backpressure: a write waits while more than
    `MAX_UNSENT_BYTES` of body are posted but not yet sent (bounded by the
    deadline); a failed send fails the next write.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 send: Callable[[Message], Awaitable[None]], max_bytes: int) -> None:
        self.loop = loop
        self._send_message = send
        self.max_bytes = max_bytes
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # http.response.start posted
        self.finished = False
        self.size = 0
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._queue: collections.deque[Message] = collections.deque()
        self._unsent = 0  # body bytes posted, not yet sent
        self._draining = False  # a `_drain` task is scheduled or running
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None

    def _post(self, message: Message) -> None:
        """Queue a message for the loop; wait only while too many bytes are unsent."""
        size = len(message.get("body", b""))
        with self._lock:
            while self._error is None and self._unsent and self._unsent + size > MAX_UNSENT_BYTES:
                if not self._sent.wait(bounded_wait(MAX_WAIT_SECONDS)):
                    raise wasmtime.WasmtimeError(
                        "the request's deadline passed in a host call")
            if self._error is not None:
                raise StreamFailed(f"sending the response failed: {self._error}")
            self._queue.append(message)
            self._unsent += size
            kick = not self._draining
            self._draining = True
        if kick:
            self.loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    return
                message = self._queue.popleft()
            try:
                await self._send_message(message)
            except Exception as exc:  # the client went away: fail the guest's next write
                with self._lock:
                    self._error = str(exc) or type(exc).__name__
                    self._queue.clear()
                    self._draining = False
                    self._sent.notify_all()
                return
            with self._lock:
                self._unsent -= len(message.get("body", b""))
                self._sent.notify_all()

    async def drained(self) -> None:
        """Wait until every posted message is sent (or sending failed). On the loop,
        after the guest returned: every post's `_start_drain` ran before this."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def head(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        try:
            self.headers.extend(response_head(status, headers))
        except ValueError as exc:
            raise wasmtime.WasmtimeError(str(exc)) from None
        self.status = status

    def _start(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self._post({"type": "http.response.start", "status": self.status, "headers": headers})

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            raise wasmtime.WasmtimeError(f"response body larger than {self.max_bytes} bytes "
                                         "(--max-response-bytes)")
        if not self.started:
            self._start(self.headers)
        self._post({"type": "http.response.body", "body": data, "more_body": True})

    def finish(self) -> None:
        try:
            if not self.started:
                empty = self.status < 200 or self.status in (204, 304)
                self._start(self.headers if empty else [*self.headers, (b"content-length", b"0")])
            self._post({"type": "http.response.body", "body": b"", "more_body": False})
        except StreamFailed as exc:
            raise wasmtime.WasmtimeError(str(exc)) from None
        self.finished = True
