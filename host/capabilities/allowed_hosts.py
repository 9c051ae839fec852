"""Spin's `allowed_outbound_hosts`: parse entries and decide which destinations they allow.

An entry is `<scheme>://<host>[:<port>]` with at most one trailing `/` (see SPIN.md §5).
Entries are checked once, at manifest load time (`check_entries`, using variable
defaults for templated entries), and resolved and parsed again at run time
(`AllowList.parse`), so a typo fails the load instead of silently denying requests.

Matching is deliberately conservative: a request host that cannot be parsed the way
an HTTP client would parse it (percent-escapes, non-ASCII, odd IPv4 spellings such as
`0x7f.1`, zone ids) is denied rather than guessed at, so the check can never approve
one host while the client connects to another. For the same reason an http(s)
authority is read by one strict grammar (`split_authority`): text that two URL
parsers could read as different hosts (a backslash, a second `@`, spaces, control
characters) is refused, and the outbound client connects to the parts checked here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from host import templates

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HostKind = Literal["any", "self", "wildcard", "domain", "ip", "cidr"]

ANY = "*"
SELF_HOSTS = frozenset({"self", "self.alt"})
DEFAULT_PORTS: Mapping[str, int] = {
    "http": 80,
    "https": 443,
    "postgres": 5432,
    "mysql": 3306,
    "redis": 6379,
    "mqtt": 1883,
}
# Entries that resolve to these carry no destination: Spin skips them silently.
SKIPPED_ENTRIES = frozenset({"", "http://", "https://"})

_SCHEME = re.compile(r"[A-Za-z]+\Z")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_RANGE = re.compile(r"([0-9]+)\.\.([0-9]+)\Z")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
# host[:port] of an http(s) request: a bracketed IPv6 address or letters, digits,
# `.`, `_`, `-`. Nothing that could end the host early or start a userinfo.
_HTTP_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{0,5}))?\Z")
# userinfo before `@` in an http(s) URL: RFC 3986 characters, no `@`, backslash or space.
_HTTP_USERINFO = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:%-]*\Z")


class AllowedHostError(ValueError):
    """An `allowed_outbound_hosts` entry is malformed; the message names the entry."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f'"{entry}": {reason}')
        self.entry = entry
        self.reason = reason


class _Invalid(Exception):
    """Internal: a reason without the entry, wrapped into AllowedHostError by the caller."""


