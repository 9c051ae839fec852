"""Call time of wasmtime-py's generic API on the echo component, per micro case.

    python -m bench.generic_micro ECHO.wasm --max-iterations N --max-seconds S

Runs in its own process, without `host` (whose import patches wasmtime-py).
Prints one JSON object: case name -> {"mean_us": ..., "n": ...}. Timed per
iteration: building the request record, the call, lifting the response,
post_return; each iteration gets a fresh instance, instantiated untimed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import timed_loop
from bench.generic import CASES, GenericHandler, assert_host_free, case_name, case_request


def measure(handler: GenericHandler, headers: int, body: int, max_iterations: int,
            max_seconds: float) -> dict[str, float]:
    method, path, hdrs, data = case_request(headers, body)
    store, func = handler.instantiate()
    status, out_headers, out_body = handler.call(store, func, method, path, hdrs, data)
    if status != 200 or out_body != data or out_headers != hdrs:
        raise RuntimeError(f"echo mismatch for {case_name(headers, body)}")

    def once() -> float:
        store, func = handler.instantiate()
        start = time.perf_counter()
        handler.call(store, func, method, path, hdrs, data)
        return time.perf_counter() - start

    samples = timed_loop(once, max_iterations, max_seconds)
    return {"mean_us": sum(samples) / len(samples) * 1e6, "n": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("wasm", type=Path)
    parser.add_argument("--max-iterations", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=2.0)
    args = parser.parse_args()
    handler = GenericHandler(args.wasm)
    results = {case_name(h, b): measure(handler, h, b, args.max_iterations, args.max_seconds)
               for h, b in CASES}
    assert_host_free()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
