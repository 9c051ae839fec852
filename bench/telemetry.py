"""CPU per request with metrics and traces off and on: `python -m bench.telemetry`.

    .venv/bin/python -m bench.telemetry [--seconds 5] [--rounds 3] [--connections 16]

host up on the trivial WAT component (row c of `python -m bench`), pinned to
core 0, wrk on core 1; four configurations run in turn, `--rounds` times each,
so drift on a shared machine hits all of them alike: off, `--metrics-listen`,
traces (every request sampled, exported over OTLP/HTTP to a sink in this
process that answers 200), both, and traces with 1% of requests sampled
(OTEL_TRACES_SAMPLER=parentbased_traceidratio). Prints the median CPU/req and req/s.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import tempfile
import threading
from pathlib import Path

from bench.common import LOOPBACK, free_port, host_up_cmd
from bench.fixtures import prepare
from bench.http import load_server


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    sink = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    traced = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:"
              f"{sink.server_address[1]}"}
    sampled = {**traced, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": "0.01"}
    configs = {"off": (False, base_env), "metrics": (True, base_env),
               "traces": (False, traced), "both": (True, traced),
               "traces1%": (False, sampled)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as work:
        fx = prepare(Path(work))
        cache = Path(work) / "cache"
        for _ in range(args.rounds):
            for name, (metrics, env) in configs.items():
                port = free_port()
                extra = ("--metrics-listen", f"{LOOPBACK}:{free_port()}") if metrics else ()
                result = load_server(host_up_cmd(fx.wat_app, port, cache, *extra),
                                     f"http://{LOOPBACK}:{port}/fixed", args.seconds,
                                     args.connections, 1.0, env=env)
                assert result.cpu_us_per_request is not None
                results[name].append((result.cpu_us_per_request, result.rps))
                print(f"{name:8} {result.cpu_us_per_request:7.1f} us/req "
                      f"{result.rps:8,.0f} req/s", flush=True)
    off = statistics.median(cpu for cpu, _ in results["off"])
    print("\nmedian of", args.rounds, "rounds:")
    for name, runs in results.items():
        cpu = statistics.median(c for c, _ in runs)
        rps = statistics.median(r for _, r in runs)
        print(f"{name:8} {cpu:7.1f} us/req ({cpu - off:+6.1f}) {rps:8,.0f} req/s")


if __name__ == "__main__":
    main()
