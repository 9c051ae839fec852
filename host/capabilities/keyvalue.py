"""Key-value: `wasi:keyvalue` (store, atomics, batch @0.2.0-draft2) and Spin's
`fermyon:spin/key-value@2.0.0` (what Spin SDK 3.x apps call), over the same stores.

A component may open the labels in its `key_value_stores`; each label is
served by the backend the runtime config gives it (`[key_value_store.LABEL]`,
`type` chosen in host.backends.KEY_VALUE_TYPES); a label without one shares
the embedded store, `<state dir>/sqlite_key_value.db` (in memory without a
state dir). Opening any other label answers `access-denied` (whether or not
the store exists, as Spin does) and logs the attempt.

Values are bounded (`KeyValueLimits`, Spin's documented 1 MB): a larger value
is refused on the way in (set, swap, set-many) and a stored one on the way out
(get, cas.current, get-many; a value another client wrote, e.g. redis-cli),
with `error::other` and one log line, so it never crosses as a list<u8> (about
100 bytes of host memory per byte).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import wasmtime.component as wc

from host.backends import KeyValueBackend, key_value_type
from host.backends.sqlite import SqliteKeyValue
from host.capabilities import AppContext, Capability, Err, Factor, Ok, ResourceTable
from host.errors import BackendError, ConfigError
from host.limits import KeyValueLimits
from host.manifest import Component

log = logging.getLogger("host.keyvalue")

VERSION = "0.2.0-draft2"
STORE = f"wasi:keyvalue/store@{VERSION}"
ATOMICS = f"wasi:keyvalue/atomics@{VERSION}"
BATCH = f"wasi:keyvalue/batch@{VERSION}"
SPIN_KEY_VALUE = "fermyon:spin/key-value@2.0.0"

ACCESS_DENIED = wc.Variant("access-denied")
DEFAULT_FILE = "sqlite_key_value.db"  # in the state dir
DEFAULT_LABEL = "default"  # the store `--key-value` sets


def _other(message: str) -> Err:
    return Err(wc.Variant("other", message))


class _TooLarge(Exception):
    """A value or batch over its limit: answered as `other(message)`."""


@dataclass(frozen=True)
class Bucket:
    label: str
    backend: KeyValueBackend


@dataclass
class Snapshot:
    """A `cas` resource: the value of one key when the guest took the snapshot."""

    bucket: Bucket
    key: str
    value: bytes | None


class KeyValue(Capability):
    interfaces = (STORE, ATOMICS, BATCH, SPIN_KEY_VALUE)

    def __init__(self, component_id: str, stores: Mapping[str, KeyValueBackend],
                 limits: KeyValueLimits | None = None) -> None:
        """`stores`: the labels this component was granted, with their backends."""
        super().__init__(component_id)
        self.stores = dict(stores)
        self.limits = limits or KeyValueLimits()
        self.buckets: ResourceTable[Bucket] = ResourceTable("bucket")
        self.snapshots: ResourceTable[Snapshot] = ResourceTable("cas")
        # Spin's `store` resource is its own type: a handle of one interface is
        # never accepted by the other.
        self.spin_stores: ResourceTable[Bucket] = ResourceTable(
            "store", max_live=self.limits.max_open_stores)

    def tables(self) -> list[ResourceTable[Any]]:
        return [self.buckets, self.snapshots, self.spin_stores]

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        if interface == STORE:
            return {"bucket": self.buckets}
        if interface == ATOMICS:
            return {"cas": self.snapshots}
        if interface == SPIN_KEY_VALUE:
            return {"store": self.spin_stores}
        return {}

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        op, value = self._operation, self._value
        if interface == STORE:
            return {
                "open": self.open,
                "[method]bucket.get": op(lambda b, key: value(b.backend.get(b.label, key))),
                "[method]bucket.set": op(lambda b, key, v: b.backend.set(b.label, key,
                                                                         value(v))),
                "[method]bucket.delete": op(lambda b, key: b.backend.delete(b.label, key)),
                "[method]bucket.exists": op(lambda b, key: b.backend.exists(b.label, key)),
                "[method]bucket.list-keys": op(
                    lambda b, cursor: b.backend.list_keys(b.label, cursor)),
            }
        if interface == ATOMICS:
            return {
                "[static]cas.new": self.cas_new,
                "[method]cas.current": self.cas_current,
                "increment": op(lambda b, key, delta: b.backend.increment(b.label, key, delta)),
                "swap": self.swap,
            }
        if interface == SPIN_KEY_VALUE:
            spin = self._spin_operation
            return {
                "[static]store.open": self.spin_open,
                "[method]store.get": spin(lambda b, key: value(b.backend.get(b.label, key))),
                "[method]store.set": spin(lambda b, key, v: b.backend.set(b.label, key,
                                                                          value(v))),
                "[method]store.delete": spin(lambda b, key: b.backend.delete(b.label, key)),
                "[method]store.exists": spin(lambda b, key: b.backend.exists(b.label, key)),
                "[method]store.get-keys": spin(self._all_keys),
            }
        return {
            "get-many": op(self._get_many),
            "set-many": op(self._set_many),
            "delete-many": op(lambda b, keys: b.backend.delete_many(b.label, keys)),
        }

    def open(self, store: Any, label: str,
             table: ResourceTable[Bucket] | None = None) -> Ok | Err:
        backend = self.stores.get(label)
        if backend is None:
            log.warning(
                'component "%s" tried to open key-value store "%s", which it was not granted '
                "(key_value_stores = %s): access-denied",
                self.component_id, label, list(self.stores),
            )
            return Err(ACCESS_DENIED)
        buckets = self.buckets if table is None else table
        if buckets is self.spin_stores and buckets.full(store):
            log.warning('component "%s" holds %d open key-value stores, the most one instance '
                        "may hold: store-table-full", self.component_id, buckets.max_live)
            return Err(wc.Variant("store-table-full"))
        return Ok(buckets.add(store, Bucket(label, backend)))

    def spin_open(self, store: Any, label: str) -> Ok | Err:
        """`fermyon:spin/key-value` open: the same grants, Spin's handle type and errors."""
        return self.open(store, label, table=self.spin_stores)

    def _operation(self, body: Callable[..., Any],
                   table: ResourceTable[Bucket] | None = None) -> Callable[..., Ok | Err]:
        """A bucket method: resolve the handle, run `body`, map backend errors."""
        buckets = self.buckets if table is None else table

        def call(store: Any, handle: Any, *args: Any) -> Ok | Err:
            bucket = buckets.get(store, handle)
            try:
                return Ok(body(bucket, *args))
            except BackendError as exc:
                return _other(str(exc))
            except _TooLarge as exc:
                return _other(self._refuse(bucket, exc))
        return call

    def _spin_operation(self, body: Callable[..., Any]) -> Callable[..., Ok | Err]:
        return self._operation(body, self.spin_stores)

    def _all_keys(self, bucket: Bucket) -> list[str]:
        """Every key of a store (Spin's get-keys has no cursor), bounded like a batch."""
        keys: list[str] = []
        size = 0
        cursor: str | None = None
        while True:
            page, cursor = bucket.backend.list_keys(bucket.label, cursor)
            keys.extend(page)
            size += sum(len(key) + 16 for key in page)
            if size > self.limits.max_batch_bytes:
                raise _TooLarge(f"get-keys: the store's keys take over "
                                f"{self.limits.max_batch_bytes} bytes (the batch limit); "
                                "use wasi:keyvalue list-keys with a cursor")
            if cursor is None:
                return keys

    def _value(self, value: bytes | None) -> bytes | None:
        """`value`, unless it is over the value limit (None passes: no value)."""
        if value is not None and len(value) > self.limits.max_value_bytes:
            raise _TooLarge(f"value of {len(value)} bytes exceeds the limit of "
                            f"{self.limits.max_value_bytes} bytes (--max-key-value-bytes)")
        return value

    def _batch(self, what: str, values: list[bytes | None]) -> None:
        """Refuse a batch call if one value, or all of them together, is over its limit."""
        for v in values:
            self._value(v)
        total = sum(len(v) for v in values if v is not None)
        if total > self.limits.max_batch_bytes:
            raise _TooLarge(f"{what} of {total} value bytes exceeds the batch limit of "
                            f"{self.limits.max_batch_bytes} bytes")

    def _get_many(self, bucket: Bucket, keys: list[str]) -> list[tuple[str, bytes] | None]:
        values = bucket.backend.get_many(bucket.label, keys)
        self._batch("get-many", values)
        return [None if v is None else (key, v) for key, v in zip(keys, values, strict=True)]

    def _set_many(self, bucket: Bucket, items: list[tuple[str, bytes]]) -> None:
        items = list(items)
        self._batch("set-many", [v for _, v in items])
        bucket.backend.set_many(bucket.label, items)

    def _refuse(self, bucket: Bucket, exc: _TooLarge) -> str:
        log.warning('component "%s", key-value store "%s": %s; answered error::other',
                    self.component_id, bucket.label, exc)
        return str(exc)

    def cas_new(self, store: Any, handle: Any, key: str) -> Ok | Err:
        bucket = self.buckets.get(store, handle)
        try:
            value = bucket.backend.get(bucket.label, key)
        except BackendError as exc:
            return _other(str(exc))
        return Ok(self.snapshots.add(store, Snapshot(bucket, key, value)))

    def cas_current(self, store: Any, handle: Any) -> Ok | Err:
        snapshot = self.snapshots.get(store, handle)
        try:
            return Ok(self._value(snapshot.value))
        except _TooLarge as exc:
            return _other(self._refuse(snapshot.bucket, exc))

    def swap(self, store: Any, handle: Any, value: bytes) -> Ok | Err:
        snapshot = self.snapshots.take(store, handle)
        bucket = snapshot.bucket
        try:
            self._value(value)
        except _TooLarge as exc:
            return Err(wc.Variant("store-error", wc.Variant("other", self._refuse(bucket, exc))))
        try:
            if bucket.backend.swap(bucket.label, snapshot.key, snapshot.value, value):
                return Ok(None)
            # Hand the guest a fresh snapshot, so it can retry from the current value.
            current = bucket.backend.get(bucket.label, snapshot.key)
        except BackendError as exc:
            return Err(wc.Variant("store-error", wc.Variant("other", str(exc))))
        retry = self.snapshots.add(store, Snapshot(bucket, snapshot.key, current))
        return Err(wc.Variant("cas-failed", retry))


