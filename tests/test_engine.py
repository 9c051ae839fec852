"""host/runtime/engine.py: the pooling allocator keeps every request's instance fresh.

`host up` runs on wasmtime's pooling allocator: memory slots are reused from
one instance to the next, so these check that a reused slot starts from the
component's image again (a value one request's guest wrote, in its image or in
a page it grew, is not seen by the next), that the per-instance memory limit
still holds, and that artifacts are shared with the on-demand engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.app import App, AppSettings, load_app
from host.limits import (
    POOLING_MAX_ADDRESS_SPACE,
    Limits,
    MiB,
    PoolingLimits,
    pooling_limits,
)
from host.manifest import load_manifest
from host.runtime import abi
from host.runtime.engine import ENGINE_SETTINGS, Engine
from tests import wat
from tests.conftest import write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "pooling"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
"""
REQUEST = abi.HttpRequest("GET", "http", None, "/", [], b"")
LIMIT = 16 * MiB

# Adds one to a byte of its data segment (address 400, initially 0) and to a
# byte of a page it grows (address 70000), and answers their sum as a digit:
# "2" whenever the instance starts fresh.
MEMORY_COUNTER = """
  (data (i32.const 400) "\\00")
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store8 (i32.const 400) (i32.add (i32.load8_u (i32.const 400)) (i32.const 1)))
    (drop (memory.grow (i32.const 2)))
    (i32.store8 (i32.const 70000) (i32.add (i32.load8_u (i32.const 70000)) (i32.const 1)))
    (i32.store8 (i32.const 300) (i32.add (i32.const 48)
      (i32.add (i32.load8_u (i32.const 400)) (i32.load8_u (i32.const 70000)))))
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 300))
    (i32.store (i32.const 32) (i32.const 1))
    (i32.const 16))
""".replace("{export}", wat.EXPORT)

# Grows a page at a time until refused; 200 if it then holds exactly the
# limit (16 MiB = 256 pages), 500 otherwise.
GROW_TO_LIMIT = """
  (func (export "{export}") (param $req i32) (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (i32.store16 (i32.const 16)
      (select (i32.const 200) (i32.const 500) (i32.eq (memory.size) (i32.const 256))))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const 0))
    (i32.const 16))
""".replace("{export}", wat.EXPORT)


# Answers 200 if slot 1 of its table is null, then fills it: 500 from an instance
# whose table an earlier request wrote to.
TABLE_PROBE = """
  (table $t 4 funcref)
  (elem declare func $marker)
  (func $marker)
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store16 (i32.const 16)
      (select (i32.const 200) (i32.const 500) (ref.is_null (table.get $t (i32.const 1)))))
    (table.set $t (i32.const 1) (ref.func $marker))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const 0))
    (i32.const 16))
""".replace("{export}", wat.EXPORT)


def _pooling() -> PoolingLimits:
    pooling = pooling_limits(1, 1, 4, LIMIT)
    assert pooling is not None
    return pooling


@pytest.fixture(scope="module")
def pooling_engine() -> Engine:
    engine = Engine(None, pooling=_pooling())
    assert engine.pooling is not None
    return engine


def _load(directory: Path, body: str, engine: Engine, reuse: int = 1) -> App:
    directory.mkdir(parents=True, exist_ok=True)
    wat.build_component(body, directory / "c.wasm")
    manifest = load_manifest(write_app(directory, MANIFEST))
    limits = Limits(memory_bytes=LIMIT, max_instance_reuse=reuse)
    return load_app(manifest, engine, AppSettings(pool_size=1, limits=limits))


@pytest.fixture
def counter(tmp_path: Path, pooling_engine: Engine) -> Iterator[App]:
    app = _load(tmp_path, MEMORY_COUNTER, pooling_engine)
    yield app
    app.close()


def test_a_reused_slot_starts_from_the_image(counter: App) -> None:
    (executor,) = counter.executors.values()
    bodies = [executor.handle(REQUEST).body for _ in range(20)]  # type: ignore[union-attr]
    assert bodies == [b"2"] * 20


def test_memory_limit_holds_with_pooling(tmp_path: Path, pooling_engine: Engine) -> None:
    app = _load(tmp_path, GROW_TO_LIMIT, pooling_engine)
    try:
        (executor,) = app.executors.values()
        for _ in range(3):
            assert executor.handle(REQUEST).status == 200  # type: ignore[union-attr]
    finally:
        app.close()


def test_artifacts_are_shared_between_allocators(tmp_path: Path) -> None:
    wasm = wat.build_component(wat.FIXED, tmp_path / "c.wasm")
    cache = tmp_path / "cache"
    assert not Engine(cache).load(wasm, "c").cached
    assert Engine(cache, pooling=_pooling()).load(wasm, "c").cached


def test_cache_key_names_the_memory_layout() -> None:
    assert "memory_reservation=4294967296" in ENGINE_SETTINGS
    assert "memory_guard_size=33554432" in ENGINE_SETTINGS


def test_slots_follow_the_concurrency_limits() -> None:
    one = pooling_limits(1, 4, 16, 128 * MiB)
    assert one is not None and one.instances == 4 + 16 + 16
    assert one.address_space() < 1024**4  # under 1 TiB for one component
    assert pooling_limits(10_000, 4, 16, 128 * MiB) is None  # past the cap: on demand
    big = PoolingLimits(one.instances, 8 * 1024**3)  # memories larger than the reservation
    assert big.address_space() > one.address_space()
    assert POOLING_MAX_ADDRESS_SPACE < 128 * 1024**4


def test_refused_reservation_falls_back_to_on_demand(caplog: pytest.LogCaptureFixture,
                                                     tmp_path: Path) -> None:
    # More slots than a 47-bit address space holds: the reservation would fail (and
    # wasmtime's C API would abort the process), so the engine allocates on demand.
    with caplog.at_level(logging.WARNING, logger="host.engine"):
        engine = Engine(None, pooling=PoolingLimits(100_000, 128 * MiB))
    assert engine.pooling is None
    assert "instances allocate on demand" in caplog.text
    app = _load(tmp_path, wat.FIXED, engine)
    try:
        (executor,) = app.executors.values()
        assert executor.handle(REQUEST).status == 200  # type: ignore[union-attr]
    finally:
        app.close()


def test_the_counter_sees_a_reused_instance(tmp_path: Path, pooling_engine: Engine) -> None:
    # The probe above is sound: one instance serving several requests counts up.
    app = _load(tmp_path, MEMORY_COUNTER, pooling_engine, reuse=3)
    try:
        (executor,) = app.executors.values()
        bodies = [executor.handle(REQUEST).body for _ in range(4)]  # type: ignore[union-attr]
        assert bodies == [b"2", b"4", b"6", b"2"]
    finally:
        app.close()


@pytest.mark.parametrize(("reuse", "statuses"), [(1, [200] * 6), (2, [200, 500] * 3)])
def test_a_reused_table_slot_starts_empty(tmp_path: Path, pooling_engine: Engine, reuse: int,
                                          statuses: list[int]) -> None:
    app = _load(tmp_path, TABLE_PROBE, pooling_engine, reuse=reuse)
    try:
        (executor,) = app.executors.values()
        seen = [executor.handle(REQUEST).status for _ in range(6)]  # type: ignore[union-attr]
        assert seen == statuses
    finally:
        app.close()
