"""host/metrics.py through a real `host up`: Prometheus metrics on a listener of their own.

Counts change with requests, a trap and a deadline hit are counted, pools and
admission are read at scrape time, and with `--workers 2` every series carries
the worker it comes from.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.config import Config
from host.errors import ConfigError, VariableError
from tests.conftest import HostProcess, write_app
from tests.loopback import free_port

MANIFEST = """spin_manifest_version = 2
[application]
name = "metrics"
[[trigger.http]]
route = "/echo/..."
component = "echo"
[[trigger.http]]
route = "/trap"
component = "trap"
[[trigger.http]]
route = "/spin"
component = "spin"
[component.echo]
source = "echo.wasm"
[component.trap]
source = "trap.wasm"
[component.spin]
source = "spin.wasm"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def app(tmp_path: Path, wat_components: dict[str, Path]) -> Path:
    return write_app(tmp_path / "app", MANIFEST, {
        "echo.wasm": wat_components["echo"], "trap.wasm": wat_components["trap"],
        "spin.wasm": wat_components["spin"]})


def scrape(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Summed over every label not given (e.g. over workers)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def start(app: Path, cache_dir: Path, metrics_port: int, *args: str) -> HostProcess:
    return HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "2",
                        "--metrics-listen", f"127.0.0.1:{metrics_port}", *args]).start()


def test_requests_traps_and_deadlines_are_counted(app: Path, cache_dir: Path) -> None:
    port = free_port()
    with start(app, cache_dir, port, "--request-timeout", "spin=0.5") as host, \
            host.client() as client:
        assert f"Metrics on http://127.0.0.1:{port}/metrics" in host.output
        before = scrape(port)
        for _ in range(3):
            assert client.post("/echo/a", content=b"hi").status_code == 200
        assert client.get("/trap").status_code == 500
        assert client.get("/spin").status_code == 504
        assert client.get("/nothing").status_code == 404
        after = scrape(port)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "spinhost_http_requests_total"
    assert added(requests, component="echo", status="200") == 3
    assert added(requests, component="trap", status="500") == 1
    assert added(requests, component="spin", status="504") == 1
    assert added(requests, component="-", status="404") == 1
    assert added("spinhost_http_request_duration_seconds_count", component="echo") == 3
    assert added("spinhost_http_request_duration_seconds_bucket", component="spin",
                 le="0.25") == 0  # it ran until its 0.5 s deadline
    assert added("spinhost_http_request_duration_seconds_bucket", component="spin",
                 le="1.0") == 1
    assert added("spinhost_guest_traps_total", component="trap") == 1
    assert added("spinhost_guest_traps_total", component="echo") == 0
    assert added("spinhost_deadline_exceeded_total", component="spin") == 1
    assert value(after, "spinhost_http_requests_in_flight") == 0
    # Read at scrape time: pools, instantiation, admission, memory.
    assert value(after, "spinhost_pool_size", component="echo") == 2
    assert 0 <= value(after, "spinhost_pool_ready_instances", component="echo") <= 2
    created = value(after, "spinhost_instances_created_total", component="echo")
    assert created >= 2 + 3 - 2  # the pool's first fill, then at least the ones used up
    assert value(after, "spinhost_instantiate_seconds_count", component="echo") == created
    assert value(after, "spinhost_instantiate_seconds_sum", component="echo") > 0
    assert ("spinhost_pool_misses_total", frozenset({("component", "echo")})) in after
    assert value(after, "spinhost_component_requests_running", component="echo") == 0
    assert value(after, "spinhost_component_requests_queued", component="echo") == 0
    assert value(after, "spinhost_instance_memory_limit_bytes", component="echo") == 128 << 20
    assert value(after, "spinhost_process_peak_resident_memory_bytes") > 10 << 20
    assert value(after, "process_resident_memory_bytes") > 10 << 20


def test_apps_never_shadow_the_metrics_listener(tmp_path: Path, cache_dir: Path,
                                                wat_components: dict[str, Path]) -> None:
    app = write_app(tmp_path / "app", """spin_manifest_version = 2
[application]
name = "everything"
[[trigger.http]]
route = "/..."
component = "echo"
[component.echo]
source = "echo.wasm"
""", {"echo.wasm": wat_components["echo"]})
    port = free_port()
    with start(app, cache_dir, port) as host, host.client() as client:
        on_app = client.post("/metrics", content=b"from the app")
        assert on_app.status_code == 200 and on_app.content == b"from the app"
        assert value(scrape(port), "spinhost_http_requests_total", component="echo",
                     status="200") == 1
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # any path: metrics


def test_off_by_default(app: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)]) as host:
        assert "Metrics on" not in host.output


def test_a_taken_port_stops_start_up(app: Path, cache_dir: Path) -> None:
    port = free_port()
    with start(app, cache_dir, port) as first:
        second = HostProcess(["-f", str(app), "--cache-dir", str(cache_dir),
                              "--metrics-listen", f"127.0.0.1:{port}"])
        second.start_async()
        assert second.wait(timeout=60) == 1 and second.output_closed.wait(10)
        assert f"--metrics-listen 127.0.0.1:{port}: cannot listen" in second.output
        assert "Traceback" not in second.output
        assert first.returncode is None


def test_every_worker_is_labelled(app: Path, cache_dir: Path) -> None:
    port = free_port()
    with start(app, cache_dir, port, "--workers", "2", "--request-timeout", "spin=0.5"
               ) as host, host.client() as client:
        assert "labelled worker=0..N-1" in host.output
        before = scrape(port)
        for _ in range(20):
            assert client.get("/echo/w").status_code == 200
        assert client.get("/trap").status_code == 500
        assert client.get("/spin").status_code == 504
        after = scrape(port)
    assert value(after, "spinhost_workers") == 2
    for worker in ("0", "1"):
        assert value(after, "spinhost_pool_size", component="echo", worker=worker) == 2
        assert value(after, "process_start_time_seconds", worker=worker) > 0
    assert {dict(labels).get("worker") for name, labels in after
            if name == "spinhost_http_requests_total"} <= {"0", "1"}

    def added(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert added("spinhost_http_requests_total", component="echo", status="200") == 20
    assert added("spinhost_guest_traps_total", component="trap") == 1
    assert added("spinhost_deadline_exceeded_total", component="spin") == 1


def test_config() -> None:
    def load(flags: dict[str, str], environ: dict[str, str] | None = None) -> Config:
        return Config.load("up", flags, environ or {})

    assert load({}).metrics_listen is None
    assert load({"metrics_listen": "0.0.0.0:9090"}).metrics_listen == ("0.0.0.0", 9090)
    assert load({}, {"SPINHOST_METRICS_LISTEN": "localhost:9"}).metrics_listen == (
        "127.0.0.1", 9)
    assert load({}, {"SPINHOST_METRICS_LISTEN": ""}).metrics_listen is None
    with pytest.raises(ConfigError, match="--metrics-listen '9090': expected HOST:PORT"):
        load({"metrics_listen": "9090"})
    with pytest.raises(VariableError, match="SPINHOST_METRICS_LISTEN"):
        load({}, {"SPINHOST_METRICS_LISTEN": "x:y"})