class KeyValueFactor(Factor):
    """Opens each label's backend the first time a component is granted it."""

    manifest_keys = ("key_value_stores",)
    runtime_config_keys = ("key_value_store",)

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        self.limits = app.settings.key_value_limits
        self.backends: dict[str, KeyValueBackend] = {}  # by label
        self._embedded: KeyValueBackend | None = None
        self._stand_in: KeyValueBackend | None = None

    def start(self) -> None:
        """`host up --key-value KEY=VALUE`: set in the default store, as `spin up` does."""
        pairs = self.app.settings.key_values
        if not pairs:
            return
        private = (DEFAULT_LABEL not in self.app.runtime_config.key_value_stores
                   and self.app.settings.state_dir is None)
        if not private and not self.app.settings.seed_shared:
            return  # another process (the first worker) sets them
        backend = self._backend("--key-value", DEFAULT_LABEL)
        for key, value in pairs:
            try:
                backend.set(DEFAULT_LABEL, key, value.encode())
            except BackendError as exc:
                raise ConfigError(f"--key-value {key}=...: cannot set it in the "
                                  f'"{DEFAULT_LABEL}" store ({backend.description}): '
                                  f"{exc}") from None
        self.app.report(f'Set {len(pairs)} key-value pair(s) in the "{DEFAULT_LABEL}" store '
                        "(--key-value)")

    def for_component(self, component: Component) -> KeyValue:
        stores = {label: self._backend(f'component "{component.id}"', label)
                  for label in component.key_value_stores}
        return KeyValue(component.id, stores, self.limits)

    def _backend(self, user: str, label: str) -> KeyValueBackend:
        if label in self.backends:
            return self.backends[label]
        config = self.app.runtime_config.key_value_stores.get(label)
        try:
            if config is None:
                backend = self._embedded_store()  # every label without its own backend
            elif self.app.check_only:
                description = key_value_type(config.type).check_config(config, self.limits)
                self.app.report(f'Key-value store "{label}": {description} (checked, not opened)')
                backend = self._check_stand_in()
            else:
                backend = key_value_type(config.type).from_config(config, self.limits)
                self.app.report(f'Key-value store "{label}": {backend.description}')
        except BackendError as exc:
            where = ""
            if config is not None and self.app.runtime_config.path is not None:
                where = f", [key_value_store.{label}] in {self.app.runtime_config.path}"
            raise ConfigError(f'key-value store "{label}" ({user}{where}): {exc}') from None
        self.backends[label] = backend
        return backend

    def _embedded_store(self) -> KeyValueBackend:
        """One SQLite file for every label without its own; its `store` column keeps them apart."""
        if self._embedded is None:
            state_dir = self.app.settings.state_dir
            path = state_dir / DEFAULT_FILE if state_dir else None
            if self.app.check_only:
                SqliteKeyValue.check(path)
                self._embedded = self._check_stand_in()
            else:
                self._embedded = SqliteKeyValue(path, self.limits)
                where = f'"{path}"' if path else "memory (no state dir)"
                self.app.report(f"Storing default key-value data to {where}.")
        return self._embedded

    def _check_stand_in(self) -> KeyValueBackend:
        """`host check` links and instantiates components but never calls them:
        a private in-memory store stands in for every label (no file, no server)."""
        if self._stand_in is None:
            self._stand_in = SqliteKeyValue(None, self.limits)
        return self._stand_in

    def close(self) -> None:
        for backend in {id(b): b for b in self.backends.values()}.values():
            backend.close()
