"""Outbound HTTP: `spinhost:http/outgoing-handler`, checked against the allow-list.

Requests go through one shared `httpx.Client` (connection pooling, no
redirects followed: the guest sees the 3xx as wasi-http does). The guest's
call blocks only its own worker thread, so a slow upstream never stops the
host serving other requests.

The URL that is checked is the URL that is connected to. The guest's fields
are parsed once (`Target`): the authority must be exactly `host[:port]` and
the path must start with `/`; anything two URL parsers could read as
different hosts (userinfo, a backslash, spaces, control characters,
non-ASCII) answers `HTTP-request-URI-invalid`. The allow-list is asked about
that host and port, and the request goes to an `httpx.URL` built from those
same parts, so no guest text is ever parsed again into another host.

A destination outside `allowed_outbound_hosts` answers `HTTP-request-denied`
and logs Spin's line naming it and the entry that would allow it. A request
without an authority (or to `self.alt`) goes to the app itself and needs
`self` (or `*`).

Every call ends by its request's deadline (`host.deadline`): each timeout is
the time left, capped by `OutboundLimits`, and a watchdog shuts the socket
down at the deadline, so no upstream, however slowly it answers, holds the
guest past it. Each call is logged at INFO as one line with its origin and
outcome, never its path, query or credentials.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import wasmtime.component as wc

from host import resolve, tracing
from host.capabilities import AppContext, Capability, Err, Factor, Ok
from host.capabilities.allowed_hosts import (
    DEFAULT_PORTS,
    SELF_HOSTS,
    AllowedHostError,
    AllowList,
    request_host,
    resolve_template,
    split_authority,
)
from host.capabilities.variables import VariablesFactor
from host.deadline import DeadlineExceeded, deadline, expired, time_left
from host.errors import ConfigError
from host.limits import OutboundLimits
from host.manifest import Component

log = logging.getLogger("host.outbound")

OUTGOING_HANDLER = "spinhost:http/outgoing-handler@0.1.0"
SCHEMES = ("http", "https")

# A path-with-query: "/" then printable ASCII, no space and no "#" (a fragment
# is never sent). httpx percent-encodes what RFC 3986 does not allow; nothing
# here can reach the authority, since the URL is built from parts.
_PATH = re.compile(r'/[!"$-~]*\Z')
# A method is an RFC 9110 token; it also appears in the log line.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}\Z")

# Framing and routing headers come from the URL and the body, never from the guest.
_HOST_MANAGED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                 "upgrade", "te", "trailer", "proxy-connection"}

_WITH_PAYLOAD = {"DNS-error", "HTTP-request-body-size", "HTTP-response-body-size",
                 "internal-error"}

_DNS_FAILURES = ("Name or service not known", "nodename nor servname",
                 "Temporary failure in name resolution")


@dataclass(frozen=True)
class Target:
    """Where one request goes, from parts already checked: the only source of its URL."""

    scheme: str
    host: str  # a lowercase name or an IP address (IPv6 without brackets)
    port: int | None  # None: the scheme's default
    path: str  # path and query, starting with "/"
    own: bool = False  # the host's own listener (a `self` request)

    @property
    def url(self) -> httpx.URL:
        return httpx.URL(scheme=self.scheme, host=self.host, port=self.port,
                         raw_path=self.path.encode("ascii"))

    @property
    def origin(self) -> str:
        """`scheme://host:port`, for logs: never the path, query or credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = DEFAULT_PORTS[self.scheme] if self.port is None else self.port
        return f"{self.scheme}://{host}:{port}"


