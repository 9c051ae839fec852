"""Blob-store throughput through a real `host up`: apps/blob-python (componentize-py,
wasi:blobstore@0.2.0-draft) uploads one object streamed from the request body
(PUT /object: write-data, 64 KiB stream writes, finish) and downloads it
streamed into the response (GET /object: get-data, consume-async, 64 KiB
reads), on the embedded file_system store and on S3 (a local moto_server, for
reference: moto is a Python server and dominates its own figure).

    .venv/bin/python -m bench.blobstore [--mib 16] [--repeats 5]

Prints MiB/s per backend and direction (median and best of the repeats) and the
host's peak RSS growth over the run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.procmem import peak_growth, reset_peak
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, start_s3

MiB = 1024 * 1024
MANIFEST = """spin_manifest_version = 2
[application]
name = "blob-bench"
[[trigger.http]]
route = "/..."
component = "blobs"
[component.blobs]
source = "blob-python.wasm"
blob_containers = ["default"]
"""


def measure(process: HostProcess, data: bytes, repeats: int) -> tuple[list[float], list[float]]:
    up, down = [], []
    digest = hashlib.sha256(data).digest()
    with httpx.Client(base_url=process.base_url, timeout=120) as client:
        for _ in range(repeats):
            start = time.perf_counter()
            stored = client.put("/object", params={"name": "bench.bin"},
                                content=(data[i:i + MiB] for i in range(0, len(data), MiB)))
            up.append(time.perf_counter() - start)
            assert stored.status_code == 200, stored.text
            start = time.perf_counter()
            got = hashlib.sha256()
            with client.stream("GET", "/object", params={"name": "bench.bin"}) as answer:
                for chunk in answer.iter_bytes():
                    got.update(chunk)
            down.append(time.perf_counter() - start)
            assert got.digest() == digest
    return up, down


def run(kind: str, wasm: Path, work: Path, data: bytes, repeats: int) -> str:
    app = write_app(work / kind, MANIFEST, {"blob-python.wasm": wasm})
    args = ["-f", str(app), "--pool-size", "1", "--cache-dir", str(work / "cache"), "-q"]
    server = None
    if kind == "s3":
        import botocore.session

        server = start_s3(work)
        botocore.session.get_session().create_client(
            "s3", region_name=REGION, endpoint_url=server.endpoint,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket="bench")
        config = work / "rt.toml"
        config.write_text(f'[blob_store.default]\ntype = "s3"\nregion = "{REGION}"\n'
                          f'bucket = "bench"\nendpoint = "{server.endpoint}"\n'
                          f'access_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\n')
        args += ["--runtime-config-file", str(config)]
    try:
        with HostProcess(args).start() as process:
            measure(process, data[:MiB], 1)  # warm-up: first instance, first request
            baseline = reset_peak(process.pid)
            up, down = measure(process, data, repeats)
            growth = peak_growth(process.pid, baseline)
    finally:
        if server is not None:
            server.stop()
    mib = len(data) / MiB

    def rate(times: list[float]) -> str:
        return f"{mib / statistics.median(times):6.1f} MiB/s (best {mib / min(times):6.1f})"
    return (f"{kind:12} upload {rate(up)}   download {rate(down)}   "
            f"host peak RSS +{growth / MiB:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    wasm = built_app("blob-python") / "blob-python.wasm"
    data = os.urandom(args.mib * MiB)
    print(f"{args.mib} MiB object, {args.repeats} repeats, apps/blob-python through host up")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("file_system", "s3"):
            print(run(kind, wasm, Path(tmp), data, args.repeats), flush=True)


if __name__ == "__main__":
    main()
