"""The ASGI application: built-in endpoints, Spin routing, spin-* headers, executors.

The request path reads top to bottom in `HostApp.__call__`: well-known
endpoints, route match, body, headers, admission, executor (off the event
loop), response. Guest failures become responses in one place (the `except`
clauses there): the client gets a bare status, the log gets the component id
and the reason.

Admission (`_Gate`) bounds, per component, the requests running and waiting,
and, process-wide, the request bytes being handed to component executors
(`_BodyBudget`): a body crosses into a component as one list<u8>, at ~85 bytes
of host memory per byte (bench/memory.py), so concurrent large bodies wait
their turn instead of exhausting the machine.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from host.app import App
from host.errors import CgiError, GuestError, GuestTimeout, GuestTrap
from host.executors.component import ComponentExecutor
from host.executors.wasi_http import WasiHttpExecutor
from host.limits import HttpLimits
from host.routing import WELL_KNOWN_PREFIX, RouteMatch
from host.runtime.abi import HttpRequest, HttpResponse
from host.streams import AsgiBody, AsgiResponse, response_head

log = logging.getLogger("host.server")

T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ResponseWatch:
    """An ASGI `send` that notes the response's status and body bytes on their way out,
    for the wrappers that observe requests (access log, metrics, tracing)."""

    __slots__ = ("_send", "status", "sent")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None
        self.sent = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self._send(message)

    def raised(self) -> None:
        """The app raised: uvicorn answers 500 unless a status already went out."""
        if self.status is None:
            self.status = 500

# What the request path tells the layers that observe it (host/access_log.py,
# host/metrics.py, host/tracing.py), in the ASGI scope: the matched component's
# id, its route as written in the manifest, and why a guest call failed
# (`failure_kind`).
COMPONENT_KEY = "spinhost.component"
ROUTE_KEY = "spinhost.route"
FAILURE_KEY = "spinhost.failure"


class _BodyBudget:
    """Process-wide admission of request body bytes, granted in arrival order.

    A body that does not fit waits, and so do the bodies behind it: a large one
    is not starved by a stream of small ones. Requests without a body pass.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def fits(self, size: int) -> bool:
        """Whether `size` bytes would be granted at once."""
        return size == 0 or (not self._waiters and self.in_use + size <= self.capacity)

    async def acquire(self, size: int) -> None:
        if self.fits(size):
            self.in_use += size
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (size, future)
        self._waiters.append(waiter)
        try:
            await future
        except asyncio.CancelledError:
            if not future.cancelled():
                self.release(size)  # granted just as its request was cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._grant()  # the ones behind it may fit now
            raise

    def release(self, size: int) -> None:
        self.in_use -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():  # cancelled, its request gone
                self._waiters.popleft()
                continue
            if self.in_use + size > self.capacity:
                return
            self._waiters.popleft()
            self.in_use += size
            future.set_result(None)


class _Gate:
    """Per-component admission: a bounded number running, a bounded number waiting.

    A request runs once it has a slot and its body's bytes (`cost`) from the
    process-wide budget; until then it waits in this component's queue.
    """

    def __init__(self, limits: HttpLimits, bodies: _BodyBudget) -> None:
        self.slots = asyncio.Semaphore(limits.max_concurrent)
        self.max_queued = limits.max_queued
        self.bodies = bodies
        self.waiting = 0
        self.running = 0

    def full(self, cost: int) -> bool:
        """No room to run now, and no room in the queue."""
        return self.waiting >= self.max_queued and (
            self.slots.locked() or not self.bodies.fits(cost))

    async def enter(self, cost: int) -> None:
        self.waiting += 1
        try:
            # Bytes first: a request waiting for them holds no slot, so requests
            # without a body keep running meanwhile.
            await self.bodies.acquire(cost)
            try:
                await self.slots.acquire()
            except BaseException:
                self.bodies.release(cost)
                raise
        finally:
            self.waiting -= 1
        self.running += 1

    def leave(self, cost: int) -> None:
        self.running -= 1
        self.slots.release()
        self.bodies.release(cost)


