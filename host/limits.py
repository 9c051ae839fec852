"""Every limit and timeout of the host, with its default, in one place.

`Limits` bound one guest instance; `HttpLimits` bound what the server accepts,
how much work it queues and how many threads run guests. `host/config.py` maps
flags and `SPINHOST_*` variables onto these (README.md lists them); nothing
else in the host hard-codes a limit or its default.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024

# Pre-instantiated instances kept ready per component (`--pool-size`). Each is
# a few hundred KiB (WAT) to a few MiB (componentize-py) of memory held idle.
DEFAULT_POOL_SIZE = 4


def default_max_concurrent(pool_size: int) -> int:
    """Requests one component runs at once unless `--max-concurrent-requests` says.

    4 x the pool size, at least 4: a burst of four times the ready instances
    runs while the refiller catches up (a pool of 0 still runs four at once).
    """
    return max(4, 4 * pool_size)


# Worker processes (`--workers`). `host up` serves in one process unless asked;
# the container entry (`host run-bundle`) uses every core it may (usable_cpus).
DEFAULT_WORKERS = 1
MAX_WORKERS = 256  # a typo (--workers 1000) must not start a thousand interpreters
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A worker that dies is replaced at once if it served this long; each quicker
# death doubles the delay before the next replacement, from the first delay up
# to the last (a crash loop costs one start every 30 s, not a fork bomb).
WORKER_HEALTHY_SECONDS = 10.0
WORKER_RESTART_DELAYS = (0.5, 30.0)
# On SIGTERM, workers drain for --drain-timeout; one still running this much
# later is killed. After a second signal, they have this long to stop.
WORKER_STOP_GRACE_SECONDS = 5.0
WORKER_FORCED_STOP_SECONDS = 2.0
# A serving worker's event loop tells the supervisor it is alive this often; one
# silent for --worker-timeout (its loop stuck: nothing it holds is being
# answered) is killed and replaced like a worker that died.
WORKER_HEARTBEAT_SECONDS = 1.0
DEFAULT_WORKER_TIMEOUT_SECONDS = 30.0


def usable_cpus() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota
    (a container limited to 1.5 CPUs gets 2)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by this process's cgroup: v2 `cpu.max` ("200000 100000" = 2), else
    v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none); None when unlimited."""
    try:
        relative = next((line.split(":", 2)[2].strip()
                         for line in Path("/proc/self/cgroup").read_text().splitlines()
                         if line.startswith("0::")), "/")
    except OSError:
        relative = "/"
    for directory in (CGROUP_ROOT / relative.lstrip("/"), CGROUP_ROOT):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            return int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            return None
    try:
        v1 = CGROUP_ROOT / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


@dataclass(frozen=True)
class Limits:
    """Per-instance limits; defaults are documented in README.md."""

    memory_bytes: int = 128 * MiB  # linear memory (`--max-instance-memory`, in MiB)
    deadline_seconds: float = 30.0
    instantiate_seconds: float = 30.0
    # Requests one instance may serve. 1 (the default) is Spin's model: a fresh
    # instance per request. More trades isolation for speed: guest state (globals,
    # memory) then carries over between the requests an instance serves.
    max_instance_reuse: int = 1


