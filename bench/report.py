"""Results -> one markdown report (printed and written to bench/REPORT.md)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.common import ROOT
from bench.http import LoadResult

REPORT_PATH = Path(__file__).resolve().parent / "REPORT.md"


@dataclass
class HttpRow:
    key: str
    label: str
    result: LoadResult | None = None
    note: str = ""  # why there is no result (skipped, failed)


@dataclass
class Results:
    settings: str
    load_at_start: str = field(default_factory=lambda: load_average())
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
    lines = ["| | server | req/s | p50 | p99 | ratio to (b) |", "|---|---|---|---|---|---|"]
    for row in res.http:
        if row.result is None:
            lines.append(f"| ({row.key}) | {row.label} | — | — | — | {row.note} |")
            continue
        r = row.result
        lines.append(f"| ({row.key}) | {row.label} | {r.rps:,.0f} | {_fmt_ms(r.p50_ms)} | "
                     f"{_fmt_ms(r.p99_ms)} | {_ratio(r.rps, base)} |")
    return lines


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


def render(res: Results) -> str:
    lines = ["# spinhost benchmark", "", *machine_lines(),
             f"- load average before the run: {res.load_at_start}", f"- {res.settings}", ""]
    if res.http:
        lines += ["## HTTP", "", *http_table(res), ""]
    if res.ours or res.generic or res.instantiate or res.loop or res.first_200 or res.rss_kib:
        lines += ["## In-process and start-up", ""]
        if res.ours or res.generic:
            lines += ["### Call time per request (mean; fresh instance each, instantiation "
                      "untimed)", "", *abi_table(res)]
        lines += other_tables(res)
        lines.append("")
    head = headline(res)
    if head:
        lines += ["## Headline ratios", "", *head, ""]
    if res.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in res.notes], ""]
    return "\n".join(lines)


def write(text: str, path: Path = REPORT_PATH) -> Path:
    path.write_text(text + ("" if text.endswith("\n") else "\n"))
    return path