@dataclass(frozen=True)
class AllowedHost:
    """One parsed entry.

    `host` is normalised per `kind`: lowercase domain for "domain", the suffix after
    `*.` for "wildcard", the address for "ip", the network for "cidr", "*"/"self"/
    "self.alt" otherwise. `ports` is a half-open range [lo, hi), None for any port.
    """

    entry: str
    scheme: str
    kind: HostKind
    host: str
    ports: tuple[int, int] | None

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        """Parse one (already template-resolved) entry or raise AllowedHostError."""
        try:
            return cls._parse(entry)
        except _Invalid as exc:
            raise AllowedHostError(entry, str(exc)) from None

    @classmethod
    def _parse(cls, entry: str) -> AllowedHost:
        if entry == "insecure:allow-all":
            raise _Invalid('"insecure:allow-all" is not supported; use "*://*:*"')
        scheme, sep, rest = entry.partition("://")
        if not sep:
            raise _Invalid('missing a scheme; write it as "<scheme>://<host>[:<port>]", '
                           'e.g. "https://example.com"')
        if scheme.startswith("{"):
            raise _Invalid("scheme lists are not supported; write one entry per scheme")
        if scheme != ANY and not _SCHEME.match(scheme):
            raise _Invalid(f'invalid scheme "{scheme}": expected "*" or letters only')
        scheme = scheme.lower()
        if rest.endswith("/"):
            rest = rest[:-1]
        if not rest:
            raise _Invalid("missing a host")
        kind, host, port_text = _split_entry_authority(rest)
        if port_text is None:
            if scheme not in DEFAULT_PORTS:
                raise _Invalid(f'no port was provided and the scheme "{scheme}" does not '
                               "have a known default port number")
            default = DEFAULT_PORTS[scheme]
            ports: tuple[int, int] | None = (default, default + 1)
        else:
            ports = _parse_ports(port_text)
        return cls(entry, scheme, kind, host, ports)

    def __str__(self) -> str:
        return self.entry

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request to scheme://host:port is allowed by this entry.

        `port` None means the scheme's default port; a scheme without one then only
        matches a `*` port. `self`/`self.alt` entries ignore the port: they mean the
        app's own listener, wherever it is.
        """
        scheme = scheme.lower()
        if self.scheme != ANY and self.scheme != scheme:
            return False
        target = request_host(host)
        if target is None:
            return False
        if self.kind == "self":
            return target in SELF_HOSTS
        if not self._port_matches(scheme, port):
            return False
        return self._host_matches(target)

    def _port_matches(self, scheme: str, port: int | None) -> bool:
        if self.ports is None:
            return True
        if port is None:
            port = DEFAULT_PORTS.get(scheme)
            if port is None:
                return False
        lo, hi = self.ports
        return lo <= port < hi

    def _host_matches(self, target: str | IPAddress) -> bool:
        if self.kind == "any":
            return True
        if isinstance(target, str):
            if self.kind == "domain":
                return target == self.host
            if self.kind == "wildcard":
                return target.endswith("." + self.host)
            return False
        if self.kind == "ip":
            return target == ipaddress.ip_address(self.host)
        if self.kind == "cidr":
            return target in ipaddress.ip_network(self.host, strict=False)
        return False

    @property
    def is_catch_all(self) -> bool:
        """Any host on any port (scheme still applies)."""
        return self.kind == "any" and self.ports is None

    @property
    def allows_self(self) -> bool:
        """Whether this entry admits relative (same-app) HTTP requests."""
        return self.scheme in (ANY, "http", "https") and self.kind in ("any", "self")


def _split_entry_authority(rest: str) -> tuple[HostKind, str, str | None]:
    """Split `host[:port]` of an entry (trailing slash already removed)."""
    if rest.startswith("["):
        inner, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise _Invalid(f'invalid host "{rest}": missing "]"')
        if "/" in after:
            raise _Invalid("paths are not allowed")
        if after and not after.startswith(":"):
            raise _Invalid(f'invalid host "{rest}": unexpected text after "]"')
        addr = _parse_ip(inner)
        if not isinstance(addr, ipaddress.IPv6Address):
            raise _Invalid(f'invalid host "[{inner}]": expected an IPv6 address in brackets')
        return "ip", str(addr), after[1:] if after else None
    if "/" in rest:
        # A CIDR (`10.0.0.0/8`, `2001:db8::/32`), optionally `:port` (`127.0.0.1/24:63551`).
        net = _parse_cidr(rest)
        if net is not None:
            return "cidr", str(net), None
        head, colon, port = rest.rpartition(":")
        net = _parse_cidr(head) if colon else None
        if net is not None and "/" not in port:
            return "cidr", str(net), port
        address = rest.partition("/")[0]
        if _parse_ip(address) is not None:
            raise _Invalid(f'invalid IP network "{rest}": expected e.g. "10.0.0.0/8"')
        raise _Invalid("paths are not allowed")
    if rest.count(":") > 1 and _parse_ip(rest) is not None:
        raise _Invalid(f'IPv6 addresses must be in brackets: "[{rest}]"')
    host, colon, port_text = rest.partition(":")
    kind, norm = _parse_entry_host(host)
    return kind, norm, port_text if colon else None


def _parse_entry_host(host: str) -> tuple[HostKind, str]:
    if host == ANY:
        return "any", ANY
    lowered = host.lower()
    if lowered in SELF_HOSTS:
        return "self", lowered
    if lowered.startswith("*."):
        suffix = lowered[2:]
        if "*" in suffix:
            raise _Invalid(f'invalid host "{host}": "*" may only be the whole host or a '
                           'leading "*."')
        if not suffix:
            raise _Invalid(f'invalid host "{host}": "*." must be followed by a domain name')
        if _looks_numeric(suffix):
            raise _Invalid(f'invalid host "{host}": wildcard subdomains only match domain '
                           "names, not IP addresses (use a CIDR such as 10.0.0.0/8)")
        _check_domain(host, suffix)
        return "wildcard", suffix
    if "*" in host:
        raise _Invalid(f'invalid host "{host}": "*" may only be the whole host or a '
                       'leading "*."')
    if not host:
        raise _Invalid("missing a host")
    if _looks_numeric(lowered):
        addr = _parse_ip(host)
        if not isinstance(addr, ipaddress.IPv4Address):
            raise _Invalid(f'invalid host "{host}": not a valid IPv4 address')
        return "ip", str(addr)
    _check_domain(host, lowered)
    return "domain", lowered


def _check_domain(shown: str, name: str) -> None:
    if not name.isascii():
        raise _Invalid(f'invalid host "{shown}": write international domain names in their '
                       'ASCII ("xn--") form')
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise _Invalid(f'invalid host "{shown}": expected "*", "self", "*.domain", a domain '
                       "name, an IP address, [an IPv6 address] or a CIDR")


def _looks_numeric(name: str) -> bool:
    """A last label of only digits makes a host an IPv4 address, as URL parsers treat it."""
    return bool(_DIGITS.match(name.rpartition(".")[2]))


def _parse_ports(text: str) -> tuple[int, int] | None:
    if text == ANY:
        return None
    if "/" in text:
        raise _Invalid("paths are not allowed")
    if _DIGITS.match(text) and int(text) <= 0xFFFF:
        return int(text), int(text) + 1
    match = _RANGE.match(text)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo <= 0xFFFF and hi <= 0xFFFF:
            if lo >= hi:
                raise _Invalid(f'Invalid allowed host port "{text}": the range is empty '
                               "(a..b includes a but excludes b)")
            return lo, hi
    raise _Invalid(f'Invalid allowed host port "{text}"')


def _parse_ip(text: str) -> IPAddress | None:
    if "%" in text:  # zone ids are link-local plumbing, not destinations
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_cidr(text: str) -> IPNetwork | None:
    address, slash, prefix = text.partition("/")
    if not slash or not _DIGITS.match(prefix) or _parse_ip(address) is None:
        return None
    try:
        # Host bits may be set (`127.0.0.1/24`), as Spin accepts.
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def request_host(host: str) -> str | IPAddress | None:
    """A request's host as a lowercase domain or an IP address; None if unparseable."""
    if host.startswith("[") and host.endswith("]"):
        addr = _parse_ip(host[1:-1])
        return addr if isinstance(addr, ipaddress.IPv6Address) else None
    addr = _parse_ip(host)
    if addr is not None:
        return addr
    name = host.lower()
    if not name or _looks_numeric(name) or not name.isascii() or len(name) > 253:
        return None
    if not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return name


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """(host, port or None) of an http(s) authority `host[:port]`; None if it is not one.

    Strict on purpose: userinfo, backslashes, percent-escapes, spaces, control
    characters and non-ASCII are all refused, since HTTP clients disagree on where
    such an authority ends. The host is returned as written (IPv6 in brackets).
    """
    match = _HTTP_HOSTPORT.match(authority)
    if match is None:
        return None
    host, port_text = match.group(1), match.group(2)
    if not port_text:
        return host, None
    port = int(port_text)
    return (host, port) if port <= 0xFFFF else None


