"""What the outbound connection capabilities share (Redis, PostgreSQL, MQTT).

Each lets a guest `open` connections to servers its `allowed_outbound_hosts`
grants for the capability's URL schemes, and holds them in one resource table
per instance: at most `limits.max_open_connections` at once, every one closed
when the guest drops it or the instance's store is released. What differs (the
address rules, the client library, how a failure maps to the interface's
error) stays in each capability's module.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from host.capabilities import AppContext, Capability, Factor, ResourceTable
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.outbound import OutboundFactor
from host.manifest import Component

C = TypeVar("C")  # the capability's open connection
K = TypeVar("K", bound="ConnectionCapability[Any]")  # the capability a factor makes


class ConnectionCapability(Capability, Generic[C]):
    schemes: ClassVar[tuple[str, ...]]  # the allow-list entries it reads
    kind: ClassVar[str]  # names its table in messages: "redis" -> "redis connection"

    def __init__(self, component_id: str, allowed: AllowList, limits: Any) -> None:
        super().__init__(component_id)
        self.allowed = AllowList(e for e in allowed if e.scheme in ("*", *self.schemes))
        self.connections: ResourceTable[C] = ResourceTable(
            f"{self.kind} connection", self._close, max_live=limits.max_open_connections)

    def tables(self) -> list[ResourceTable[Any]]:
        return [self.connections]

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        return {"connection": self.connections}

    def _close(self, conn: C) -> None:
        """Close one connection: dropped by the guest, or its store released."""
        raise NotImplementedError


class ConnectionFactor(Factor, Generic[K]):
    """Each component's entries of the allow-list it resolved for HTTP, for one
    connection capability (its `schemes` pick them).

    `allowed_outbound_hosts` is OutboundFactor's key: read through it, not again."""

    capability: ClassVar[type[Any]]  # the ConnectionCapability subclass it makes
    limits_type: ClassVar[type]  # its limits, at their defaults

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self.outbound = app.factor(OutboundFactor)
        self.limits = self.limits_type()

    def for_component(self, component: Component) -> K:
        capability: K = self.capability(component.id,
                                        self.outbound.for_component(component).allowed,
                                        self.limits)
        return capability
