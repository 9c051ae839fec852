"""Runs HTTP requests through components that export our incoming handler.

One executor per component: it owns the component's linker, its pool of
pre-instantiated instances and its output sinks. Each request takes a fresh
instance from the pool, gets an epoch deadline, is handled, and the instance is
dropped, so one request's guest state never reaches another's.

`PooledComponent` is that machinery without the export: the Redis trigger's
executor (host/executors/redis.py) is the same pool, limits, grants and
deadline around another export.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import wasmtime
import wasmtime.component as wc

from host.capabilities import store_key
from host.capabilities.blobstore import BlobStore
from host.capabilities.outbound import Outbound
from host.deadline import request_deadline
from host.errors import ComponentError, GuestError, GuestTimeout, GuestTrap, MarshalError
from host.grants import ComponentGrants
from host.limits import DEFAULT_POOL_SIZE, Limits
from host.runtime import abi
from host.runtime.engine import Engine, LoadedComponent
from host.runtime.pool import InstancePool
from host.runtime.wasmtime_private import WasiEnv
from host.stdio import ComponentStdio
from host.wasip2 import wasi_host
from host.wasip2.resources import WasiHost

log = logging.getLogger("host.executor")

WASI_HTTP_PREFIX = "wasi:http/"
# Interfaces whose values are the host's wasi:io streams: importing one links host/wasip2.
WASI_HOST_PREFIXES = (WASI_HTTP_PREFIX, "wasi:blobstore/")
# What `add_wasip2()` defines (wasi:http is not: it is linked from host/wasip2).
_WASMTIME_WASIP2 = ("wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:filesystem/",
                    "wasi:random/", "wasi:sockets/")


@dataclass
class _Instance:
    store: wasmtime.Store
    handler: abi.BoundHandler
    uses: int = 0


R = TypeVar("R")


class PooledComponent:
    """A component's linker and pool of fresh instances, and `_run`, which makes one
    guest call in one of them under the limits. Subclasses find their export."""

    def __init__(
        self,
        engine: Engine,
        component_id: str,
        loaded: LoadedComponent,
        environment: Mapping[str, str],
        stdio: ComponentStdio,
        grants: ComponentGrants,
        limits: Limits | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.engine = engine
        self.id = component_id
        if not isinstance(loaded.component, wc.Component):
            raise ComponentError(
                f'component "{component_id}" is a core WebAssembly module (a WASI preview 1 '
                f"program): {self._core_module_hint}"
            )
        self.component = loaded.component
        self.environment = dict(environment)
        self._env = WasiEnv(list(self.environment.items()))
        self.stdio = stdio
        self.limits = limits or Limits()
        self.export = self._find_export()
        self.grants = grants
        self.linker = self._link()
        self.pool: InstancePool[_Instance] = InstancePool(component_id, self._instantiate,
                                                          pool_size)

    _core_module_hint = ('serve it with executor = { type = "wagi" }, or build a component '
                         "against wit/")

    def _find_export(self) -> abi.HandlerExport:
        raise NotImplementedError

    def _link(self) -> wc.Linker:
        engine = self.engine.wasmtime
        linker = wc.Linker(engine)
        linker.add_wasip2()
        provided = link_capabilities(linker, self.id, self.component, self.engine, self.grants)
        self.wasi: WasiHost | None = None
        imports = abi.imported_names(self.component, engine)
        # A component that imports no WASI interface gets no WASI context: nothing
        # could read it, and setting one up costs more than the rest of instantiate.
        self._uses_wasi = any(name.startswith("wasi:") for name in imports)
        if any(name.startswith(WASI_HOST_PREFIXES) for name in imports):
            # componentize-js imports wasi:http for `fetch` whether or not the app uses
            # it: the host's own, as for wasi:http components, so outbound requests go
            # through allowed_outbound_hosts like everyone else's. wasi:blobstore's
            # values are wasi:io streams, which then must be the host's too.
            self.wasi, defined = link_wasi_host(linker, self.id, self.component, self.engine,
                                                self.stdio, self.grants)
            provided |= defined
        refuse_unprovided(self.id, self.component, engine, provided, _WASMTIME_WASIP2,
                          "build against the world in wit/")
        return linker

    def start(self) -> None:
        """Instantiate the pool now: link and start-up errors surface before serving."""
        try:
            self.pool.start()
        except wasmtime.WasmtimeError as exc:
            raise ComponentError(
                f'component "{self.id}" cannot be instantiated: {trap_reason(exc)}'
            ) from None

    def close(self) -> None:
        self.pool.close()

    def _instantiate(self) -> _Instance:
        store = wasmtime.Store(self.engine.wasmtime)
        if self._uses_wasi:
            wasi = wasmtime.WasiConfig()
            self._env.apply(wasi)
            wasi.stdout_custom = self.stdio.stdout
            wasi.stderr_custom = self.stdio.stderr
            self.grants.prepare(wasi)  # e.g. the component's files, read-only at "/"
            store.set_wasi(wasi)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_epoch_deadline(self.engine.ticks(self.limits.instantiate_seconds))
        instance = self.linker.instantiate(store, self.component)
        return _Instance(store, self.export.bind(store, instance))

    def _run(self, call: Callable[[abi.BoundHandler], R]) -> R:
        """One guest call in a fresh instance (or a reused one, when
        --max-instance-reuse-count allows). Blocking: call it off the event loop."""
        instance = self.pool.take()
        instance.store.set_epoch_deadline(self.engine.ticks(self.limits.deadline_seconds))
        reused = False
        deadline = math.inf
        try:
            with request_deadline(self.limits.deadline_seconds) as deadline:
                result = call(instance.handler)
            if time.monotonic() >= deadline:
                # A host call cut short at the deadline answers the guest an
                # error value; the guest may still return before the next epoch
                # tick traps it. The caller gets the deadline's error either way.
                raise deadline_exceeded(self.limits)
            instance.uses += 1
            if instance.uses < self.limits.max_instance_reuse:
                self.pool.give_back(instance)  # only after success: a trap poisons it
                reused = True
            return result
        except wasmtime.WasmtimeError as exc:
            raise guest_failure(exc, self.limits, deadline) from None
        except MarshalError as exc:
            raise GuestError(f"invalid {self._result_name} from guest: {exc}") from None
        finally:
            if not reused:
                self._release(instance)

    _result_name = "response"

    def _release(self, instance: _Instance) -> None:
        """Free what the instance's store holds (open connections, snapshots), then the
        store itself, now and on this thread: a trap's traceback holds the request's
        frame in a reference cycle, which would otherwise keep the store (its memory
        and output callbacks) until a later GC pass or interpreter exit."""
        if self.wasi is not None:
            self.wasi.release(instance.store)
        self.grants.release(store_key(instance.store))
        instance.store.close()


class ComponentExecutor(PooledComponent):
    """HTTP requests through `spinhost:http/incoming-handler` (wit/)."""

    def _find_export(self) -> abi.HandlerExport:
        try:
            return abi.HandlerExport.find(self.component, self.engine.wasmtime)
        except abi.ExportNotFound as exc:
            exports = abi.exported_names(self.component, self.engine.wasmtime)
            if abi.INCOMING_HANDLER in exports:
                raise ComponentError(f'component "{self.id}": {exc}; rebuild it '
                                     "against wit/") from None
            raise ComponentError(
                f'component "{self.id}" does not export {abi.INCOMING_HANDLER} '
                f"or wasi:http/incoming-handler@0.2.x (it exports: "
                f"{', '.join(exports) or 'nothing'}); build against the world in wit/ or "
                "wasi:http/proxy@0.2 (see wit/README.md)"
            ) from None

    def handle(self, request: abi.HttpRequest) -> abi.HttpResponse:
        """Run one request in a fresh instance. Blocking: call it off the event loop."""
        return self._run(lambda handler: abi.call_handler(handler, request))


def link_capabilities(linker: wc.Linker, component_id: str, component: wc.Component,
                      engine: Engine, grants: ComponentGrants) -> set[str]:
    """Link every granted capability the component imports; the interfaces they cover."""
    covered: set[str] = set()
    for capability in grants.capabilities:
        try:
            covered |= capability.link(linker, component, engine.wasmtime, covered)
        except wasmtime.WasmtimeError as exc:
            raise ComponentError(
                f'component "{component_id}": cannot link {type(capability).__name__} '
                f"imports: {trap_reason(exc)}"
            ) from None
    return covered


def link_wasi_host(linker: wc.Linker, component_id: str, component: wc.Component,
                   engine: Engine, stdio: ComponentStdio, grants: ComponentGrants
                   ) -> tuple[WasiHost, set[str]]:
    """Define the host's own WASI pieces (host/wasip2: wasi:http and every interface tied
    to wasi:io resources) over wasmtime's, at the component's exact import names; call
    after `add_wasip2()`. Outbound requests go through the component's allow-list, its
    files are the preopen. Returns the host and the interfaces it defined."""
    outbound = next((c.handle for c in grants.capabilities if isinstance(c, Outbound)), None)
    blobs = next((c for c in grants.capabilities if isinstance(c, BlobStore)), None)
    wasi = wasi_host(component_id, stdio, outbound, grants.files_root, blobs)
    linker.allow_shadowing = True  # ours replace wasmtime's tied interfaces
    return wasi, set(wasi.link(linker, component, engine.wasmtime))


def refuse_unprovided(component_id: str, component: wc.Component, engine: wasmtime.Engine,
                      provided: set[str], wasmtime_wasi: tuple[str, ...], hint: str) -> None:
    """Fail start-up naming the first import nothing defines (never a trap at call time);
    `wasmtime_wasi`: prefixes of what `add_wasip2()` defines. Types-only interfaces need
    no definition."""
    for name, item in sorted(component.type.imports(engine).items()):
        if name in provided or name.startswith(wasmtime_wasi) or not _has_items(item, engine):
            continue
        raise ComponentError(
            f'component "{component_id}" imports {name}, which this host does not provide '
            f"({hint})")


def _has_items(item: Any, engine: wasmtime.Engine) -> bool:
    exports = getattr(item.ty, "exports", None)
    if exports is None:  # a function or resource imported at the top level
        return True
    return any(isinstance(e.ty, (wc.FuncType, wc.ResourceType))
               for e in exports(engine).values())


def deadline_exceeded(limits: Limits) -> GuestTimeout:
    return GuestTimeout(f"deadline of {limits.deadline_seconds:g} s exceeded")


def guest_failure(exc: BaseException, limits: Limits, deadline: float = math.inf
                  ) -> GuestError:
    """The GuestError (or GuestTimeout) a wasmtime error during a request stands for.

    Past the request's `deadline` it is a timeout whatever the trap: a host call
    cut short there (a read, a statement, a send) may have made the guest fail.
    """
    if time.monotonic() >= deadline:
        return deadline_exceeded(limits)
    reason = trap_reason(exc)
    if "too much data is being copied" in reason:
        return GuestTrap(
            "request/response body too large for one component call (wasmtime's "
            "host-call copy budget, about 2.5 MiB of body per call)"
        )
    if reason == "wasm trap: interrupt":
        return deadline_exceeded(limits)
    return GuestTrap(reason)


def trap_reason(exc: BaseException) -> str:
    """The cause of a wasmtime error on one line, without the wasm backtrace."""
    text = str(exc).strip()
    if "Caused by:" in text:
        causes = text.split("Caused by:", 1)[1].strip().splitlines()
        return "; ".join(line.strip() for line in causes if line.strip())
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
