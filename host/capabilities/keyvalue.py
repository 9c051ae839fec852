"""Key-value: `wasi:keyvalue` (store, atomics, batch @0.2.0-draft2).

A component may open the labels in its `key_value_stores`; each label is
served by the backend the runtime config gives it (host/backends). Opening any
other label answers `access-denied` (whether or not the store exists, as Spin
does) and logs the attempt.

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

from host.backends import BackendError, KeyValueBackend
from host.capabilities import Capability, Err, Ok, ResourceTable
from host.limits import KeyValueLimits

log = logging.getLogger("host.keyvalue")

VERSION = "0.2.0-draft2"
STORE = f"wasi:keyvalue/store@{VERSION}"
ATOMICS = f"wasi:keyvalue/atomics@{VERSION}"
BATCH = f"wasi:keyvalue/batch@{VERSION}"

ACCESS_DENIED = wc.Variant("access-denied")


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
    interfaces = (STORE, ATOMICS, BATCH)

    def __init__(self, component_id: str, stores: Mapping[str, KeyValueBackend],
                 limits: KeyValueLimits | None = None) -> None:
        """`stores`: the labels this component was granted, with their backends."""
        super().__init__(component_id)
        self.stores = dict(stores)
        self.limits = limits or KeyValueLimits()
        self.buckets: ResourceTable[Bucket] = ResourceTable("bucket")
        self.snapshots: ResourceTable[Snapshot] = ResourceTable("cas")

    def tables(self) -> list[ResourceTable[Any]]:
        return [self.buckets, self.snapshots]

    def resources(self, interface: str) -> dict[str, ResourceTable[Any]]:
        if interface == STORE:
            return {"bucket": self.buckets}
        if interface == ATOMICS:
            return {"cas": self.snapshots}
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
        return {
            "get-many": op(self._get_many),
            "set-many": op(self._set_many),
            "delete-many": op(lambda b, keys: b.backend.delete_many(b.label, keys)),
        }

    def open(self, store: Any, label: str) -> Ok | Err:
        backend = self.stores.get(label)
        if backend is None:
            log.warning(
                'component "%s" tried to open key-value store "%s", which it was not granted '
                "(key_value_stores = %s): access-denied",
                self.component_id, label, list(self.stores),
            )
            return Err(ACCESS_DENIED)
        return Ok(self.buckets.add(store, Bucket(label, backend)))

    def _operation(self, body: Callable[..., Any]) -> Callable[..., Ok | Err]:
        """A bucket method: resolve the handle, run `body`, map backend errors."""
        def call(store: Any, handle: Any, *args: Any) -> Ok | Err:
            bucket = self.buckets.get(store, handle)
            try:
                return Ok(body(bucket, *args))
            except BackendError as exc:
                return _other(str(exc))
            except _TooLarge as exc:
                return _other(self._refuse(bucket, exc))
        return call

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
