"""host/runtime/pool.py: pre-instantiation, refill, reuse."""

from __future__ import annotations

import itertools
import time

from host.runtime.pool import InstancePool


def _wait_for(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_fills_at_start_and_refills_in_the_background() -> None:
    counter = itertools.count()
    pool = InstancePool("p", lambda: next(counter), 4)
    pool.start()
    try:
        assert len(pool) == 4 and pool.created == 4
        taken = [pool.take() for _ in range(3)]
        assert taken == [0, 1, 2]  # oldest first, never the same item twice
        assert _wait_for(lambda: len(pool) == 4)
        pool.take()  # one take (not enough to wake it): topped up when idle
        assert _wait_for(lambda: len(pool) == 4)
    finally:
        pool.close()


def test_empty_pool_instantiates_inline_and_size_zero_has_no_thread() -> None:
    counter = itertools.count()
    pool = InstancePool("p", lambda: next(counter), 0)
    pool.start()
    assert pool._thread is None
    assert [pool.take(), pool.take()] == [0, 1]
    assert pool.misses == 2


def test_given_back_items_are_taken_first() -> None:
    counter = itertools.count()
    pool = InstancePool("p", lambda: next(counter), 2)
    pool.start()
    try:
        item = pool.take()
        pool.give_back(item)
        assert pool.take() == item
    finally:
        pool.close()
