"""What each component was granted, resolved against the runtime config.

This is the "configure per app" moment of every capability: at start-up the
manifest's grants (`key_value_stores`, `sqlite_databases`, `variables`,
`allowed_outbound_hosts`, `files`) meet the runtime config and become backends
and `Capability` objects. Anything that cannot be served fails here, before
the server listens, with a message naming the component and the label.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from host.backends import BackendError, KeyValueBackend
from host.backends.sqlite import SqliteKeyValue
from host.capabilities import Capability
from host.capabilities.allowed_hosts import AllowedHostError, AllowList, resolve_template
from host.capabilities.files import stage_files
from host.capabilities.keyvalue import KeyValue
from host.capabilities.outbound import Outbound, OutboundClient
from host.capabilities.sqlite import Sqlite, SqliteDatabase
from host.capabilities.variables import Config, EnvProvider, resolve_app_variables
from host.errors import ComponentError, ConfigError
from host.limits import KeyValueLimits, SqliteLimits
from host.manifest import Component, Manifest
from host.runtime_config import RuntimeConfig
from host.templates import render

DEFAULT_LABEL = "default"
KV_FILE = "sqlite_key_value.db"
SQLITE_FILE = "sqlite_db.db"


@dataclass(frozen=True)
class ComponentGrants:
    capabilities: tuple[Capability, ...]
    files_root: Path | None  # mount read-only at guest "/" (None: no files)
    allows_every_host: bool


class Grants:
    def __init__(self, manifest: Manifest, runtime_config: RuntimeConfig,
                 state_dir: Path | None, outbound: OutboundClient,
                 report: Callable[[str], None] = lambda line: None,
                 key_value_limits: KeyValueLimits | None = None,
                 sqlite_limits: SqliteLimits | None = None) -> None:
        self.manifest = manifest
        self.config = runtime_config
        self.state_dir = state_dir
        self.outbound = outbound
        self.report = report
        providers = [*runtime_config.variables_providers, EnvProvider()]
        self.app_values = resolve_app_variables(manifest, providers)
        self.kv: dict[str, KeyValueBackend] = {}
        self.kv_limits = key_value_limits or KeyValueLimits()
        self.sqlite_limits = sqlite_limits or SqliteLimits()
        self._default_kv_backend: KeyValueBackend | None = None
        self.databases: dict[str, SqliteDatabase] = {}
        self._staging: Path | None = None

    def for_component(self, component: Component) -> ComponentGrants:
        values = {name: render(template, self.app_values)
                  for name, template in component.variables.items()}
        allowed = self._allow_list(component)
        capabilities: list[Capability] = [
            KeyValue(component.id, {label: self._kv(component, label)
                                    for label in component.key_value_stores}, self.kv_limits),
            Config(component.id, values),
            Sqlite(component.id, {label: self._database(component, label)
                                  for label in component.sqlite_databases}),
            Outbound(component.id, allowed, self.outbound),
        ]
        files_root = None
        if component.files:
            if self._staging is None:
                self._staging = Path(tempfile.mkdtemp(prefix="spinhost-files-"))
            files_root = stage_files(self.manifest, component, self._staging / component.id)
        return ComponentGrants(tuple(capabilities), files_root, allowed.allows_everything())

    def _allow_list(self, component: Component) -> AllowList:
        entries = [resolve_template(e, self.app_values) for e in component.allowed_outbound_hosts]
        try:
            return AllowList.parse(entries)
        except AllowedHostError as exc:
            raise ConfigError(
                f"{self.manifest.path}: [component.{component.id}] allowed_outbound_hosts: "
                f"after resolving variables: {exc}"
            ) from None

    def _kv(self, component: Component, label: str) -> KeyValueBackend:
        if label in self.kv:
            return self.kv[label]
        config = self.config.key_value_stores.get(label)
        try:
            if config is None:
                backend = self._default_kv()  # every label without its own backend
            elif config.type == "redis":
                from host.backends.redis import RedisKeyValue  # redis-py only when used
                backend = RedisKeyValue(config.url or "")
            else:
                backend = SqliteKeyValue(config.path)
        except BackendError as exc:
            raise ConfigError(f'key-value store "{label}" (component "{component.id}"'
                              f'{self._configured("key_value_store", label)}): {exc}') from None
        self.report(f'Key-value store "{label}": {backend.description}')
        self.kv[label] = backend
        return backend

    def _default_kv(self) -> KeyValueBackend:
        """The embedded store: one SQLite file, labels kept apart by its `store` column."""
        if self._default_kv_backend is None:
            path = self.state_dir / KV_FILE if self.state_dir else None
            self._default_kv_backend = SqliteKeyValue(path)
            where = f'"{path}"' if path else "memory (no state dir)"
            self.report(f"Storing default key-value data to {where}.")
        return self._default_kv_backend

    def _database(self, component: Component, label: str) -> SqliteDatabase:
        if label in self.databases:
            return self.databases[label]
        config = self.config.sqlite_databases.get(label)
        if config is None:
            if label != DEFAULT_LABEL:
                raise self._unknown("sqlite_databases", label, component, "sqlite_database")
            path = self.state_dir / SQLITE_FILE if self.state_dir else None
        else:
            path = config.path
        database = SqliteDatabase(label, path, self.sqlite_limits)
        try:
            database.check()
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f'SQLite database "{label}" (component "{component.id}"'
                              f'{self._configured("sqlite_database", label)}): '
                              f"cannot open {database.description}: {reason}") from None
        self.report(f'SQLite database "{label}": {database.description}')
        self.databases[label] = database
        return database

    def _configured(self, table: str, label: str) -> str:
        """`, [table.label] in FILE` when the runtime config defines the label."""
        labels = (self.config.key_value_stores if table == "key_value_store"
                  else self.config.sqlite_databases)
        if label in labels and self.config.path is not None:
            return f", [{table}.{label}] in {self.config.path}"
        return ""

    def _unknown(self, key: str, label: str, component: Component, table: str) -> ComponentError:
        where = f" in {self.config.path}" if self.config.path else ""
        return ComponentError(
            f'{self.manifest.path}: unknown {key} label "{label}" for component '
            f'"{component.id}": only "{DEFAULT_LABEL}" is built in; define '
            f"[{table}.{label}] in the runtime config{where} (--runtime-config-file)"
        )

    def close(self) -> None:
        for backend in {id(b): b for b in self.kv.values()}.values():
            backend.close()
        self.outbound.close()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
