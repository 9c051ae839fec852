"""Key-value backends: the small interface every store label is served through.

A backend owns one storage system (an SQLite file, a Redis server). Labels that
share a backend are kept apart by the `store` argument, the label name, where
the storage system needs it (SQLite's `store` column); Redis gives each label
its own URL, as Spin does.

Values are bytes and round-trip exactly. Counters made by `increment` are
decimal ASCII text (b"42") on every backend, so `get` reads them back as text.
Every failure is a `BackendError` whose message the guest sees in
`error::other`.
"""

from __future__ import annotations

from typing import Protocol


class BackendError(Exception):
    """A storage failure, reported to the guest as `other(message)`."""


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