class HostApp:
    def __init__(self, app: App, scheme: str = "http", limits: HttpLimits | None = None,
                 image_digest: str | None = None) -> None:
        self.app = app
        self.scheme = scheme
        self.limits = limits or HttpLimits()
        # One admission gate per executor (component executors are shared by triggers),
        # one budget for the request bodies all component executors are handed.
        self._bodies = _BodyBudget(self.limits.max_body_bytes_in_flight)
        self._gates = {id(e): _Gate(self.limits, self._bodies) for e in app.executors.values()}
        # Guest calls block (wasm runs until it returns or its deadline), so they run
        # on worker threads and the event loop keeps serving; sized by HttpLimits.
        threads = self.limits.guest_threads(len(self._gates))
        self._guest_threads = ThreadPoolExecutor(max_workers=threads,
                                                 thread_name_prefix="guest")
        if threads < self.limits.max_concurrent * len(self._gates):
            log.warning("%d guest threads for %d components running up to %d requests each: "
                        "requests past %d wait for a thread (--max-guest-threads)", threads,
                        len(self._gates), self.limits.max_concurrent, threads)
        # Guest calls running on worker threads, counted on those threads: a call
        # keeps running (until its deadline) even if its request task is cancelled.
        self.in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._warned_no_match = False
        self._image_digest = image_digest
        self._info = self._describe(app)

    def use(self, app: App) -> None:
        """Serve `app` from the next request on (`host watch`, host/reload.py); requests
        already running finish with the executors they took. Call it on the event loop."""
        for executor in app.executors.values():
            if id(executor) not in self._gates:
                self._gates[id(executor)] = _Gate(self.limits, self._bodies)
        self._info = self._describe(app)
        self.app = app

    def forget(self, executors: Iterable[object]) -> None:
        """Drop the admission gates of executors no request can reach any more."""
        for executor in executors:
            self._gates.pop(id(executor), None)

    def _describe(self, app: App) -> bytes:
        info: dict[str, str] = {"name": app.manifest.application.name}
        if app.manifest.application.version is not None:
            info["version"] = app.manifest.application.version
        if self._image_digest is not None:  # served from an OCI image, as Spin reports it
            info["oci_image_digest"] = self._image_digest
        return json.dumps(info, indent=2).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app  # one version per request: `host watch` swaps self.app (`use`)
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets are not part of Spin's HTTP trigger
            return
        limits = self.limits
        headers_in = scope["headers"]
        if (len(headers_in) > limits.max_header_count
                or sum(len(n) + len(v) for n, v in headers_in) > limits.max_header_bytes):
            await _respond(send, 431)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        raw_path = path.decode("latin-1").split("?", 1)[0]
        if raw_path.startswith(WELL_KNOWN_PREFIX):
            await self._well_known(raw_path, send)
            return
        match = app.router.match(raw_path)
        if match is None:
            if not self._warned_no_match:
                self._warned_no_match = True
                log.warning(
                    "no route matched %s; add a catch-all route (route = \"/...\") "
                    "to handle every path", raw_path,
                )
            await _respond(send, 404)
            return
        scope[COMPONENT_KEY] = match.route.component
        scope[ROUTE_KEY] = match.route.raw
        static = app.static_responses.get(match.route.target)
        if static is not None:
            headers = [(k.encode(), v.encode()) for k, v in static.headers.items()]
            await _respond(send, static.status, headers, static.body.encode())
            return
        executor = app.executors[match.route.target]
        if isinstance(executor, WasiHttpExecutor):
            await self._stream(executor, scope, receive, send, raw_path, match)
            return
        # A component is handed the body as one list<u8>: one larger than the whole
        # in-flight budget could never be admitted. WAGI programs read stdin.
        component = isinstance(executor, ComponentExecutor)
        body_limit = (min(limits.max_body_bytes, limits.max_body_bytes_in_flight) if component
                      else limits.max_body_bytes)
        declared = _declared_length(headers_in)
        if declared > body_limit:
            self._refuse_body(executor.id, f"of {declared} bytes", body_limit)
            await _respond(send, 413)  # refused before reading a byte of it
            return
        body = await _read_body(receive, body_limit)
        if body is None:
            return  # the client went away: nobody is left to answer
        if isinstance(body, _TooLarge):
            self._refuse_body(executor.id, f"of more than {body_limit} bytes", body_limit)
            await _respond(send, 413)
            return
        gate = self._gates[id(executor)]
        cost = len(body) if component else 0
        if gate.full(cost):
            await self._busy(executor.id, gate, send)
            return
        request = self._build_request(scope, raw_path, match, body)
        try:
            await gate.enter(cost)
            try:
                response: HttpResponse = await asyncio.get_running_loop().run_in_executor(
                    self._guest_threads, contextvars.copy_context().run, self._counted,
                    executor.handle, request)
            finally:
                gate.leave(cost)
            status, headers = _check_response(response, limits.max_response_bytes)
        except CgiError as exc:
            log.error("Error processing request: component %s: %s", executor.id, exc)
            scope[FAILURE_KEY] = failure_kind(exc)
            await _respond(send, exc.status, [], exc.body)
            return
        except GuestError as exc:
            log.error("Error processing request: component %s: %s", executor.id, exc)
            scope[FAILURE_KEY] = failure_kind(exc)
            await _respond(send, 504 if isinstance(exc, GuestTimeout) else 500)
            return
        except Exception as exc:
            # Not the guest's doing: a host bug, logged with its traceback.
            log.exception("Host error processing request: component %s", executor.id)
            scope[FAILURE_KEY] = failure_kind(exc)
            await _respond(send, 500)
            return
        await _respond(send, status, headers, response.body)

    async def _stream(self, executor: WasiHttpExecutor, scope: Scope, receive: Receive,
                      send: Send, raw_path: str, match: RouteMatch) -> None:
        """Serve a wasi:http component: bodies stream both ways while the guest runs.

        The body is not buffered, so it does not count against the in-flight body
        budget: a request holds about one chunk of it at a time (host/streams.py).
        --max-body-bytes still applies, as the bytes arrive.
        """
        limits = self.limits
        if _declared_length(scope["headers"]) > limits.max_body_bytes:
            await _respond(send, 413)
            return
        gate = self._gates[id(executor)]
        if gate.full(0):
            await self._busy(executor.id, gate, send)
            return
        loop = asyncio.get_running_loop()
        request = self._build_request(scope, raw_path, match, b"")
        body = AsgiBody(loop, receive, limits.max_body_bytes)
        response = AsgiResponse(loop, send, limits.max_response_bytes)
        try:
            await gate.enter(0)
            try:
                await loop.run_in_executor(self._guest_threads, contextvars.copy_context().run,
                                           self._counted, executor.handle, request, body,
                                           response)
            finally:
                gate.leave(0)
                await response.drained()  # what the guest wrote goes out before we return
            return
        except GuestError as exc:
            log.error("Error processing request: component %s: %s", executor.id, exc)
            scope[FAILURE_KEY] = failure_kind(exc)
            status = 504 if isinstance(exc, GuestTimeout) else 500
        except Exception as exc:
            log.exception("Host error processing request: component %s", executor.id)
            scope[FAILURE_KEY] = failure_kind(exc)
            status = 500
        if response.started:
            # Too late for a status: returning with the response incomplete makes
            # uvicorn close the connection, so the client sees a truncated body.
            log.error("component %s: response already started; closing the connection",
                      executor.id)
            return
        await _respond(send, status)

    async def _busy(self, component_id: str, gate: _Gate, send: Send) -> None:
        limits = self.limits
        log.warning("component %s: no room to run (at most %d requests; request bodies "
                    "in flight %d of %d bytes) and %d queued; answering 503", component_id,
                    limits.max_concurrent, self._bodies.in_use, self._bodies.capacity,
                    gate.waiting)
        retry = str(limits.retry_after_seconds).encode()
        await _respond(send, 503, [(b"retry-after", retry)])

    def _refuse_body(self, component_id: str, size: str, limit: int) -> None:
        """Log a 413 that the in-flight budget (not --max-body-bytes) decided."""
        if limit < self.limits.max_body_bytes:
            log.warning("component %s: request body %s is larger than "
                        "--max-body-bytes-in-flight (%d): a body crossing into a component "
                        "costs 85-200 bytes of host memory per byte; answering 413",
                        component_id, size, limit)

    def admission(self) -> list[tuple[str, int, int]]:
        """(component id, requests running, requests queued) per executor, for metrics."""
        executors = {id(e): e for e in self.app.executors.values()}
        return [(executors[key].id, gate.running, gate.waiting)
                for key, gate in self._gates.items() if key in executors]

    def _counted(self, call: Callable[..., T], *args: Any) -> T:
        """Run a guest call on this worker thread, counted in `in_flight` while it runs."""
        with self._in_flight_lock:
            self.in_flight += 1
        try:
            return call(*args)
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1

    def _build_request(
        self, scope: Scope, raw_path: str, match: RouteMatch, body: bytes
    ) -> HttpRequest:
        query = scope.get("query_string", b"").decode("latin-1")
        path_with_query = f"{raw_path}?{query}" if query else raw_path
        headers: list[tuple[str, bytes]] = []
        host: str | None = None
        for name_b, value in scope["headers"]:
            name = name_b.decode("latin-1").lower()
            if name.startswith("spin-") or name == "connection":
                continue  # [ours] the guest sees only host-computed spin-* values
            if name == "host":
                host = value.decode("latin-1")
            headers.append((name, value))
        client = scope.get("client")
        spin = spin_headers(match, self.scheme, host, path_with_query,
                            f"{client[0]}:{client[1]}" if client else "")
        headers.extend((name, value.encode("latin-1", "replace")) for name, value in spin)
        return HttpRequest(
            method=scope["method"],
            scheme=self.scheme,
            authority=host,
            path_with_query=path_with_query,
            headers=headers,
            body=body,
        )

    async def _well_known(self, path: str, send: Send) -> None:
        if path == WELL_KNOWN_PREFIX + "health":
            await _respond(send, 200, [], b"OK")
        elif path == WELL_KNOWN_PREFIX + "info":
            await _respond(send, 200, [(b"content-type", b"application/json")], self._info)
        else:
            await _respond(send, 404)


