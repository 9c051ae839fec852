"""Memory per request (host/limits.py `KeyValueLimits`, `HttpLimits.max_body_bytes_in_flight`),
through a real `host up` where it matters.

Bytes crossing into or out of a component as list<u8> cost 85-200 bytes of host
memory each (bench/memory.py), so key-value values are bounded, request bodies
handed to components share one process-wide budget (more wait or get 503), and
a component body larger than that budget answers 413. WAGI programs read their
body from stdin and are not limited that way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import wasmtime

from host.backends.sqlite import SqliteKeyValue
from host.capabilities import Err, Ok
from host.capabilities.keyvalue import ATOMICS, BATCH, KeyValue
from host.limits import KeyValueLimits
from host.server import _BodyBudget
from tests import wat
from tests.apps import built_app
from tests.conftest import HostProcess, run_host, write_app
from tests.procmem import peak_growth, reset_peak

MANIFEST = """spin_manifest_version = 2
[application]
name = "memory-limits"
[[trigger.http]]
route = "/fixed"
component = "fixed"
[[trigger.http]]
route = "/cgi"
component = "cgi"
executor = { type = "wagi" }
[[trigger.http]]
route = "/..."
component = "probe"
[component.fixed]
source = "fixed.wasm"
[component.cgi]
source = "cgi.wasm"
[component.probe]
source = "probe.wasm"
key_value_stores = ["default"]
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("memory-app")
    cgi = wat.build_module(wat.WASI_CGI_ECHO, directory / "cgi.wasm")
    probe = built_app("capability-probe") / "capability-probe.wasm"
    return write_app(directory / "app", MANIFEST, {"fixed.wasm": wat_components["fixed"],
                                                   "cgi.wasm": cgi, "probe.wasm": probe})


def start(app: Path, cache_dir: Path, state: Path, *args: str) -> HostProcess:
    return HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1",
                        "--state-dir", str(state), *args]).start()


def in_background(call: Callable[[], httpx.Response], done: list[str], name: str
                  ) -> tuple[threading.Thread, list[httpx.Response]]:
    """Run `call` on a thread; its response lands in the returned list, and
    `name` in `done` once it has been answered (the order answers came in)."""
    result: list[httpx.Response] = []

    def run() -> None:
        result.append(call())
        done.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


# ---------------------------------------------------------------------------
# Key-value values


def test_key_value_value_over_the_limit_is_refused_both_ways(app: Path, cache_dir: Path,
                                                             tmp_path: Path) -> None:
    # A value another client wrote (e.g. redis-cli): larger than the limit.
    with sqlite3.connect(tmp_path / "sqlite_key_value.db") as db:
        db.execute("CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, "
                   "value BLOB NOT NULL, PRIMARY KEY (store, key))")
        db.execute("INSERT INTO spin_key_value VALUES ('default', 'theirs', ?)",
                   (bytes(5000),))
    refused = ("other: value of {} bytes exceeds the limit of 1000 bytes "
               "(--max-key-value-bytes)")
    with start(app, cache_dir, tmp_path, "--max-key-value-bytes", "1000") as host, \
            host.client() as c:
        assert c.post("/kv/set?key=fits", content=b"f" * 1000).json() == {
            "set": "fits", "bytes": 1000}
        assert c.post("/kv/set?key=big", content=b"b" * 1001).json() == {
            "error": refused.format(1001)}
        assert c.get("/kv/get?key=big").status_code == 404  # nothing was stored
        assert c.get("/kv/get?key=fits").content == b"f" * 1000
        # On the way out: an error value instead of a 5000-element list<u8>.
        assert c.get("/kv/get?key=theirs").json() == {"error": refused.format(5000)}
        assert c.get("/kv/cas?key=theirs&value=x").json() == {"error": refused.format(5000)}
        assert host.wait_for_output('component "probe", key-value store "default": value '
                                    "of 1001 bytes exceeds the limit of 1000 bytes")
        assert c.get("/kv/incr?key=n").json() == {"value": 1}  # the store still works