class OutboundClient:
    """The process-wide HTTP client every component's outbound calls share."""

    def __init__(self, limits: OutboundLimits | None = None,
                 self_origin: str | None = None,
                 self_certificate: Path | None = None) -> None:
        self.limits = s = limits or OutboundLimits()
        # Where `self` requests go, e.g. http://127.0.0.1:3000 (the host's own listener).
        self.self_origin: Target | None = None
        if self_origin is not None:
            url = httpx.URL(self_origin)
            self.self_origin = Target(url.scheme, url.host, url.port, "/", own=True)
        self._self_certificate = self_certificate
        self._client: httpx.Client | None = None
        self._own_client: httpx.Client | None = None
        self._ceilings = httpx.Timeout(connect=s.connect_timeout_seconds,
                                       read=s.read_timeout_seconds,
                                       write=s.write_timeout_seconds,
                                       pool=s.pool_timeout_seconds)
        self._limits = httpx.Limits(max_connections=s.max_connections)
        self.watchdog = _Watchdog()

    @property
    def client(self) -> httpx.Client:
        if self._client is None:  # made on first use: most apps never call out
            self._client = httpx.Client(timeout=self._ceilings, limits=self._limits,
                                        follow_redirects=False, trust_env=False)
        return self._client

    @property
    def own_client(self) -> httpx.Client:
        """The client for `self` requests. Over HTTPS it trusts exactly the host's own
        certificate, whatever names it carries: it reaches the listener by a loopback
        address the certificate need not name, and a public CA's certificate is not
        needed to know it is talking to itself."""
        if self._self_certificate is None:
            return self.client
        if self._own_client is None:
            context = ssl.create_default_context(cafile=str(self._self_certificate))
            context.check_hostname = False  # the pinned certificate is the identity
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf too
            self._own_client = httpx.Client(timeout=self._ceilings, limits=self._limits,
                                            follow_redirects=False, trust_env=False,
                                            verify=context)
        return self._own_client

    def timeout(self) -> httpx.Timeout:
        """Each ceiling of OutboundLimits cut to the time left before the request's deadline.

        Raises DeadlineExceeded when no time is left.
        """
        s = self.limits
        return httpx.Timeout(connect=time_left(s.connect_timeout_seconds),
                             read=time_left(s.read_timeout_seconds),
                             write=time_left(s.write_timeout_seconds),
                             pool=time_left(s.pool_timeout_seconds))

    def close(self) -> None:
        for client in (self._client, self._own_client):
            if client is not None:
                client.close()


def _error(case: str, payload: Any = None) -> Err:
    return Err(wc.Variant(case, payload) if payload is not None or case in _WITH_PAYLOAD
               else wc.Variant(case))


def _method(value: Any) -> str:
    return str(value.payload) if value.tag == "other" else value.tag.upper()


def _scheme(value: Any) -> str:
    if value is None:
        return "http"
    return str(value.payload).lower() if value.tag == "other" else value.tag.lower()


class OutboundFactor(Factor):
    """One HTTP client for the app; each component's allow-list, variables resolved."""

    manifest_keys = ("allowed_outbound_hosts",)

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self.client = OutboundClient(app.settings.outbound_limits, app.settings.self_origin,
                                     app.settings.self_certificate)
        self.variables = app.factor(VariablesFactor).values

    def for_component(self, component: Component) -> Outbound:
        try:
            allowed = AllowList.parse(resolve_template(e, self.variables)
                                      for e in component.allowed_outbound_hosts)
        except AllowedHostError as exc:
            raise ConfigError(
                f"{self.app.manifest.path}: [component.{component.id}] allowed_outbound_hosts: "
                f"after resolving variables: {exc}"
            ) from None
        return Outbound(component.id, allowed, self.client)

    def close(self) -> None:
        self.client.close()


