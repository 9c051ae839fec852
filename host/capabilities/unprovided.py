"""Spin interfaces this host does not provide yet: LLM, MySQL.

A Spin SDK 3.x app imports every interface of Spin's platform world whether it
uses them or not (componentize-py binds the whole world), so refusing these at
start-up would refuse every Spin Python app. They are linked instead, and every
call answers the interface's own error value, naming what is missing (never a
trap), with one log line naming the component. The component can never hold one
of their resources: `open` always fails.

An interface a real capability provides (earlier in host.grants.FACTORS) is
linked by that capability, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import wasmtime.component as wc

from host.capabilities import Capability, Err, Factor, ResourceTable
from host.manifest import Component

log = logging.getLogger("host.capabilities")

# interface -> (what it is, the error case that carries a message, its resources)
UNPROVIDED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fermyon:spin/llm@2.0.0": ("LLM inferencing", "runtime-error", ()),
    "fermyon:spin/mysql@2.0.0": ("MySQL", "connection-failed", ("connection",)),
    # types only (MySQL's; PostgreSQL@2 uses them too, with nothing to define)
    "fermyon:spin/rdbms-types@2.0.0": ("database types", "", ()),
}


class Unprovided(Capability):
    interfaces = tuple(UNPROVIDED)

    def __init__(self, component_id: str) -> None:
        super().__init__(component_id)
        self._tables: dict[str, ResourceTable[Any]] = {}

    def tables(self) -> list[ResourceTable[Any]]:
        return list(self._tables.values())

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        names = UNPROVIDED[interface][2]
        return {name: self._tables.setdefault(f"{interface}#{name}", ResourceTable(name))
                for name in names}

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        return {}

    def fallback(self, interface: str, name: str) -> Callable[..., Err]:
        """Every function of these interfaces answers the same error."""
        what, case, _ = UNPROVIDED[interface]
        message = f"this host does not provide {what} ({interface}) yet"

        def answer(store: Any, *args: Any) -> Err:
            log.warning('component "%s" called %s: %s', self.component_id, interface, message)
            return Err(wc.Variant(case, message))
        return answer


class UnprovidedFactor(Factor):
    def for_component(self, component: Component) -> Unprovided:
        return Unprovided(component.id)
