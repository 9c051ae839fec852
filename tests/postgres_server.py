"""A real PostgreSQL server for the tests: one cluster per session, on a free port.

Debian's `postgresql` package (`make test` installs it) puts `initdb` and
`postgres` under /usr/lib/postgresql/N/bin, off PATH. Neither runs as root:
as root (CI, containers) the cluster belongs to the package's `postgres` user
and both run through `runuser`; its directory is a fresh one under the system
temp dir (pytest's own is private to root). The server listens on 127.0.0.1
only, with its unix socket in the cluster directory, trusts local connections
(user `postgres`, password `secret` for tests that send one) and keeps nothing
after the session. A missing server fails the tests rather than skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 30.0
INSTALL_HINT = "apt-get install postgresql"
SERVICE_USER = "postgres"  # the Debian package's


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not versions:
        pytest.fail(f"PostgreSQL's initdb was not found; install it: {INSTALL_HINT}",
                    pytrace=False)
    return Path(versions[-1]).parent


def _as_user(command: list[str]) -> list[str]:
    """`command` as the cluster's owner: as root, the `postgres` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _answers(port: int, workdir: Path) -> bool:
    import psycopg
    try:
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                        connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def start_postgres(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """initdb a cluster in `workdir/data` and start it on a free loopback port."""
    bindir = _bin_dir()
    data = workdir / "data"
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SERVICE_USER)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    password_file = workdir / "pwfile"
    password_file.write_text("secret\n")
    password_file.chmod(0o644)
    subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                             "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
                             f"--pwfile={password_file}"]),
                   check=True, capture_output=True, cwd=workdir)
    log_path = workdir / "postgres.log"
    for _attempt in range(3):  # another process may grab the port between probe and bind
        port = free_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                _as_user([str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                          "-c", "listen_addresses=127.0.0.1",
                          "-c", f"unix_socket_directories={workdir}",
                          "-c", "fsync=off", "-c", "max_connections=100"]),
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(port, workdir):
                return proc, port
            time.sleep(0.05)
        stop_process(proc)
    pytest.fail("PostgreSQL did not start:\n" + log_path.read_text(errors="replace")[-2000:],
                pytrace=False)


@pytest.fixture(scope="session")
def postgres_port() -> Iterator[int]:
    """The port of a private PostgreSQL server on 127.0.0.1, for the whole session."""
    workdir = Path(tempfile.mkdtemp(prefix="spinhost-pg-"))
    try:
        proc, port = start_postgres(workdir)
        try:
            yield port
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