class Outbound(Capability):
    interfaces = (OUTGOING_HANDLER,)
    traced = False  # a client span per request sent, for wasi:http's calls too (`handle`)

    def __init__(self, component_id: str, allowed: AllowList, client: OutboundClient) -> None:
        super().__init__(component_id)
        self.allowed = allowed
        self.http = client

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        return {"handle": self.handle}

    def handle(self, store: Any, request: Any) -> Ok | Err:
        fields = request.__dict__  # a wc.Record: attributes keep their kebab-case names
        method = _method(fields["method"])
        if not _TOKEN.match(method):
            return _error("HTTP-protocol-error")  # h11 would refuse to send it
        target = self._target(fields["scheme"], fields["authority"],
                              fields["path-with-query"] or "/")
        if isinstance(target, Err):
            return target
        started = time.monotonic()
        port = DEFAULT_PORTS[target.scheme] if target.port is None else target.port
        with tracing.outbound(self.component_id, method, target.scheme, target.host,
                              port) as span:
            result = self._send(method, target, fields["headers"], fields["body"])
            outcome = result.value[0] if isinstance(result, Ok) else result.value.tag
            tracing.outbound_result(span, *((outcome, None) if isinstance(result, Ok)
                                            else (None, outcome)))
        log.info('component "%s": %s %s -> %s in %d ms', self.component_id, method,
                 target.origin, outcome, (time.monotonic() - started) * 1000)
        return result

    def _target(self, scheme_field: Any, authority: str | None, path: str) -> Target | Err:
        """Parse and check the guest's scheme, authority and path, once."""
        if not _PATH.match(path):
            return self._invalid("its path must start with / and hold printable ASCII only, "
                                 "without spaces or #")
        if not authority:
            return self._self_target(path)
        scheme = _scheme(scheme_field)
        if scheme not in SCHEMES:
            return _error("HTTP-protocol-error")  # as wasmtime's wasi-http answers
        parts = split_authority(authority)
        if parts is None:
            return self._invalid("its authority must be host[:port], without userinfo, "
                                 "backslashes, spaces or control characters")
        host, port = parts
        if host.lower() in SELF_HOSTS:
            return self._self_target(path)
        address = request_host(host)
        if address is None or not self.allowed.allows(scheme, host, port):
            return self._deny(f"{scheme}://{authority}")
        return Target(scheme, str(address), port, path)

    def _self_target(self, path: str) -> Target | Err:
        if not self.allowed.allows_self() or self.http.self_origin is None:
            return self._deny("self", hint='"http://self"')
        return dataclasses.replace(self.http.self_origin, path=path)

    def _deny(self, destination: str, hint: str | None = None) -> Err:
        log.warning(
            'component "%s": A component tried to make an outbound network connection to '
            "disallowed destination '%s'. To allow this request, add "
            "'allowed_outbound_hosts = [%s]' to its [component.%s] table.",
            self.component_id, destination, hint or f'"{destination}"', self.component_id,
        )
        return _error("HTTP-request-denied")

    def _invalid(self, reason: str) -> Err:
        # The guest's text is not echoed: it is not a destination, and may hold credentials.
        log.warning('component "%s": outbound request refused: %s', self.component_id, reason)
        return _error("HTTP-request-URI-invalid")

    def _send(self, method: str, target: Target, headers: list[tuple[str, bytes]],
              body: bytes) -> Ok | Err:
        try:
            timeout = self.http.timeout()
        except DeadlineExceeded:
            return _error("connection-timeout")
        sent = tracing.inject([(k.encode(), v) for k, v in headers
                               if k.lower() not in _HOST_MANAGED])
        watched = self.http.watchdog.call(deadline())
        try:
            client = self.http.own_client if target.own else self.http.client
            with client.stream(method, target.url, headers=sent, content=body, timeout=timeout,
                               extensions={"trace": watched.trace}) as response:
                try:
                    watched.watch(response.extensions.get("network_stream"))
                    return self._receive(response)
                finally:
                    watched.cancel()  # before the connection goes back to the pool
        except httpx.HTTPError as exc:
            return _failure(exc, late=expired())
        finally:
            watched.cancel()

    def _receive(self, response: httpx.Response) -> Ok | Err:
        limit = self.http.limits.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            if expired():
                return _error("HTTP-response-timeout")
            size += len(chunk)
            if size > limit:
                return _error("HTTP-response-body-size", size)
            chunks.append(chunk)
        headers = [(k.decode("latin-1").lower(), v) for k, v in response.headers.raw
                   if k.lower() not in (b"transfer-encoding", b"connection")]
        return Ok((response.status_code, headers, b"".join(chunks)))


