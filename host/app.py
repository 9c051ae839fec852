"""Manifest -> a ready-to-serve app: route table, compiled components, executors.

This is Spin's "loader + trigger start" phase: everything that can fail because
of the manifest or a component fails here, before the server listens, with a
message naming the component and the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from host.errors import ComponentError
from host.executors.component import ComponentExecutor, Limits
from host.manifest import (
    Component,
    FileSource,
    Manifest,
    StaticResponse,
    UrlSource,
)
from host.routing import Router
from host.runtime.engine import Engine
from host.stdio import ComponentStdio

log = logging.getLogger("host.app")


@dataclass(frozen=True)
class AppSettings:
    """What `host up` / `host check` pass to the loader; defaults match `spin up`."""

    env: Mapping[str, str] = field(default_factory=dict)  # `-e K=V`, wins over the manifest
    log_dir: Path | None = None  # None: no log files
    pool_size: int = 4
    limits: Limits = Limits()
    echo_output: TextIO | None = None  # where component output is echoed, prefixed


@dataclass
class App:
    manifest: Manifest
    router: Router
    executors: dict[str, ComponentExecutor]  # by component id
    static_responses: dict[str, StaticResponse]  # by trigger id

    def close(self) -> None:
        for executor in self.executors.values():
            executor.close()
            executor.stdio.close()


def allows_every_host(hosts: tuple[str, ...]) -> bool:
    """True when the allow-list admits any host on any port for http and https."""
    entries = set(hosts)
    if "*://*:*" in entries:
        return True
    return {"http://*:*", "https://*:*"} <= entries


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


def used_components(manifest: Manifest) -> list[Component]:
    """Components that some trigger uses (Spin neither loads nor runs the others)."""
    ids = {t.component for t in manifest.triggers if t.component is not None}
    return [c for cid, c in manifest.components.items() if cid in ids]


def load_app(
    manifest: Manifest,
    engine: Engine,
    settings: AppSettings,
    report: Callable[[str], None] = lambda line: None,
) -> App:
    """Compile (or load from cache) and pre-instantiate every used component."""
    for trigger in manifest.triggers:
        if trigger.executor.kind == "wagi":
            raise ComponentError(
                f"{manifest.path}: [[trigger.http]] '{trigger.id}' executor: the WAGI executor "
                "is not supported yet; use the default executor with a component built "
                "against wit/"
            )
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
    executors: dict[str, ComponentExecutor] = {}
    try:
        for component in used_components(manifest):
            executors[component.id] = _load_component(manifest, component, engine, settings,
                                                      report)
    except BaseException:
        for executor in executors.values():
            executor.close()
        raise
    statics = {t.id: t.static_response for t in manifest.triggers if t.static_response}
    return App(manifest, router, executors, statics)


def _load_component(
    manifest: Manifest,
    component: Component,
    engine: Engine,
    settings: AppSettings,
    report: Callable[[str], None],
) -> ComponentExecutor:
    path = component_path(manifest, component)
    if not path.is_file():
        raise ComponentError(
            f"{manifest.path}: [component.{component.id}] source: {path} does not exist; "
            "build it first (host build, or host up --build) or fix the path"
        )
    _warn_unimplemented(component)
    loaded = engine.load(
        path, component.id,
        on_compile=lambda size: report(
            f"{component.id}: compiling {path.name} ({size / 1e6:.1f} MB; cached afterwards)..."
        ),
    )
    how = "loaded from compile cache" if loaded.cached else "compiled"
    report(f"{component.id}: {how} in {loaded.seconds * 1000:.0f} ms ({path.name})")
    env = dict(component.environment)
    env.update(settings.env)
    stdio = ComponentStdio(component.id, settings.log_dir, settings.echo_output)
    executor = ComponentExecutor(
        engine,
        component.id,
        loaded,
        env,
        stdio,
        allow_wasi_http=allows_every_host(component.allowed_outbound_hosts),
        limits=settings.limits,
        pool_size=settings.pool_size,
    )
    start = time.perf_counter()
    executor.start()
    if settings.pool_size:
        per = (time.perf_counter() - start) / settings.pool_size
        report(f"{component.id}: {settings.pool_size} instances ready "
               f"({per * 1000:.2f} ms each)")
    return executor


def _warn_unimplemented(component: Component) -> None:
    grants = {
        "files": component.files,
        "key_value_stores": component.key_value_stores,
        "sqlite_databases": component.sqlite_databases,
        "variables": tuple(component.variables),
        # An allow-all component may already use wasmtime's own wasi:http.
        "allowed_outbound_hosts": () if allows_every_host(component.allowed_outbound_hosts)
        else component.allowed_outbound_hosts,
    }
    for key, value in grants.items():
        if value:
            log.warning(
                'component "%s": %s is not provided by this host version yet; '
                "the component gets nothing from it", component.id, key,
            )
