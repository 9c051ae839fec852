"""What each component was granted: the registry of capabilities, configured per app.

`FACTORS` lists every capability the host offers, in the order they are
configured (a factor may read the ones before it: outbound HTTP resolves its
allow-list with the variables' values). `Grants` configures each for the app
at start-up and asks each for its part of a component's grants; anything that
cannot be served fails there, before the server listens, with a message naming
the component and the label. What a capability reads and how it chooses its
backends lives in its own module (host/capabilities/).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime

from host.capabilities import AppContext, Capability, Factor
from host.capabilities.blobstore import BlobStoreFactor
from host.capabilities.files import Files, FilesFactor
from host.capabilities.keyvalue import KeyValueFactor
from host.capabilities.mqtt import MqttFactor
from host.capabilities.outbound import OutboundFactor
from host.capabilities.postgres import PostgresFactor
from host.capabilities.redis import RedisFactor
from host.capabilities.sqlite import SqliteFactor
from host.capabilities.unprovided import UnprovidedFactor
from host.capabilities.variables import VariablesFactor
from host.manifest import Component, Manifest

if TYPE_CHECKING:  # host.app imports this module
    from host.app import AppSettings

FACTORS: tuple[type[Factor], ...] = (
    VariablesFactor,
    OutboundFactor,
    KeyValueFactor,
    SqliteFactor,
    FilesFactor,
    RedisFactor,
    PostgresFactor,
    MqttFactor,
    BlobStoreFactor,
    UnprovidedFactor,  # last: links what no capability above provides
)


@dataclass(frozen=True)
class ComponentGrants:
    """One component's capabilities, as the executors use them."""

    capabilities: tuple[Capability, ...]

    def prepare(self, wasi: wasmtime.WasiConfig) -> None:
        """Per instance, before it is made."""
        for capability in self.capabilities:
            capability.prepare(wasi)

    def release(self, store_key: int) -> None:
        """Per instance, when it is discarded."""
        for capability in self.capabilities:
            capability.release_store(store_key)

    @property
    def files_root(self) -> Path | None:
        """The staged `files`, mounted read-only at guest "/" (None: no files)."""
        return next((c.root for c in self.capabilities if isinstance(c, Files)), None)


class Grants:
    def __init__(self, manifest: Manifest, settings: AppSettings,
                 report: Callable[[str], None] = lambda line: None,
                 factors: Sequence[type[Factor]] | None = None) -> None:
        self.app = AppContext(manifest, settings, report)
        try:
            for factor in FACTORS if factors is None else factors:
                self.app.factors[factor] = factor(self.app)
            if not self.app.check_only:
                for configured in self.app.factors.values():
                    configured.start()
        except BaseException:
            self.close()
            raise

    def for_component(self, component: Component) -> ComponentGrants:
        capabilities = (f.for_component(component) for f in self.app.factors.values())
        return ComponentGrants(tuple(c for c in capabilities if c is not None))

    def close(self) -> None:
        for factor in reversed(list(self.app.factors.values())):
            factor.close()
