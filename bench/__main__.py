"""Side-by-side benchmark of the host against its floor and the naive path.

    .venv/bin/python -m bench [--seconds 5] [--connections 16] [--quick] [--only a,b,abi]

HTTP rows (uvicorn: one worker, httptools, uvloop, no access log; server on
core 0, `wrk -t1 -cN -dS --latency` on core 1):
  a  raw ASGI hello
  b  Starlette hello (the base of the ratios)
  c  host up, trivial WAT component, fresh instance per request
  d  as c with instances reused (--reuse-instances, or --max-instance-reuse-count
     1000); skipped when `host up --help` has neither
  e  host up apps/hello-python
  f  hello-python's handler as a native Starlette route
  g  Starlette + wasmtime-py generic API, trivial WAT, fresh Store + instantiate
     per request
  h  host up apps/hello-wagi (a C WASI program over CGI, WAGI executor)
  i  host up apps/hello-ts (componentize-js), next to h for WAGI vs component
  j  host up apps/kv-counter, GET / = one atomic increment in an SQLite file
     (compare with e: the same runtime without the key-value call)
  k  as j with the store in Redis (a redis-server the bench starts on loopback)
In-process / process rows: abi (call_handler vs generic, per request size),
inst (instantiate per example app), loop (instantiate + call, hello-python),
startup (time to first 200, warm and cold compile cache), rss (VmRSS by
--pool-size). Prints a markdown report and writes bench/REPORT.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench import hostproc, micro, report
from bench.common import LOOPBACK, SERVER_CORE, free_port, host_up_cmd, pinned, uvicorn_cmd
from bench.fixtures import EXAMPLE_APPS, Fixtures, prepare
from bench.http import LoadResult, load_server, wrk_available
from bench.micro import Budget
from bench.report import HttpRow, Results

T = TypeVar("T")
HTTP_KEYS = "abcdefghijk"
OTHER_KEYS = ("abi", "inst", "loop", "startup", "rss")
RSS_POOL_SIZES = (0, 4, 16)


@dataclass(frozen=True)
class Plan:
    seconds: float
    connections: int
    warmup: float
    abi: Budget
    inst: Budget
    loop: Budget
    warm_starts: int
    selected: frozenset[str]

    def wants(self, key: str) -> bool:
        return key in self.selected


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def host_step(what: str, fn: Callable[[], T]) -> T:
    """Run a step that starts the host, naming it in the log."""
    log(what)
    return fn()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# -- HTTP rows ----------------------------------------------------------------


def http_row(plan: Plan, key: str, label: str, cmd_for_port: Callable[[int], list[str]],
             path: str, env: dict[str, str] | None = None, host: bool = False) -> HttpRow:
    def run() -> LoadResult:
        port = free_port()
        return load_server(cmd_for_port(port), f"http://{LOOPBACK}:{port}{path}",
                           plan.seconds, plan.connections, plan.warmup, env=env)

    log(f"({key}) {label}")
    try:
        result = host_step(f"({key})", run) if host else run()
    except Exception as exc:
        traceback.print_exc()
        return HttpRow(key, label, note=f"failed: {_first_line(exc)}")
    log(f"({key}) {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms")
    return HttpRow(key, label, result)


def _host_up(app_dir: Path, cache: Path, port: int) -> list[str]:
    return host_up_cmd(app_dir, port, cache)


def http_rows(plan: Plan, fx: Fixtures, cache: Path) -> list[HttpRow]:
    rows = []
    hello_python = fx.app_dir("hello-python") if plan.wants("e") else None
    if plan.wants("a"):
        rows.append(http_row(plan, "a", "raw ASGI hello (uvicorn floor)",
                             lambda p: uvicorn_cmd("bench.servers:raw_app", p), "/hello"))
    if plan.wants("b"):
        rows.append(http_row(plan, "b", "Starlette hello",
                             lambda p: uvicorn_cmd("bench.servers:starlette_app", p), "/hello"))
    if plan.wants("c"):
        rows.append(http_row(plan, "c", "host up: trivial WAT, fresh instance per request",
                             lambda p: host_up_cmd(fx.wat_app, p, cache), "/fixed", host=True))
    if plan.wants("d"):
        reuse = host_step("host up --help", hostproc.reuse_args)
        if reuse is not None:
            rows.append(http_row(plan, "d", f"host up: trivial WAT, {' '.join(reuse)}",
                                 lambda p: host_up_cmd(fx.wat_app, p, cache, *reuse),
                                 "/fixed", host=True))
        else:
            log("(d) skipped: host up has no instance-reuse flag")
            rows.append(HttpRow("d", "host up: trivial WAT, instances reused",
                                note=f"skipped: `host up --help` lacks {hostproc.REUSE_FLAG} "
                                     f"and {hostproc.REUSE_COUNT_FLAG}"))
    if hello_python is not None:
        rows.append(http_row(plan, "e", "host up: apps/hello-python",
                             lambda p: host_up_cmd(hello_python, p, cache), "/hello", host=True))
    if plan.wants("f"):
        rows.append(http_row(plan, "f", "hello-python's handler as native Starlette",
                             lambda p: uvicorn_cmd("bench.servers:python_hello_app", p),
                             "/hello"))
    if plan.wants("g"):
        rows.append(http_row(plan, "g", "naive: Starlette + wasmtime-py generic API, "
                             "trivial WAT, fresh Store + instantiate per request",
                             lambda p: uvicorn_cmd("bench.naive_app:app", p), "/fixed",
                             env={"BENCH_WASM": str(fx.fixed_wasm)}))
    for key, app, route, what in (("h", "hello-wagi", "/hello-wagi", "WAGI, C over CGI"),
                                  ("i", "hello-ts", "/hello-ts", "componentize-js")):
        if plan.wants(key):
            rows.append(http_row(plan, key, f"host up: apps/{app} ({what})",
                                 partial(_host_up, fx.app_dir(app), cache), route, host=True))
    if plan.wants("j"):
        state = fx.work / "kv-state"
        rows.append(http_row(plan, "j", "host up: apps/kv-counter, key-value in SQLite",
                             lambda p: host_up_cmd(fx.app_dir("kv-counter"), p, cache,
                                                   "--state-dir", str(state)), "/", host=True))
    if plan.wants("k"):
        rows.append(_redis_row(plan, fx, cache))
    return rows


def _redis_row(plan: Plan, fx: Fixtures, cache: Path) -> HttpRow:
    from tests.loopback import stop_process
    from tests.redis_server import start_redis

    label = "host up: apps/kv-counter, key-value in Redis"
    work = fx.work / "redis"
    work.mkdir(exist_ok=True)
    proc, port = start_redis(work)
    try:
        config = work / "runtime-config.toml"
        config.write_text(f'[key_value_store.default]\ntype = "redis"\n'
                          f'url = "redis://127.0.0.1:{port}/0"\n')
        return http_row(plan, "k", label,
                        lambda p: host_up_cmd(fx.app_dir("kv-counter"), p, cache,
                                              "--runtime-config-file", str(config)),
                        "/", host=True)
    finally:
        stop_process(proc)


# -- in-process and process measurements -------------------------------------------


def other_measurements(plan: Plan, fx: Fixtures, cache: Path, res: Results) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if plan.wants("abi"):
        def abi() -> None:
            log("abi: call_handler on the echo WAT component")
            with pinned(SERVER_CORE):
                res.ours = host_step("abi", lambda: micro.abi_calls(fx.echo_wasm, plan.abi))
            log("abi: generic wasmtime-py (subprocess without host)")
            res.generic = micro.generic_abi_calls(fx.echo_wasm, plan.abi)
        steps.append(("abi", abi))
    if plan.wants("inst"):
        def inst() -> None:
            for app in EXAMPLE_APPS:
                log(f"inst: {app}")
                app_dir = fx.app_dir(app)
                with pinned(SERVER_CORE):
                    res.instantiate[app] = host_step(
                        f"inst {app}", partial(micro.instantiate_time, app_dir, cache, plan.inst))
        steps.append(("inst", inst))
    if plan.wants("loop"):
        def loop() -> None:
            log("loop: hello-python instantiate + call")
            app_dir = fx.app_dir("hello-python")
            with pinned(SERVER_CORE):
                res.loop = host_step("loop", lambda: micro.loop_rate(
                    app_dir, EXAMPLE_APPS["hello-python"], cache, plan.loop))
        steps.append(("loop", loop))
    if plan.wants("startup"):
        def startup() -> None:
            app_dir, route = fx.app_dir("hello-python"), EXAMPLE_APPS["hello-python"]
            cold_cache = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=fx.work))
            log("startup: cold compile cache")
            res.first_200["cold (empty --cache-dir)"] = host_step(
                "startup", lambda: hostproc.first_200_seconds(app_dir, route, cold_cache, 1))
            log("startup: warm compile cache")
            res.first_200[f"warm (median of {plan.warm_starts})"] = (
                hostproc.first_200_seconds(app_dir, route, cold_cache, plan.warm_starts))
        steps.append(("startup", startup))
    if plan.wants("rss"):
        def rss() -> None:
            app_dir = fx.app_dir("hello-python")
            host_step("rss: fill the compile cache", lambda: hostproc.fill_cache(app_dir, cache))
            for size in RSS_POOL_SIZES:
                log(f"rss: --pool-size {size}")
                res.rss_kib[size] = host_step(
                    "rss", partial(hostproc.rss_after_start, app_dir, cache, size))
        steps.append(("rss", rss))
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            traceback.print_exc()
            res.notes.append(f"{name} failed: {_first_line(exc)}")


# -- command line -------------------------------------------------------------------


def parse_plan(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None,
                        help="wrk duration per HTTP row (default 5; 2 with --quick)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and smaller iteration budgets")
    parser.add_argument("--only", default="",
                        help="comma-separated subset of: " + ",".join([*HTTP_KEYS, *OTHER_KEYS]))
    args = parser.parse_args(argv)
    known = {*HTTP_KEYS, *OTHER_KEYS}
    selected = {k.strip() for k in args.only.split(",") if k.strip()} or known
    if selected - known:
        parser.error(f"--only: unknown {', '.join(sorted(selected - known))}; "
                     f"choose from {', '.join([*HTTP_KEYS, *OTHER_KEYS])}")
    quick = args.quick
    return Plan(
        seconds=args.seconds or (2.0 if quick else 5.0),
        connections=args.connections,
        warmup=1.0 if quick else 2.0,
        abi=Budget(300, 0.3) if quick else Budget(2000, 1.5),
        inst=Budget(20, 0.5) if quick else Budget(200, 3.0),
        loop=Budget(500, 1.0) if quick else Budget(5000, 5.0),
        warm_starts=1 if quick else 3,
        selected=frozenset(selected),
    )


def main(argv: list[str] | None = None) -> int:
    plan = parse_plan(argv)
    if any(plan.wants(k) for k in HTTP_KEYS) and not wrk_available():
        print("wrk not found (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 1
    settings = (f"HTTP: `wrk -t1 -c{plan.connections} -d{plan.seconds:g}s --latency` on core 1 "
                f"after a {plan.warmup:g} s warm-up; server on core 0; uvicorn one worker, "
                "httptools, uvloop, no access log, no server header; in-process rows pinned "
                "to core 0")
    res = Results(settings)
    work = Path(tempfile.mkdtemp(prefix="spinhost-bench-"))
    try:
        log(f"work dir {work}; building fixtures")
        fx = prepare(work)
        cache = work / "cache"  # shared compile cache: compile each component once per run
        res.http = http_rows(plan, fx, cache)
        other_measurements(plan, fx, cache, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report.render(res)
    print(text)
    path = report.write(text)
    log(f"wrote {path}")
    failed = [r for r in res.http if r.note.startswith("failed")] + res.notes
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
