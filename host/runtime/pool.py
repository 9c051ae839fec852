"""Pools of pre-instantiated, never-used component instances.

Instantiation happens ahead of time on a background thread, off the request
path; a request takes a fresh instance and the instance is dropped afterwards,
so no guest state survives from one request to the next. When a burst drains
the pool, the request instantiates inline rather than wait for the refiller.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from host.limits import DEFAULT_POOL_SIZE

log = logging.getLogger("host.pool")

T = TypeVar("T")

IDLE_TOP_UP = 0.25  # seconds a partly used pool waits for more takes before refilling


class InstancePool(Generic[T]):
    def __init__(self, name: str, factory: Callable[[], T], size: int = DEFAULT_POOL_SIZE):
        self.name = name
        self.size = max(0, size)
        self._factory = factory
        self._ready: collections.deque[T] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.created = 0  # instances made, in the background or inline
        self.misses = 0  # requests that found the pool empty
        self.instantiate_seconds = 0.0  # spent making the `created` ones (host/metrics.py)

    def start(self) -> None:
        """Fill the pool once (so start-up errors surface now), then refill in background."""
        self._fill()
        if self.size == 0:
            return  # nothing to keep ready: every request instantiates inline
        self._thread = threading.Thread(target=self._refill_loop, name=f"pool-{self.name}",
                                        daemon=True)
        self._thread.start()

    def take(self) -> T:
        try:
            item = self._ready.popleft()
        except IndexError:
            self.misses += 1
            item = self._make()
        # Wake the refiller once the pool is half empty, not on every take:
        # each wake-up is a thread switch (and a GIL hand-off) on the request path.
        if len(self._ready) <= self.size // 2:
            with self._wake:
                self._wake.notify()
        return item

    def give_back(self, item: T) -> None:
        """Return a used item for reuse (opt-in reuse mode only); it is taken first."""
        if not self._closed:
            self._ready.appendleft(item)

    def __len__(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._ready.clear()

    def _make(self) -> T:
        started = time.perf_counter()
        item = self._factory()
        self.instantiate_seconds += time.perf_counter() - started
        self.created += 1
        return item

    def _fill(self) -> None:
        while len(self._ready) < self.size and not self._closed:
            self._ready.append(self._make())

    def _refill_loop(self) -> None:
        while True:
            with self._wake:
                # Woken at half-empty under load; otherwise look again every
                # IDLE_TOP_UP seconds, so an idle pool is soon back to full size.
                ready = len(self._ready)
                if (ready >= self.size or ready > self.size // 2) and not self._closed:
                    self._wake.wait(timeout=IDLE_TOP_UP)
                if self._closed:
                    return
            try:
                self._fill()
            except Exception:  # keep refilling later; requests instantiate inline meanwhile
                log.exception("pool %s: background instantiation failed", self.name)
                with self._wake:
                    self._wake.wait(timeout=1.0)
