"""Warm node: app image size and start-to-first-response per pod-equivalent process.

    .venv/bin/python -m bench.node_start [--warm-runs 5]

For each example app: `host oci build` its image (size next to the seed talk's
2.69 GB naive image), unpack it as the kubelet's image volume would (our own
verified unpack), then start `host up -f <unpacked>/spin.toml` twice on one
node compile cache (`--cache-dir`, a hostPath volume in deploy/k8s): the first
pod finds an empty cache and compiles, the second loads what the first wrote.
A third row starts two pods at once on an empty cache (a rollout on a fresh
node). Times are from spawning the process to the first 200 on the app's
route. Writes bench/NODE.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from pathlib import Path

from bench.common import LOOPBACK, PYTHON, free_port, serve
from bench.fixtures import EXAMPLE_APPS
from host.oci.image import build_image
from host.oci.store import resolve_app
from tests.apps import built_app

SEED_IMAGE_BYTES = 2.69e9  # the naive Python + runtime image in the seed talk
APPS = ("hello-python", "hello-ts", "kv-counter")
ROUTES = {**EXAMPLE_APPS, "kv-counter": "/greeting"}
REPORT = Path(__file__).with_name("NODE.md")


def pod_cmd(manifest: Path, cache: Path, port: int) -> list[str]:
    return [PYTHON, "-m", "host", "up", "-f", str(manifest), "-q", "--state-dir", "",
            "--cache-dir", str(cache), "--listen", f"{LOOPBACK}:{port}"]


def first_response(manifest: Path, cache: Path, route: str) -> float:
    port = free_port()
    with serve(pod_cmd(manifest, cache, port)) as server:
        return server.wait_ready(f"http://{LOOPBACK}:{port}{route}", poll=0.005)


def two_at_once(manifest: Path, cache: Path, route: str) -> list[float]:
    times: list[float] = []
    threads = [threading.Thread(target=lambda: times.append(first_response(manifest, cache,
                                                                           route)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(times)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node_start")
    parser.add_argument("--warm-runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="node-start-") as tmp:
        work = Path(tmp)
        for app in APPS:
            route = ROUTES[app]
            image = build_image(built_app(app) / "spin.toml", work / f"{app}-image")
            unpacked = resolve_app(str(work / f"{app}-image"), work / "kubelet")
            node = work / f"{app}-node-cache"
            cold = first_response(unpacked.manifest_path, node, route)
            warm = statistics.median(first_response(unpacked.manifest_path, node, route)
                                     for _ in range(args.warm_runs))
            pair = two_at_once(unpacked.manifest_path, work / f"{app}-fresh-node", route)
            wasm = sum(p.stat().st_size for p in built_app(app).glob("**/*.wasm")
                       if "node_modules" not in p.parts)
            rows.append((app, wasm, image.layer_size, image.total_size, cold, warm, pair))
            print(f"{app}: image {image.total_size / 1e6:.2f} MB, cold {cold:.2f} s, "
                  f"warm {warm:.2f} s, two at once {pair[0]:.2f}/{pair[1]:.2f} s", flush=True)
    lines = [
        "# Warm node: image size and pod start", "",
        "`python -m bench.node_start`: `host oci build` per app; pods are `host up -f "
        "<unpacked image>/spin.toml` on one node compile cache; seconds from spawn to the "
        f"first 200 (warm: median of {args.warm_runs}).", "",
        "| app | .wasm | app image (layer / total) | vs 2.69 GB seed image | first pod, "
        "empty node cache | second pod, warm cache | warm / cold | two pods at once, "
        "empty cache |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for app, wasm, layer, total, cold, warm, pair in rows:
        lines.append(
            f"| {app} | {wasm / 1e6:.1f} MB | {layer / 1e6:.2f} / {total / 1e6:.2f} MB | "
            f"1/{SEED_IMAGE_BYTES / total:,.0f} | {cold:.2f} s | {warm:.2f} s | "
            f"{warm / cold:.3f} | {pair[0]:.2f} s, {pair[1]:.2f} s |")
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
