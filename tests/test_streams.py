"""host/streams.py AsgiResponse: a guest's response is posted to the event loop
without a round trip per write, sent in order, held back past 256 KiB unsent
(a slow client makes the guest wait, bounded by the deadline), and a failed
send fails the guest's next write."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import wasmtime

from host.deadline import request_deadline
from host.streams import MAX_UNSENT_BYTES, AsgiResponse
from host.wasip2.io import StreamFailed

KiB = 1024


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


class Client:
    """An ASGI `send` that records messages and can be held (a client not reading)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.messages: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        loop.call_soon_threadsafe(self.gate.set)
        self.fail: Exception | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.messages.append(message)

    def hold(self) -> None:
        asyncio.run_coroutine_threadsafe(self._clear(), self.loop).result(5)

    async def _clear(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)


def _drained(loop: asyncio.AbstractEventLoop, response: AsgiResponse) -> None:
    asyncio.run_coroutine_threadsafe(response.drained(), loop).result(5)


def test_messages_go_out_in_order_and_drained_waits_for_them(
        loop: asyncio.AbstractEventLoop) -> None:
    client = Client(loop)
    response = AsgiResponse(loop, client.send, 10 * 1024 * KiB)
    response.head(200, [("content-type", b"text/plain")])
    for i in range(50):
        response.write(b"part %d;" % i)
    response.finish()
    _drained(loop, response)
    assert client.messages[0] == {"type": "http.response.start", "status": 200,
                                  "headers": [(b"content-type", b"text/plain")]}
    body = b"".join(m["body"] for m in client.messages[1:])
    assert body == b"".join(b"part %d;" % i for i in range(50))
    assert client.messages[-1] == {"type": "http.response.body", "body": b"",
                                   "more_body": False}


def test_a_client_not_reading_makes_the_guest_wait_past_256_kib_unsent(
        loop: asyncio.AbstractEventLoop) -> None:
    client = Client(loop)
    client.hold()
    response = AsgiResponse(loop, client.send, 10 * 1024 * KiB)
    response.head(200, [])
    chunk = b"x" * (100 * KiB)
    written: list[int] = []

    def guest() -> None:
        for i in range(6):
            response.write(chunk)
            written.append(i)
        response.finish()

    thread = threading.Thread(target=guest)
    thread.start()
    time.sleep(0.5)
    assert len(written) * len(chunk) <= MAX_UNSENT_BYTES < (len(written) + 1) * len(chunk)
    assert thread.is_alive()  # waiting for the client
    client.release()
    thread.join(5)
    assert written == list(range(6))
    _drained(loop, response)
    assert sum(len(m.get("body", b"")) for m in client.messages) == 6 * len(chunk)


def test_the_wait_for_a_slow_client_ends_at_the_deadline(
        loop: asyncio.AbstractEventLoop) -> None:
    client = Client(loop)
    client.hold()
    response = AsgiResponse(loop, client.send, 10 * 1024 * KiB)
    with request_deadline(0.3), pytest.raises(wasmtime.WasmtimeError, match="deadline"):
        for _ in range(10):
            response.write(b"x" * (100 * KiB))
    client.release()
    _drained(loop, response)


def test_a_failed_send_fails_the_next_write(loop: asyncio.AbstractEventLoop) -> None:
    client = Client(loop)
    client.fail = OSError("connection reset")
    response = AsgiResponse(loop, client.send, 10 * 1024 * KiB)
    # The head goes first: its failed send may already fail this write.
    with contextlib.suppress(StreamFailed):
        response.write(b"first")
    _drained(loop, response)
    with pytest.raises(StreamFailed, match="connection reset"):
        response.write(b"second")
    with pytest.raises(wasmtime.WasmtimeError, match="connection reset"):
        response.finish()


def test_response_size_cap_still_applies(loop: asyncio.AbstractEventLoop) -> None:
    client = Client(loop)
    response = AsgiResponse(loop, client.send, 10)
    response.write(b"0123456789")
    with pytest.raises(wasmtime.WasmtimeError, match="--max-response-bytes"):
        response.write(b"!")
    _drained(loop, response)
