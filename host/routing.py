"""Spin's HTTP route table: parsing, precedence and matching (Spin 2.5+ rules).

A route is a list of segments: literal, `:name` (one non-empty segment) or a
trailing wildcard (`/...`, or its synonym `/*`). Routes are sorted once at
startup; the first route that matches a path wins. Two routes compare segment by
segment, left to right, and the first difference decides: literal > `:name` >
wildcard; when one route is a prefix of the other, the shorter one wins.
Matching works on the raw (percent-encoded) path, ignoring leading and trailing
slashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from host.errors import ManifestError

WELL_KNOWN_PREFIX = "/.well-known/spin/"


class SegmentKind(IntEnum):
    """Ordered by precedence: a lower value wins."""

    LITERAL = 0
    PARAM = 1
    WILDCARD = 2


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str = ""  # the literal, or the parameter's name


@dataclass(frozen=True)
class Route:
    """One routable trigger, ready for matching."""

    target: str  # the trigger id whose handler serves the route
    component: str | None  # the component id, or None for a static response
    raw: str  # as written in the manifest
    based: str  # absolutized, one trailing '/' stripped ('/' -> '')
    segments: tuple[Segment, ...]

    @property
    def wildcard(self) -> bool:
        return bool(self.segments) and self.segments[-1].kind is SegmentKind.WILDCARD

    @property
    def component_route(self) -> str:
        """`spin-component-route`: the raw route without a final `/...`."""
        return self.raw[: -len("/...")] if self.raw.endswith("/...") else self.raw

    @property
    def display(self) -> str:
        """The route as `host up` lists it: wildcard routes without `/...`."""
        if self.wildcard:
            prefix = self.based[: self.based.rfind("/")]
            return f"{prefix} (wildcard)" if prefix else " (wildcard)"
        return self.based


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: tuple[tuple[str, str], ...]  # (name, raw value) per `:name` segment
    path_info: str  # the trailing wildcard part, still percent-encoded


@dataclass(frozen=True)
class DuplicateRoute:
    route: str
    replaced: str  # component (or trigger) id that will never be used
    effective: str


def based_route(raw: str) -> str:
    """Absolutize and strip one trailing slash, as Spin does (`/` -> ``)."""
    path = raw if raw.startswith("/") else "/" + raw
    return path[:-1] if path.endswith("/") else path


def parse_route(based: str, owner: str) -> tuple[Segment, ...]:
    """Parse a based route into segments; errors name the route and its owner."""
    if based.endswith("/..."):
        body, wildcard = based[: -len("/...")], True
    elif based.endswith("/*"):
        body, wildcard = based[: -len("/*")], True
    else:
        body, wildcard = based, False
    segments: list[Segment] = []
    for part in body.strip("/").split("/") if body.strip("/") else []:
        if part.startswith(":"):
            if len(part) == 1:
                raise ManifestError(
                    f"Error parsing route {based} associated with component {owner}: "
                    "params must be named"
                )
            segments.append(Segment(SegmentKind.PARAM, part[1:]))
        elif part.startswith("*"):
            raise ManifestError(
                f"Error parsing route {based} associated with component {owner}: "
                f"a wildcard doesn't need a name. replace `{part}` with `*` or `...`"
                if len(part) > 1
                else f"Error parsing route {based} associated with component {owner}: "
                "a wildcard is only allowed as the last segment"
            )
        else:
            segments.append(Segment(SegmentKind.LITERAL, part))
    if wildcard:
        segments.append(Segment(SegmentKind.WILDCARD))
    return tuple(segments)


def _precedence_key(route: Route) -> tuple[tuple[int, str], ...]:
    # Tuples compare element-wise and a shorter prefix sorts first: exactly the
    # "first difference decides, shorter wins on a prefix" rule.
    return tuple((s.kind.value, s.text if s.kind is SegmentKind.LITERAL else "")
                 for s in route.segments)


class Router:
    """The route table of an app, in precedence order."""

    def __init__(self, routes: Sequence[Route], duplicates: Sequence[DuplicateRoute] = ()):
        # sorted() is stable, so equal specs (`/foo` and `/foo/`) keep manifest order.
        self.routes: tuple[Route, ...] = tuple(sorted(routes, key=_precedence_key))
        self.duplicates = tuple(duplicates)

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str | None, str | None]]) -> Router:
        """Build from (trigger id, component id or None, raw route or None=private).

        Duplicates are detected on the raw route string: the later trigger wins,
        as in Spin, and each loser is reported.
        """
        by_raw: dict[str, Route] = {}
        duplicates: list[DuplicateRoute] = []
        for target, component, raw in entries:
            if raw is None:
                continue
            based = based_route(raw)
            owner = component or target
            route = Route(target, component, raw, based, parse_route(based, owner))
            old = by_raw.pop(raw, None)
            if old is not None:
                duplicates.append(
                    DuplicateRoute(based or "/", old.component or old.target, owner)
                )
            by_raw[raw] = route
        return cls(list(by_raw.values()), duplicates)

    def match(self, path: str) -> RouteMatch | None:
        """Find the route for a raw request path (no query string)."""
        stripped = path.strip("/")
        parts = stripped.split("/") if stripped else []
        for route in self.routes:
            found = _match(route, parts, path.endswith("/"))
            if found is not None:
                return found
        return None

    @property
    def reserved_routes(self) -> list[Route]:
        return [r for r in self.routes if r.based.startswith(WELL_KNOWN_PREFIX)]


def _match(route: Route, parts: list[str], trailing_slash: bool) -> RouteMatch | None:
    params: list[tuple[str, str]] = []
    for i, seg in enumerate(route.segments):
        if seg.kind is SegmentKind.WILDCARD:
            rest = "/".join(parts[i:])
            if not rest:
                info = "/" if trailing_slash else ""
            else:
                info = f"/{rest}/" if trailing_slash else f"/{rest}"
            return RouteMatch(route, tuple(params), info)
        if i >= len(parts):
            return None
        part = parts[i]
        if seg.kind is SegmentKind.LITERAL:
            if part != seg.text:
                return None
        elif not part:
            return None
        else:
            params.append((seg.text, part))
    if len(parts) != len(route.segments):
        return None
    return RouteMatch(route, tuple(params), "")
