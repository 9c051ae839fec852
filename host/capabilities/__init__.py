"""Capabilities a manifest grants to a component: Spin's "factors", in Python.

Each capability is one module with a `Factor` (per app) that hands out a
`Capability` (per component). Their hooks, and who calls them:

- `Factor(app)`, once per app at start-up (`host.grants.Grants`, in registry
  order): read the app's part of the runtime config (`runtime_config_keys`)
  and settings, open shared backends and clients; fail loudly. With
  `app.check_only` (`host check`): validate the same, open and create nothing.
- `Factor.start()`, once per app after every factor is configured, before
  any component loads (not for `host check`): put start-up data in the app's
  stores (`host up --key-value`, `--sqlite`).
- `Factor.for_component(component)`, once per component (the loader): resolve
  the component's grants (`manifest_keys`) into a `Capability`, or None when
  the capability has nothing to give it; fail naming the component and label.
- `Capability.link(...)`, once per component linker (the component executor):
  define the host functions of the interfaces the component imports, closed
  over its grants.
- `Capability.prepare(wasi)`, per instance before it is made (only for
  components that import WASI: the others get no WASI context); and
  `Capability.release_store(key)`, per instance when it is discarded: host
  resources (buckets, connections) live in a `ResourceTable` keyed by the
  instance's store and go away with it.
- `Factor.close()`, once, when the app stops.

Every host function is wrapped once, at link time, by `_guarded` (a host-side
bug becomes a trap) and, when tracing is on, by `host.tracing.host_call` (a
child span of the request per call).

A new capability is one module with a Factor subclass, plus one line in
`host.grants.FACTORS`. Every capability is deny-by-default: a call outside the
grants returns the interface's own access-denied error value to the guest and
logs one line that names the component and what it asked for.

Host functions return canonical values (`Ok`/`Err`, `wc.Variant`, tuples for
records); `host.runtime.marshal.host_value_adapter` converts them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import wasmtime
import wasmtime.component as wc

from host import tracing
from host.errors import ComponentError
from host.limits import MAX_LIVE_HANDLES
from host.runtime.calls import define_func, import_func_types
from host.runtime.marshal import (
    Err,
    GuestHandle,
    HostHandle,
    Ok,
    compile_type,
    host_value_adapter,
)
from host.runtime.wasmtime_private import context_address

if TYPE_CHECKING:
    from host.app import AppSettings
    from host.manifest import Component, Manifest
    from host.runtime_config import RuntimeConfig

__all__ = ["AppContext", "Capability", "Err", "Factor", "HostHandle", "Ok", "ResourceTable",
           "store_key"]

log = logging.getLogger("host.capabilities")

T = TypeVar("T")
F = TypeVar("F", bound="Factor")

# Handles as the guest passed them, before `to_host`.
_UNRESOLVED = (GuestHandle, wc.ResourceAny)

# Host resource type ids: unique per resource kind in this process.
_resource_type_ids = itertools.count(1)


def store_key(store: Any) -> int:
    """The address of a store's context: one per live store, the same in host calls."""
    return context_address(store)


class ResourceTable(Generic[T]):
    """Host-side state behind one resource type, owned per store.

    The guest holds a handle whose `rep` indexes this table. Entries go away
    when the guest drops the handle, or all at once when the executor releases
    the instance's store, so nothing outlives the request that made it.
    """

    def __init__(self, name: str, close: Callable[[T], None] = lambda value: None,
                 max_live: int = MAX_LIVE_HANDLES) -> None:
        self.name = name
        self.max_live = max_live  # per store
        self.type_id = next(_resource_type_ids)
        self.type = wc.ResourceType.host(self.type_id)
        self._close = close
        self._entries: dict[int, tuple[int, T]] = {}  # rep -> (store key, value)
        self._by_store: dict[int, set[int]] = {}
        self._reps = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, store: Any, value: T) -> HostHandle:
        """Store `value` for this store; returns an owned handle for the guest.

        Past `max_live` handles in this store the value is closed and the call
        traps: nothing a guest can loop on grows without bound."""
        key = store_key(store)
        with self._lock:
            live = self._by_store.setdefault(key, set())
            full = len(live) >= self.max_live
            if not full:
                rep = next(self._reps) & 0xFFFFFFFF
                self._entries[rep] = (key, value)
                live.add(rep)
        if full:
            self._close(value)
            raise wasmtime.WasmtimeError(
                f"the guest holds {self.max_live} {self.name} handles, the most one instance "
                "may hold at once; drop some first")
        return HostHandle(rep, self.type_id)

    def live(self, store: Any) -> int:
        """How many handles of this table the store holds now."""
        return len(self._by_store.get(store_key(store), ()))

    def full(self, store: Any) -> bool:
        """The store holds `max_live` handles: an `open` should answer its interface's
        "too many" error before making a value `add` would refuse."""
        return self.live(store) >= self.max_live

    def get(self, store: Any, handle: Any) -> T:
        """The value behind a handle the guest passed in (borrowed or owned)."""
        host = handle.to_host(store) if isinstance(handle, _UNRESOLVED) else handle
        entry = self._entries.get(host.rep)
        if entry is None or entry[0] != store_key(store):
            raise LookupError(f"unknown {self.name} handle")
        return entry[1]

    def take(self, store: Any, handle: Any) -> T:
        """Remove and return the value behind an owned handle passed to the host."""
        host = handle.to_host(store) if isinstance(handle, _UNRESOLVED) else handle
        value = self.get(store, host)
        self._forget(host.rep)
        return value

    def _forget(self, rep: int) -> T | None:
        with self._lock:
            entry = self._entries.pop(rep, None)
            if entry is None:
                return None
            reps = self._by_store.get(entry[0])
            if reps is not None:
                reps.discard(rep)
                if not reps:
                    del self._by_store[entry[0]]
        return entry[1]

    def drop(self, rep: int) -> None:
        """The guest dropped its handle."""
        value = self._forget(rep)
        if value is not None:
            self._close(value)

    def release_store(self, key: int) -> None:
        """Release everything a store still holds (its instance is being discarded)."""
        if key not in self._by_store:
            # Most tables hold nothing for most stores; entries for a store are only
            # added during its own calls, which are over by now: no lock needed.
            return
        with self._lock:
            reps = self._by_store.pop(key, set())
            values = [self._entries.pop(rep)[1] for rep in reps if rep in self._entries]
        for value in values:
            self._close(value)

    def define(self, instance: wc.LinkerInstance, name: str) -> None:
        instance.add_resource(name, self.type, lambda _store, rep: self.drop(rep))


