"""Runs HTTP requests through standard components exporting `wasi:http/incoming-handler@0.2.x`.

Like the component executor: one executor per component, a pool of
pre-instantiated instances, a fresh one per request, the epoch deadline and
the memory limit. The difference is the interface: the host defines the WASI
interfaces tied to wasi:io resources itself (host/wasip2/), hands the guest an
`incoming-request` whose body is pulled from the client as the guest reads,
and sends the response to the client as the guest writes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import wasmtime
import wasmtime.component as wc

from host.capabilities import store_key
from host.deadline import request_deadline
from host.errors import ComponentError, GuestError
from host.executors.component import (
    deadline_exceeded,
    guest_failure,
    link_capabilities,
    link_wasi_host,
    refuse_unprovided,
    trap_reason,
)
from host.grants import ComponentGrants
from host.limits import DEFAULT_POOL_SIZE, Limits
from host.runtime.abi import HttpRequest
from host.runtime.calls import TypedFunc, export_func_type
from host.runtime.engine import Engine, LoadedComponent
from host.runtime.pool import InstancePool
from host.runtime.wasmtime_private import WasiEnv
from host.stdio import ComponentStdio
from host.wasip2.http import Exchange, IncomingRequest, Outparam, ResponseSink
from host.wasip2.io import Source

log = logging.getLogger("host.executor")

HANDLER_PREFIX = "wasi:http/incoming-handler@0.2."
WASI03_PREFIX = "wasi:http/handler@0.3"
# Only wasmtime's own WASI is linked next to ours; any other import is refused.
_WASMTIME_WASI = ("wasi:cli/", "wasi:random/", "wasi:clocks/wall-clock")


def wasi_http_export(exports: list[str]) -> str | None:
    """The `wasi:http/incoming-handler@0.2.x` export among `exports`, if any."""
    return next((name for name in exports if name.startswith(HANDLER_PREFIX)), None)


def refuse_wasi03(component_id: str, exports: list[str]) -> None:
    """WASI 0.3 handlers cannot be served: fail start-up before instantiating one."""
    found = next((name for name in exports if name.startswith(WASI03_PREFIX)), None)
    if found is not None:
        raise ComponentError(
            f'component "{component_id}" exports {found} (WASI 0.3, e.g. Spin SDK 4/5), '
            "which this host cannot serve: wasmtime-py's C API cannot pass its stream and "
            "future values. Build it for WASI 0.2 instead: Spin SDK 3.4.1 with "
            "componentize-py 0.17.2 (world spin-http), or any wasi:http/proxy@0.2.x")


@dataclass
class _Instance:
    store: wasmtime.Store
    func: wc.Func


class WasiHttpExecutor:
    def __init__(
        self,
        engine: Engine,
        component_id: str,
        loaded: LoadedComponent,
        export: str,
        environment: Mapping[str, str],
        stdio: ComponentStdio,
        grants: ComponentGrants,
        limits: Limits | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        assert isinstance(loaded.component, wc.Component)
        self.engine = engine
        self.id = component_id
        self.component = loaded.component
        self.export = export
        self.environment = dict(environment)
        self._env = WasiEnv(list(self.environment.items()))
        self.stdio = stdio
        self.grants = grants
        self.limits = limits or Limits()
        if self.limits.max_instance_reuse > 1:
            log.warning('component "%s": wasi:http components get a fresh instance per request '
                        "(--max-instance-reuse-count does not apply)", component_id)
        self.linker = self._link()
        self.typed = TypedFunc(export_func_type(self.component, engine.wasmtime, export,
                                                "handle"))
        self.pool: InstancePool[_Instance] = InstancePool(component_id, self._instantiate,
                                                          pool_size)

    def _link(self) -> wc.Linker:
        engine = self.engine.wasmtime
        linker = wc.Linker(engine)
        linker.add_wasip2()
        self.wasi, defined = link_wasi_host(linker, self.id, self.component, self.engine,
                                            self.stdio, self.grants)
        provided = defined | link_capabilities(linker, self.id, self.component, self.engine,
                                               self.grants)
        refuse_unprovided(self.id, self.component, engine, provided, _WASMTIME_WASI,
                          'README.md, "Spin SDK apps", lists the interfaces it does')
        return linker

    def start(self) -> None:
        try:
            self.pool.start()
        except wasmtime.WasmtimeError as exc:
            raise ComponentError(
                f'component "{self.id}" cannot be instantiated: {trap_reason(exc)}') from None

    def close(self) -> None:
        self.pool.close()

    def _instantiate(self) -> _Instance:
        store = wasmtime.Store(self.engine.wasmtime)
        wasi = wasmtime.WasiConfig()
        self._env.apply(wasi)
        self.grants.prepare(wasi)
        store.set_wasi(wasi)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_epoch_deadline(self.engine.ticks(self.limits.instantiate_seconds))
        instance = self.linker.instantiate(store, self.component)
        interface = instance.get_export_index(store, self.export)
        index = instance.get_export_index(store, "handle", interface)
        func = instance.get_func(store, index) if index is not None else None
        if func is None:
            raise wasmtime.WasmtimeError(f"{self.export}#handle not found")
        return _Instance(store, func)

    def handle(self, request: HttpRequest, body: Source, sink: ResponseSink) -> None:
        """Run one request in a fresh instance; the response goes to `sink` as the guest
        writes it. Blocking: call it off the event loop."""
        instance = self.pool.take()
        store = instance.store
        store.set_epoch_deadline(self.engine.ticks(self.limits.deadline_seconds))
        exchange = Exchange(sink)
        incoming = IncomingRequest(request.method, request.path_with_query, request.scheme,
                                   request.authority, request.headers, body)
        tables = self.wasi.tables
        deadline = math.inf
        try:
            with request_deadline(self.limits.deadline_seconds) as deadline:
                args = (tables["incoming-request"].add(store, incoming),
                        tables["response-outparam"].add(store, Outparam(exchange)))
                self.typed.call(store, instance.func, args)
            if time.monotonic() >= deadline:
                raise deadline_exceeded(self.limits)
        except wasmtime.WasmtimeError as exc:
            raise guest_failure(exc, self.limits, deadline) from None
        finally:
            self.wasi.release(store)
            self.grants.release(store_key(store))
            store.close()
        if exchange.error is not None:
            raise GuestError(f"the guest answered error {_describe(exchange.error)}")
        if not exchange.responded:
            raise GuestError("the guest returned without calling response-outparam.set")
        if not exchange.finished:
            raise GuestError("the guest returned without finishing the response body "
                             "(outgoing-body.finish)")


def _describe(error: object) -> str:
    if isinstance(error, wc.Variant):
        return error.tag if error.payload is None else f"{error.tag}({error.payload!r})"
    return repr(error)
