"""CPU pinning (`--cpu-pinning`, host/affinity.py): a serving process's threads
share one CPU; workers get one each; `off` leaves them free.

On a machine with one usable CPU nothing is pinned, and every assertion below
still holds (the one CPU is the whole set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from host import affinity
from tests.conftest import ROOT, HostProcess, write_app

ALLOWED = sorted(os.sched_getaffinity(0))  # what the host processes inherit from us

MANIFEST = """spin_manifest_version = 2
[application]
name = "pinning"
[[trigger.http]]
route = "/fixed"
component = "fixed"
[component.fixed]
source = "fixed.wasm"
"""


def thread_cpus(pid: int) -> dict[int, list[int]]:
    """Every thread of `pid` and the CPUs it may run on."""
    return {int(task.name): sorted(os.sched_getaffinity(int(task.name)))
            for task in Path(f"/proc/{pid}/task").iterdir()}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, wat_components: dict[str, Path]) -> Path:
    directory = tmp_path_factory.mktemp("pinning-app")
    write_app(directory, MANIFEST, {"fixed.wasm": wat_components["fixed"]})
    return directory


def _serve_some(host: HostProcess) -> None:
    # Guest threads start with the first requests: they must inherit the pin.
    with httpx.Client(base_url=host.base_url, timeout=30) as client:
        for _ in range(20):
            assert client.get("/fixed").status_code == 200


def test_worker_cpus_take_the_allowed_cpus_in_turn() -> None:
    cpus = affinity.worker_cpus(2 * len(ALLOWED) + 1)
    if len(ALLOWED) < 2:
        assert cpus is None
        return
    assert cpus is not None and len(cpus) == 2 * len(ALLOWED) + 1
    first = ALLOWED.index(cpus[0])
    assert cpus == [ALLOWED[(first + i) % len(ALLOWED)] for i in range(len(cpus))]
    assert affinity.process_cpu() in ALLOWED


def test_pin_threads_pins_running_threads_and_the_ones_they_start() -> None:
    # In a child process: pinning the test process would pin every later test.
    code = """
import os, threading, json
from host import affinity
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(3)]
for t in threads: t.start()
cpu = sorted(os.sched_getaffinity(0))[-1]
assert affinity.pin_threads(cpu)
late = {}
t = threading.Thread(target=lambda: late.update(cpus=sorted(os.sched_getaffinity(0))))
t.start(); t.join()
tids = [int(x) for x in os.listdir("/proc/self/task")]
print(json.dumps({"cpu": cpu, "all": [sorted(os.sched_getaffinity(i)) for i in tids],
                  "late": late["cpus"]}))
stop.set()
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    import json

    seen = json.loads(out.stdout)
    assert len(seen["all"]) >= 4
    assert all(cpus == [seen["cpu"]] for cpus in seen["all"])
    assert seen["late"] == [seen["cpu"]]


def test_host_up_pins_every_thread_to_one_cpu(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)]) as host:
        _serve_some(host)
        threads = thread_cpus(host.pid)
    assert len(threads) >= 3  # event loop, epoch ticker, pool refiller, guest threads
    cpus = {tuple(c) for c in threads.values()}
    assert len(cpus) == 1, threads
    (only,) = cpus
    if len(ALLOWED) >= 2:
        assert len(only) == 1 and only[0] in ALLOWED
    else:
        assert list(only) == ALLOWED


def test_cpu_pinning_off_leaves_threads_free(app_dir: Path, cache_dir: Path) -> None:
    env = {**os.environ, "SPINHOST_CPU_PINNING": "off"}
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir)], env=env) as host:
        _serve_some(host)
        threads = thread_cpus(host.pid)
    assert all(cpus == ALLOWED for cpus in threads.values()), threads


def test_workers_each_get_their_own_cpu(app_dir: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir),
                      "--workers", "2"]) as host:
        _serve_some(host)
        workers = host.children()
        assert len(workers) == 2
        per_worker = [{tuple(c) for c in thread_cpus(pid).values()} for pid in workers]
        supervisor = thread_cpus(host.pid)
    for cpus in per_worker:
        assert len(cpus) == 1  # all of a worker's threads on the same CPU(s)
    if len(ALLOWED) < 2:
        assert per_worker == [{tuple(ALLOWED)}] * 2
    else:
        (a,), (b,) = per_worker
        assert len(a) == len(b) == 1 and a != b  # one CPU each, not the same one
    assert all(cpus == ALLOWED for cpus in supervisor.values())  # it only waits


def test_a_bad_cpu_pinning_value_is_one_line(app_dir: Path) -> None:
    env = {**os.environ, "SPINHOST_CPU_PINNING": "sometimes"}
    result = subprocess.run([sys.executable, "-m", "host", "up", "-f", str(app_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SPINHOST_CPU_PINNING='sometimes': choose from auto, off" in result.stderr
    assert "Traceback" not in result.stderr
