"""One wasmtime Engine per process, its epoch ticker, and the on-disk compile cache.

Compiling a large component (componentize-py output: 18 MB) takes seconds;
loading a serialized artifact takes tens of milliseconds. Artifacts are keyed by
the component's content digest, the wasmtime version and the engine settings,
and written with an atomic rename, so several host processes on one node (pods
sharing a cache volume) can fill and read the same cache safely. A process
about to compile takes an advisory lock on the artifact's key first: pods that
start together on a fresh node compile each component once, the others wait
and load it, instead of all compiling the same bytes at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import wasmtime
import wasmtime.component as wc

from host.errors import ComponentError
from host.limits import PoolingLimits
from host.runtime.wasmtime_private import set_concurrency_support, set_pooling_allocator

log = logging.getLogger("host.engine")

# Engine settings that change the compiled code; part of every cache key.
EPOCH_TICK_SECONDS = 0.01
# How long a process waits for another one compiling the same component before
# compiling it too (a stuck or very slow peer must not block start-up forever).
COMPILE_LOCK_WAIT_SECONDS = 300.0
# Memory reservation and guard sizes are spelled out (wasmtime's defaults on
# 64-bit hosts) because they change the code: with 4 GiB reserved plus a guard,
# compiled code needs no bounds checks (smaller values measured ~15% slower
# guest calls, bench/guest_startup.py). The allocator (pooling or on-demand) does not
# change the artifact: either engine loads the other's.
MEMORY_RESERVATION = 4 * 1024**3
MEMORY_GUARD_SIZE = 32 * 1024**2
ENGINE_SETTINGS = (f"epoch_interruption=1;cranelift_opt_level=speed;memory_init_cow=1;"
                   f"memory_reservation={MEMORY_RESERVATION};"
                   f"memory_guard_size={MEMORY_GUARD_SIZE};concurrency_support=0;v4")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "spinhost" / "compiled"


_CORE_MODULE_VERSION = b"\x01\x00\x00\x00"  # bytes 4..8 of a core module


@dataclass(frozen=True)
class LoadedComponent:
    component: wc.Component | wasmtime.Module  # a Module for WASI preview 1 programs
    digest: str
    cached: bool  # True when the compiled artifact came from the cache
    seconds: float  # time spent compiling or deserializing


class Engine:
    """The process-wide wasmtime engine and compile cache."""

    def __init__(self, cache_dir: Path | None, pooling: PoolingLimits | None = None) -> None:
        """`pooling`: use wasmtime's pooling allocator with these slots (`host up`);
        None: the on-demand allocator (checks, tests, tools)."""
        if pooling is not None and not _can_reserve(pooling.address_space()):
            # wasmtime's C API aborts the process when the reservation fails.
            log.warning("cannot reserve %.1f TiB of address space for the pooling allocator "
                        "(ulimit -v, or a small address space); instances allocate on demand",
                        pooling.address_space() / 1024**4)
            pooling = None
        self.pooling = pooling
        self.wasmtime = wasmtime.Engine(_config(pooling))
        self.cache_dir = cache_dir
        self.cache_version = f"wasmtime-py-{_wasmtime_version()};{ENGINE_SETTINGS}"
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.compiled = 0  # components compiled by this engine (not loaded from the cache)

    # -- epochs -------------------------------------------------------------

    def ticks(self, seconds: float) -> int:
        """Epoch ticks for a deadline of `seconds`."""
        return max(1, int(seconds / EPOCH_TICK_SECONDS) + 1)

    def start_ticker(self) -> None:
        """Advance the epoch in the background so store deadlines can fire."""
        if self._ticker is not None:
            return

        def tick() -> None:
            while not self._ticker_stop.wait(EPOCH_TICK_SECONDS):
                self.wasmtime.increment_epoch()

        self._ticker = threading.Thread(target=tick, name="epoch-ticker", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._ticker_stop.set()

    # -- compile cache ------------------------------------------------------

    def load(self, path: Path, owner: str,
             on_compile: Callable[[int], None] | None = None) -> LoadedComponent:
        """Compile `path` (or load it from the cache). `owner` names it in errors.

        `on_compile(size)` is called before a real compile, which takes seconds
        for large components, so the caller can say what is happening.
        """
        try:
            wasm = path.read_bytes()
        except OSError as exc:
            raise ComponentError(
                f"component \"{owner}\": cannot read source {path}: {exc.strerror or exc}"
            ) from None
        digest = hashlib.sha256(wasm).hexdigest()
        kind = _kind(wasm)
        start = time.perf_counter()
        cached_path = self._cache_path(digest, kind)
        if cached_path is None:
            return self._compile(wasm, kind, path, owner, digest, None, on_compile, start)
        loaded = self._load_cached(cached_path, kind, digest, start)
        if loaded is not None:
            return loaded
        with _compile_lock(cached_path):
            # Another process may have compiled it while we waited for the lock.
            loaded = self._load_cached(cached_path, kind, digest, start)
            if loaded is not None:
                return loaded
            return self._compile(wasm, kind, path, owner, digest, cached_path, on_compile,
                                 start)

    def cache_path(self, wasm: bytes) -> Path | None:
        """Where the compiled artifact of `wasm` is (or would be) cached; None: no cache.
        `<key>.lock` next to it is held while a process compiles it."""
        return self._cache_path(hashlib.sha256(wasm).hexdigest(), _kind(wasm))

    def _cache_path(self, digest: str,
                    kind: type[wc.Component] | type[wasmtime.Module]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = f"{digest};{kind.__name__};{self.cache_version}"
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.cwasm"

    def _load_cached(self, cached_path: Path, kind: type[wc.Component] | type[wasmtime.Module],
                     digest: str, start: float) -> LoadedComponent | None:
        if not cached_path.is_file():
            return None
        try:
            component = kind.deserialize_file(self.wasmtime, str(cached_path))
            return LoadedComponent(component, digest, True, time.perf_counter() - start)
        except wasmtime.WasmtimeError as exc:
            log.warning("discarding unreadable cache entry %s: %s", cached_path, exc)
            return None

    def _compile(self, wasm: bytes, kind: type[wc.Component] | type[wasmtime.Module],
                 path: Path, owner: str, digest: str, cached_path: Path | None,
                 on_compile: Callable[[int], None] | None, start: float) -> LoadedComponent:
        core = kind is wasmtime.Module
        if on_compile is not None:
            on_compile(len(wasm))
        try:
            component = kind(self.wasmtime, wasm)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            what = "module" if core else "component"
            raise ComponentError(
                f"component \"{owner}\": {path} is not a valid WebAssembly {what}: {first}"
            ) from None
        seconds = time.perf_counter() - start
        self.compiled += 1
        if cached_path is not None:
            self._store(cached_path, component)
        return LoadedComponent(component, digest, False, seconds)

    def _store(self, cached_path: Path, component: wc.Component | wasmtime.Module) -> None:
        # Best effort: a read-only or full cache must not stop the app serving.
        try:
            cached_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached_path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(component.serialize())
                os.replace(tmp, cached_path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("cannot write compile cache %s (%s): this component is compiled at "
                        "every start; give --cache-dir a writable directory (a node volume) "
                        "to start fast", cached_path.parent, exc.strerror or exc)


def _kind(wasm: bytes) -> type[wc.Component] | type[wasmtime.Module]:
    """A core module (WASI preview 1 programs) or a component, from the binary's header."""
    core = wasm[:4] == b"\0asm" and wasm[4:8] == _CORE_MODULE_VERSION
    return wasmtime.Module if core else wc.Component
