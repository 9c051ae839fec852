"""Blob storage: `wasi:blobstore` (blobstore, container, types), containers granted
by `blob_containers`.

Served at `wasi:blobstore@0.2.0-draft` (WebAssembly/wasi-blobstore's pinned
draft, what wasmCloud components import) and `@0.2.0-draft-2024-09-01` (the
same interfaces as Spin's blob-store work names them). Object bodies are
`wasi:io` streams, so the interfaces are defined with the host's own WASI
(host/wasip2/blobstore.py), for every component that imports them: wasi:http
components, Spin SDK apps, and components of our own world that add the import.

A container name is a label: a component may use the containers its
`blob_containers` lists, and each is served by the backend the runtime config
gives its label (`[blob_store.LABEL]`, `type` in host.backends.blobs.
BLOB_STORE_TYPES); a label without one is a directory of the embedded
file_system store, `<state dir>/blob_store/<label>/` (a temporary directory,
removed when the host stops, without a state dir). Any call naming another
container answers the interface's error string and logs one line. Granted
file_system containers are made at start-up; S3 buckets are checked then.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from host.backends import check_file
from host.backends.blob_files import MARKER, FileContainer
from host.backends.blobs import BlobContainer, blob_store_type
from host.capabilities import AppContext, Capability, Factor
from host.errors import BackendError, ConfigError
from host.limits import BlobStoreLimits
from host.manifest import Component

log = logging.getLogger("host.blobstore")

DEFAULT_DIR = "blob_store"  # in the state dir: one directory per label


class BlobStore(Capability):
    """One component's containers. Its interfaces are linked by host.wasip2 (their
    streams are the host's wasi:io streams), so it links nothing itself."""

    def __init__(self, component_id: str, containers: Mapping[str, BlobContainer],
                 limits: BlobStoreLimits | None = None) -> None:
        super().__init__(component_id)
        self.containers = dict(containers)
        self.limits = limits or BlobStoreLimits()

    def granted(self, label: str, call: str) -> BlobContainer | None:
        """The backend of `label` if the component was granted it; else None, logged."""
        backend = self.containers.get(label)
        if backend is None:
            log.warning('component "%s": %s of blob container "%s", which it was not granted '
                        "(blob_containers = %s): access denied", self.component_id, call,
                        label, list(self.containers))
        return backend

    def refuse(self, message: str) -> str:
        """A limit refused a call: one log line, and the message the guest gets."""
        log.warning('component "%s": %s', self.component_id, message)
        return message


def denied(label: str) -> str:
    return (f'access denied: container "{label}" is not one of this component\'s '
            "blob_containers")


class BlobStoreFactor(Factor):
    """Opens each label's container the first time a component is granted it."""

    manifest_keys = ("blob_containers",)
    runtime_config_keys = ("blob_store",)

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self.limits = app.settings.blob_limits
        self.containers: dict[str, BlobContainer] = {}  # by label
        self._scratch: Path | None = None  # the embedded store without a state dir

    def for_component(self, component: Component) -> BlobStore:
        containers = {label: self._container(f'component "{component.id}"', label)
                      for label in component.blob_containers}
        return BlobStore(component.id, containers, self.limits)

    def _container(self, user: str, label: str) -> BlobContainer:
        if label in self.containers:
            return self.containers[label]
        config = self.app.runtime_config.blob_stores.get(label)
        try:
            if config is None or (config.type == "file_system" and config.path is None):
                container = self._embedded(label)
            elif self.app.check_only:
                description = blob_store_type(config.type).check_config(config, self.limits)
                self.app.report(f'Blob container "{label}": {description} (checked, not opened)')
                container = FileContainer(Path("/nonexistent"))  # never called by `check`
            else:
                container = blob_store_type(config.type).from_config(config, self.limits)
                self.app.report(f'Blob container "{label}": {container.description}')
        except BackendError as exc:
            where = ""
            if config is not None and self.app.runtime_config.path is not None:
                where = f", [blob_store.{label}] in {self.app.runtime_config.path}"
            raise ConfigError(f'blob container "{label}" ({user}{where}): {exc}') from None
        self.containers[label] = container
        return container

    def _embedded(self, label: str) -> BlobContainer:
        state_dir = self.app.settings.state_dir
        if self.app.check_only:
            if state_dir is not None:
                check_file(state_dir / DEFAULT_DIR / label / MARKER)
            return FileContainer(Path("/nonexistent"))
        if state_dir is None:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="spinhost-blobs-"))
                self.app.report(f"Storing blob containers in {self._scratch} (no state dir: "
                                "removed when the host stops).")
            root = self._scratch / label
        else:
            root = state_dir / DEFAULT_DIR / label
        container = FileContainer.at(root)
        self.app.report(f'Blob container "{label}": {container.description}')
        return container

    def close(self) -> None:
        for container in {id(c): c for c in self.containers.values()}.values():
            container.close()
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._scratch)

