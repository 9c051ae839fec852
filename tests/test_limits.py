"""host/limits.py through a real `host up`: body, header and response bounds,
backpressure, and draining in-flight requests on SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests import wat
from tests.conftest import HostProcess, run_host, wait_refused, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "limits"
[[trigger.http]]
route = "/echo"
component = "echo"
[[trigger.http]]
route = "/loop"
component = "loop"
[[trigger.http]]
route = "/announce"
component = "announce"
executor = { type = "wagi" }
[component.echo]
source = "echo.wasm"
[component.loop]
source = "spin.wasm"
[component.announce]
source = "announce.wasm"
"""
# /announce prints this line to stderr, which the host echoes, then never returns:
# a test waits for it to know its request has reached the guest.
ANNOUNCED = "[announce] about to spin"


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("limits-app")
    write_app(directory, MANIFEST, {"echo.wasm": wat_components["echo"],
                                    "spin.wasm": wat_components["spin"]})
    wat.build_module(wat.WASI_PRINT_THEN_LOOP, directory / "announce.wasm")
    return directory


@pytest.fixture(scope="module")
def host(app_dir: Path, cache_dir: Path):
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--max-body-bytes", "1000", "--max-header-count", "20",
                      "--max-header-bytes", "2000", "--max-response-bytes", "500",
                      "--max-concurrent-requests", "1", "--max-queued-requests", "0",
                      "--request-timeout", "1"]) as process:
        yield process


def test_body_over_the_limit_is_413(host: HostProcess) -> None:
    with host.client() as client:
        assert client.post("/echo", content=b"x" * 400).status_code == 200
        assert client.post("/echo", content=b"x" * 1001).status_code == 413

        def chunked():  # no content-length: the limit applies while reading
            for _ in range(20):
                yield b"x" * 100

        assert client.post("/echo", content=chunked()).status_code == 413
        assert client.post("/echo", content=b"fine").content == b"fine"


def test_too_many_or_too_large_headers_are_431(host: HostProcess) -> None:
    with host.client() as client:
        many = {f"x-h{i}": "v" for i in range(25)}
        assert client.get("/echo", headers=many).status_code == 431
        assert client.get("/echo", headers={"x-big": "v" * 3000}).status_code == 431
        assert client.get("/.well-known/spin/health", headers=many).status_code == 431


def test_response_over_the_limit_is_500(host: HostProcess) -> None:
    with host.client() as client:
        r = client.post("/echo", content=b"y" * 600)  # echoed back: over 500 bytes
    assert (r.status_code, r.content) == (500, b"")
    assert host.wait_for_output("exceeds the limit of 500 bytes")


def test_backpressure_answers_503_with_retry_after(host: HostProcess) -> None:
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with host.client() as c:
            r = c.get("/loop")  # runs until the 1 s deadline
        with lock:
            responses.append(r)

    # One slot and no queue: of two concurrent calls, one runs and one is turned away,
    # whichever arrives first.
    workers = [threading.Thread(target=call) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(r.status_code for r in responses) == [503, 504]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    with host.client() as client:  # other components are not affected, and it recovers
        assert client.post("/echo", content=b"ok").content == b"ok"


def test_sigterm_lets_in_flight_requests_finish(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "3", "--drain-timeout", "10"]) as process:
        results: list[int] = []

        def slow() -> None:
            with httpx.Client(base_url=process.base_url, timeout=10) as c:
                results.append(c.get("/announce").status_code)

        worker = threading.Thread(target=slow)
        worker.start()
        assert process.wait_for_output(ANNOUNCED)  # the request is in the guest
        process.send_signal(signal.SIGTERM)
        worker.join()
        assert results == [504]  # answered, not dropped
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("flag,value", [
    ("--max-body-bytes", "0"), ("--max-concurrent-requests", "-1"), ("--drain-timeout", "-1"),
    ("--request-timeout", "nope=3"), ("--request-timeout", "echo=soon"),
])
def test_bad_limit_flags_are_one_line_errors(app_dir: Path, flag: str, value: str) -> None:
    result = run_host("up", "-f", str(app_dir), "--listen", "127.0.0.1:0", flag, value)
    assert result.returncode == 1
    assert flag in result.stderr and "Traceback" not in result.stderr


def test_second_signal_stops_at_once(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "60", "--drain-timeout", "60"]) as process:
        results: list[str] = []

        def stuck() -> None:  # would run for 60 s
            try:
                with httpx.Client(base_url=process.base_url, timeout=90) as c:
                    results.append(str(c.get("/announce").status_code))
            except httpx.HTTPError as exc:
                results.append(type(exc).__name__)

        worker = threading.Thread(target=stuck)
        worker.start()
        assert process.wait_for_output(ANNOUNCED)  # the request is in the guest
        process.send_signal(signal.SIGTERM)
        # Draining: the listener is closed at once, and the process waits for the
        # in-flight request.
        assert wait_refused(process.base_url)
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130  # far less than the 60 s drain / deadline
        process.stop()
        worker.join(timeout=30)
        assert results and results[0] != "200"


def test_drain_deadline_ends_a_stuck_request_and_exits_0(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--request-timeout", "60", "--drain-timeout", "1"]) as process:
        worker = threading.Thread(target=lambda: _get_quietly(process.base_url + "/announce"),
                                  daemon=True)
        worker.start()
        assert process.wait_for_output(ANNOUNCED)  # the request is in the guest
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # the guest would have run for 60 s
        assert process.wait_for_output("still running after the drain deadline")


def _get_quietly(url: str) -> None:
    try:
        httpx.get(url, timeout=90)
    except httpx.HTTPError:
        pass