def split_url(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port or None) of an absolute URL; None if it is not one.

    For http(s) the authority ends at the first `/`, `?` or `#`, and must then be
    `[userinfo@]host[:port]` with nothing ambiguous in it (`split_authority`): an
    HTTP client reads `http://evil\\@good/` as host `good`, a browser as `evil`, so
    it is refused. Other schemes are database connection strings whose passwords
    often hold `#` or `?`, so their userinfo runs to the last `@` before the first
    `/` (`mysql://u:p#w@db`).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _URL_SCHEME.match(scheme):
        return None
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, hostport = authority.rpartition("@")
        parts = split_authority(hostport)
        if parts is None or (at and not _HTTP_USERINFO.match(userinfo)):
            return None
        return scheme, *parts
    before_path = rest.partition("/")[0]
    after_userinfo = before_path.rpartition("@")[2]
    hostport = re.split(r"[?#]", after_userinfo, maxsplit=1)[0]
    if hostport.startswith("["):
        inner, bracket, after = hostport.partition("]")
        host, port_text = inner + bracket, after
        if not bracket or (port_text and not port_text.startswith(":")):
            return None
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        return None
    if not port_text:
        return scheme, host, None
    if not _DIGITS.match(port_text) or int(port_text) > 0xFFFF:
        return None
    return scheme, host, int(port_text)


