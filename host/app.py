"""Manifest -> a ready-to-serve app: route table, compiled components, executors.

This is Spin's "loader + trigger start" phase: everything that can fail because
of the manifest or a component fails here, before the server listens, with a
message naming the component and the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import wasmtime.component as wc

from host.backends.redis import redact_url
from host.capabilities.sqlite import SqliteStatement
from host.capabilities.variables import VariablesFactor
from host.errors import ComponentError, ConfigError
from host.executors.component import ComponentExecutor
from host.executors.redis import InboundRedisExecutor
from host.executors.wagi import WagiExecutor, WagiProgram
from host.executors.wasi_http import (
    WasiHttpExecutor,
    refuse_wasi03,
    wasi_http_export,
)
from host.grants import ComponentGrants, Grants
from host.limits import (
    DEFAULT_POOL_SIZE,
    BlobStoreLimits,
    HttpLimits,
    KeyValueLimits,
    Limits,
    OutboundLimits,
    SqliteLimits,
)
from host.manifest import (
    Component,
    FileSource,
    HttpTrigger,
    Manifest,
    StaticResponse,
    UrlSource,
    redis_address_problem,
)
from host.routing import Router
from host.runtime.engine import Engine, LoadedComponent
from host.runtime_config import RuntimeConfig
from host.stdio import ComponentStdio
from host.templates import render

log = logging.getLogger("host.app")


@dataclass(frozen=True)
class AppSettings:
    """What `host up` / `host check` pass to the loader; defaults match `spin up`."""

    env: Mapping[str, str] = field(default_factory=dict)  # `-e K=V`, wins over the manifest
    log_dir: Path | None = None  # None: no log files
    pool_size: int = DEFAULT_POOL_SIZE
    limits: Limits = Limits()
    component_limits: Mapping[str, Limits] = field(default_factory=dict)  # by component id
    echo_output: TextIO | None = None  # where component output is echoed, prefixed
    follow: frozenset[str] | None = None  # --follow: only these components echo (None: all)
    variables: Mapping[str, str] = field(default_factory=dict)  # --variable, first provider
    key_values: tuple[tuple[str, str], ...] = ()  # --key-value, set in the default store
    sqlite_statements: tuple[SqliteStatement, ...] = ()  # --sqlite, run at start-up
    # Whether this process puts --key-value/--sqlite data into stores other processes
    # share (files, Redis): only the first worker does; private in-memory stores are
    # every process's own.
    seed_shared: bool = True
    runtime_config: RuntimeConfig = RuntimeConfig()
    state_dir: Path | None = None  # default stores live here; None: in memory
    outbound_limits: OutboundLimits = OutboundLimits()
    key_value_limits: KeyValueLimits = KeyValueLimits()
    blob_limits: BlobStoreLimits = BlobStoreLimits()
    sqlite_limits: SqliteLimits = SqliteLimits()
    self_origin: str | None = None  # where `self` outbound requests go, e.g. http://127.0.0.1:3000
    # Serving HTTPS: the certificate (chain) `self` requests expect from the listener.
    self_certificate: Path | None = None
    # WAGI programs' stdout is captured up to this (`--max-response-bytes`), then stopped.
    max_response_bytes: int = HttpLimits().max_response_bytes
    # `host check`: capabilities validate their configuration but create no file
    # and open no connection.
    check_only: bool = False


Executor = ComponentExecutor | WasiHttpExecutor | WagiExecutor


@dataclass(frozen=True)
class Subscription:
    """One Redis server's `[[trigger.redis]]`s, variables rendered: a subscriber's work
    (host/redis_trigger.py). As in Spin, one subscriber per distinct address."""

    address: str  # may hold a password: log `shown`
    channels: Mapping[str, tuple[str, ...]]  # channel -> component ids, in manifest order

    @property
    def shown(self) -> str:
        return redact_url(self.address)


@dataclass
class App:
    manifest: Manifest
    router: Router
    executors: dict[str, Executor]  # by trigger id (component executors are shared)
    static_responses: dict[str, StaticResponse]  # by trigger id
    grants: Grants
    subscriptions: tuple[Subscription, ...] = ()
    message_executors: dict[str, InboundRedisExecutor] = field(default_factory=dict)  # by id

    def close(self) -> None:
        executors: list[Executor | InboundRedisExecutor] = [*self.executors.values(),
                                                            *self.message_executors.values()]
        for executor in {id(e): e for e in executors}.values():
            executor.close()
        for stdio in {id(e.stdio): e.stdio for e in executors}.values():
            stdio.close()
        self.grants.close()


def component_path(manifest: Manifest, component: Component) -> Path:
    source = component.source
    if isinstance(source, FileSource):
        return (manifest.dir / source.path).resolve()
    if isinstance(source, UrlSource):
        what, hint = "url", source.url
    else:
        what, hint = "registry", f"{source.package}@{source.version}"
    raise ComponentError(
        f'{manifest.path}: [component.{component.id}] source: {what} sources ({hint}) are not '
        "supported yet; download the .wasm and set source to its path"
    )


def load_app(
    manifest: Manifest,
    engine: Engine,
    settings: AppSettings,
    report: Callable[[str], None] = lambda line: None,
) -> App:
    """Compile (or load from cache) and pre-instantiate every used component."""
    router = Router.build((t.id, t.component, t.route) for t in manifest.triggers)
    for dup in router.duplicates:
        log.warning(
            "The following component routes are duplicates and will never be used:\n"
            "  %s: %s (duplicate of %s)", dup.replaced, dup.route, dup.effective,
        )
    if router.reserved_routes:
        log.warning(
            "Routes under /.well-known/spin/ are handled by the host and will never be reached"
        )
    grants = Grants(manifest, settings, report)
    loader = _Loader(manifest, engine, settings, grants, report)
    try:
        executors = {t.id: loader.executor(t) for t in manifest.triggers
                     if t.component is not None}
        subscriptions = redis_subscriptions(manifest, grants)
        message_executors = {cid: loader.message_executor(cid)
                             for cid in dict.fromkeys(t.component for t in manifest.redis_triggers)}
    except BaseException:
        loader.close()
        grants.close()
        raise
    statics = {t.id: t.static_response for t in manifest.triggers if t.static_response}
    return App(manifest, router, executors, statics, grants, subscriptions, message_executors)


def redis_subscriptions(manifest: Manifest, grants: Grants) -> tuple[Subscription, ...]:
    """The app's `[[trigger.redis]]`s grouped by rendered address, as Spin groups them;
    an address that does not render to a Redis URL is a ConfigError naming the trigger."""
    variables = grants.app.factors[VariablesFactor]
    assert isinstance(variables, VariablesFactor)
    by_address: dict[str, dict[str, list[str]]] = {}
    for trigger in manifest.redis_triggers:
        template = trigger.address or manifest.application.redis_address or ""
        address = render(template, variables.values)
        problem = redis_address_problem(address)
        if problem is not None:
            where = ("address" if trigger.address is not None
                     else "[application.trigger.redis] address")
            raise ConfigError(f"{manifest.path}: [[trigger.redis]] '{trigger.id}' {where} "
                              f'"{redact_url(template)}" renders to {problem}')
        channel = render(trigger.channel, variables.values)
        by_address.setdefault(address, {}).setdefault(channel, []).append(trigger.component)
    return tuple(Subscription(address, {channel: tuple(ids) for channel, ids in channels.items()})
                 for address, channels in by_address.items())


def reload_components(app: App, engine: Engine, settings: AppSettings,
                      component_ids: Collection[str],
                      report: Callable[[str], None] = lambda line: None) -> App:
    """A new version of `app` (`host watch`): the components in `component_ids` loaded
    again from their sources, every other executor, the router and the grants shared
    with `app`. The new executors' pools are filled before this returns; on any
    failure they are closed and `app` is untouched."""
    manifest = app.manifest
    loader = _Loader(manifest, engine, settings, app.grants, report)
    try:
        executors = {t.id: loader.executor(t) if t.component in component_ids
                     else app.executors[t.id]
                     for t in manifest.triggers if t.component is not None}
        message_executors = {cid: loader.message_executor(cid) if cid in component_ids
                             else executor for cid, executor in app.message_executors.items()}
    except BaseException:
        loader.close()
        raise
    return App(manifest, app.router, executors, app.static_responses, app.grants,
               app.subscriptions, message_executors)


class _Loader:
    """Loads each component once and makes the executors its triggers ask for."""

    def __init__(self, manifest: Manifest, engine: Engine, settings: AppSettings,
                 grants: Grants, report: Callable[[str], None]) -> None:
        self.manifest = manifest
        self.grants = grants
        self.component_grants: dict[str, ComponentGrants] = {}
        self.engine = engine
        self.settings = settings
        self.report = report
        self.loaded: dict[str, tuple[LoadedComponent, ComponentStdio]] = {}
        self.component_executors: dict[str, ComponentExecutor | WasiHttpExecutor] = {}
        self.made: list[Executor | InboundRedisExecutor] = []

    def executor(self, trigger: HttpTrigger) -> Executor:
        assert trigger.component is not None
        component = self.manifest.components[trigger.component]
        if trigger.executor.kind == "http" and component.id in self.component_executors:
            return self.component_executors[component.id]
        loaded, stdio = self._load(component)
        env = {**component.environment, **self.settings.env}
        if component.id not in self.component_grants:
            self.component_grants[component.id] = self.grants.for_component(component)
        grants = self.component_grants[component.id]
        executor: Executor
        start = time.perf_counter()
        if trigger.executor.kind == "wagi":
            executor = WagiExecutor(self.engine, component.id, loaded,
                                    WagiProgram(trigger.executor.argv, env), stdio,
                                    self._limits(component), files_root=grants.files_root,
                                    max_output_bytes=self.settings.max_response_bytes)
            self.made.append(executor)
            executor.start()
            self.report(f"{component.id}: WAGI program linked for trigger {trigger.id}")
            return executor
        executor = self._component_executor(component, loaded, env, stdio, grants)
        self.made.append(executor)
        self.component_executors[component.id] = executor
        executor.start()
        if self.settings.pool_size:
            per = (time.perf_counter() - start) / self.settings.pool_size
            self.report(f"{component.id}: {self.settings.pool_size} instances ready "
                        f"({per * 1000:.2f} ms each)")
        return executor

    def message_executor(self, component_id: str) -> InboundRedisExecutor:
        """The executor of a component that `[[trigger.redis]]`s call (its own pool, beside
        any an HTTP trigger of the same component has)."""
        component = self.manifest.components[component_id]
        loaded, stdio = self._load(component)
        if component.id not in self.component_grants:
            self.component_grants[component.id] = self.grants.for_component(component)
        start = time.perf_counter()
        executor = InboundRedisExecutor(
            self.engine, component.id, loaded, {**component.environment, **self.settings.env},
            stdio, self.component_grants[component.id], limits=self._limits(component),
            pool_size=self.settings.pool_size)
        self.made.append(executor)
        executor.start()
        if self.settings.pool_size:
            per = (time.perf_counter() - start) / self.settings.pool_size
            self.report(f"{component.id}: {self.settings.pool_size} instances ready for Redis "
                        f"messages ({per * 1000:.2f} ms each)")
        return executor

    def _component_executor(self, component: Component, loaded: LoadedComponent,
                            env: dict[str, str], stdio: ComponentStdio,
                            grants: ComponentGrants) -> ComponentExecutor | WasiHttpExecutor:
        """Our own `spinhost:http` handler, or a standard `wasi:http` one; WASI 0.3 is
        refused here, before anything is instantiated."""
        limits, pool_size = self._limits(component), self.settings.pool_size
        if isinstance(loaded.component, wc.Component):
            exports = sorted(loaded.component.type.exports(self.engine.wasmtime))
            refuse_wasi03(component.id, exports)
            export = wasi_http_export(exports)
            if export is not None:
                return WasiHttpExecutor(self.engine, component.id, loaded, export, env, stdio,
                                        grants, limits=limits, pool_size=pool_size)
        return ComponentExecutor(self.engine, component.id, loaded, env, stdio, grants,
                                 limits=limits, pool_size=pool_size)

    def _limits(self, component: Component) -> Limits:
        return self.settings.component_limits.get(component.id, self.settings.limits)

    def _load(self, component: Component) -> tuple[LoadedComponent, ComponentStdio]:
        if component.id in self.loaded:
            return self.loaded[component.id]
        path = component_path(self.manifest, component)
        if not path.is_file():
            raise ComponentError(
                f"{self.manifest.path}: [component.{component.id}] source: {path} does not "
                "exist; build it first (host build, or host up --build) or fix the path"
            )
        loaded = self.engine.load(
            path, component.id,
            on_compile=lambda size: self.report(
                f"{component.id}: compiling {path.name} ({size / 1e6:.1f} MB; "
                "cached afterwards)..."
            ),
        )
        how = "loaded from compile cache" if loaded.cached else "compiled"
        self.report(f"{component.id}: {how} in {loaded.seconds * 1000:.0f} ms ({path.name})")
        follow = self.settings.follow
        echo = self.settings.echo_output if follow is None or component.id in follow else None
        stdio = ComponentStdio(component.id, self.settings.log_dir, echo)
        self.loaded[component.id] = (loaded, stdio)
        return loaded, stdio

    def close(self) -> None:
        for executor in self.made:
            executor.close()
        for _, stdio in self.loaded.values():
            stdio.close()