# wasmtime's pooling instance allocator (host/runtime/engine.py, `host up`)
# reserves its slots when the engine starts, each linear-memory slot 4 GiB (the
# reservation that lets compiled code skip bounds checks) + 32 MiB of guard, as
# address space only: PROT_NONE, so virtual size grows, RSS does not, and
# overcommit does not count it. An instance that finds no free slot fails to
# instantiate (the request answers 500), so the slots are sized from what can be
# alive at once: per component its ready pool and its running requests
# (`--pool-size` + `--max-concurrent-requests`), plus POOLING_SPARE_INSTANCES for
# instances being dropped or refilled, times the per-instance averages below.
# With the defaults that is 36 instances and ~290 GiB of address space for one
# component, ~16 TiB for 100. Past POOLING_MAX_ADDRESS_SPACE (or if the
# reservation fails, e.g. under `ulimit -v`) instances are allocated on demand
# instead, which costs 0.1-0.2 ms more CPU per request for componentize-js and -py
# (bench/guest_startup.py).
INSTANCE_ALLOCATORS = ("pooling", "on-demand")  # `--instance-allocator`, default the first
POOLING_MAX_ADDRESS_SPACE = 32 * 1024**4  # a quarter of x86-64's user address space
POOLING_SPARE_INSTANCES = 16
# Averages per component instance, across the instances alive at once: a
# component may use more, up to POOLING_MAX_PER_COMPONENT of each. Measured:
# componentize-py makes 16 core instances, 1 memory, 2 tables; componentize-js
# 4, 1 and 2; a WAGI program 1, 1 and 1.
POOLING_CORE_INSTANCES_PER_INSTANCE = 20
POOLING_MEMORIES_PER_INSTANCE = 2
POOLING_TABLES_PER_INSTANCE = 4
POOLING_MAX_PER_COMPONENT = 1000
# Elements of one table (a table that starts larger fails to instantiate);
# 8 bytes of address space each.
POOLING_TABLE_ELEMENTS = 1_000_000
# Bytes of each table slot kept resident when its instance is dropped (zeroed
# with memset instead of returned to the kernel), so the next instance's table
# initialisation does not page-fault: 64 KiB holds 8,192 elements
# (componentize-js hello's table has 7,778, componentize-py's 5,670) and saved
# ~40 us per componentize-js request (in-process A/B). Costs at most
# 64 KiB of RSS per table slot ever used. Linear memory keeps nothing resident:
# wasmtime would restore the whole kept region at every drop (~90 us per MiB
# here: the C API cannot turn on its PAGEMAP_SCAN dirty-page reset), more than
# the first-touch page faults it saves.
POOLING_TABLE_KEEP_RESIDENT = 64 * 1024


@dataclass(frozen=True)
class PoolingLimits:
    """Slot counts of wasmtime's pooling instance allocator (see above)."""

    instances: int  # component (or WAGI module) instances alive at once
    memory_bytes: int  # the largest linear memory one may grow to

    @property
    def memories(self) -> int:
        return self.instances * POOLING_MEMORIES_PER_INSTANCE

    def address_space(self) -> int:
        memories = self.memories * (max(4 * 1024**3, self.memory_bytes) + 32 * MiB)
        tables = self.instances * POOLING_TABLES_PER_INSTANCE * POOLING_TABLE_ELEMENTS * 8
        return memories + tables


def pooling_limits(components: int, pool_size: int, max_concurrent: int,
                   memory_bytes: int) -> PoolingLimits | None:
    """Slots for `components` executors, or None when they would reserve too much."""
    instances = components * (pool_size + max_concurrent) + POOLING_SPARE_INSTANCES
    pooling = PoolingLimits(instances, memory_bytes)
    return pooling if pooling.address_space() <= POOLING_MAX_ADDRESS_SPACE else None


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on requests, responses and queued work."""

    max_body_bytes: int = 16 * MiB  # larger request bodies answer 413, unread
    max_header_count: int = 100  # more request headers answer 431
    max_header_bytes: int = 64 * 1024  # a larger request header block answers 431
    max_response_bytes: int = 64 * MiB  # a larger guest response answers 500
    # Requests one component runs at once; more wait in a queue of `max_queued`,
    # beyond which the answer is 503 with Retry-After instead of unbounded waiting.
    max_concurrent: int = default_max_concurrent(DEFAULT_POOL_SIZE)
    max_queued: int = 64
    # Worker threads that run guest calls, process-wide. A call blocks its thread
    # until the guest returns (or its deadline), host calls included (an outbound
    # request, a SQLite lock), so each running request needs one. None (the
    # default) sizes the pool to max_concurrent x the number of components: the
    # admission gates above are then the only bound and one component's slow
    # calls never hold up another's. Threads start on demand, so the size costs
    # nothing until the load comes. A number caps it, e.g. for a small pod:
    # calls past it wait for a free thread before their guest starts.
    max_guest_threads: int | None = None
    # Request bodies being handed to component executors, process-wide. A body
    # crosses into a component as one list<u8>: wasmtime's C API turns every byte
    # into a 32-byte C value and a 48-byte Rust value, ~85 bytes of host memory
    # per byte, and ~200 if the guest hands it back whole as a response or a
    # host-call argument (bench/memory.py). A request that would push the total
    # past this waits in its component's queue (503 when that is full); a larger
    # body answers 413. 4 MiB: bodies in flight cost at most ~800 MiB of host
    # memory. WAGI bodies (stdin) do not count.
    max_body_bytes_in_flight: int = 4 * MiB
    retry_after_seconds: int = 1
    drain_seconds: float = 10.0  # on SIGTERM/SIGINT: how long in-flight requests may finish

    def guest_threads(self, components: int) -> int:
        """Worker threads for guest calls when serving `components` executors."""
        if self.max_guest_threads is not None:
            return self.max_guest_threads
        return max(1, self.max_concurrent * components)


@dataclass(frozen=True)
class OutboundLimits:
    """Bounds on a component's outbound HTTP calls (one shared client)."""

    # Each is a ceiling: a call made for a request gets at most the time left
    # before that request's deadline, and ends at the deadline whatever happens.
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 30.0  # for the response head, and between body bytes
    write_timeout_seconds: float = 30.0  # sending the request, per write
    pool_timeout_seconds: float = 30.0  # waiting for a free connection (max_connections)
    # A larger upstream body answers HTTP-response-body-size to the guest; about
    # wasmtime's copy budget for one component call.
    max_response_bytes: int = 2 * MiB
    max_connections: int = 100


