"""Guests that fail in every way: the host answers, logs, discards, and keeps serving."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests import wat
from tests.conftest import HostProcess, write_app

FAULTS = {
    "bomb": (wat.MEMORY_BOMB, 500, "unreachable"),  # grows until the 16 MiB limit says no
    "stack": (wat.STACK_OVERFLOW, 500, "call stack exhausted"),
    "oob": (wat.OUT_OF_BOUNDS, 500, "out of bounds memory access"),
    "div": (wat.DIVIDE_BY_ZERO, 500, "integer divide by zero"),
    "trap": (wat.TRAP, 500, "unreachable"),
    "loop": (wat.SPIN, 504, "deadline of 2 s exceeded"),
}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    directory = tmp_path_factory.mktemp("faults")
    manifest = ['spin_manifest_version = 2', '[application]', 'name = "faults"',
                '[[trigger.http]]', 'route = "/ok"', 'component = "ok"',
                '[component.ok]', 'source = "ok.wasm"']
    wat.build_component(wat.FIXED, directory / "ok.wasm")
    for name, (body, _, _) in FAULTS.items():
        wat.build_component(body, directory / f"{name}.wasm")
        manifest += ['[[trigger.http]]', f'route = "/{name}"', f'component = "{name}"',
                     f'[component.{name}]', f'source = "{name}.wasm"']
    write_app(directory, "\n".join(manifest) + "\n")
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir),
                      "--max-instance-memory", "16", "--request-timeout", "30",
                      "--request-timeout", "loop=2"]) as process:
        yield process


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_answers_logs_and_the_next_request_succeeds(host: HostProcess, name: str) -> None:
    _, status, reason = FAULTS[name]
    with host.client() as client:
        r = client.get(f"/{name}")
        assert (r.status_code, r.content) == (status, b"")
        assert host.wait_for_output(f"Error processing request: component {name}: ")
        assert reason in host.output
        assert client.get("/ok").text == "fixed response"
        assert client.get(f"/{name}").status_code == status  # fresh instance, same result


def test_a_spinning_guest_does_not_stop_the_others(host: HostProcess) -> None:
    done: list[str] = []

    def spin() -> None:
        with host.client() as c:
            c.get("/loop")
        done.append("loop")

    worker = threading.Thread(target=spin)
    worker.start()
    with host.client() as client:
        for _ in range(5):  # answered while the loop still runs (it takes the full 2 s)
            assert client.get("/ok").status_code == 200
            done.append("ok")
    worker.join()
    assert done == ["ok"] * 5 + ["loop"]