class Capability:
    """One capability for one component.

    Subclasses name their `interfaces` and give, per interface, the host
    `functions` (by import name) and the `resources` (WIT name -> table).
    """

    interfaces: tuple[str, ...] = ()
    #: Each host function call is a child span of its request when tracing is on
    #: (host/tracing.py); False for a capability that makes its own (outbound HTTP).
    traced: ClassVar[bool] = True

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id

    def tables(self) -> list[ResourceTable[Any]]:
        return []

    def link(self, linker: wc.Linker, component: wc.Component, engine: wasmtime.Engine,
             linked: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """Define every interface of this capability that the component imports,
        except those in `linked` (another capability's); returns the ones defined."""
        imported = component.type.imports(engine)
        defined: set[str] = set()
        for interface in self.interfaces:
            if interface not in imported or interface in linked:
                continue
            defined.add(interface)
            types = import_func_types(component, engine, interface)
            functions = self.functions(interface)
            with linker.root() as root, root.add_instance(interface) as instance:
                for resource, table in self.resources(interface).items():
                    table.define(instance, resource)
                for name, fty in types.items():
                    func = functions.get(name) or self.fallback(interface, name)
                    if func is None:
                        raise ComponentError(
                            f'component "{self.component_id}" imports {interface}#{name}, '
                            "which this host does not provide (build against the WIT in wit/)")
                    call = _guarded(self.component_id, interface, name, _canonical(fty, func))
                    if self.traced:
                        call = tracing.host_call(self.component_id, interface, name, call)
                    define_func(instance, name, fty, call)
        return defined

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        raise NotImplementedError

    def fallback(self, interface: str, name: str) -> Callable[..., Any] | None:
        """A function the component imports that `functions` does not name (None: the
        component is refused at start-up)."""
        return None

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        return {}

    def prepare(self, wasi: wasmtime.WasiConfig) -> None:
        """Per instance, before it is made: add to its WASI configuration."""

    def release_store(self, key: int) -> None:
        """Per instance, when it is discarded: free what its store still holds."""
        for table in self.tables():
            table.release_store(key)


@dataclass
class AppContext:
    """What a factor is configured from, and the factors configured before it."""

    manifest: Manifest
    settings: AppSettings
    report: Callable[[str], None] = lambda line: None
    factors: dict[type[Factor], Factor] = field(default_factory=dict)

    @property
    def runtime_config(self) -> RuntimeConfig:
        return self.settings.runtime_config

    @property
    def check_only(self) -> bool:
        """`host check`: validate, but create no file and make no connection."""
        return self.settings.check_only

    def factor(self, cls: type[F]) -> F:
        """An earlier factor of the registry (e.g. variables, for their values)."""
        found = self.factors.get(cls)
        if not isinstance(found, cls):
            raise LookupError(f"{cls.__name__} must come before its users in host.grants.FACTORS")
        return found


class Factor:
    """One capability configured for one app; see the module docstring for the hooks."""

    #: `[component.ID]` keys this capability reads (its grants).
    manifest_keys: ClassVar[tuple[str, ...]] = ()
    #: Runtime-config tables this capability reads.
    runtime_config_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, app: AppContext) -> None:
        self.app = app

    def start(self) -> None:
        """Start-up data (`--key-value`, `--sqlite`); fail loudly."""

    def for_component(self, component: Component) -> Capability | None:
        return None

    def close(self) -> None:
        """Release what configuring opened (backends, clients, staged files)."""


def _guarded(component_id: str, interface: str, name: str,
             func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a host-side bug into a trap with a message, never a Python exception.

    wasmtime-py parks a raised Python exception in one process-wide slot; with
    guest calls on many threads it could surface in another request. A
    WasmtimeError travels with its own call.
    """
    def call(store: Any, *args: Any) -> Any:
        try:
            return func(store, *args)
        except wasmtime.WasmtimeError:
            raise
        except Exception as exc:
            log.error('component "%s": host function %s#%s failed: %s: %s',
                      component_id, interface, name, type(exc).__name__, exc)
            raise wasmtime.WasmtimeError(
                f"host function {interface}#{name} failed: {type(exc).__name__}: {exc}"
            ) from None
    return call


def _canonical(fty: wc.FuncType, func: Callable[..., Any]) -> Callable[..., Any]:
    if fty.result is None:
        return func
    adapt = host_value_adapter(compile_type(fty.result))
    if adapt is None:
        return func
    return lambda store, *args: adapt(func(store, *args))
