"""Outbound HTTP: `spinhost:http/outgoing-handler`, checked against the allow-list.

Requests go through one shared `httpx.Client` (connection pooling, explicit
timeouts, no redirects followed: the guest sees the 3xx as wasi-http does).
The guest's call blocks only its own worker thread, so a slow upstream never
stops the host serving other requests; the request deadline still applies
when the call returns.

A URL outside `allowed_outbound_hosts` answers `HTTP-request-denied` and logs
Spin's two lines naming the destination and the entry that would allow it. A
request without an authority goes to the app itself and needs `self` (or `*`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import wasmtime.component as wc

from host.capabilities import Capability, Err, Ok
from host.capabilities.allowed_hosts import AllowList
from host.limits import OutboundLimits

log = logging.getLogger("host.outbound")

OUTGOING_HANDLER = "spinhost:http/outgoing-handler@0.1.0"


class OutboundClient:
    """The process-wide HTTP client every component's outbound calls share."""

    def __init__(self, limits: OutboundLimits | None = None,
                 self_origin: str | None = None) -> None:
        self.limits = s = limits or OutboundLimits()
        self.self_origin = self_origin  # e.g. http://127.0.0.1:3000, for `self` requests
        self._client: httpx.Client | None = None
        self._timeout = httpx.Timeout(s.read_timeout_seconds,
                                      connect=s.connect_timeout_seconds)
        self._limits = httpx.Limits(max_connections=s.max_connections)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:  # made on first use: most apps never call out
            self._client = httpx.Client(timeout=self._timeout, limits=self._limits,
                                        follow_redirects=False, trust_env=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _error(case: str, payload: Any = None) -> Err:
    return Err(wc.Variant(case, payload) if payload is not None or case in _WITH_PAYLOAD
               else wc.Variant(case))


# Framing and routing headers come from the URL and the body, never from the guest.
_HOST_MANAGED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                 "upgrade", "te", "trailer", "proxy-connection"}

_WITH_PAYLOAD = {"DNS-error", "HTTP-request-body-size", "HTTP-response-body-size",
                 "internal-error"}


def _method(value: Any) -> str:
    return str(value.payload) if value.tag == "other" else value.tag.upper()


def _scheme(value: Any) -> str:
    if value is None:
        return "http"
    return str(value.payload).lower() if value.tag == "other" else value.tag.lower()


class Outbound(Capability):
    interfaces = (OUTGOING_HANDLER,)

    def __init__(self, component_id: str, allowed: AllowList, client: OutboundClient) -> None:
        super().__init__(component_id)
        self.allowed = allowed
        self.http = client

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        return {"handle": self.handle}

    def handle(self, store: Any, request: Any) -> Ok | Err:
        fields = request.__dict__  # a wc.Record: attributes keep their kebab-case names
        method, scheme, authority, path, headers, body = (
            fields["method"], fields["scheme"], fields["authority"], fields["path-with-query"],
            fields["headers"], fields["body"])
        path = path or "/"
        if authority:
            url = f"{_scheme(scheme)}://{authority}{path}"
            if not self.allowed.allows_url(url):
                return self._deny(f"{_scheme(scheme)}://{authority}")
        else:
            if not self.allowed.allows_self() or self.http.self_origin is None:
                return self._deny("self", hint='"http://self"')
            url = f"{self.http.self_origin}{path}"
        parts = urlsplit(url)
        if not parts.hostname:
            return _error("HTTP-request-URI-invalid")
        return self._send(_method(method), url, headers, body)

    def _deny(self, destination: str, hint: str | None = None) -> Err:
        log.warning(
            'component "%s": A component tried to make an outbound network connection to '
            "disallowed destination '%s'. To allow this request, add "
            "'allowed_outbound_hosts = [%s]' to its [component.%s] table.",
            self.component_id, destination, hint or f'"{destination}"', self.component_id,
        )
        return _error("HTTP-request-denied")

    def _send(self, method: str, url: str, headers: list[tuple[str, bytes]],
              body: bytes) -> Ok | Err:
        limit = self.http.limits.max_response_bytes
        sent = [(k.encode(), v) for k, v in headers if k.lower() not in _HOST_MANAGED]
        try:
            with self.http.client.stream(method, url, headers=sent, content=body) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_raw():
                    size += len(chunk)
                    if size > limit:
                        return _error("HTTP-response-body-size", size)
                    chunks.append(chunk)
                out_headers = [(k.decode("latin-1").lower(), v)
                               for k, v in response.headers.raw
                               if k.lower() not in (b"transfer-encoding", b"connection")]
                return Ok((response.status_code, out_headers, b"".join(chunks)))
        except httpx.ConnectTimeout:
            return _error("connection-timeout")
        except httpx.TimeoutException:
            return _error("HTTP-response-timeout")
        except httpx.ConnectError as exc:
            text = str(exc)
            if "Name or service not known" in text or "nodename nor servname" in text \
                    or "Temporary failure in name resolution" in text:
                return _error("DNS-error", None)
            if "refused" in text.lower():
                return _error("connection-refused")
            return _error("destination-unavailable")
        except (httpx.RemoteProtocolError, httpx.LocalProtocolError):
            return _error("HTTP-protocol-error")
        except httpx.InvalidURL:
            return _error("HTTP-request-URI-invalid")
        except httpx.HTTPError as exc:
            return _error("internal-error", str(exc) or type(exc).__name__)
