"""Every limit and timeout of the host, with its default, in one place.

`Limits` bound one guest instance; `HttpLimits` bound what the server accepts
and how much work it queues. The CLI maps flags onto these (README.md lists
them); nothing else in the host hard-codes a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-instance limits; defaults are documented in README.md."""

    memory_bytes: int = 128 * 1024 * 1024
    deadline_seconds: float = 30.0
    instantiate_seconds: float = 30.0
    # Requests one instance may serve. 1 (the default) is Spin's model: a fresh
    # instance per request. More trades isolation for speed: guest state (globals,
    # memory) then carries over between the requests an instance serves.
    max_instance_reuse: int = 1


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on requests, responses and queued work."""

    max_body_bytes: int = 16 * MiB  # larger request bodies answer 413, unread
    max_header_count: int = 100  # more request headers answer 431
    max_header_bytes: int = 64 * 1024  # a larger request header block answers 431
    max_response_bytes: int = 64 * MiB  # a larger guest response answers 500
    # Requests one component runs at once; more wait in a queue of `max_queued`,
    # beyond which the answer is 503 with Retry-After instead of unbounded waiting.
    max_concurrent: int = 16  # the CLI derives it from the pool size: 4 x --pool-size
    max_queued: int = 64
    retry_after_seconds: int = 1
    drain_seconds: float = 10.0  # on SIGTERM/SIGINT: how long in-flight requests may finish


@dataclass(frozen=True)
class OutboundLimits:
    """Bounds on a component's outbound HTTP calls (one shared client)."""

    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 30.0  # for the response head, and between body bytes
    # A larger upstream body answers HTTP-response-body-size to the guest; about
    # wasmtime's copy budget for one component call.
    max_response_bytes: int = 2 * MiB
    max_connections: int = 100


@dataclass(frozen=True)
class SqliteLimits:
    """Bounds on what one guest SQL statement may do with the host's SQLite."""

    # Waiting for another writer's lock; also capped by the request's deadline.
    busy_timeout_seconds: float = 30.0
    # SQLITE_LIMIT_LENGTH: the largest string or blob a statement may make.
    max_value_bytes: int = 1 * MiB
    # SQLITE_LIMIT_SQL_LENGTH: the longest statement text.
    max_sql_bytes: int = 1 * MiB
    # SQLITE_LIMIT_COLUMN: columns in a table, index, result or ORDER BY.
    max_columns: int = 2000
    # A result set larger than this (values' bytes plus a fixed cost per value)
    # answers the interface's error instead of being built in host memory.
    max_result_bytes: int = 2 * MiB


@dataclass(frozen=True)
class KeyValueLimits:
    """Bounds on key-value calls; Spin documents values of at most 1 MB."""

    max_value_bytes: int = 1 * MiB
    # Total value bytes one batch call (get-many/set-many) may move.
    max_batch_bytes: int = 2 * MiB
