"""Key-value backends: the small interface every store label is served through.

A backend owns one storage system (an SQLite file, a Redis server). Labels that
share a backend are kept apart by the `store` argument, the label name, where
the storage system needs it (SQLite's `store` column); Redis gives each label
its own URL, as Spin does.

Values are bytes and round-trip exactly. Counters made by `increment` are
decimal ASCII text (b"42") on every backend, so `get` reads them back as text.
Every failure is a `BackendError` whose message the guest sees in
`error::other`.

Which class serves a runtime config's `[key_value_store.LABEL] type` is
`KEY_VALUE_TYPES`: a new backend is one module with a class that has the
`KeyValueBackendType` class methods, plus one line there.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from host.errors import BackendError

if TYPE_CHECKING:
    from host.limits import KeyValueLimits
    from host.runtime_config import KeyValueStoreConfig

#: `type` in the runtime config -> "module:Class"; the module is imported only
#: when a store uses it (redis-py only for Redis).
KEY_VALUE_TYPES = {
    "spin": "host.backends.sqlite:SqliteKeyValue",
    "redis": "host.backends.redis:RedisKeyValue",
}


class KeyValueBackend(Protocol):
    #: A description for start-up logs, e.g. `sqlite /app/.spin/sqlite_key_value.db`.
    description: str

    def get(self, store: str, key: str) -> bytes | None: ...

    def set(self, store: str, key: str, value: bytes) -> None: ...

    def delete(self, store: str, key: str) -> None: ...

    def exists(self, store: str, key: str) -> bool: ...

    def list_keys(self, store: str, cursor: str | None) -> tuple[list[str], str | None]:
        """One page of keys and the cursor for the next page (None: no more)."""
        ...

    def increment(self, store: str, key: str, delta: int) -> int:
        """Add `delta` to the decimal integer at `key` (missing = 0), atomically."""
        ...

    def get_many(self, store: str, keys: list[str]) -> list[bytes | None]: ...

    def set_many(self, store: str, items: list[tuple[str, bytes]]) -> None: ...

    def delete_many(self, store: str, keys: list[str]) -> None: ...

    def swap(self, store: str, key: str, expected: bytes | None, value: bytes) -> bool:
        """Set `key` to `value` only if it still holds `expected` (None: absent)."""
        ...

    def close(self) -> None: ...


class KeyValueBackendType(Protocol):
    """How a backend class is made from its runtime-config table."""

    @classmethod
    def from_config(cls, config: KeyValueStoreConfig,
                    limits: KeyValueLimits) -> KeyValueBackend:
        """Open the store (create a file, connect): a failure is a BackendError."""
        ...

    @classmethod
    def check_config(cls, config: KeyValueStoreConfig, limits: KeyValueLimits) -> str:
        """Validate without side effects (no file, no connection); the description."""
        ...


def key_value_type(name: str) -> KeyValueBackendType:
    """The backend class for a runtime config `type` (one of KEY_VALUE_TYPES)."""
    module, _, name = KEY_VALUE_TYPES[name].partition(":")
    return cast(KeyValueBackendType, getattr(importlib.import_module(module), name))


def check_file(path: Path) -> None:
    """Raise BackendError unless `path` is a file we could open, or could create.

    Creates nothing: the nearest existing ancestor must be a directory we may
    write (an existing file must be readable and writable). Checks made as root
    pass where the filesystem itself would refuse (e.g. under /proc).
    """
    if path.exists():
        if not path.is_file():
            raise BackendError(f"{path} exists and is not a file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise BackendError(f"cannot open {path}: Permission denied")
        return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BackendError(f"cannot create {path.parent}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BackendError(f"cannot create {path}: Permission denied in {ancestor}")