@pytest.fixture
def bucket() -> Iterator[tuple[KeyValue, wasmtime.Store, object, SqliteKeyValue]]:
    backend = SqliteKeyValue(None)
    kv = KeyValue("c", {"default": backend},
                  KeyValueLimits(max_value_bytes=10, max_batch_bytes=15))
    store = wasmtime.Store()
    opened = kv.open(store, "default")
    assert isinstance(opened, Ok)
    yield kv, store, opened.value, backend
    backend.close()


def test_key_value_batches_and_swaps_are_bounded(
        bucket: tuple[KeyValue, wasmtime.Store, object, SqliteKeyValue]) -> None:
    kv, store, handle, backend = bucket
    batch = kv.functions(BATCH)

    def other(result: object) -> str:
        assert isinstance(result, Err), result
        return str(result.value.payload)

    assert other(batch["set-many"](store, handle, [("a", b"x" * 8), ("b", b"y" * 8)])) == (
        "set-many of 16 value bytes exceeds the batch limit of 15 bytes")
    assert other(batch["set-many"](store, handle, [("a", b"x" * 11)])).startswith(
        "value of 11 bytes exceeds the limit of 10 bytes")
    assert backend.get_many("default", ["a", "b"]) == [None, None]  # nothing was stored
    assert batch["set-many"](store, handle, [("a", b"x" * 8), ("b", b"y" * 7)]) == Ok(None)
    backend.set("default", "b", b"y" * 8)  # another client makes the batch too large
    assert other(batch["get-many"](store, handle, ["a", "b", "missing"])) == (
        "get-many of 16 value bytes exceeds the batch limit of 15 bytes")
    assert batch["get-many"](store, handle, ["a", "missing"]) == Ok([("a", b"x" * 8), None])

    atomics = kv.functions(ATOMICS)
    snapshot = atomics["[static]cas.new"](store, handle, "a")
    assert isinstance(snapshot, Ok)
    swapped = atomics["swap"](store, snapshot.value, b"z" * 11)
    assert isinstance(swapped, Err) and swapped.value.tag == "store-error"
    assert swapped.value.payload.payload.startswith("value of 11 bytes exceeds")
    assert backend.get("default", "a") == b"x" * 8


# ---------------------------------------------------------------------------
# Request bodies handed to components


def test_a_body_larger_than_the_budget_is_413_for_components_only(
        app: Path, cache_dir: Path, tmp_path: Path) -> None:
    body = bytes(1_500_000)
    with start(app, cache_dir, tmp_path, "--max-body-bytes-in-flight", "1000000") as host, \
            host.client() as c:
        assert c.post("/fixed", content=body).status_code == 413  # refused before reading
        assert host.wait_for_output("component fixed: request body of 1500000 bytes is larger "
                                    "than --max-body-bytes-in-flight (1000000)")
        # Chunked (no declared length): refused once the bytes read pass the budget.
        assert c.post("/fixed", content=iter([body[:500_000]] * 3)).status_code == 413
        assert host.wait_for_output("request body of more than 1000000 bytes")
        assert c.post("/fixed", content=body[:1_000_000]).status_code == 200
        # A WAGI program reads its body from stdin: only --max-body-bytes applies.
        echoed = c.post("/cgi", content=body)
        assert echoed.status_code == 200 and echoed.content.endswith(body)


def test_bodies_over_the_budget_wait_their_turn(app: Path, cache_dir: Path,
                                                tmp_path: Path) -> None:
    with start(app, cache_dir, tmp_path, "--max-body-bytes-in-flight", "3000000",
               "--request-timeout", "2") as host, host.client() as c:
        done: list[str] = []
        # 2 MB of the 3 MB budget, held until the guest's 2 s deadline.
        looping, looped = in_background(lambda: c.post("/loop", content=bytes(2_000_000)),
                                        done, "loop")
        assert host.wait_for_output("looping until the deadline")
        # Another component's 2 MB body does not fit: it waits for the bytes.
        waiting, waited = in_background(lambda: c.post("/fixed", content=bytes(2_000_000)),
                                        done, "fixed")
        # Requests whose bodies fit, or that have none, run meanwhile.
        assert c.get("/fixed").status_code == 200
        assert c.post("/fixed", content=bytes(500_000)).status_code == 200
        looping.join()
        waiting.join()
        assert (looped[0].status_code, waited[0].status_code) == (504, 200)
        assert done == ["loop", "fixed"]  # admitted once the running body's bytes were freed
        assert c.get("/.well-known/spin/health").status_code == 200


