"""host/workers.py through a real `host up --workers 2`: one socket served by two
processes, drained, supervised and replaced.

Which worker answered a connection is read from /proc: the accepted socket's
inode (/proc/net/tcp, by the client's port) is open in exactly one worker.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host.runtime.engine import Engine
from tests import wat
from tests.conftest import ROOT, HostProcess, run_host, wait_refused, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "workers"
[[trigger.http]]
route = "/fixed"
component = "fixed"
[[trigger.http]]
route = "/announce"
component = "announce"
executor = { type = "wagi" }
[[trigger.http]]
route = "/print"
component = "printer"
executor = { type = "wagi" }
[component.fixed]
source = "fixed.wasm"
[component.announce]
source = "announce.wasm"
[component.printer]
source = "printer.wasm"
"""
ANNOUNCED = "[announce] about to spin"  # /announce prints it, then runs to its deadline
LINE_BYTES, LINES_PER_REQUEST = 2000, 20
# /print writes LINES_PER_REQUEST lines of LINE_BYTES "y"s to stderr, one fd_write each.
PRINTER = f"""(module {wat._WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: text/plain\\0a\\0aprinted")
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 4096) (i32.const 121) (i32.const {LINE_BYTES}))
    (i32.store8 (i32.const {4096 + LINE_BYTES}) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const {LINE_BYTES + 1}))
    (loop $l
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {LINES_PER_REQUEST}))))
    (call $write (i32.const 1024) (i32.const 33))))
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("workers-app")
    write_app(directory, MANIFEST, {"fixed.wasm": wat_components["fixed"]})
    wat.build_module(wat.WASI_PRINT_THEN_LOOP, directory / "announce.wasm")
    wat.build_module(PRINTER, directory / "printer.wasm")
    return directory


def workers_host(app_dir: Path, cache_dir: Path, *extra: str) -> HostProcess:
    return HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--workers", "2",
                        *extra])


def address(host: HostProcess) -> tuple[str, int]:
    hostname, port = host.base_url.removeprefix("http://").rsplit(":", 1)
    return hostname, int(port)


def connect(host: HostProcess) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(*address(host), timeout=30)
    conn.connect()
    return conn


def serving_pid(host: HostProcess, conn: http.client.HTTPConnection) -> int:
    """The worker holding the server side of `conn` (accepted already)."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    server_port = address(host)[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in host.children():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def test_requests_spread_over_both_workers(app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir) as host:
        workers = host.children()
        assert len(workers) == 2
        assert host.output.count("Available Routes:") == 1  # the banner, once
        seen: set[int] = set()
        for _ in range(200):  # each new connection goes to whichever worker accepts first
            conn = connect(host)
            conn.request("GET", "/fixed")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"fixed response")
            seen.add(serving_pid(host, conn))
            conn.close()
            if len(seen) == 2:
                break
        assert seen == set(workers)
        for path in ("/.well-known/spin/health", "/.well-known/spin/info"):
            for pid in workers:  # on a connection each worker holds
                conn = _connection_to(host, pid)
                conn.request("GET", path)
                assert conn.getresponse().status == 200
                conn.close()


def _connection_to(host: HostProcess, pid: int) -> http.client.HTTPConnection:
    for _ in range(200):
        conn = connect(host)
        conn.request("GET", "/fixed")
        conn.getresponse().read()
        if serving_pid(host, conn) == pid:
            return conn
        conn.close()
    raise AssertionError(f"worker {pid} accepted none of 200 connections")


def test_sigterm_drains_in_flight_requests_in_every_worker(app_dir: Path,
                                                           cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir, "--request-timeout", "3",
                      "--drain-timeout", "10") as host:
        statuses: list[int] = []
        holders: set[int] = set()
        threads = []
        for n in range(1, 17):  # slow requests until each worker runs at least one
            conn = connect(host)

            def slow(conn: http.client.HTTPConnection = conn) -> None:
                conn.request("GET", "/announce")
                statuses.append(conn.getresponse().status)

            threads.append(threading.Thread(target=slow))
            threads[-1].start()
            assert host.wait_for_count(ANNOUNCED, n)  # this request is in its guest
            holders.add(serving_pid(host, conn))
            if len(holders) == 2:
                break
        assert holders == set(host.children())
        host.send_signal(signal.SIGTERM)
        assert wait_refused(host.base_url)
        for thread in threads:
            thread.join(timeout=30)
        assert statuses == [504] * len(threads)  # every one answered (its deadline), none dropped
        assert host.wait(timeout=20) == 0
        assert host.wait_for_output("Stopped.")
        assert host.output.count("stopped. Instance pools at exit") == 2


def test_second_signal_stops_every_worker_at_once(app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir, "--request-timeout", "60",
                      "--drain-timeout", "60") as host:
        workers = host.children()
        conn = connect(host)
        thread = threading.Thread(target=_request_quietly, args=(conn, "/announce"), daemon=True)
        thread.start()
        assert host.wait_for_output(ANNOUNCED)
        host.send_signal(signal.SIGTERM)
        assert wait_refused(host.base_url)
        assert host.returncode is None  # draining
        host.send_signal(signal.SIGINT)
        assert host.wait(timeout=20) == 130
        assert host.output.count("Second signal") == 1
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _request_quietly(conn: http.client.HTTPConnection, path: str) -> None:
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass


