"""A real S3-protocol server for the tests: `moto_server`, one per session on a free port.

The s3 blob store is tested against a server process speaking S3's HTTP
protocol, through the same botocore client and network path as a real
service: SigV4 signing, path-style addressing, ranged GETs, ListObjectsV2
continuation tokens, multipart uploads (moto enforces the 5 MiB minimum part
size) and S3's XML error codes (NoSuchKey, NoSuchBucket, InvalidRange). MinIO
would be closer to production but is not packaged by Debian or PyPI; moto
(`moto[server]`, the test extra) is maintained and implements these calls as
AWS documents them. It keeps everything in memory and listens on loopback
only. A missing `moto_server` fails the tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 30.0
INSTALL_HINT = "pip install -e '.[test]' (moto[server])"
ACCESS_KEY, SECRET_KEY, REGION = "test-access-key", "test-secret-key", "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        stop_process(self.proc)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def start_s3(workdir: Path, port: int | None = None) -> S3Server:
    """Start `moto_server` on a free loopback port (or `port`); wait until it answers."""
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(binary).is_file():
        pytest.fail(f"moto_server is not installed; {INSTALL_HINT}", pytrace=False)
    log_path = workdir / "moto.log"
    for _attempt in range(3):  # another process may grab the port between probe and bind
        chosen = port or free_port()
        endpoint = f"http://127.0.0.1:{chosen}"
        with log_path.open("ab") as log:
            proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(chosen)], cwd=workdir,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(endpoint):
                return S3Server(endpoint, proc, workdir)
            time.sleep(0.05)
        stop_process(proc)
    tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"moto_server did not answer within {START_TIMEOUT_SECONDS}s:\n{tail}",
                pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()
