"""`host watch`: rebuild a component when its sources change and reload it while serving.

What is watched, as `spin watch` does (below the manifest's directory):

- each component's `[component.ID.build] watch` globs, relative to its build
  `workdir` (default: the manifest's directory): a change runs that component's
  build commands, then reloads that component. A component without `watch`
  globs is not rebuilt on its own (Spin says so at start, and so do we);
- each component's `source` (.wasm): a change reloads that component (so a
  build run by hand, or another tool, is picked up). After a build of ours the
  file is the one just loaded (same digest) and nothing happens twice;
- the manifest: every component is built again and the whole app reloads
  (routes may change); a component's `files`: the app reloads (they are staged
  per app).

`--skip-build`: nothing is built; sources are not watched, the .wasm files,
`files` and the manifest are. Changes are grouped for `--debounce` ms.

A reload never drops a request: the new version is compiled and its pool
filled on this thread while the old one serves, then swapped on the event loop
(host/reload.py); requests running finish on the version they started with,
and the old executor is closed once they are done. Redis messages likewise:
the subscribers are handed the new version first (host/redis_trigger.py `use`:
their connections stay up), messages already read finish on the old executors.
An app reload keeps the subscribers whose address and channels are unchanged
and replaces the others (the new ones subscribe before the swap: an address
that fails leaves the old version serving). A failing build, a component that
does not load, or a manifest that does not parse leave the version being
served in place, and say why. One process only: `--workers` above 1 is
refused (host/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import watchfiles

from host import logs
from host.app import App, AppSettings, component_path, load_app, reload_components
from host.build import build_app
from host.config import Config
from host.errors import BuildError, ConfigError, HostError
from host.manifest import FileMapping, FilePattern, FileSource, Manifest, load_manifest
from host.redis_trigger import RedisTriggers, Subscriber
from host.reload import Reloadable, new_only
from host.runtime.engine import Engine
from host.serve import (
    Lifecycle,
    Startup,
    find_image,
    load_runtime_config_file,
    print_routes,
    serve_app,
    start_up,
)
from host.server import HostApp

log = logging.getLogger("host.watch")

DEFAULT_DEBOUNCE_MS = 100  # as spin watch
_CLEAR = "\033[2J\033[3J\033[H"


@dataclass(frozen=True)
class WatchOptions:
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    skip_build: bool = False
    clear: bool = False


def watch(config: Config, options: WatchOptions) -> int:
    """Build (unless --skip-build), serve, and rebuild/reload on changes until a signal."""
    if find_image(config) is not None:
        raise ConfigError(f"host watch: {config.source} is an OCI image; watch serves an "
                          "app from its sources (a spin.toml)")
    manifest = load_manifest(config.source)
    plan = Plan.of(manifest, options.skip_build)
    plan.say_unwatched()
    if not options.skip_build:
        manifest = _first_build(manifest, options)
    startup, manifest, settings, sock = start_up(replace(config, build=False))
    lifecycle = WatchLifecycle(startup, settings, options)
    return serve_app(startup, manifest, settings, sock, lifecycle,
                     report=(lambda line: None) if config.quiet else logs.info)


def _first_build(manifest: Manifest, options: WatchOptions) -> Manifest:
    """Build every component; until that succeeds, wait for a change and try again."""
    while True:
        try:
            build_app(manifest, say=logs.info)
            return manifest
        except BuildError as exc:
            logs.write_lines(sys.stderr, f"Error: {exc}")
            logs.info("Waiting for a change to build again (Ctrl-C to stop)")
        plan = Plan.of(manifest, options.skip_build)
        for _ in watchfiles.watch(plan.root, watch_filter=plan.wants,
                                  debounce=max(options.debounce_ms, 1), step=50):
            break
        manifest = load_manifest(manifest.path)


# -- what to watch ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The paths that matter for one manifest, and what a change of each asks for."""

    root: Path  # the manifest's directory: everything below it is watched
    manifest: Path
    sources: dict[str, re.Pattern[str]]  # component id -> its build `watch` globs
    artifacts: dict[Path, str]  # a component's .wasm -> the component id
    files: re.Pattern[str] | None  # every component's `files`: the app reloads
    unwatched: tuple[str, ...]  # components with a build but no `watch` globs

    @classmethod
    def of(cls, manifest: Manifest, skip_build: bool) -> Plan:
        root = manifest.dir.resolve()
        sources: dict[str, re.Pattern[str]] = {}
        artifacts: dict[Path, str] = {}
        files: list[str] = []
        unwatched = []
        for component in manifest.components.values():
            if isinstance(component.source, FileSource):
                artifacts[(root / component.source.path).resolve()] = component.id
            for mount in component.files:
                if isinstance(mount, FilePattern):
                    files.append(_glob_regex(root, mount.pattern))
                elif isinstance(mount, FileMapping):
                    files.append(_glob_regex(root, mount.source.rstrip("/") + "/**"))
            build = component.build
            if build is None or skip_build:
                continue
            if not build.watch:
                unwatched.append(component.id)
                continue
            workdir = (root / (build.workdir or ".")).resolve()
            sources[component.id] = re.compile(
                "|".join(_glob_regex(workdir, glob) for glob in build.watch))
        return cls(root, manifest.path.resolve(), sources, artifacts,
                   re.compile("|".join(files)) if files else None, tuple(unwatched))

    def say_unwatched(self) -> None:
        for component_id in self.unwatched:
            logs.info(f"You haven't configured what to watch for the component: "
                      f"'{component_id}' ([component.{component_id}.build] watch = "
                      '["src/**/*.rs", ...]); it reloads when its .wasm changes')

    def wants(self, change: watchfiles.Change, path: str) -> bool:
        """Whether a change of `path` matters (watchfiles' filter)."""
        if not _DEFAULT_FILTER(change, path):
            return False
        return (path == str(self.manifest) or Path(path) in self.artifacts
                or any(p.fullmatch(path) for p in self.sources.values())
                or (self.files is not None and self.files.fullmatch(path) is not None))

    def changes(self, paths: Iterable[str]) -> Changes:
        found = Changes()
        for path in paths:
            if path == str(self.manifest):
                found.manifest = True
            if Path(path) in self.artifacts:
                found.artifacts.add(self.artifacts[Path(path)])
            found.sources.update(cid for cid, p in self.sources.items() if p.fullmatch(path))
            if self.files is not None and self.files.fullmatch(path):
                found.files = True
        return found