# Host resources (buckets, connections, streams, header fields...) one instance
# may hold at once, per resource kind: every handle is host memory (and an SQLite
# connection is open files), and a guest could otherwise make them in a loop
# until its deadline. Past it, the call traps (500) naming the kind.
MAX_LIVE_HANDLES = 10_000
# Header field bytes a wasi:http guest may make the host hold for one request
# (fields it builds, appends to, clones, or copies of the request's): a guest
# could otherwise clone or append in a loop until its deadline.
MAX_FIELD_BYTES_PER_REQUEST = 1 * MiB


@dataclass(frozen=True)
class SqliteLimits:
    """Bounds on what one guest SQL statement may do with the host's SQLite.

    Most are SQLite's own `sqlite3_limit` categories, set on every guest
    connection (host/capabilities/sqlite.py); a statement over one fails with
    SQLite's error instead of running.
    """

    # Waiting for another writer's lock; also capped by the request's deadline.
    busy_timeout_seconds: float = 30.0
    # Connections one instance may hold open at once (each is up to 3 open files).
    max_open_connections: int = 16
    # SQLITE_LIMIT_LENGTH: the largest string, blob or table row a statement may
    # make or read (zeroblob, ||, group_concat, a bound parameter included).
    max_value_bytes: int = 1 * MiB
    # SQLITE_LIMIT_SQL_LENGTH: the longest statement text.
    max_sql_bytes: int = 1 * MiB
    # SQLITE_LIMIT_COLUMN: columns in a table, index, result or ORDER BY.
    max_columns: int = 2000
    # A result set larger than this (values' bytes plus a fixed cost per value)
    # answers the interface's error instead of being built in host memory.
    max_result_bytes: int = 2 * MiB
    # SQLITE_LIMIT_VDBE_OP: instructions in one prepared statement. Bounds the
    # memory and time of preparing a statement, which the deadline cannot
    # interrupt (views expanded into views). A 6,000-row INSERT is ~36,000.
    max_statement_ops: int = 250_000
    # SQLITE_LIMIT_EXPR_DEPTH and SQLITE_LIMIT_COMPOUND_SELECT: SQLite's defaults.
    max_expression_depth: int = 1000
    max_compound_select: int = 500
    # SQLITE_LIMIT_VARIABLE_NUMBER: `?` parameters (SQLite's default since 3.32).
    max_parameters: int = 32766
    # SQLITE_LIMIT_TRIGGER_DEPTH: nested (recursive) trigger firings.
    max_trigger_depth: int = 100
    # SQLITE_LIMIT_LIKE_PATTERN_LENGTH. One LIKE/GLOB comparison costs up to
    # pattern x value length and cannot be interrupted at the deadline: at
    # 1,000 x 1 MiB it takes about 1 s (SQLite's default, 50,000, about 40 s).
    max_like_pattern_bytes: int = 1000


@dataclass(frozen=True)
class RedisLimits:
    """Bounds on the Redis key-value backend's calls (host/backends/redis.py)."""

    # Waiting for a reply: bounded so a hung server fails the guest call instead
    # of holding a worker thread forever; 1 MiB values need far less. During a
    # request, the time left before its deadline if that is less.
    socket_timeout_seconds: float = 5.0
    # Waiting for a TCP connection, so start-up fails fast on a wrong URL; during
    # a request, the time left before its deadline if that is less.
    connect_timeout_seconds: float = 2.0
    # A pooled connection idle for longer than this is PINGed before reuse.
    health_check_interval_seconds: int = 30
    # COUNT hint for SCAN: about as many keys per list-keys page as SQLite's.
    scan_count: int = 1000