def test_bodies_over_the_budget_get_503_when_the_queue_is_full(app: Path, cache_dir: Path,
                                                               tmp_path: Path) -> None:
    with start(app, cache_dir, tmp_path, "--max-body-bytes-in-flight", "3000000",
               "--max-queued-requests", "0", "--request-timeout", "2") as host, \
            host.client() as c:
        looping, looped = in_background(lambda: c.post("/loop", content=bytes(2_000_000)),
                                        [], "loop")
        assert host.wait_for_output("looping until the deadline")
        busy = c.post("/fixed", content=bytes(2_000_000))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert host.wait_for_output("request bodies in flight 2000000 of 3000000 bytes")
        assert c.post("/fixed", content=bytes(500_000)).status_code == 200  # fits: runs
        looping.join()
        assert looped[0].status_code == 504
        assert c.post("/fixed", content=bytes(2_000_000)).status_code == 200  # bytes freed


def test_body_budget_grants_in_arrival_order_and_survives_cancellation() -> None:
    async def scenario() -> None:
        budget = _BodyBudget(10)
        granted: list[str] = []

        async def take(name: str, size: int) -> None:
            await budget.acquire(size)
            granted.append(name)

        await budget.acquire(6)
        big = asyncio.create_task(take("big", 8))
        await asyncio.sleep(0)  # queued
        gone = asyncio.create_task(take("gone", 1))  # would fit, but waits behind big
        small = asyncio.create_task(take("small", 1))
        await asyncio.sleep(0)
        assert granted == [] and budget.fits(0) and not budget.fits(1)
        gone.cancel()  # leaves while queued: skipped when its turn comes, never granted
        budget.release(6)
        await asyncio.gather(big, small)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert granted == ["big", "small"] and budget.in_use == 9
        late = asyncio.create_task(take("late", 5))
        await asyncio.sleep(0)
        budget.release(8)  # grants "late"...
        late.cancel()  # ...whose request is cancelled before it resumes: given back
        with pytest.raises(asyncio.CancelledError):
            await late
        budget.release(1)
        assert budget.in_use == 0 and budget.fits(10)

    asyncio.run(scenario())


def test_concurrent_large_bodies_stay_within_a_memory_bound(app: Path, cache_dir: Path,
                                                            tmp_path: Path) -> None:
    # One 2 MiB body costs ~170 MiB while it crosses; eight at once measured ~600 MiB
    # without a budget, ~190 MiB with room for one at a time (bench/memory.py).
    size = 2 * 1024 * 1024
    with start(app, cache_dir, tmp_path, "--max-body-bytes-in-flight", str(size)) as host, \
            host.client() as c:
        assert c.post("/fixed", content=bytes(1000)).status_code == 200  # warm
        baseline = reset_peak(host.pid)
        statuses: list[int] = []
        barrier = threading.Barrier(8)

        def post() -> None:
            with host.client() as own:
                barrier.wait()
                statuses.append(own.post("/fixed", content=bytes(size)).status_code)

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 8
        assert peak_growth(host.pid, baseline) < 400 * 1024 * 1024
        assert c.get("/.well-known/spin/health").status_code == 200


@pytest.mark.parametrize("flag", ["--max-body-bytes-in-flight", "--max-key-value-bytes"])
def test_bad_memory_flags_are_one_line_errors(app: Path, flag: str) -> None:
    result = run_host("up", "-f", str(app), "--listen", "127.0.0.1:0", flag, "0")
    assert result.returncode == 1
    assert f"{flag} 0: must be positive" in result.stderr and "Traceback" not in result.stderr