def _failure(exc: httpx.HTTPError, late: bool) -> Err:
    """The error case for a failed exchange; `late`: the request's deadline had passed."""
    connecting = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if isinstance(exc, httpx.ConnectError) and resolve.TIMED_OUT in str(exc):
        return _error("DNS-timeout")  # the lookup itself ran into the deadline
    if late:  # cut by a deadline-sized timeout or by the watchdog
        return _error("connection-timeout" if connecting else "HTTP-response-timeout")
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return _error("connection-timeout")
    if isinstance(exc, httpx.TimeoutException):
        return _error("HTTP-response-timeout")
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if any(failure in text for failure in _DNS_FAILURES):
            return _error("DNS-error", None)
        if "refused" in text.lower():
            return _error("connection-refused")
        return _error("destination-unavailable")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return _error("HTTP-protocol-error")
    if isinstance(exc, httpx.InvalidURL):
        return _error("HTTP-request-URI-invalid")
    return _error("internal-error", str(exc) or type(exc).__name__)


class _Watchdog:
    """Shuts down, at their request's deadline, the sockets of calls still running.

    Timeouts bound each wait, not the call: an upstream sending a byte just
    before every read timeout would hold the guest's thread long past its
    deadline. Shutting the socket down from this thread wakes a blocked read
    or write at once (unlike close, shutdown is safe while another thread uses
    the socket and never frees the descriptor under it); the call then fails
    and, its deadline having passed, answers a timeout. One thread serves
    every call of the process: a timer thread per call would cost more than a
    loopback request.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._due: list[tuple[float, int, _Call]] = []  # a heap, earliest first
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call(self, at: float | None) -> _Call:
        """A call to watch until `at` (a time.monotonic() value; None: not at all)."""
        call = _Call(self)
        if at is not None:
            with self._lock:
                call.entry = (at, next(self._order), call)
                heapq.heappush(self._due, call.entry)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="outbound-watchdog",
                                                    daemon=True)
                    self._thread.start()
                if self._due[0] is call.entry:  # the earliest now: wake up sooner
                    self._lock.notify()
        return call

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._due:
                    self._lock.wait()
                    continue
                at, _, call = self._due[0]
                left = at - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                heapq.heappop(self._due)
                call.entry = None
                call.fired = True
                if call.socket is not None:
                    _shutdown(call.socket)

    def attach(self, call: _Call, sock: socket.socket) -> None:
        with self._lock:
            call.socket = sock
            if call.fired:
                _shutdown(sock)

    def forget(self, call: _Call) -> None:
        with self._lock:
            call.socket = None
            if call.entry is not None:
                self._due.remove(call.entry)
                heapq.heapify(self._due)
                call.entry = None


class _Call:
    """One watched call: the socket it is using, once known.

    The socket is known from the moment a new connection is made (httpx's
    `trace` extension), or from the response head on a pooled connection.
    """

    def __init__(self, watchdog: _Watchdog) -> None:
        self.watchdog = watchdog
        self.entry: tuple[float, int, _Call] | None = None
        self.socket: socket.socket | None = None
        self.fired = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.watch(info["return_value"])

    def watch(self, stream: Any) -> None:
        """Watch the socket under an httpcore network stream (None: nothing to watch)."""
        sock = None if stream is None else stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            self.watchdog.attach(self, sock)

    def cancel(self) -> None:
        """Stop watching: the connection may go back to the pool."""
        self.watchdog.forget(self)


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's method, also for a TLS socket: ssl.SSLSocket.shutdown
        # would unwrap the TLS object under the thread that is reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or shut down
