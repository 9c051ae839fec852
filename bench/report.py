"""Sections -> one markdown report (printed; written to bench/REPORT.md by a full run).

The report is a list of `Section`s, each a title, markdown lines and named figures
(`metrics`); the Targets table at the top reads issue 15's targets from the
metrics of every section that ran. A new benchmark adds a function returning a
Section (bench/__main__.py `SECTIONS`) and, if it measures a target, a `Target`.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.common import ROOT
from bench.http import LoadResult

REPORT_PATH = Path(__file__).resolve().parent / "REPORT.md"
PARTIAL_PATH = REPORT_PATH.with_name("REPORT-partial.md")  # --only runs; not committed


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)  # markdown under the heading
    metrics: dict[str, float] = field(default_factory=dict)  # figures the Targets read
    failures: list[str] = field(default_factory=list)  # rows that failed (fail the run)


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header),
            *(f"| {' | '.join(row)} |" for row in rows)]


@dataclass(frozen=True)
class Target:
    text: str  # as issue 15 states it
    metric: str  # Section.metrics key
    unit: str
    met: Callable[[float], bool]
    where: str  # the row it comes from
    cpu_metric: str = ""  # the same figure from server CPU time: judged on it

    def value(self, v: float) -> str:
        if self.unit == "x":
            return f"{v:.2f}x"
        if self.unit == "s":
            return f"{v:.2f} s"
        return f"{v:,.1f} {self.unit}" if v < 100 else f"{v:,.0f} {self.unit}"


TARGETS = (
    Target("One worker: trivial component, fresh instance per request, >= 0.5x a bare "
           "Starlette hello on the same uvicorn", "trivial_vs_starlette", "x",
           lambda v: v >= 0.5, "HTTP (c)/(b)", "trivial_vs_starlette_cpu"),
    Target("CPU per trivial request <= 80 us", "trivial_cpu_us", "µs",
           lambda v: v <= 80, "HTTP (c) CPU/req"),
    Target("hello-js >= 1.0x `wasmtime serve` on the same component, one core each",
           "hello_js_vs_wasmtime", "x", lambda v: v >= 1.0, "wasi:http hello-js",
           "hello_js_vs_wasmtime_cpu"),
    Target("Python hello >= 1.5x `wasmtime serve` on the componentize-py proxy hello",
           "python_vs_wasmtime_proxy", "x", lambda v: v >= 1.5,
           "wasi:http hello-python (host up) / hello-proxy-python (wasmtime serve)",
           "python_vs_wasmtime_proxy_cpu"),
    Target("Workers: CPU per request with 2 workers within 10% of 1 worker",
           "workers_cpu_2_vs_1", "x", lambda v: v <= 1.10, "Workers"),
    Target("Workers: throughput with 2 workers >= 1.6x 1 worker", "workers_rps_2_vs_1", "x",
           lambda v: v >= 1.6, "Workers"),
    Target("p99 <= 3x p50 for the trivial component at 16 connections", "trivial_p99_p50",
           "x", lambda v: v <= 3.0, "HTTP (c)"),
    Target("100 components start in <= 3 s warm", "components_start_s", "s",
           lambda v: v <= 3.0, "Scale: 100 components"),
    Target("body throughput >= 100 MB/s for 16 MiB bodies", "body_16mib_mbps", "MB/s",
           lambda v: v >= 100, "Scale: body throughput (best wasi:http echo)",
           "body_16mib_mbps_cpu"),
)


def targets_section(sections: Sequence[Section]) -> Section:
    metrics = {k: v for s in sections for k, v in s.metrics.items()}
    rows, met, measured = [], 0, 0
    for t in TARGETS:
        v, cpu = metrics.get(t.metric), metrics.get(t.cpu_metric) if t.cpu_metric else None
        judged = cpu if cpu is not None else v
        if judged is None:
            rows.append([t.text, "not measured", "", "—", t.where])
            continue
        measured += 1
        met += t.met(judged)
        rows.append([t.text, "—" if v is None else t.value(v),
                     "" if cpu is None else t.value(cpu),
                     "met" if t.met(judged) else "**missed**", t.where])
    return Section("Targets (issue 15)",
                   [*md_table(["target", "measured", "by server CPU", "verdict", "row"], rows),
                    "", f"- {met} of {measured} measured targets met; "
                        f"{len(TARGETS) - measured} not measured in this run",
                    "- targets are judged \"by server CPU\" where it was measured: for "
                    "ratios the baseline's server CPU per request over ours (user+sys of "
                    "the server process tree over the run / requests), for body throughput "
                    "the bytes echoed per server CPU second. On 2 cores shared with other "
                    "work (and with the load generator) a server's req/s depends on what "
                    "else ran at that moment; the CPU it spends per request much less, and "
                    "on one core its ceiling is 1 / CPU per request. The wall-clock figure "
                    "is in \"measured\""])


@dataclass
class HttpRow:
    key: str
    label: str
    result: LoadResult | None = None
    note: str = ""  # why there is no result (skipped, failed)


@dataclass
class Results:
    """What the legacy rows measure: HTTP (a)-(k) and the in-process/start-up tables."""

    http: list[HttpRow] = field(default_factory=list)
    ours: dict[str, dict[str, float]] = field(default_factory=dict)
    generic: dict[str, dict[str, float]] = field(default_factory=dict)
    instantiate: dict[str, dict[str, float]] = field(default_factory=dict)
    loop: dict[str, float] = field(default_factory=dict)
    first_200: dict[str, float] = field(default_factory=dict)  # "warm"/"cold" -> seconds
    rss_kib: dict[int, int] = field(default_factory=dict)  # pool size -> KiB
    notes: list[str] = field(default_factory=list)  # failures and skips outside the table

    def row(self, key: str) -> HttpRow | None:
        return next((r for r in self.http if r.key == key), None)

    def rps(self, key: str) -> float | None:
        row = self.row(key)
        return row.result.rps if row and row.result else None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews every row)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_lines() -> list[str]:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--", "host"):
        commit += " + uncommitted changes in host/"
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- commit: {commit}",
        f"- machine: nproc {os.cpu_count()}, {_cpu_model()}, Linux {platform.release()}",
        f"- python {platform.python_version()}, wasmtime-py {version('wasmtime')}, "
        f"uvicorn {version('uvicorn')}, starlette {version('starlette')}",
    ]


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def _ratio(num: float | None, den: float | None, digits: int = 3) -> str:
    if num is None or not den:
        return "—"
    return f"{num / den:.{digits}f}"


def http_table(res: Results) -> list[str]:
    base = res.rps("b")
    lines = ["| | server | req/s | p50 | p99 | CPU/req | ratio to (b) |",
             "|---|---|---|---|---|---|---|"]
    for row in res.http:
        if row.result is None:
            lines.append(f"| ({row.key}) | {row.label} | — | — | — | — | {row.note} |")
            continue
        r = row.result
        lines.append(f"| ({row.key}) | {row.label} | {r.rps:,.0f} | {_fmt_ms(r.p50_ms)} | "
                     f"{_fmt_ms(r.p99_ms)} | {fmt_cpu(r)} | {_ratio(r.rps, base)} |")
    return lines


def fmt_cpu(r: LoadResult) -> str:
    cpu = r.cpu_us_per_request
    return "—" if cpu is None else f"{cpu:,.0f} µs"


def abi_table(res: Results) -> list[str]:
    lines = ["| request (echo WAT component) | ours: `abi.call_handler` | generic wasmtime-py "
             "| generic/ours |", "|---|---|---|---|"]
    for case in res.ours or res.generic:
        ours, gen = res.ours.get(case), res.generic.get(case)
        o = f"{ours['mean_us']:,.1f} µs (n={ours['n']:.0f})" if ours else "—"
        g = f"{gen['mean_us']:,.1f} µs (n={gen['n']:.0f})" if gen else "—"
        ratio = _ratio(gen["mean_us"] if gen else None, ours["mean_us"] if ours else None, 1)
        lines.append(f"| {case} | {o} | {g} | {ratio}{'x' if ratio != '—' else ''} |")
    return lines


def other_tables(res: Results) -> list[str]:
    lines: list[str] = []
    if res.instantiate:
        lines += ["", "### Instantiate (one instance, as the pool makes it; mean)", "",
                  "| app | instantiate | n |", "|---|---|---|"]
        lines += [f"| {app} | {m['mean_ms']:.2f} ms | {m['n']:.0f} |"
                  for app, m in res.instantiate.items()]
    if res.loop:
        lines += ["", "### In-process instantiate + call loop (no HTTP, empty pool)", "",
                  f"- apps/hello-python: {res.loop['rps']:,.0f} req/s equivalent "
                  f"(n={res.loop['n']:.0f})"]
    if res.first_200:
        lines += ["", "### `host up` time to first 200 (apps/hello-python, /hello)", "",
                  "| compile cache | seconds |", "|---|---|"]
        lines += [f"| {which} | {s:.2f} s |" for which, s in res.first_200.items()]
    if res.rss_kib:
        lines += ["", "### RSS of `host up` serving apps/hello-python (after start)", "",
                  "| --pool-size | VmRSS |", "|---|---|"]
        lines += [f"| {n} | {kib / 1024:.1f} MiB |" for n, kib in sorted(res.rss_kib.items())]
        per = rss_per_instance(res)
        if per is not None:
            lines += ["", f"- per pooled instance: {per / 1024:.2f} MiB"]
    return lines


def rss_per_instance(res: Results) -> float | None:
    """KiB per pooled instance: slope between the smallest and largest pool sizes."""
    if len(res.rss_kib) < 2:
        return None
    lo, hi = min(res.rss_kib), max(res.rss_kib)
    return (res.rss_kib[hi] - res.rss_kib[lo]) / (hi - lo)


def headline(res: Results) -> list[str]:
    lines = []
    c, b = res.row("c"), res.rps("b")
    if c and c.result and b:
        lines.append(f"- (c)/(b) host up trivial WAT vs Starlette hello: "
                     f"{c.result.rps / b:.3f}")
    e = res.rps("e")
    if e and res.loop:
        lines.append(f"- (e)/(in-process loop) hello-python over HTTP vs instantiate+call "
                     f"alone: {e / res.loop['rps']:.3f}")
    for case, ours in res.ours.items():
        gen = res.generic.get(case)
        if gen:
            lines.append(f"- ours/generic call time, {case}: "
                         f"{ours['mean_us'] / gen['mean_us']:.4f} "
                         f"(generic is {gen['mean_us'] / ours['mean_us']:.1f}x slower)")
    if c and c.result:
        lines.append(f"- p99/p50 for (c): {c.result.p99_ms / c.result.p50_ms:.2f}")
    return lines


def http_section(res: Results, connections: int) -> Section:
    """The side-by-side HTTP rows (a)-(k) and the figures the Targets read from them."""
    sec = Section(f"HTTP ({connections} connections)", [*http_table(res), "",
                  "- CPU/req: the server process tree's user+sys CPU time over the "
                  "measured run (/proc/PID/stat) divided by the requests wrk counted"])
    b, c, e = res.rps("b"), res.row("c"), res.row("e")
    if c and c.result:
        if b:
            sec.metrics["trivial_vs_starlette"] = c.result.rps / b
        b_row = res.row("b")
        b_cpu = b_row.result.cpu_us_per_request if b_row and b_row.result else None
        c_cpu = c.result.cpu_us_per_request
        if b_cpu and c_cpu:
            sec.metrics["trivial_vs_starlette_cpu"] = b_cpu / c_cpu
        if c.result.cpu_us_per_request is not None:
            sec.metrics["trivial_cpu_us"] = c.result.cpu_us_per_request
        sec.metrics["trivial_p99_p50"] = c.result.p99_ms / c.result.p50_ms
    if e and e.result and e.result.cpu_us_per_request is not None:
        sec.metrics["hello_python_cpu_us"] = e.result.cpu_us_per_request
    sec.failures = [f"({r.key}) {r.note}" for r in res.http if r.note.startswith("failed")]
    return sec


def inprocess_section(res: Results) -> Section:
    lines: list[str] = []
    if res.ours or res.generic:
        lines += ["### Call time per request (mean; fresh instance each, instantiation "
                  "untimed)", "", *abi_table(res)]
    lines += other_tables(res)
    return Section("In-process and start-up", lines, failures=list(res.notes))


def headline_section(res: Results) -> Section:
    return Section("Headline ratios", headline(res))


def render(head: Sequence[str], sections: Sequence[Section]) -> str:
    """Header lines, the Targets table, then every section that has something to say."""
    lines = ["# spinhost benchmark", "", *machine_lines(), *head, ""]
    for sec in [targets_section(sections), *sections]:
        body = [*sec.lines, *(f"- failed: {f}" for f in sec.failures)]
        while body and not body[0]:
            body.pop(0)
        if body:
            lines += [f"## {sec.title}", "", *body, ""]
    return "\n".join(lines)


def write(text: str, path: Path = REPORT_PATH) -> Path:
    path.write_text(text + ("" if text.endswith("\n") else "\n"))
    return path