def _config(pooling: PoolingLimits | None) -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    # Copy-on-write memory images: measured 13x faster instantiation for a
    # componentize-py component than copying data segments. Baked into the
    # compiled artifact, hence part of ENGINE_SETTINGS (the cache key).
    config.memory_init_cow = True
    config.memory_reservation = MEMORY_RESERVATION
    config.memory_guard_size = MEMORY_GUARD_SIZE
    # No component-model concurrency (WASI 0.3 is refused anyway): with it on,
    # wasmtime 50 traps any host function that receives two borrowed handles in
    # one call ("BUG: deferred host scope has no call context"), e.g.
    # wasi:blobstore's container.write-data and wasi:io's output-stream.splice.
    set_concurrency_support(config, False)
    if pooling is not None:
        set_pooling_allocator(config, pooling)
    return config


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000  # Linux


def _can_reserve(size: int) -> bool:
    """Whether `size` bytes of inaccessible address space can be mapped, as wasmtime will."""
    address = _libc.mmap(None, size, 0, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        return False
    _libc.munmap(address, size)
    return True


@contextlib.contextmanager
def _compile_lock(cached_path: Path) -> Iterator[None]:
    """Hold `<key>.lock` (flock) while compiling; best effort on unwritable caches.

    The lock file stays (empty): removing it could let a waiter and a newcomer
    lock different files. flock is released by the kernel if the process dies.
    """
    lock_path = cached_path.with_suffix(".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield  # read-only cache: nothing to share, compile alone
        return
    try:
        deadline = time.monotonic() + COMPILE_LOCK_WAIT_SECONDS
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("waiting for another process compiling %s", cached_path.name)
                    waited = True
                if time.monotonic() > deadline:
                    log.warning("%s: another process has been compiling for %.0f s; "
                                "compiling here too", lock_path, COMPILE_LOCK_WAIT_SECONDS)
                    break
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"