@dataclass
class Changes:
    manifest: bool = False
    files: bool = False
    sources: set[str] = field(default_factory=set)  # components to build
    artifacts: set[str] = field(default_factory=set)  # components whose .wasm changed


_DEFAULT_FILTER = watchfiles.DefaultFilter()


def _glob_regex(base: Path, glob: str) -> str:
    """A `watch` glob relative to `base` as a regex over absolute paths: `*` and `?`
    within one path segment, `**` any number of segments, `[...]` and `{a,b}`."""
    path = glob if glob.startswith("/") else f"{base.as_posix().rstrip('/')}/{glob}"
    out, i, depth = [], 0, 0
    while i < len(path):
        ch = path[i]
        if path.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if path.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = path.find("]", i + 2)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = path[i + 1:end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body[:1] == "!" else f"[{body}]")
                i = end
        elif ch == "{":
            out.append("(?:")
            depth += 1
        elif ch == "}" and depth:
            out.append(")")
            depth -= 1
        elif ch == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + ")" * depth


# -- while serving ------------------------------------------------------------------


class WatchLifecycle(Lifecycle):
    """`host up`'s steps, plus a thread that watches, builds and swaps versions."""

    reloads = True

    def __init__(self, startup: Startup, settings: AppSettings, options: WatchOptions) -> None:
        self.startup = startup
        self.settings = settings
        self.options = options
        self.report = (lambda line: None) if startup.config.quiet else logs.info
        self.stop = threading.Event()
        self.reloadable: Reloadable | None = None
        self.triggers: RedisTriggers | None = None
        self.engine: Engine | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.digests: dict[str, str] = {}  # component id -> digest of the .wasm served

    def asgi(self, host_app: HostApp, engine: Engine) -> Any:
        self.reloadable = Reloadable(host_app)
        self.engine = engine
        for component in host_app.app.manifest.components.values():
            self._remember(host_app.app.manifest, component.id)
        return self.reloadable

    def subscribed(self, triggers: RedisTriggers) -> None:
        assert self.reloadable is not None
        triggers.holds = self.reloadable  # a replaced version closes after its messages
        self.triggers = triggers

    def serving(self, server: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self.thread.start()

    def close(self, app: App) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)  # a build still running is left to finish alone
        if self.reloadable is not None:
            self.reloadable.close()
        app.close()

    # -- the watch thread ---------------------------------------------------------

    def _run(self) -> None:
        assert self.reloadable is not None
        plan = Plan.of(self.reloadable.app.manifest, self.options.skip_build)
        # yield_on_timeout: the first (empty) batch says the watcher is in place.
        watcher = watchfiles.watch(
            plan.root, watch_filter=lambda change, path: plan.wants(change, path),
            debounce=max(self.options.debounce_ms, 1), step=min(50, self.options.debounce_ms),
            stop_event=self.stop, rust_timeout=200, yield_on_timeout=True,
            raise_interrupt=False)
        watching = False
        for changed in watcher:
            if not watching:
                watching = True
                logs.info(f"Watching {plan.root} for changes (Ctrl-C to stop)")
            if not changed:
                continue
            found = plan.changes(path for _, path in changed)
            try:
                if self.options.clear:
                    sys.stdout.write(_CLEAR)
                self._apply(found)
            except Exception:  # a bug of ours: say so, keep watching
                log.exception("host watch: could not apply the changes")
            plan = Plan.of(self.reloadable.app.manifest, self.options.skip_build)

    def _apply(self, found: Changes) -> None:
        assert self.reloadable is not None
        current = self.reloadable.app
        if found.manifest or found.files:
            self._reload_app(current, found.manifest)
            return
        ids = set(found.artifacts)
        for component_id in sorted(found.sources):
            logs.info(f"{component_id}: sources changed; building")
            if self._build(current.manifest, [component_id]):
                ids.add(component_id)
        for component_id in sorted(found.sources & ids):
            if not self._changed(current.manifest, component_id):
                logs.info(f"{component_id}: built the .wasm being served; nothing to reload")
        ids = {cid for cid in ids if self._changed(current.manifest, cid)}
        if ids and not self.stop.is_set():
            self._reload(current, sorted(ids))

    def _build(self, manifest: Manifest, component_ids: list[str] | None = None) -> bool:
        try:
            build_app(manifest, component_ids or (), say=logs.info)
            return True
        except HostError as exc:
            _failed(exc, "Still serving the previous version")
            return False

    def _reload(self, current: App, component_ids: list[str]) -> None:
        assert self.engine is not None
        names = ", ".join(component_ids)
        start = time.perf_counter()
        for component_id in component_ids:  # tried once: its own .wasm event does not retry
            self._remember(current.manifest, component_id)
        try:
            new = reload_components(current, self.engine, self.settings, component_ids,
                                    report=self.report)
        except HostError as exc:
            _failed(exc, f"Still serving the previous version of {names}")
            return
        if self._swap(new, current):
            logs.info(f"Reloaded {names} in {(time.perf_counter() - start) * 1000:.0f} ms")

    def _reload_app(self, current: App, manifest_changed: bool) -> None:
        assert self.engine is not None
        try:
            manifest = load_manifest(current.manifest.path)
        except HostError as exc:
            _failed(exc, "Still serving the previous version")
            return
        logs.info(f"{'spin.toml' if manifest_changed else 'files'} changed; reloading the app")
        if manifest_changed and not self.options.skip_build and not self._build(manifest):
            return
        start = time.perf_counter()
        try:
            runtime_config = load_runtime_config_file(self.startup.runtime_config_file)
            # Start-up data (--key-value, --sqlite) is in the shared stores already;
            # fresh in-memory stores get it again (the first worker's rule).
            settings = replace(self.startup.settings(manifest, runtime_config),
                               seed_shared=False)
            new = load_app(manifest, self.engine, settings, report=self.report)
        except HostError as exc:
            _failed(exc, "Still serving the previous version")
            return
        try:
            fresh = self.triggers.connect_new(new, self.report) if self.triggers else []
        except HostError as exc:
            new_only(new, current).run()
            _failed(exc, "Still serving the previous version")
            return
        if self._swap(new, current, fresh):
            self.settings = settings
            self.digests.clear()
            for component in manifest.components.values():
                self._remember(manifest, component.id)
            logs.info(f"Reloaded the app in {(time.perf_counter() - start) * 1000:.0f} ms")
            print_routes(new, self.startup.base_url)

    def _swap(self, new: App, current: App, fresh: list[Subscriber] | None = None) -> bool:
        """Serve `new` from the next request and Redis message on; False (and `new`
        closed) if serving has ended meanwhile."""
        assert self.loop is not None and self.reloadable is not None
        swapped = threading.Event()
        reloadable = self.reloadable
        # The subscribers first: the old version is closed once nothing holds it, and a
        # message holds the version its subscriber hands it to (host/redis_trigger.py).
        if self.triggers is not None and not self.triggers.use(new, fresh or []):
            new_only(new, current).run()  # stopping: the triggers are closed
            return False

        def swap() -> None:
            reloadable.swap(new)
            swapped.set()

        try:
            self.loop.call_soon_threadsafe(swap)
        except RuntimeError:  # the loop is closed: the server has stopped
            if self.triggers is None:  # else messages may run on it until exit
                new_only(new, current).run()
            return False
        while not swapped.wait(0.1):
            if self.stop.is_set():  # the loop stops without running it
                if self.triggers is None:  # else messages may run on it until exit
                    new_only(new, current).run()
                return False
        return True

    def _changed(self, manifest: Manifest, component_id: str) -> bool:
        """Whether the component's .wasm differs from the one served (or last tried)."""
        return _digest(manifest, component_id) != self.digests.get(component_id)

    def _remember(self, manifest: Manifest, component_id: str) -> None:
        self.digests[component_id] = _digest(manifest, component_id)


def _failed(exc: HostError, still: str) -> None:
    logs.write_lines(sys.stderr, f"Error: {exc}\n{still}")


def _digest(manifest: Manifest, component_id: str) -> str:
    import hashlib

    try:
        path = component_path(manifest, manifest.components[component_id])
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (HostError, OSError, KeyError):
        return ""
