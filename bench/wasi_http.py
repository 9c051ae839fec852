"""A standard wasi:http component (apps/hello-js, componentize-js fetch-event) on our host.

    .venv/bin/python -m bench.wasi_http [--sizes 4,8,16] [--seconds 10]

Memory: one `host up` (pinned to the server core) serving apps/hello-js; for
each size, a random body POSTed to `/hello-js/echo` (the guest streams it
back; the client reads while it sends, tests/duplex.py) after lowering the
host's high-water mark to its current RSS; reported: VmHWM growth (guest
linear memory included) and that growth per body byte.
Throughput: wrk (one connection thread on the client core, 16 connections)
on `/hello-js`, if wrk is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import httpx

from bench.common import LOOPBACK, free_port, host_up_cmd, serve
from bench.http import wrk, wrk_available
from tests import duplex
from tests.apps import built_app
from tests.procmem import peak_growth, reset_peak

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8,16", help="body sizes in MiB")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    app = built_app("hello-js")
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    with tempfile.TemporaryDirectory() as cache, \
            serve(host_up_cmd(app, port, Path(cache), "--max-body-bytes",
                              str(64 * MiB))) as server:
        server.wait_ready(base + "/hello-js")
        print("echo of a random body through /hello-js/echo: host peak RSS growth")
        with httpx.Client(timeout=120.0) as client:
            for mib in (int(s) for s in args.sizes.split(",")):
                body = os.urandom(mib * MiB)
                client.get(base + "/hello-js")
                baseline = reset_peak(server.pid)
                status, _, content = duplex.post(base, "/hello-js/echo", body)
                growth = peak_growth(server.pid, baseline)
                intact = hashlib.sha256(content).digest() == hashlib.sha256(body).digest()
                print(f"  {mib:3d} MiB: {status} intact={intact} "
                      f"+{growth / MiB:.1f} MiB ({growth / len(body):.2f} bytes per byte)")
        if wrk_available():
            wrk(base + "/hello-js", 2, 16)  # warm-up
            result = wrk(base + "/hello-js", args.seconds, 16)
            print(f"hello-js, wrk -c16, one core each: {result.rps:.0f} req/s, p50 "
                  f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms (errors {result.errors})")


if __name__ == "__main__":
    main()