def test_a_killed_worker_is_replaced_with_backoff(app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir) as host:
        first, other = host.children()
        os.kill(first, signal.SIGKILL)
        # The port keeps answering: the other worker accepts every new connection.
        with host.client() as client:
            for _ in range(20):
                assert client.get("/fixed").status_code == 200
        assert host.wait_for_output(f"worker {first} was killed by SIGKILL; starting a new one "
                                    "in 0.5 s")
        assert host.wait_for_output(f"(replaces worker {first})")
        (second,) = set(host.children()) - {other}
        assert second != first
        # It died young: the next replacement waits twice as long (a crash loop is slowed
        # down, not a fork bomb).
        os.kill(second, signal.SIGKILL)
        assert host.wait_for_output(f"worker {second} was killed by SIGKILL; starting a new "
                                    "one in 1 s")
        assert host.wait_for_output(f"(replaces worker {second})")
        assert len(host.children()) == 2
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=20) == 0


def test_a_worker_whose_event_loop_stops_answering_is_killed_and_replaced(
        app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir, "--worker-timeout", "3") as host:
        stuck, other = host.children()
        os.kill(stuck, signal.SIGSTOP)  # alive, holding its connections, answering nothing
        assert host.wait_for_output(f"worker {stuck} has not answered for", timeout=20)
        assert "--worker-timeout 3); killing it" in host.output
        assert host.wait_for_output(f"worker {stuck} was killed by SIGKILL; starting a new one")
        assert host.wait_for_output(f"(replaces worker {stuck})", timeout=30)
        assert stuck not in host.children() and other in host.children()
        with host.client() as client:
            for _ in range(10):
                assert client.get("/fixed").status_code == 200
        # The healthy one, beating all along, was left alone.
        assert f"worker {other} has not answered" not in host.output
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=20) == 0


def test_a_worker_timeout_below_two_heartbeats_is_refused(app_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "host", "up", "-f", str(app_dir),
                             "--workers", "2", "--worker-timeout", "0.5"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--worker-timeout 0.5: must be 2 or more" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_lines_of_many_workers_are_never_interleaved(app_dir: Path,
                                                            cache_dir: Path) -> None:
    requests = 24
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--workers", "4",
                      "--log-format", "plain"]) as host:
        def call() -> None:
            with host.client() as client:
                for _ in range(requests // 8):
                    assert client.get("/print").text == "printed"

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = "[printer] " + "y" * LINE_BYTES
        assert host.wait_for_count("[printer]", requests * LINES_PER_REQUEST)
        printed = [line for line in host.lines if "[printer]" in line or "yyyy" in line]
        assert len(printed) == requests * LINES_PER_REQUEST
        assert all(line == expected for line in printed)


def test_sigterm_during_start_up_exits_130_and_leaves_no_worker(
        app_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # Another process "compiling" the component: the workers wait for its lock.
    lock_path = Engine(cache).cache_path((app_dir / "fixed.wasm").read_bytes())
    assert lock_path is not None
    cache.mkdir()
    import fcntl

    with open(lock_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        host = workers_host(app_dir, cache)
        host.start_async()
        try:
            assert host.wait_for_output("waiting for another process compiling", timeout=60)
            workers = host.children()
            assert len(workers) == 2
            host.send_signal(signal.SIGTERM)
            assert host.wait(timeout=20) == 130
        finally:
            host.stop()
    assert "Serving" not in host.output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_start_up_error_is_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, MANIFEST.split("[[trigger.http]]\nroute = \"/announce\"")[0]
              + '[component.fixed]\nsource = "fixed.wasm"\n')
    (tmp_path / "fixed.wasm").write_bytes(b"\0asm not really")
    result = run_host("up", "-f", str(tmp_path), "--listen", "127.0.0.1:0", "--workers", "2",
                      "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not a valid WebAssembly component" in errors[0]
    assert "Traceback" not in result.stderr and "Serving" not in result.stdout


def test_port_in_use_is_one_line_before_any_worker(app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir) as host:
        result = run_host("up", "-f", str(app_dir), "--listen", host.base_url[7:],
                          "--workers", "2")
    assert result.returncode == 1
    assert result.stderr.count("Error:") == 1 and "already in use" in result.stderr


def test_the_variable_sets_the_workers_and_the_flag_wins(app_dir: Path,
                                                         cache_dir: Path) -> None:
    env = {**os.environ, "SPINHOST_WORKERS": "2"}
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)], env=env) as host:
        assert len(host.children()) == 2
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--workers", "1"],
                     env=env) as host:
        assert host.children() == []  # one process serves


@pytest.mark.parametrize("args,variable,code,message", [
    (["--workers", "0"], None, 1, "--workers 0: must be positive"),
    (["--workers", "257"], None, 1, "--workers 257: must be 256 or less"),
    (["--workers", "two"], None, 2, "invalid int value"),
    ([], "0", 2, "SPINHOST_WORKERS='0' (--workers): must be positive"),
    ([], "many", 2, "SPINHOST_WORKERS='many': not a valid value for --workers"),
])
def test_bad_worker_counts_are_rejected(app_dir: Path, args: list[str], variable: str | None,
                                        code: int, message: str) -> None:
    env = {**os.environ, "SPINHOST_WORKERS": variable} if variable else None
    result = subprocess.run([sys.executable, "-m", "host", "up", "-f", str(app_dir),
                             "--listen", "127.0.0.1:0", *args], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_worker_whose_supervisor_dies_drains_and_exits(app_dir: Path, cache_dir: Path) -> None:
    with workers_host(app_dir, cache_dir) as host:
        workers = host.children()
        os.kill(host.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.05)
