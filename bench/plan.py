"""What a `python -m bench` run measures (its command line) and what its sections share."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.fixtures import Fixtures
from bench.micro import Budget
from bench.report import Results

HTTP_KEYS = "abcdefghijk"
OTHER_KEYS = ("abi", "inst", "loop", "startup", "rss")
SECTION_KEYS = ("components", "conns", "body", "workers", "wasi", "wasi-mem", "redis")
ALIASES = {
    "http": tuple(HTTP_KEYS),
    "cpu": ("b", "c", "e"),
    "scale": ("components", "conns", "body", "b", "c", "e"),
    "inprocess": OTHER_KEYS,
}
NEEDS_WRK = (*HTTP_KEYS, "conns", "wasi")
ALL_KEYS = frozenset((*HTTP_KEYS, *OTHER_KEYS, *SECTION_KEYS))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    seconds: float
    connections: int
    warmup: float
    abi: Budget
    inst: Budget
    loop: Budget
    warm_starts: int
    repeats: int  # runs per wasi:http row (median)
    selected: frozenset[str]
    quick: bool
    argv: tuple[str, ...]

    def wants(self, key: str) -> bool:
        return key in self.selected

    @property
    def full(self) -> bool:
        """Everything at full length: only such a run rewrites bench/REPORT.md."""
        return self.selected == ALL_KEYS and not self.quick

    def needs_wrk(self) -> bool:
        return any(self.wants(k) for k in NEEDS_WRK)


@dataclass
class Run:
    """What every section function gets."""

    plan: Plan
    fx: Fixtures
    cache: Path  # shared compile cache: each component compiled once per run
    res: Results  # what the legacy HTTP and in-process rows fill in


def parse_plan(argv: list[str] | None, doc: str) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None,
                        help="wrk duration per HTTP row, and per body size (default 5; "
                             "2 with --quick)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per wasi:http row, median (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and smaller iteration budgets (writes "
                             "REPORT-partial.md)")
    parser.add_argument("--only", default="",
                        help="comma-separated subset (writes REPORT-partial.md) of: "
                             + ", ".join([*HTTP_KEYS, *OTHER_KEYS, *SECTION_KEYS])
                             + "; aliases: " + ", ".join(ALIASES))
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    asked = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = asked - ALL_KEYS - set(ALIASES)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join([*HTTP_KEYS, *OTHER_KEYS, *SECTION_KEYS, *ALIASES])}")
    selected = {k for a in asked for k in ALIASES.get(a, (a,))} or set(ALL_KEYS)
    quick = args.quick
    return Plan(
        seconds=args.seconds or (2.0 if quick else 5.0),
        connections=args.connections,
        warmup=1.0 if quick else 2.0,
        abi=Budget(300, 0.3) if quick else Budget(2000, 1.5),
        inst=Budget(20, 0.5) if quick else Budget(200, 3.0),
        loop=Budget(500, 1.0) if quick else Budget(5000, 5.0),
        warm_starts=1 if quick else 3,
        repeats=args.repeats or (1 if quick else 3),
        selected=frozenset(selected),
        quick=quick,
        argv=tuple(raw),
    )