def failure_kind(exc: BaseException) -> str:
    """Why a request's guest call failed, as metrics and traces name it."""
    if isinstance(exc, GuestTimeout):
        return "deadline"
    if isinstance(exc, GuestTrap):
        return "trap"
    return "guest" if isinstance(exc, GuestError) else "host"


def spin_headers(
    match: RouteMatch, scheme: str, host: str | None, path_with_query: str, client_addr: str
) -> list[tuple[str, str]]:
    """The spin-* request headers, with Spin's value formats (SPIN.md section 3)."""
    route = match.route
    headers = [
        ("spin-full-url", f"{scheme}://{host or 'localhost'}{path_with_query}"),
        ("spin-path-info", match.path_info),
        ("spin-matched-route", route.based),
        ("spin-base-path", "/"),
        ("spin-raw-component-route", route.raw),
        ("spin-component-route", route.component_route),
        ("spin-client-addr", client_addr),
    ]
    headers.extend(
        (f"spin-path-match-{name.lower().replace('_', '-')}", value)
        for name, value in match.params
    )
    return headers


def _check_response(response: HttpResponse,
                    max_bytes: int) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Validate what the guest returned; anything malformed is a guest error."""
    try:
        headers = response_head(response.status, response.headers)
    except ValueError as exc:
        raise GuestError(str(exc)) from None
    if len(response.body) > max_bytes:
        raise GuestError(f"response body of {len(response.body)} bytes exceeds the limit of "
                         f"{max_bytes} bytes (--max-response-bytes)")
    return response.status, headers


class _TooLarge:
    """Marker: the body grew past the limit (reading stopped there)."""


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the HTTP layer rejects malformed lengths itself
    return 0


async def _read_body(receive: Receive, limit: int) -> bytes | _TooLarge | None:
    """The whole request body; None if the client disconnected first; _TooLarge past
    `limit` (chunked bodies have no declared length, so this is checked as they arrive)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
) -> None:
    # Raw ASGI messages: the only header added is content-length (also for an
    # empty body); no default content-type, and uvicorn adds no server header.
    raw = list(headers or [])
    if status < 200 or status in (204, 304):
        body = b""  # these statuses carry neither a body nor a content-length
    else:
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