@dataclass(frozen=True)
class OutboundRedisLimits(RedisLimits):
    """Bounds on a guest's own Redis connections (`fermyon:spin/redis`,
    host/capabilities/redis.py). The timeouts are ceilings: each command gets at
    most the time left before its request's deadline."""

    # Per command: a guest may block on purpose (BLPOP), so the request's
    # deadline is the real bound; this only caps a call made outside one.
    socket_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    # A reply larger than this (its values' bytes plus 32 per value, about what
    # it costs to hand to the guest) answers error::other before it is read
    # whole; the connection is closed, as its rest is never read.
    max_reply_bytes: int = 2 * MiB
    # Connections one instance may hold open at once (each is a socket); past
    # it `open` answers error::too-many-connections.
    max_open_connections: int = 16


@dataclass(frozen=True)
class RedisTriggerLimits:
    """Bounds on the Redis trigger's subscribers (`[[trigger.redis]]`, host/redis_trigger.py).

    Each message runs in a fresh instance under the component's `Limits` (memory,
    `--request-timeout`), exactly as an HTTP request does.
    """

    # Handler calls one subscriber (one Redis address) runs at once
    # (`--max-concurrent-messages`). 1 is Spin's: one message after the other, in
    # the order Redis delivered them. At the cap the subscriber stops reading: the
    # messages wait in the socket and in Redis's output buffer for the
    # subscriber, and Redis disconnects a subscriber whose buffer passes its
    # `client-output-buffer-limit pubsub` (default 32 MiB, or 8 MiB for 60 s);
    # the subscriber then reconnects, and what was in the buffer is lost.
    max_in_flight: int = 1
    # A larger message is logged and dropped, never handed to a component: a
    # payload crosses into the guest as one list<u8>, ~85 bytes of host memory
    # per byte (`--max-message-bytes`).
    max_message_bytes: int = 1 * MiB
    # Connecting (and AUTH, SELECT, SUBSCRIBE), and reading the rest of a message
    # once its first bytes have come.
    connect_timeout_seconds: float = 5.0
    # An idle subscription is PINGed this often; no reply within
    # connect_timeout_seconds counts as a lost connection (a server or network
    # that went away without closing it).
    health_check_interval_seconds: float = 30.0
    # After a lost connection: the first delay before reconnecting, doubling
    # with each failed attempt up to the second; the outage is logged once when
    # it starts and once when it ends.
    reconnect_delays: tuple[float, float] = (0.1, 10.0)


@dataclass(frozen=True)
class KeyValueLimits:
    """Bounds on key-value calls; Spin documents values of at most 1 MB."""

    # A larger value (set, swap, set-many; or a stored one on its way out: get,
    # cas.current, get-many) answers error::other instead of crossing as a
    # list<u8>, which costs ~100 bytes of host memory per byte (bench/memory.py).
    max_value_bytes: int = 1 * MiB  # `host up --max-key-value-bytes`
    # Total value bytes one batch call (get-many/set-many) may move.
    max_batch_bytes: int = 2 * MiB
    # SQLite backend: waiting for another process's write lock on the shared
    # file; also capped by the request's deadline.
    busy_timeout_seconds: float = 30.0
    # SQLite backend: keys per list-keys page (Redis: `redis.scan_count`).
    page_size: int = 1000
    # fermyon:spin/key-value stores one instance may hold open at once; past it
    # `open` answers store-table-full (Spin's own table holds 256).
    max_open_stores: int = 256
    redis: RedisLimits = RedisLimits()


