"""host/capabilities/outbound.py: the URL checked is the URL connected to; the deadline holds.

The capability is driven directly (no wasm): a request record is a namespace
with the WIT field names. Two loopback servers stand for the granted upstream
A and a forbidden B; B records every hit, and no crafted request may reach it.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import pytest
import wasmtime.component as wc
from hypothesis import HealthCheck, given, settings

from host.capabilities import Err, Ok
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.outbound import Outbound, OutboundClient, Target
from host.deadline import request_deadline
from host.limits import OutboundLimits

# ---------------------------------------------------------------------------
# Loopback servers


class Recorder(http.server.ThreadingHTTPServer):
    """Records (method, path, Host header, client port) of every request it receives."""

    daemon_threads = True
    hits: list[tuple[str, str, str | None, int]]
    other_port: int
    release: threading.Event


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections can be observed

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.hits.append((self.command, self.path, self.headers.get("host"),
                                 self.client_address[1]))
        if self.path.startswith("/slow"):  # the head comes only when released
            self.server.release.wait(30)
        if self.path.startswith("/stall"):  # a head, one byte 0.8 s later, then silence
            self._head(200, 10)
            if not self.server.release.wait(0.8):
                self.wfile.write(b"x")
                self.wfile.flush()
                self.server.release.wait(30)
            return
        if self.path.startswith("/drip"):  # a byte every 50 ms: never a read timeout
            self._head(200, 10_000)
            for _ in range(10_000):
                if self.server.release.wait(0.05):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
            return
        if self.path.startswith("/redirect"):
            self._head(302, 0, location=f"http://127.0.0.1:{self.server.other_port}/")
            return
        body = b"x" * 1000 if self.path.startswith("/big") else b"ok"
        self._head(200, len(body))
        self.wfile.write(body)

    def _head(self, status: int, length: int, location: str | None = None) -> None:
        self.send_response(status)
        self.send_header("content-length", str(length))
        if location:
            self.send_header("location", location)
        self.end_headers()
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def _serve() -> Recorder:
    server = Recorder(("127.0.0.1", 0), _Handler)
    server.hits, server.release, server.other_port = [], threading.Event(), 0
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    """(A, B): A is granted, B must never be reached."""
    a, b = _serve(), _serve()
    a.other_port, b.other_port = b.server_address[1], a.server_address[1]
    try:
        yield a, b
    finally:
        for server in (a, b):
            server.release.set()
            server.shutdown()
            server.server_close()


def port(server: Recorder) -> int:
    return int(server.server_address[1])


def outbound(entries: list[str], limits: OutboundLimits | None = None,
             self_origin: str | None = None) -> Outbound:
    return Outbound("probe", AllowList.parse(entries), OutboundClient(limits, self_origin))


def request(authority: str | None, path: str | None = "/", *, method: str = "get",
            scheme: str | None = "HTTP", headers: list[tuple[str, bytes]] | None = None,
            body: bytes = b"") -> Any:
    methods = {"get", "post", "put", "delete", "head", "options", "patch"}
    schemes = {"HTTP", "HTTPS"}
    return SimpleNamespace(**{
        "method": wc.Variant(method) if method in methods else wc.Variant("other", method),
        "scheme": None if scheme is None else
        wc.Variant(scheme) if scheme in schemes else wc.Variant("other", scheme),
        "authority": authority,
        "path-with-query": path,
        "headers": headers or [],
        "body": body,
    })


def error_case(result: Ok | Err) -> str:
    assert isinstance(result, Err), result
    return str(result.value.tag)


# ---------------------------------------------------------------------------
# The URL checked is the URL connected to

A, B = "{A}", "{B}"  # placeholders for the two servers' ports

# (authority, path, error case): crafted requests, none of which may reach B.
CRAFTED: list[tuple[str, str, str]] = [
    # httpx reads `127.0.0.1:A\` as userinfo and connects to B; the checker read A.
    (f"127.0.0.1:{A}\\@127.0.0.1:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", f"\\@127.0.0.1:{B}/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", f"@127.0.0.1:{B}/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", f"127.0.0.1:{B}/x", "HTTP-request-URI-invalid"),
    # userinfo, plain or smuggled
    (f"u@127.0.0.1:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"u:p@127.0.0.1:{A}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}@127.0.0.1:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}%40127.0.0.1:{B}", "/x", "HTTP-request-URI-invalid"),
    # delimiters inside the authority
    (f"127.0.0.1:{B}#@127.0.0.1:{A}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{B}?@127.0.0.1:{A}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{B}/@127.0.0.1:{A}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}/", "/x", "HTTP-request-URI-invalid"),
    # spaces, control characters, CR/LF, non-ASCII
    (f"127.0.0.1:{A} ", "/x", "HTTP-request-URI-invalid"),
    (f" 127.0.0.1:{A}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}\r\nHost: 127.0.0.1:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}\t", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}\x00", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", f"/x\r\nHost: 127.0.0.1:{B}", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", "/x y", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", "/x\ty", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", "/x\x7f", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", "/x#frag", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:{A}", "/b\u00fccher", "HTTP-request-URI-invalid"),
    (f"b\u00fccher.de:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1\uff0e1:{B}", "/x", "HTTP-request-URI-invalid"),  # fullwidth dot
    # malformed ports and brackets
    ("127.0.0.1:99999", "/x", "HTTP-request-URI-invalid"),
    (f"127.0.0.1:-{B}", "/x", "HTTP-request-URI-invalid"),
    (f"[::1:{B}", "/x", "HTTP-request-URI-invalid"),
    (f"[::1%lo]:{B}", "/x", "HTTP-request-URI-invalid"),
    # well-formed, but not the granted host: loopback spellings stay denied
    (f"127.0.0.1:{B}", "/x", "HTTP-request-denied"),
    (f"127.1:{B}", "/x", "HTTP-request-denied"),
    (f"127.1:{A}", "/x", "HTTP-request-denied"),
    (f"2130706433:{A}", "/x", "HTTP-request-denied"),
    (f"0x7f.0.0.1:{A}", "/x", "HTTP-request-denied"),
    (f"0177.0.0.1:{A}", "/x", "HTTP-request-denied"),
    (f"127.000.000.001:{A}", "/x", "HTTP-request-denied"),
    (f"127.0.0.1.:{A}", "/x", "HTTP-request-denied"),
    (f"[::ffff:127.0.0.1]:{A}", "/x", "HTTP-request-denied"),
    (f"[::ffff:7f00:1]:{A}", "/x", "HTTP-request-denied"),
    (f"[::1]:{A}", "/x", "HTTP-request-denied"),
    (f"localhost:{A}", "/x", "HTTP-request-denied"),
    (f"LOCALHOST:{A}", "/x", "HTTP-request-denied"),
]


def _fill(text: str, a: Recorder, b: Recorder) -> str:
    return text.replace(A, str(port(a))).replace(B, str(port(b)))


def test_crafted_urls_never_reach_another_host(servers: tuple[Recorder, Recorder]) -> None:
    a, b = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    for authority, path, expected in CRAFTED:
        result = cap.handle(None, request(_fill(authority, a, b), _fill(path, a, b)))
        assert error_case(result) == expected, (authority, path)
    assert b.hits == []
    assert a.hits == []  # nothing crafted went anywhere, not even to A
    ok = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/fine?x=1"))
    assert isinstance(ok, Ok) and ok.value[0] == 200
    assert [(m, p, h) for m, p, h, _ in a.hits] == [("GET", "/fine?x=1", f"127.0.0.1:{port(a)}")]


# (path, what A sees): odd but unambiguous paths go to A, as written or percent-encoded.
PATHS_TO_A = [
    ("/", "/"),
    ("//127.0.0.1:{B}/x", "/127.0.0.1:{B}/x"),  # sent as is; http.server collapses "//"
    ("/x/\\@127.0.0.1:{B}", "/x/\\@127.0.0.1:{B}"),
    ("/x?next=http://127.0.0.1:{B}/&a=@b", "/x?next=http://127.0.0.1:{B}/&a=@b"),
    ('/q?json={"a":1}', "/q?json={%22a%22:1}"),
    ("/%2e%2e/%2F", "/%2e%2e/%2F"),
]


def test_odd_paths_stay_on_the_checked_host(servers: tuple[Recorder, Recorder]) -> None:
    a, b = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    for path, seen in PATHS_TO_A:
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", _fill(path, a, b)))
        assert isinstance(result, Ok) and result.value[0] == 200, path
        assert a.hits[-1][1:3] == (_fill(seen, a, b), f"127.0.0.1:{port(a)}")
    assert b.hits == []


def test_host_header_cannot_be_overridden(servers: tuple[Recorder, Recorder]) -> None:
    a, b = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    headers = [("Host", f"127.0.0.1:{port(b)}".encode()), ("x-ok", b"1")]
    result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/h", headers=headers))
    assert isinstance(result, Ok)
    assert a.hits[-1][2] == f"127.0.0.1:{port(a)}"
    assert b.hits == []


@pytest.mark.parametrize("headers", [
    [("x-a", b"v\r\nHost: evil")],
    [("x-a\r\nHost", b"evil")],
    [("x a", b"v")],
])
def test_crlf_in_headers_is_refused(servers: tuple[Recorder, Recorder],
                                    headers: list[tuple[str, bytes]]) -> None:
    a, b = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/", headers=headers))
    assert error_case(result) == "HTTP-protocol-error"
    assert a.hits == [] and b.hits == []


def test_redirects_are_returned_not_followed(servers: tuple[Recorder, Recorder]) -> None:
    a, b = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/redirect"))
    assert isinstance(result, Ok) and result.value[0] == 302
    assert b.hits == []


@pytest.mark.parametrize("method,scheme,expected", [
    ("GET\r\nX: y", "HTTP", "HTTP-protocol-error"),
    ("GET /", "HTTP", "HTTP-protocol-error"),
    ("get", "ftp", "HTTP-protocol-error"),
    ("get", "ws", "HTTP-protocol-error"),
])
def test_bad_method_or_scheme(servers: tuple[Recorder, Recorder], method: str, scheme: str,
                              expected: str) -> None:
    a, _ = servers
    cap = outbound(["*://*:*"])
    result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/", method=method, scheme=scheme))
    assert error_case(result) == expected
    assert a.hits == []


def test_self_requests_go_to_the_self_origin(servers: tuple[Recorder, Recorder]) -> None:
    a, b = servers
    origin = f"http://127.0.0.1:{port(a)}"
    cap = outbound(["http://self"], self_origin=origin)
    for authority in (None, "", "self.alt"):
        result = cap.handle(None, request(authority, "/me?x=1", scheme=None))
        assert isinstance(result, Ok) and result.value[0] == 200, authority
    assert [hit[1] for hit in a.hits] == ["/me?x=1"] * 3
    assert error_case(cap.handle(None, request(None, "\\@127.0.0.1/x"))) == \
        "HTTP-request-URI-invalid"
    denied = outbound([f"http://127.0.0.1:{port(a)}"], self_origin=origin)
    assert error_case(denied.handle(None, request(None, "/me"))) == "HTTP-request-denied"
    assert b.hits == []


# Authorities made of the pieces attacks are built from: whatever the mix, a
# request is either refused or goes to exactly the granted host and port.
PIECES = ["127.0.0.1", "127.1", "localhost", ":", "{A}", "{B}", "@", "\\", "/", "?", "#",
          "%40", "%", "[", "]", "::1", " ", "\t", "\r\n", "u", ".", "0", "\u00fc"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(authority=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
       path=st.lists(st.sampled_from(PIECES), max_size=6).map("".join))
def test_any_mix_of_pieces_targets_the_granted_host_or_nothing(authority: str,
                                                               path: str) -> None:
    cap = outbound(["http://127.0.0.1:1000"])
    authority = authority.replace(A, "1000").replace(B, "2000")
    path = "/" + path.replace(A, "1000").replace(B, "2000")
    target = cap._target(wc.Variant("HTTP"), authority, path)
    if isinstance(target, Err):
        assert target.value.tag in ("HTTP-request-URI-invalid", "HTTP-request-denied")
        return
    assert (target.host, target.port) == ("127.0.0.1", 1000)
    url = target.url  # what httpx connects to
    assert (url.host, url.port, url.userinfo) == ("127.0.0.1", 1000, b"")


def test_target_url_is_built_from_parts() -> None:
    url = Target("http", "::1", 8080, "/a?b=1").url
    assert (url.host, url.port, url.raw_path) == ("::1", 8080, b"/a?b=1")
    assert Target("http", "::1", 8080, "/").origin == "http://[::1]:8080"
    assert Target("https", "example.com", None, "/").origin == "https://example.com:443"


# ---------------------------------------------------------------------------
# Deadlines: every call ends by its request's deadline


def test_slow_response_head_ends_at_the_deadline(servers: tuple[Recorder, Recorder]) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])  # ceilings: 30 s read
    started = time.monotonic()
    with request_deadline(0.5):
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/slow"))
    elapsed = time.monotonic() - started
    assert error_case(result) == "HTTP-response-timeout"
    assert 0.45 <= elapsed < 1.0


def test_dripping_body_ends_at_the_deadline(servers: tuple[Recorder, Recorder]) -> None:
    # A byte every 50 ms never trips a read timeout; only the deadline ends it.
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"],
                   OutboundLimits(read_timeout_seconds=0.3))
    started = time.monotonic()
    with request_deadline(1.0):
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/drip"))
    elapsed = time.monotonic() - started
    assert error_case(result) == "HTTP-response-timeout"
    assert 0.95 <= elapsed < 1.4


def test_blocked_read_is_woken_at_the_deadline(servers: tuple[Recorder, Recorder]) -> None:
    # Each read may wait the time left when the call began (1 s): the read
    # after the byte at 0.8 s would end at 1.8 s. The watchdog ends it at 1 s.
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    started = time.monotonic()
    with request_deadline(1.0):
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/stall"))
    elapsed = time.monotonic() - started
    assert error_case(result) == "HTTP-response-timeout"
    assert 0.95 <= elapsed < 1.4


def test_concurrent_calls_each_end_at_their_own_deadline(
        servers: tuple[Recorder, Recorder]) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    ended: dict[str, tuple[str, float]] = {}

    def call(name: str, seconds: float, path: str) -> None:
        started = time.monotonic()
        with request_deadline(seconds):
            result = cap.handle(None, request(f"127.0.0.1:{port(a)}", path))
        outcome = str(result.value[0]) if isinstance(result, Ok) else result.value.tag
        ended[name] = (outcome, time.monotonic() - started)

    threads = [threading.Thread(target=call, args=args) for args in (
        ("late", 1.3, "/stall"), ("early", 1.0, "/stall"), ("quick", 5.0, "/"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert ended["quick"][0] == "200"
    for name, deadline in (("early", 1.0), ("late", 1.3)):
        outcome, elapsed = ended[name]
        assert outcome == "HTTP-response-timeout" and deadline - 0.05 <= elapsed < deadline + 0.3


def test_no_time_left_means_no_connection(servers: tuple[Recorder, Recorder]) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    with request_deadline(0.0):
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/"))
    assert error_case(result) == "connection-timeout"
    assert a.hits == []


def test_a_finished_call_leaves_its_pooled_connection_alone(
        servers: tuple[Recorder, Recorder]) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    with request_deadline(0.2):
        first = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/1"))
    time.sleep(0.4)  # past the first call's deadline: its watchdog must be gone
    with request_deadline(5.0):
        second = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/2"))
    assert isinstance(first, Ok) and isinstance(second, Ok)
    assert a.hits[0][3] == a.hits[1][3]  # the same client port: the connection was reused


def test_response_body_cap_still_applies(servers: tuple[Recorder, Recorder]) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"], OutboundLimits(max_response_bytes=100))
    with request_deadline(5.0):
        result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/big"))
    assert error_case(result) == "HTTP-response-body-size"


# ---------------------------------------------------------------------------
# Log lines: origin and outcome, never the path, query or credentials


def test_calls_are_logged_without_query(servers: tuple[Recorder, Recorder],
                                        caplog: pytest.LogCaptureFixture) -> None:
    a, _ = servers
    cap = outbound([f"http://127.0.0.1:{port(a)}"])
    caplog.set_level(logging.DEBUG, logger="host")
    result = cap.handle(None, request(f"127.0.0.1:{port(a)}", "/api/SECRET1?token=SECRET2"))
    assert isinstance(result, Ok)
    refused = cap.handle(None, request(f"SECRET3:pw@127.0.0.1:{port(a)}", "/?token=SECRET4"))
    assert error_case(refused) == "HTTP-request-URI-invalid"
    denied = cap.handle(None, request("127.0.0.1:1", "/?token=SECRET5"))
    assert error_case(denied) == "HTTP-request-denied"
    # Library loggers (httpx) are silenced by host.logs: tests/test_logs.py.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("host")]
    assert len(ours) == 3 and not any("SECRET" in line for line in ours)
    line = ours[0]
    assert line.startswith(f'component "probe": GET http://127.0.0.1:{port(a)} -> 200 in ')
    assert line.endswith(" ms")
