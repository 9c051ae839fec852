"""host/capabilities/allowed_hosts.py: Spin's allowed_outbound_hosts syntax and matching.

MATCHES holds every row of the table in SPIN.md §5 (one case per URL), then extra
cases for the rules stated above that table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from host.capabilities.allowed_hosts import (
    AllowedHost,
    AllowedHostError,
    AllowList,
    check_entries,
    resolve_template,
    split_authority,
    split_url,
)
from host.errors import ManifestError
from host.manifest import parse_manifest

SPECIFIC = ["*://spin.fermyon.dev:443", "http://example.com:8383"]
SUBDOMAINS = ["http://*.example.com", "http://*.example2.com:8383"]

# (allowed entries, URL, allowed?) — first the SPIN.md §5 table, row by row.
MATCHES: list[tuple[list[str], str, bool]] = [
    # test_allowed_hosts_can_be_specific
    (SPECIFIC, "http://example.com:8383/foo/bar", True),
    (SPECIFIC, "https://spin.fermyon.dev", True),
    (SPECIFIC, "https://spin.fermyon.dev/", True),
    (SPECIFIC, "http://example.com/", False),
    (SPECIFIC, "http://google.com/", False),
    # test_allowed_hosts_with_subdomain_wildcards
    (SUBDOMAINS, "http://a.example.com/foo/bar", True),
    (SUBDOMAINS, "http://a.b.example.com/foo/bar", True),
    (SUBDOMAINS, "http://a.b.example2.com:8383/foo/bar", True),
    (SUBDOMAINS, "http://a.b.example2.com/foo/bar", False),
    (SUBDOMAINS, "http://example.com/foo/bar", False),
    (SUBDOMAINS, "http://example.com:8383/foo/bar", False),
    (SUBDOMAINS, "http://myexample.com/foo/bar", False),
    # ..._trailing_slash
    (["https://my.api.com/"], "https://my.api.com", True),
    # ipv6_literal_allows_and_denies
    (["http://[::1]"], "http://[::1]/some/path", True),
    (["http://[::1]"], "http://[::1]:80", True),
    (["http://[::1]"], "http://[::2]", False),
    (["http://[::1]"], "http://[::1]:81", False),
    # ipv6_cidr
    (["http://2001:db8::/32"], "http://[2001:db8:abcd::1]/x", True),
    (["http://2001:db8::/32"], "http://[2001:db9::1]", False),
    # wildcard_subdomain_is_case_insensitive
    (["http://*.Example.COM"], "http://foo.example.com", True),
    (["http://*.Example.COM"], "http://example.com", False),
    # test_hash_char_in_db_password
    (["mysql://xyz.com"], "mysql://user:pass#word@xyz.com", True),
    # test_cidr
    (["*://127.0.0.1/24:63551"], "tcp://127.0.0.1:63551", True),
    # test_allowed_all_globs
    (["*://*:*"], "http://example.com/", True),
    (["*://*:*"], "https://[::1]:9/x", True),
    (["*://*:*"], "redis://10.1.2.3:6379", True),
    (["*://*:*"], "tcp://anything.example:1", True),
    # scheme must match
    (["http://spin.fermyon.dev"], "https://spin.fermyon.dev", False),
    # half-open port range
    (["http://h:4444..5555"], "http://h:5554", True),
    (["http://h:4444..5555"], "http://h:5555", False),
    # --- further cases from the rules ---
    (["http://h:4444..5555"], "http://h:4444", True),
    (["http://h:4444..5555"], "http://h:4443", False),
    (["http://h:*"], "http://h:1", True),
    (["HTTP://Example.COM"], "http://EXAMPLE.com/", True),
    (["https://example.com"], "https://example.com:443/", True),
    (["https://example.com"], "https://example.com:8443/", False),
    (["postgres://db"], "postgres://u:p@db/app", True),
    (["postgres://db"], "postgres://db:5433/app", False),
    (["redis://cache"], "redis://cache", True),
    (["mqtt://broker"], "mqtt://broker:1883", True),
    (["mysql://xyz.com"], "mysql://u:p?x@xyz.com:3306/db", True),
    (["*://example.com:*"], "ftp://example.com/", True),
    (["tcp://example.com:*"], "tcp://example.com", True),
    (["tcp://example.com:99"], "tcp://example.com", False),  # no default port for tcp
    (["http://10.0.0.0/8"], "http://10.200.3.4/", True),
    (["http://10.0.0.0/8"], "http://11.0.0.1/", False),
    (["http://10.0.0.0/8"], "http://[::1]/", False),  # other IP version
    (["http://10.0.0.0/8"], "http://ten.example/", False),  # CIDRs match IP literals only
    (["http://ff00::/8"], "http://[ff02::1]/", True),
    (["http://*.example.com"], "http://1.2.3.4/", False),
    (["http://127.0.0.1"], "http://127.0.0.1/", True),
    (["http://127.0.0.1"], "http://localhost/", False),
    (["http://*"], "http://anything.example/", True),
    (["http://*"], "http://anything.example:81/", False),
    # host parsing must agree with an HTTP client's, never approve a different host
    (["http://good.com"], "http://evil.com#@good.com/", False),
    (["http://good.com"], "http://evil.com?@good.com/", False),
    (["http://good.com"], "http://evil.com\\@good.com/", False),
    (["http://good.com"], "http://user:pw@good.com/", True),
    (["http://good.com"], "http://good.com/@evil.com", True),
    (["http://good.com"], "http://good.com\\@good.com/", False),
    (["http://good.com"], "http://good.com@good.com@good.com/", False),
    (["http://good.com"], "http://good.com\r\n/", False),
    (["http://127.0.0.1:1"], "http://127.0.0.1:1\\@127.0.0.1:2/", False),
    (["http://127.0.0.1:2"], "http://127.0.0.1:1\\@127.0.0.1:2/", False),
    (["http://127.0.0.1"], "http://127.1/", False),
    (["http://127.0.0.1"], "http://[::ffff:127.0.0.1]/", False),
    (["http://127.0.0.1"], "http://0x7f.0.0.1/", False),
    (["http://127.0.0.1"], "http://2130706433/", False),
    (["http://xn--bcher-kva.de"], "http://bücher.de/", False),
    (["*://*:*"], "http://%65xample.com/", False),
    (["*://*:*"], "not a url", False),
    (["*://*:*"], "http://example.com:99999/", False),
    # empty list denies everything
    ([], "http://example.com/", False),
    ([], "/relative", False),
    # relative URLs and self.alt are self-requests
    (["http://self"], "/api", True),
    (["https://self.alt"], "http://self.alt/api", True),
    (["http://*:*"], "/api", True),
    (["*://*:*"], "/api", True),
    (["http://example.com"], "/api", False),
    (["http://example.com"], "http://self.alt/", False),
    (["redis://*:*"], "/api", False),
]


@pytest.mark.parametrize(
    "entries,url,expected", MATCHES,
    ids=[f"{'allow' if ok else 'deny'} {url} by {entries}" for entries, url, ok in MATCHES],
)
def test_allow_list_matches_url(entries: list[str], url: str, expected: bool) -> None:
    assert AllowList.parse(entries).allows_url(url) is expected


# (entry, substrings of the AllowedHostError message)
INVALID: list[tuple[str, list[str]]] = [
    ("example.com", ["missing a scheme"]),
    ("localhost:3001", ["missing a scheme"]),
    ("http://a.com/p", ["paths are not allowed"]),
    ("http://a.com//", ["paths are not allowed"]),
    ("http://a.com:80/p", ["paths are not allowed"]),
    ("http://[::1]/p", ["paths are not allowed"]),
    ("http://example.com:notaport", ['Invalid allowed host port "notaport"']),
    ("http://example.com:99999", ['Invalid allowed host port "99999"']),
    ("http://example.com:", ['Invalid allowed host port ""']),
    ("http://example.com:5..3", ['Invalid allowed host port "5..3"', "empty"]),
    ("http://example.com:1..70000", ['Invalid allowed host port "1..70000"']),
    ("http://*.127.0.0.1", ["not IP addresses"]),
    ("http://exa[mple.com", ['invalid host "exa[mple.com"']),
    ("http://example.com:80:90", ['Invalid allowed host port "80:90"']),
    ("http://*.", ['"*." must be followed by a domain name']),
    ("http://*.*.com", ['"*" may only be the whole host']),
    ("http://foo.*.com", ['"*" may only be the whole host']),
    ("http://*example.com", ['"*" may only be the whole host']),
    ("http://a..com", ['invalid host "a..com"']),
    ("http://999.1.1.1", ["not a valid IPv4 address"]),
    ("http://::1", ["IPv6 addresses must be in brackets"]),
    ("http://[1.2.3.4]", ["expected an IPv6 address"]),
    ("http://[::1", ['missing "]"']),
    ("http://10.0.0.0/33", ["invalid IP network"]),
    ("http://bücher.de", ["xn--"]),
    ("http://", ["missing a host"]),
    ("*://example.com",
     ['no port was provided and the scheme "*" does not have a known default port number']),
    ("tcp://example.com", ['the scheme "tcp" does not have a known default port number']),
    ("{http,https}://example.com", ["scheme lists are not supported"]),
    ("ht-tp://example.com", ['invalid scheme "ht-tp"']),
    ("://example.com", ['invalid scheme ""']),
    ("insecure:allow-all", ["*://*:*"]),
]


@pytest.mark.parametrize("entry,expected", INVALID, ids=[e for e, _ in INVALID])
def test_invalid_entry_is_rejected_naming_it(entry: str, expected: list[str]) -> None:
    with pytest.raises(AllowedHostError) as info:
        AllowedHost.parse(entry)
    message = str(info.value)
    assert f'"{entry}"' in message
    for part in expected:
        assert part in message


# (entry, scheme, kind, normalised host, port range)
VALID: list[tuple[str, str, str, str, tuple[int, int] | None]] = [
    ("*://*:*", "*", "any", "*", None),
    ("http://example.com", "http", "domain", "example.com", (80, 81)),
    ("https://Example.COM/", "https", "domain", "example.com", (443, 444)),
    ("postgres://db", "postgres", "domain", "db", (5432, 5433)),
    ("mysql://db", "mysql", "domain", "db", (3306, 3307)),
    ("redis://db", "redis", "domain", "db", (6379, 6380)),
    ("mqtt://db", "mqtt", "domain", "db", (1883, 1884)),
    ("http://self", "http", "self", "self", (80, 81)),
    ("http://self.alt", "http", "self", "self.alt", (80, 81)),
    ("http://*.example.com:8080", "http", "wildcard", "example.com", (8080, 8081)),
    ("http://127.0.0.1:3000", "http", "ip", "127.0.0.1", (3000, 3001)),
    ("http://[::1]:3000", "http", "ip", "::1", (3000, 3001)),
    ("http://[0:0::1]", "http", "ip", "::1", (80, 81)),
    ("http://10.0.0.0/8", "http", "cidr", "10.0.0.0/8", (80, 81)),
    ("http://2001:db8::/32", "http", "cidr", "2001:db8::/32", (80, 81)),
    ("*://127.0.0.1/24:63551", "*", "cidr", "127.0.0.0/24", (63551, 63552)),
    ("http://10.0.0.0/8/", "http", "cidr", "10.0.0.0/8", (80, 81)),
    ("http://h:4444..5555", "http", "domain", "h", (4444, 5555)),
    ("tcp://my_db:0", "tcp", "domain", "my_db", (0, 1)),
]


@pytest.mark.parametrize("entry,scheme,kind,host,ports", VALID, ids=[v[0] for v in VALID])
def test_valid_entry_parses(entry: str, scheme: str, kind: str, host: str,
                            ports: tuple[int, int] | None) -> None:
    parsed = AllowedHost.parse(entry)
    assert (parsed.scheme, parsed.kind, parsed.host, parsed.ports) == (scheme, kind, host, ports)
    assert str(parsed) == entry


def test_matches_with_explicit_and_default_port() -> None:
    entry = AllowedHost.parse("https://example.com")
    assert entry.matches("https", "example.com", None)
    assert entry.matches("HTTPS", "EXAMPLE.com", 443)
    assert not entry.matches("https", "example.com", 80)
    assert not entry.matches("http", "example.com", 443)
    assert AllowedHost.parse("http://[::1]").matches("http", "[::1]", 80)
    assert AllowedHost.parse("http://[::1]").matches("http", "::1", None)
    assert AllowedHost.parse("http://self").matches("http", "self.alt", 3000)


@pytest.mark.parametrize("entries,expected", [
    (["*://*:*"], True),
    (["http://*:*", "https://*:*"], True),
    (["http://*:*"], False),
    (["*://*:443"], False),
    (["http://*", "https://*"], False),
    ([], False),
])
def test_allows_everything(entries: list[str], expected: bool) -> None:
    assert AllowList.parse(entries).allows_everything() is expected


@pytest.mark.parametrize("entries,expected", [
    (["http://self"], True),
    (["https://self.alt"], True),
    (["*://self:*"], True),
    (["http://*:*"], True),
    (["*://*:*"], True),
    (["redis://self"], False),
    (["http://example.com"], False),
    ([], False),
])
def test_allows_self(entries: list[str], expected: bool) -> None:
    allow = AllowList.parse(entries)
    assert allow.allows_self() is expected
    assert allow.allows("http", "self", None) is expected


def test_empty_list_denies_everything_and_is_falsy() -> None:
    allow = AllowList.parse([])
    assert not allow and len(allow) == 0
    assert not allow.allows("http", "example.com", 80)
    assert not allow.allows_self()


def test_entries_that_resolved_to_nothing_are_skipped() -> None:
    allow = AllowList.parse(["", "http://", "https://", "https://example.com"])
    assert [e.entry for e in allow.entries] == ["https://example.com"]
    assert not AllowList.parse(["", "http://"])


def test_allow_list_parse_rejects_bad_entry() -> None:
    with pytest.raises(AllowedHostError, match='"ftp://x": no port was provided'):
        AllowList.parse(["http://ok.com", "ftp://x"])


@pytest.mark.parametrize("url,expected", [
    ("mysql://user:pass#word@xyz.com", ("mysql", "xyz.com", None)),
    ("HTTP://Example.com:8080/x?y#z", ("http", "Example.com", 8080)),
    ("http://[::1]:81/", ("http", "[::1]", 81)),
    ("http://example.com:/", ("http", "example.com", None)),
    # An authority two parsers could read differently is no URL at all.
    ("http://evil.com\\@good.com/", None),
    ("http://good.com\\@evil.com/", None),
    ("http://a@b@good.com/", None),
    ("http://evil.com /", None),
    ("http://evil.com\t/", None),
    ("http://u:p@good.com:81/x", ("http", "good.com", 81)),
    ("http://good.com/\\@evil.com", ("http", "good.com", None)),
    ("http://good.com?\\@evil.com", ("http", "good.com", None)),
    ("http://[::1]x/", None),
    ("http:///path", None),
    ("/relative", None),
])
def test_split_url(url: str, expected: tuple[str, str, int | None] | None) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize("authority,expected", [
    ("example.com", ("example.com", None)),
    ("Example.COM:8080", ("Example.COM", 8080)),
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:443", ("[::1]", 443)),
    ("[::ffff:127.0.0.1]", ("[::ffff:127.0.0.1]", None)),
    ("h:", ("h", None)),
    ("h:65535", ("h", 65535)),
    ("h:65536", None),
    ("h:123456", None),
    ("u@h", None),
    ("u:p@h:1", None),
    ("h\\@g", None),
    ("h\\", None),
    ("h#@g", None),
    ("h?@g", None),
    ("h/@g", None),
    ("h%40g", None),
    ("h:1:2", None),
    ("h ", None),
    (" h", None),
    ("h\r\nHost: g", None),
    ("h\x00", None),
    ("b\u00fccher.de", None),
    ("[::1", None),
    ("[::1]x", None),
    ("[fe80::1%eth0]", None),
    ("", None),
    (":80", None),
])
def test_split_authority(authority: str, expected: tuple[str, int | None] | None) -> None:
    assert split_authority(authority) == expected


@pytest.mark.parametrize("entry,values,expected", [
    ("https://{{ host }}", {"host": "a.com"}, "https://a.com"),
    ("https://{{host}}:{{  port }}", {"host": "a.com", "port": "8"}, "https://a.com:8"),
    ("{{ url }}", {"url": ""}, ""),
    ("https://plain.com", {}, "https://plain.com"),
    ("{http,https}://x", {}, "{http,https}://x"),
])
def test_resolve_template(entry: str, values: dict[str, str], expected: str) -> None:
    assert resolve_template(entry, values) == expected


def test_resolve_template_missing_value_names_entry() -> None:
    with pytest.raises(AllowedHostError, match=r'"https://\{\{ host \}\}": .*"host"'):
        resolve_template("https://{{ host }}", {})


@pytest.mark.parametrize("entries,defaults", [
    (["https://example.com", "*://*:*"], {}),
    (["https://{{ host }}"], {"host": "example.com"}),
    (["https://{{ host }}/"], {"host": None}),  # no default: checked at run time only
    (["https://{{ host }}/p"], {}),  # unknown variable: the manifest reports those
    (["https://{{ host }}"], {"host": ""}),  # resolves to "https://": skipped
    (["{{ url }}"], {"url": ""}),
    (["https://{{ a }}.{{ b }}"], {"a": "x", "b": None}),
])
def test_check_entries_accepts(entries: list[str], defaults: dict[str, str | None]) -> None:
    check_entries(entries, defaults)


@pytest.mark.parametrize("entries,defaults,expected", [
    (["http://a.com/p"], {}, ['"http://a.com/p": paths are not allowed']),
    (["https://ok.com", "example.com"], {}, ['"example.com": missing a scheme']),
    (["https://{{ host }}"], {"host": "a.com/p"},
     ['"https://{{ host }}"', '"https://a.com/p"', "paths are not allowed"]),
    (["{{ scheme }}://x"], {"scheme": "tcp"},
     ['"{{ scheme }}://x"', "does not have a known default port number"]),
])
def test_check_entries_rejects(entries: list[str], defaults: dict[str, str | None],
                               expected: list[str]) -> None:
    with pytest.raises(AllowedHostError) as info:
        check_entries(entries, defaults)
    for part in expected:
        assert part in str(info.value)


# --- manifest load-time validation ---

MANIFEST = """spin_manifest_version = 2
[application]
name = "app"
{variables}
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
allowed_outbound_hosts = {hosts}
"""
SPIN_TOML = Path("/apps/x/spin.toml")


def manifest(hosts: str, variables: str = "") -> str:
    return MANIFEST.format(hosts=hosts, variables=variables)


@pytest.mark.parametrize("text,bad", [
    (manifest('["https://ok.com", "http://a.com/p"]'), '"http://a.com/p"'),
    (manifest('["example.com"]'), '"example.com"'),
    (manifest('["http://example.com:99999"]'), 'Invalid allowed host port "99999"'),
    (manifest('["*://example.com"]'), '"*" does not have a known default port number'),
    (manifest('["https://{{ host }}"]', '[variables]\nhost = { default = "a.com:x" }'),
     '"https://{{ host }}"'),
])
def test_manifest_rejects_bad_allowed_host(text: str, bad: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, SPIN_TOML)
    message = str(info.value)
    assert str(SPIN_TOML) in message
    assert "[component.web]" in message
    assert "allowed_outbound_hosts" in message
    assert bad in message


@pytest.mark.parametrize("hosts,variables", [
    ('["https://example.com", "*://*:*", "http://self", "mysql://db"]', ""),
    ('["http://10.0.0.0/8", "http://[::1]:3000", "redis://*:*"]', ""),
    ('["https://{{ host }}"]', '[variables]\nhost = { required = true }'),
    ('["https://{{ host }}"]', '[variables]\nhost = { default = "api.example.com" }'),
    ('["https://{{ host }}"]', '[variables]\nhost = { default = "" }'),
    ("[]", ""),
])
def test_manifest_accepts_valid_allowed_hosts(hosts: str, variables: str) -> None:
    m = parse_manifest(manifest(hosts, variables), SPIN_TOML)
    assert "web" in m.components
