"""Host-name lookups bounded by the request's deadline.

`getaddrinfo` blocks in C for as long as the system resolver tries (5 s per
attempt and name server by default), and no socket timeout covers it. A guest
granted a wildcard (`redis://*:6379`, `https://*.example.com`) picks the names:
one whose DNS never answers would hold the guest's thread past its deadline,
whatever the connect and read timeouts say.

`install()` replaces `socket.getaddrinfo`, which is what the outbound clients
call (socket.create_connection, so httpx's transport and paho-mqtt; redis-py
directly). On a thread serving a request (host/deadline.py: a deadline is
set) the lookup runs on a resolver thread and the caller waits at most the
time left; outside requests, and for numeric addresses, it is the original.
A lookup cut short raises `socket.gaierror(EAI_AGAIN)` naming the deadline,
which each capability reports as its own error (wasi:http: DNS-timeout). It
is not cancelled (C cannot be), so it keeps its resolver thread until the
system resolver gives up: at most MAX_LOOKUPS run at once, and a lookup that
finds them all busy waits its turn within the same time left.

PostgreSQL's libpq resolves in C: host/capabilities/postgres.py looks the name
up here first and hands libpq the addresses (`hostaddr`).
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from host.deadline import DeadlineExceeded, deadline, time_left

MAX_LOOKUPS = 8  # resolver threads: lookups running at once
# Longer than any resolver's own timeouts; the deadline is what bounds a request.
UNBOUNDED_SECONDS = 3600.0
TIMED_OUT = "name lookup did not finish before the request's deadline"

_original = socket.getaddrinfo
_queue: queue.SimpleQueue[tuple[Future[list[Any]], tuple[Any, ...]]] = queue.SimpleQueue()
_started = False
_start_lock = threading.Lock()


def install() -> None:
    """Route `socket.getaddrinfo` through `getaddrinfo` below (idempotent)."""
    socket.getaddrinfo = getaddrinfo


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                flags: int = 0) -> list[Any]:
    """`socket.getaddrinfo`, bounded by the current request's deadline if there is one."""
    if deadline() is None or _numeric(host):
        return _original(host, port, family, type, proto, flags)
    try:
        left = time_left(UNBOUNDED_SECONDS)
    except DeadlineExceeded:
        raise socket.gaierror(socket.EAI_AGAIN, TIMED_OUT) from None
    _start()
    future: Future[list[Any]] = Future()
    _queue.put((future, (host, port, family, type, proto, flags)))
    try:
        return future.result(timeout=left)
    except FutureTimeout:
        future.cancel()  # still queued: never runs
        raise socket.gaierror(socket.EAI_AGAIN, TIMED_OUT) from None


def addresses(host: str, port: int) -> list[str]:
    """The addresses of `host` for a TCP connection, bounded as `getaddrinfo`; in the
    resolver's order, without repeats."""
    found: list[str] = []
    for *_, sockaddr in getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        if sockaddr[0] not in found:
            found.append(str(sockaddr[0]))
    return found


def _numeric(host: Any) -> bool:
    if host is None:
        return True
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: scope ids too
    except ValueError:
        return False
    return True


def _start() -> None:
    # Daemon threads (not a ThreadPoolExecutor, whose threads the interpreter
    # waits for at exit): a lookup stuck in the resolver must not hold up a
    # shutdown whose requests have all ended.
    global _started
    if _started:
        return
    with _start_lock:
        if not _started:
            for number in range(MAX_LOOKUPS):
                threading.Thread(target=_work, name=f"resolve-{number}", daemon=True).start()
            _started = True


def _work() -> None:
    while True:
        future, args = _queue.get()
        if not future.set_running_or_notify_cancel():
            continue  # its caller stopped waiting before it ran
        try:
            future.set_result(_original(*args))
        except BaseException as exc:  # noqa: BLE001 - the caller re-raises it
            future.set_exception(exc)