@dataclass(frozen=True)
class OciLimits:
    """Bounds on OCI images and registry traffic (`host oci build|push|pull`, `host up REF`).

    Passed as `limits=` to `LocalLayout`, `RegistryClient`, `push`, `pull` and
    `resolve_app` (host/oci/); these defaults apply when none is given.
    """

    # A manifest, index or `oci-layout`/`index.json` read into memory; registries
    # must accept manifests of at least 4 MiB, so real ones fit.
    max_manifest_bytes: int = 4 * MiB
    # What one image may unpack to: a small gzip layer can decompress to a huge
    # tree, and an app image is .wasm files and assets, not a disk.
    max_unpacked_bytes: int = 1024 * MiB
    max_unpacked_entries: int = 100_000
    # Registry requests. Connecting and waiting for a pooled connection are quick
    # or broken; reads and writes allow for slow links moving multi-MiB layers.
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    write_timeout_seconds: float = 60.0
    pool_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class OutboundPostgresLimits:
    """Bounds on a guest's own PostgreSQL connections (`fermyon:spin/postgres`,
    `spin:postgres`; host/capabilities/postgres.py). The timeouts are ceilings:
    each call gets at most the time left before its request's deadline."""

    connect_timeout_seconds: float = 5.0
    # The server's statement_timeout on every guest connection: bounds a
    # statement made outside a request; inside one the deadline comes first.
    statement_timeout_seconds: float = 30.0
    # At the deadline a running statement gets a cancel request; if the server
    # has not answered this much later, its socket is shut.
    cancel_grace_seconds: float = 1.0
    # A query result larger than this (its values' bytes plus 32 per value)
    # answers query-failed; rows are read in chunks and reading stops there.
    max_result_bytes: int = 2 * MiB
    # Connections one instance may hold open at once; past it `open` answers
    # connection-failed("too many connections"), as Spin does.
    max_open_connections: int = 16


@dataclass(frozen=True)
class OutboundMqttLimits:
    """Bounds on a guest's own MQTT connections (`fermyon:spin/mqtt`,
    host/capabilities/mqtt.py). The timeouts are ceilings: each call gets at
    most the time left before its request's deadline."""

    # TCP connect, TLS handshake and the broker's CONNACK, together.
    connect_timeout_seconds: float = 5.0
    # Waiting for a publish to be written and, at QoS 1/2, acknowledged:
    # bounds a call made outside a request; inside one the deadline comes first.
    publish_timeout_seconds: float = 30.0
    # A larger payload answers error::other before anything is sent (Spin has
    # no default; its runtime config's `max_payload_size_bytes` sets one). As
    # for Redis replies: a list<u8> costs the host far more than its bytes.
    max_payload_bytes: int = 2 * MiB
    # A packet from the broker larger than this closes the connection: a
    # publisher only ever receives acknowledgements (a few bytes).
    max_incoming_packet_bytes: int = 64 * 1024
    # Connections one instance may hold open at once (each is a socket); past
    # it `open` answers error::too-many-connections.
    max_open_connections: int = 16


@dataclass(frozen=True)
class BlobStoreLimits:
    """Bounds on `wasi:blobstore` calls (host/capabilities/blobstore.py) and their
    backends. The timeouts are ceilings: each backend call gets at most the time
    left before its request's deadline."""

    # An object written larger than this fails the stream write that crosses it
    # (last-operation-failed) and its `finish`; nothing is stored
    # (`host up --max-blob-bytes`).
    max_object_bytes: int = 256 * MiB
    # `incoming-value-consume-sync` returns the value as one list<u8>, ~100 bytes
    # of host memory per byte (bench/memory.py): a larger value answers an error
    # naming `incoming-value-consume-async`, which streams it in 64 KiB chunks.
    max_sync_bytes: int = 1 * MiB
    # Bytes written to an outgoing value before `container.write-data` names its
    # object; they wait in host memory until then.
    max_early_bytes: int = 1 * MiB
    # Names one `read-stream-object-names` returns (and one `skip-...` skips),
    # whatever `len` asks.
    max_list_page: int = 1000
    # Handles one instance may hold at once, per kind: containers (a name and a
    # backend), values (an open file or HTTP response, or an upload's temp file
    # or part buffer), listings (open directories or a page of names). Past it
    # the call that would make one answers an error (get-container,
    # create-container, get-data, list-objects) or traps (new-outgoing-value,
    # which has no error case).
    max_open_containers: int = 256
    max_open_values: int = 16
    max_open_listings: int = 16
    # S3 backend: a multipart upload sends parts of this size (S3's minimum is
    # 5 MiB); an upload holds at most one part in host memory.
    s3_part_bytes: int = 8 * MiB
    s3_connect_timeout_seconds: float = 5.0
    s3_read_timeout_seconds: float = 30.0
    # S3 calls in flight at once per backend (worker threads; each call waits
    # for at most its request's time left, whatever the thread does).
    s3_max_calls: int = 32
