"""host/routing.py: Spin's route table, precedence and spin-* header values."""

from __future__ import annotations

import pytest

from host.errors import ManifestError
from host.routing import Router
from host.server import spin_headers

HOST = "localhost:3000"
CLIENT = "127.0.0.1:50000"

# (routes as "component=route", request path with query, component or None,
#  spin-path-info, spin-matched-route, spin-raw-component-route,
#  spin-component-route, path-match params)
CASES = [
    # exact routes
    (["foo=/foo"], "/foo", "foo", "", "/foo", "/foo", "/foo", {}),
    (["foo=/foo"], "/foo/", "foo", "", "/foo", "/foo", "/foo", {}),
    (["foo=/foo"], "//foo", "foo", "", "/foo", "/foo", "/foo", {}),
    (["foo=/foo"], "/foo//", "foo", "", "/foo", "/foo", "/foo", {}),
    (["foo=/foo/"], "/foo", "foo", "", "/foo", "/foo/", "/foo/", {}),
    (["foo=foo"], "/foo", "foo", "", "/foo", "foo", "foo", {}),
    (["foo=/foo"], "/foobar", None, "", "", "", "", {}),
    (["foo=/foo"], "/Foo", None, "", "", "", "", {}),
    (["foo=/foo"], "/foo/bar", None, "", "", "", "", {}),
    (["foo=/foo"], "/foo?x=1&y=2", "foo", "", "/foo", "/foo", "/foo", {}),
    (["file=/file.json"], "/file.json", "file", "", "/file.json", "/file.json", "/file.json",
     {}),
    (["root=/"], "/", "root", "", "", "/", "/", {}),
    (["root=/"], "/x", None, "", "", "", "", {}),
    # wildcards
    (["all=/..."], "/", "all", "/", "/...", "/...", "", {}),
    (["all=/..."], "/a/b/c", "all", "/a/b/c", "/...", "/...", "", {}),
    (["all=/..."], "/a/b/", "all", "/a/b/", "/...", "/...", "", {}),
    (["comp=/test/..."], "/test", "comp", "", "/test/...", "/test/...", "/test", {}),
    (["comp=/test/..."], "/test/", "comp", "/", "/test/...", "/test/...", "/test", {}),
    (["comp=/test/..."], "/test/hello/", "comp", "/hello/", "/test/...", "/test/...", "/test",
     {}),
    (["comp=/test/..."], "/testing", None, "", "", "", "", {}),
    (["star=/test/*"], "/test/a/b", "star", "/a/b", "/test/*", "/test/*", "/test/*", {}),
    (["w=/foo/..."], "/foobar", None, "", "", "", "", {}),
    # percent-encoding: matched and reported raw
    (["enc=/a%20b"], "/a%20b", "enc", "", "/a%20b", "/a%20b", "/a%20b", {}),
    (["enc=/a%20b"], "/a b", None, "", "", "", "", {}),
    (["w=/files/..."], "/files/x%2Fy%20z", "w", "/x%2Fy%20z", "/files/...", "/files/...",
     "/files", {}),
    # precedence: exact beats wildcard, longest prefix wins
    (["foo=/foo", "foobar=/foo/bar"], "/foo/bar", "foobar", "", "/foo/bar", "/foo/bar",
     "/foo/bar", {}),
    (["root=/", "all=/..."], "/", "root", "", "", "/", "/", {}),
    (["all=/...", "root=/"], "/", "root", "", "", "/", "/", {}),
    (["root=/", "all=/..."], "/x", "all", "/x", "/...", "/...", "", {}),
    (["one=/one/...", "onetwo=/one/two/..."], "/one/twox", "one", "/twox", "/one/...",
     "/one/...", "/one", {}),
    (["one=/one/...", "onetwo=/one/two/..."], "/one/two/x", "onetwo", "/x", "/one/two/...",
     "/one/two/...", "/one/two", {}),
    (["users=/users", "uw=/users/..."], "/users", "users", "", "/users", "/users", "/users", {}),
    (["uw=/users/...", "users=/users"], "/users", "users", "", "/users", "/users", "/users", {}),
    # :name parameters
    (["id=/users/:id", "uw=/users/..."], "/users/7", "id", "", "/users/:id", "/users/:id",
     "/users/:id", {"id": "7"}),
    (["id=/users/:id", "uw=/users/..."], "/users/7/x", "uw", "/7/x", "/users/...",
     "/users/...", "/users", {}),
    (["id=/users/:id"], "/users/", None, "", "", "", "", {}),
    (["comp=/1/:two/..."], "/1/2/3", "comp", "/3", "/1/:two/...", "/1/:two/...", "/1/:two",
     {"two": "2"}),
    (["cart=/users/:userid/cart/..."], "/users/1/cart/items/3/edit?theme=pink", "cart",
     "/items/3/edit", "/users/:userid/cart/...", "/users/:userid/cart/...",
     "/users/:userid/cart", {"userid": "1"}),
    (["two=/:a/:b"], "/x/y", "two", "", "/:a/:b", "/:a/:b", "/:a/:b", {"a": "x", "b": "y"}),
    (["snake=/u/:user_id"], "/u/42", "snake", "", "/u/:user_id", "/u/:user_id", "/u/:user_id",
     {"user-id": "42"}),
    (["lit=/users/me", "id=/users/:id"], "/users/me", "lit", "", "/users/me", "/users/me",
     "/users/me", {}),
    (["id=/users/:id", "lit=/users/me"], "/users/me", "lit", "", "/users/me", "/users/me",
     "/users/me", {}),
    # left-most specificity decides
    (["foow=/foo/...", "xbar=/:x/bar"], "/foo/bar", "foow", "/bar", "/foo/...", "/foo/...",
     "/foo", {}),
    (["fbw=/foo/bar/...", "fid=/foo/:id"], "/foo/bar", "fbw", "", "/foo/bar/...",
     "/foo/bar/...", "/foo/bar", {}),
    (["fbw=/foo/bar/...", "fid=/foo/:id"], "/foo/baz", "fid", "", "/foo/:id", "/foo/:id",
     "/foo/:id", {"id": "baz"}),
    # duplicates: the later trigger wins on the same raw route
    (["first=/dup", "second=/dup"], "/dup", "second", "", "/dup", "/dup", "/dup", {}),
    # equivalent spellings are not duplicates: the earlier one wins
    (["slash=/foo/", "plain=/foo"], "/foo", "slash", "", "/foo", "/foo/", "/foo/", {}),
    (["plain=/foo", "slash=/foo/"], "/foo", "plain", "", "/foo", "/foo", "/foo", {}),
    # private routes are never reachable
    (["secret=private", "all=/..."], "/secret", "all", "/secret", "/...", "/...", "", {}),
    (["secret=private"], "/", None, "", "", "", "", {}),
]


