"""Host memory per request: what bodies and values crossing the component boundary cost.

    .venv/bin/python -m bench.memory [--only a,b] [--concurrent 8] [--no-budget]
                                     [--host-arg=--flag --host-arg=value ...]

Every scenario runs against its own fresh `host up` (a memory high-water mark
cannot be lowered again, and memory freed by one scenario would be reused by
the next), serving apps/capability-probe (componentize-py, granted the default
key-value store and SQLite database) at `/...` plus tiny WAT components that
isolate one direction each: `/fixed` ignores the request body (request
lowering only), `/echo` returns it (lowering + response lifting) and `/big`
answers 2.5 MiB whatever the request (response lifting only). After a
warm-up touching every route used, the host's high-water mark is lowered to
its current RSS (`clear_refs`); the figure reported is VmHWM
(/proc/PID/status) after the scenario minus that baseline, and per byte that
growth divided by the bytes that crossed.

The copy-budget part (skip with --no-budget) bisects, on one host started with
--max-body-bytes (and the in-flight and key-value limits) 64 MiB, the largest body
each direction can carry in one component call: a response (`/echo`), a
host-call argument (`/kv/set`) and a request body (`/fixed`, up to 60 MiB).

Flags given with --host-arg go to every `host up` (e.g. to compare limits).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.hostproc import host_up_help
from tests import wat
from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.procmem import peak_growth, reset_peak

MiB = 1024 * 1024
TIMEOUT = 300.0
BIG = 5 * MiB // 2  # just under the copy budget for one lift (measured: 2,792,480 bytes)

# Big: status 200, a body of BIG bytes from its own (zeroed) memory, whatever
# the request: response lifting on its own.
BIG_WAT = f"""
  (func (export "{wat.EXPORT}") (param $req i32) (result i32)
    (drop (memory.grow (i32.const {BIG // 65536 + 2})))
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 65536))
    (i32.store (i32.const 32) (i32.const {BIG}))
    (i32.const 16))
"""

MANIFEST = """spin_manifest_version = 2
[application]
name = "memory-bench"
[[trigger.http]]
route = "/fixed"
component = "fixed"
[[trigger.http]]
route = "/echo"
component = "echo"
[[trigger.http]]
route = "/big"
component = "big"
[[trigger.http]]
route = "/..."
component = "probe"
[component.big]
source = "big.wasm"
[component.fixed]
source = "fixed.wasm"
[component.echo]
source = "echo.wasm"
[component.probe]
source = "probe.wasm"
key_value_stores = ["default"]
sqlite_databases = ["default"]
"""


@dataclass
class Row:
    name: str
    crossing: int  # bytes that crossed the boundary in the largest single direction
    statuses: str
    growth_kib: int
    seconds: float
    note: str = ""

    @property
    def per_byte(self) -> float:
        return self.growth_kib * 1024 / self.crossing if self.crossing else 0.0


class Bench:
    def __init__(self, root: Path, host_args: list[str]) -> None:
        self.root = root
        self.host_args = host_args
        app = root / "app"
        components = {"probe.wasm": built_app("capability-probe") / "capability-probe.wasm",
                      "fixed.wasm": wat.build_component(wat.FIXED, root / "fixed.wasm"),
                      "echo.wasm": wat.build_component(wat.ECHO, root / "echo.wasm"),
                      "big.wasm": wat.build_component(BIG_WAT, root / "big.wasm")}
        self.manifest = write_app(app, MANIFEST, components)
        self.runs = 0

    @contextmanager
    def host(self, *extra: str, seed: dict[str, bytes] | None = None) -> Iterator[HostProcess]:
        """A fresh host with its own state dir; `seed`: key-value entries written first,
        straight into the store's SQLite file, as another client would."""
        self.runs += 1
        state = self.root / f"state-{self.runs}"
        state.mkdir()
        if seed:
            with sqlite3.connect(state / "sqlite_key_value.db") as db:
                db.execute("CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT "
                           "NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))")
                db.executemany("INSERT INTO spin_key_value VALUES ('default', ?, ?)",
                               seed.items())
        with HostProcess(["-f", str(self.manifest), "-q", "--state-dir", str(state),
                          *self.host_args, *extra]) as process:
            yield process

    def measure(self, name: str, crossing: int, action: Callable[[httpx.Client], list[int]],
                seed: dict[str, bytes] | None = None, note: str = "") -> Row:
        with self.host(seed=seed) as process, httpx.Client(base_url=process.base_url,
                                                            timeout=TIMEOUT) as client:
            pid = process.pid
            warm_up(client)
            baseline = reset_peak(pid)
            start = time.perf_counter()
            statuses = action(client)
            seconds = time.perf_counter() - start
            growth = peak_growth(pid, baseline) // 1024
            alive = client.get("/.well-known/spin/health").status_code == 200
        counted = ", ".join(f"{n}x{s}" if n > 1 else str(s)
                            for s, n in sorted(Counter(statuses).items()))
        if not alive:
            counted += " (host down)"
        return Row(name, crossing, counted, growth, seconds, note)


def warm_up(client: httpx.Client) -> None:
    """Touch every code path the scenarios use with small values, twice."""
    for _ in range(2):
        client.post("/fixed", content=b"w" * 1000)
        client.post("/echo", content=b"w" * 1000)
        client.get("/big")
        client.post("/env", content=b"w" * 1000)
        client.post("/kv/set?key=warm", content=b"w" * 1000)
        client.get("/kv/get?key=warm")
        client.post("/sqlite", json={"sql": "SELECT zeroblob(1000)"})


def post(path: str, size: int) -> Callable[[httpx.Client], list[int]]:
    body = bytes(size)
    return lambda c: [c.post(path, content=body).status_code]


def kv_set_get(size: int) -> Callable[[httpx.Client], list[int]]:
    body = b"v" * size

    def run(c: httpx.Client) -> list[int]:
        return [c.post("/kv/set?key=big", content=body).status_code,
                c.get("/kv/get?key=big").status_code]
    return run


def at_once(method: str, path: str, size: int, n: int) -> Callable[[httpx.Client], list[int]]:
    body = bytes(size)

    def run(c: httpx.Client) -> list[int]:
        statuses: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(n)

        def one() -> None:
            with httpx.Client(base_url=str(c.base_url), timeout=TIMEOUT) as own:
                barrier.wait()
                status = own.request(method, path, content=body).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statuses
    return run


def scenarios(concurrent: int) -> dict[str, Callable[[Bench], Row]]:
    kv = int(2.4e6)
    return {
        "post8": lambda b: b.measure("8 MiB POST, probe /env (body unused)", 8 * MiB,
                                     post("/env", 8 * MiB)),
        "kvset8": lambda b: b.measure("8 MiB POST, probe /kv/set", 8 * MiB,
                                      post("/kv/set?key=big", 8 * MiB)),
        "kv": lambda b: b.measure("2.4 MB key-value set + get", kv, kv_set_get(kv)),
        "post1": lambda b: b.measure("1 MiB POST, probe /env", MiB, post("/env", MiB)),
        "zeroblob": lambda b: b.measure(
            "SELECT zeroblob(4194304), probe /sqlite", 4 * MiB,
            lambda c: [c.post("/sqlite", json={"sql": "SELECT zeroblob(4194304)"})
                       .status_code]),
        "concurrent": lambda b: b.measure(
            f"{concurrent} x 2 MiB POST at once, probe /env", 2 * MiB * concurrent,
            at_once("POST", "/env", 2 * MiB, concurrent)),
        "fixed8": lambda b: b.measure("8 MiB POST, WAT /fixed (request lowering)", 8 * MiB,
                                      post("/fixed", 8 * MiB)),
        "echo2": lambda b: b.measure("2 MiB POST, WAT /echo (lowering + response)", 2 * MiB,
                                     post("/echo", 2 * MiB)),
        "big": lambda b: b.measure(f"GET of a {BIG / MiB:.1f} MiB response, WAT /big", BIG,
                                   lambda c: [c.get("/big").status_code]),
        "bigN": lambda b: b.measure(
            f"{concurrent} x GET of a {BIG / MiB:.1f} MiB response at once, WAT /big",
            BIG * concurrent, at_once("GET", "/big", 0, concurrent)),
        "kvget1": lambda b: b.measure(
            "key-value get of a stored 1 MiB value", MiB,
            lambda c: [c.get("/kv/get?key=stored").status_code],
            seed={"stored": bytes(MiB)}),
        "kvget4": lambda b: b.measure(
            "key-value get of a stored 4 MiB value (written by another client)", 4 * MiB,
            lambda c: [c.get("/kv/get?key=stored").status_code],
            seed={"stored": bytes(4 * MiB)}),
    }


def largest_ok(ok: Callable[[int], bool], low: int, high: int, step: int = 4096) -> int:
    """The largest size in [low, high] for which `ok` holds (it holds at `low`,
    and once it fails it fails for every larger size); `high` if it never fails."""
    if ok(high):
        return high
    while high - low > step:
        middle = (low + high) // 2
        if ok(middle):
            low = middle
        else:
            high = middle
    return low


def copy_budget(bench: Bench) -> list[str]:
    lines = []
    limits = ["--max-body-bytes", str(64 * MiB)]
    if "--max-body-bytes-in-flight" in host_up_help():  # absent before issue 12
        limits += ["--max-body-bytes-in-flight", str(64 * MiB),
                   "--max-key-value-bytes", str(64 * MiB)]
    with bench.host(*limits) as process, \
            httpx.Client(base_url=process.base_url, timeout=TIMEOUT) as client:
        def echo(size: int) -> bool:
            return client.post("/echo", content=bytes(size)).status_code == 200

        def kv_set(size: int) -> bool:
            r = client.post("/kv/set?key=b", content=bytes(size))
            return r.status_code == 200 and "error" not in r.json()

        def fixed(size: int) -> bool:
            return client.post("/fixed", content=bytes(size)).status_code == 200

        for what, test, high in (("response body (WAT /echo)", echo, 8 * MiB),
                                 ("host-call argument (probe /kv/set)", kv_set, 8 * MiB),
                                 ("request body (WAT /fixed)", fixed, 60 * MiB)):
            size = largest_ok(test, 64 * 1024, high)
            verdict = "never failed up to" if size == high else "largest that passes:"
            lines.append(f"- {what}: {verdict} {size} bytes ({size / MiB:.3f} MiB)")
        process.stop()
        budget_lines = [line for line in process.lines if "copy budget" in line
                        or "too much data" in line]
        if budget_lines:
            lines.append(f"- host log for a failure: `{budget_lines[-1].strip()}`")
    return lines


def print_table(rows: list[Row]) -> None:
    print("| scenario | bytes crossing | status | VmHWM growth | per byte | seconds |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.crossing / MiB:.2f} MiB | {r.statuses} | "
              f"{r.growth_kib / 1024:.0f} MiB | {r.per_byte:.0f} B | {r.seconds:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument("--concurrent", type=int, default=8, metavar="N",
                        help="concurrent 2 MiB POSTs (default 8)")
    parser.add_argument("--no-budget", action="store_true", help="skip the copy-budget search")
    parser.add_argument("--host-arg", action="append", default=[], metavar="ARG",
                        help="extra `host up` argument (repeatable)")
    args = parser.parse_args()
    table = scenarios(args.concurrent)
    keys = [k for k in args.only.split(",") if k] or list(table)
    unknown = set(keys) - set(table)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(table)}")
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        bench = Bench(Path(tmp), args.host_arg)
        rows = []
        for key in keys:
            row = table[key](bench)
            print(f"{key}: {row.statuses}, +{row.growth_kib / 1024:.0f} MiB", flush=True)
            rows.append(row)
        print()
        print_table(rows)
        if not args.no_budget and not args.only:
            print()
            print("Copy budget (one component call):")
            print("\n".join(copy_budget(bench)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
