"""A real `redis-server` for the tests: started once per session on a free port.

The Redis backend is tested against the real server, not a fake, so CI must
have it installed (`.ci/run` does): a missing `redis-server` fails the tests
rather than skipping them. The server keeps nothing on disk (`--save ""`,
`--appendonly no`) and listens on loopback only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.02
INSTALL_HINT = "apt-get install redis-server"


def _command(port: int, *args: str) -> bytes:
    """Send one RESP command over a fresh connection and return the raw reply line."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def _answers_ping(port: int) -> bool:
    try:
        return _command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


def flush(url: str) -> None:
    """Empty the test server's database, so one test never sees another's keys."""
    port = int(url.split(":")[2].split("/")[0])
    reply = _command(port, "FLUSHDB")
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"FLUSHDB on {url} failed: {reply!r}")


def start_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start `redis-server` in `workdir` on a free loopback port (or on `port`: a
    restarted server); wait until it PINGs back."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not on PATH; install it: {INSTALL_HINT}", pytrace=False)
    log_path = workdir / "redis.log"
    wanted = port
    for _attempt in range(3):  # another process may grab the port between probe and bind
        port = wanted or free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"],
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return proc, port
            time.sleep(POLL_INTERVAL_SECONDS)
        stop_process(proc)
    log_tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"redis-server did not answer PING within {START_TIMEOUT_SECONDS}s:\n{log_tail}",
                pytrace=False)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`redis://127.0.0.1:N/0` of a private redis-server, running for the whole session."""
    proc, port = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """`redis_url` with its database emptied first."""
    flush(redis_url)
    return redis_url