def build(routes: list[str]) -> Router:
    entries = []
    for n, spec in enumerate(routes):
        component, _, route = spec.partition("=")
        entries.append((f"t{n}", component, None if route == "private" else route))
    return Router.build(entries)


@pytest.mark.parametrize(
    "routes,request_path,component,path_info,matched,raw,component_route,params", CASES,
    ids=[f"{'+'.join(c[0])} {c[1]}" for c in CASES],
)
def test_route_and_spin_headers(
    routes: list[str], request_path: str, component: str | None, path_info: str, matched: str,
    raw: str, component_route: str, params: dict[str, str],
) -> None:
    path = request_path.split("?", 1)[0]
    match = build(routes).match(path)
    if component is None:
        assert match is None
        return
    assert match is not None
    assert match.route.component == component
    headers = spin_headers(match, "http", HOST, request_path, CLIENT)
    expected = {
        "spin-full-url": f"http://{HOST}{request_path}",
        "spin-path-info": path_info,
        "spin-matched-route": matched,
        "spin-base-path": "/",
        "spin-raw-component-route": raw,
        "spin-component-route": component_route,
        "spin-client-addr": CLIENT,
        **{f"spin-path-match-{k}": v for k, v in params.items()},
    }
    assert dict(headers) == expected
    assert len(headers) == len(expected)  # one value per header


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_full_url_without_host_uses_localhost() -> None:
    match = build(["a=/a"]).match("/a")
    assert match is not None
    assert dict(spin_headers(match, "https", None, "/a?q", CLIENT))["spin-full-url"] == (
        "https://localhost/a?q")


def test_duplicates_are_reported_with_the_unused_component() -> None:
    router = build(["first=/dup", "second=/dup", "other=/x"])
    assert [(d.route, d.replaced, d.effective) for d in router.duplicates] == [
        ("/dup", "first", "second")]


def test_routes_listed_in_precedence_order() -> None:
    router = build(["all=/...", "api=/api/...", "hello=/hello", "root=/", "id=/api/:id"])
    # The root route has no segments: a prefix of every route, so it sorts first.
    assert [r.component for r in router.routes] == ["root", "id", "api", "hello", "all"]
    assert [r.display for r in router.routes] == [
        "", "/api/:id", "/api (wildcard)", "/hello", " (wildcard)"]


@pytest.mark.parametrize("route,message", [
    ("/users/:", "params must be named"),
    ("/f/*x", "replace `*x`"),
    ("/a/*/b", "only allowed as the last segment"),
])
def test_invalid_routes_fail_at_startup(route: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        build([f"comp={route}"])
    assert message in str(info.value)
    assert "comp" in str(info.value)
