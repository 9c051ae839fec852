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

from host.capabilities import Capability, ResourceTable
from host.capabilities.allowed_hosts import AllowList

C = TypeVar("C")  # the capability's open connection


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