class AllowList:
    """A component's parsed allow-list. Empty denies everything, self-requests included."""

    def __init__(self, entries: Iterable[AllowedHost] = ()) -> None:
        self.entries: tuple[AllowedHost, ...] = tuple(entries)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Parse template-resolved entries, skipping those that resolved to nothing."""
        return cls(AllowedHost.parse(e) for e in entries if e not in SKIPPED_ENTRIES)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __iter__(self) -> Iterator[AllowedHost]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"AllowList({[e.entry for e in self.entries]!r})"

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether scheme://host:port may be reached (port None = scheme default).

        Host `self`/`self.alt` is the app itself: see `allows_self`.
        """
        if host.lower() in SELF_HOSTS:
            return scheme.lower() in ("http", "https") and self.allows_self()
        return any(e.matches(scheme, host, port) for e in self.entries)

    def allows_url(self, url: str) -> bool:
        """Whether a request to `url` is allowed; unparseable URLs are denied.

        A path-only URL (`/x`) is a self-request, as is host `self.alt`.
        """
        if url.startswith("/") and not url.startswith("//"):
            return self.allows_self()
        parts = split_url(url)
        if parts is None:
            return False
        return self.allows(*parts)

    def allows_self(self) -> bool:
        """Whether relative URLs (requests to this app) are allowed.

        Spin requires a `self`, `self.alt` or `*` host on an http, https or `*` entry.
        """
        return any(e.allows_self for e in self.entries)

    def allows_everything(self) -> bool:
        """`*://*:*`, or both `http://*:*` and `https://*:*`: no filtering is needed."""
        schemes = {e.scheme for e in self.entries if e.is_catch_all}
        return ANY in schemes or {"http", "https"} <= schemes


def resolve_template(entry: str, values: Mapping[str, str]) -> str:
    """Substitute `{{ name }}` (whitespace trimmed) from `values`.

    Raises AllowedHostError naming the entry if a variable has no value.
    """
    for name in templates.names(entry):
        if name not in values:
            raise AllowedHostError(entry, f'no value for variable "{name}"')
    return templates.render(entry, values)


def check_entries(entries: Iterable[str], defaults: Mapping[str, str | None]) -> None:
    """Validate entries at load time so mistakes fail the load, not a later request.

    Entries without templates are parsed as written. Templated entries are parsed
    with the variables' defaults when every referenced variable has one, and skipped
    otherwise (they can only be checked once resolved at run time).
    """
    for entry in entries:
        names = templates.names(entry)
        if not names:
            AllowedHost.parse(entry)
            continue
        values = {n: d for n in names if (d := defaults.get(n)) is not None}
        if len(values) < len(set(names)):
            continue
        resolved = resolve_template(entry, values)
        if resolved in SKIPPED_ENTRIES:
            continue
        try:
            AllowedHost.parse(resolved)
        except AllowedHostError as exc:
            raise AllowedHostError(
                entry, f'with variable defaults it is "{resolved}", which is invalid: '
                f"{exc.reason}"
            ) from None
