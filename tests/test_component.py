"""host/executors/component.py: what a request's failure is reported as.

A guest's fault is a GuestError ("invalid response from guest" for a value the
marshaller refuses); a bug in the host stays itself, so the server logs it with
its traceback instead of blaming the guest. A handler whose signature does not
match wit/ is refused at start-up, so no request ever lifts a value of the wrong
shape.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from host.app import App, AppSettings, load_app
from host.errors import ComponentError, GuestError, GuestTimeout, GuestTrap, MarshalError
from host.executors.component import guest_failure
from host.limits import Limits
from host.manifest import load_manifest
from host.runtime import abi
from host.runtime.engine import Engine
from host.server import HostApp
from tests import wat
from tests.conftest import write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "errors"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
"""
REQUEST = abi.HttpRequest("GET", "http", None, "/", [], b"")


def _load(directory: Path, body: str, wit_dir: Path = wat.WIT_DIR) -> App:
    directory.mkdir(parents=True, exist_ok=True)
    wat.build_component(body, directory / "c.wasm", wit_dir=wit_dir)
    manifest = load_manifest(write_app(directory, MANIFEST))
    return load_app(manifest, Engine(None), AppSettings(pool_size=1))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    loaded = _load(tmp_path_factory.mktemp("component"), wat.FIXED)
    yield loaded
    loaded.close()


def _fail_with(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def call_handler(handler: Any, request: abi.HttpRequest) -> abi.HttpResponse:
        raise exc

    monkeypatch.setattr(abi, "call_handler", call_handler)


def test_a_value_the_marshaller_refuses_is_the_guests_fault(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_with(monkeypatch, MarshalError("expected int, got 'x'"))
    (executor,) = app.executors.values()
    with pytest.raises(GuestError, match="invalid response from guest: expected int"):
        executor.handle(REQUEST)


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), ValueError("bad"),
                                 AttributeError("no attribute 'x'")])
def test_a_host_bug_is_not_blamed_on_the_guest(app: App, monkeypatch: pytest.MonkeyPatch,
                                               bug: Exception) -> None:
    _fail_with(monkeypatch, bug)
    (executor,) = app.executors.values()
    with pytest.raises(type(bug)) as info:
        executor.handle(REQUEST)
    assert not isinstance(info.value, GuestError)
    monkeypatch.undo()
    assert executor.handle(REQUEST).body == b"fixed response"  # the pool still serves


def _get(app: App, path: str = "/") -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=HostApp(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(run())


def test_the_server_logs_a_host_bug_with_its_traceback(
        app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fail_with(monkeypatch, TypeError("host bug on the request path"))
    with caplog.at_level(logging.ERROR, logger="host.server"):
        assert _get(app).status_code == 500
    (record,) = [r for r in caplog.records if r.name == "host.server"]
    assert record.exc_info is not None and record.exc_info[0] is TypeError
    assert "invalid response from guest" not in caplog.text


def test_the_server_logs_a_refused_guest_value_as_the_guests(
        app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fail_with(monkeypatch, MarshalError("expected int, got 'x'"))
    with caplog.at_level(logging.ERROR, logger="host.server"):
        assert _get(app).status_code == 500
    (record,) = [r for r in caplog.records if r.name == "host.server"]
    assert record.exc_info is None  # the guest's fault: one line, no traceback
    assert "component c: invalid response from guest: expected int" in record.getMessage()


def test_a_handler_of_another_shape_is_refused_at_start(tmp_path: Path) -> None:
    """A response record with `status: string` would otherwise fail every request."""
    wit_dir = tmp_path / "wit"
    shutil.copytree(wat.WIT_DIR, wit_dir)
    http = wit_dir / "http.wit"
    text = http.read_text()
    assert "type status-code = u16;" in text
    http.write_text(text.replace("type status-code = u16;", "type status-code = string;"))
    with pytest.raises(ComponentError) as info:
        _load(tmp_path / "app", wat.TRAP, wit_dir)
    message = str(info.value)
    assert 'component "c": spinhost:http/incoming-handler@0.1.0#handle is' in message
    assert "status: string" in message and "status: u16" in message
    assert "rebuild it against wit/" in message


def test_a_trap_after_the_deadline_is_a_timeout() -> None:
    # A host call cut short at the deadline hands the guest an error value; a
    # guest that then traps on it still ran out of time: 504, not 500.
    trap = wasmtime.WasmtimeError("wasm trap: wasm `unreachable` instruction executed")
    late = guest_failure(trap, Limits(deadline_seconds=2), deadline=time.monotonic() - 0.1)
    assert isinstance(late, GuestTimeout) and str(late) == "deadline of 2 s exceeded"
    early = guest_failure(trap, Limits(), deadline=time.monotonic() + 60)
    assert type(early) is GuestTrap and "unreachable" in str(early)
