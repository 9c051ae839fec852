"""WAGI output limits and shutdown (host/executors/wagi.py): a program that prints for
ever is stopped at the response limit with bounded host memory, and a host whose WAGI
request timed out still shuts down cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host.errors import OutputTooLarge
from host.executors.wagi import WagiExecutor, WagiProgram
from host.limits import HttpLimits
from host.runtime.abi import HttpRequest
from host.runtime.engine import Engine
from host.stdio import MAX_LINE_BYTES, ComponentStdio
from tests import wat
from tests.conftest import HostProcess, write_app
from tests.procmem import memory_bytes

# `host up` captures WAGI stdout up to its response limit; the default one here.
LIMIT = HttpLimits().max_response_bytes


def _app(directory: Path, modules: dict[str, str]) -> Path:
    manifest = ['spin_manifest_version = 2', '[application]', 'name = "wagi-limits"']
    for name, text in modules.items():
        wat.build_module(text, directory / f"{name}.wasm")
        manifest += ["[[trigger.http]]", f'route = "/{name}"', f'component = "{name}"',
                     'executor = { type = "wagi" }', f"[component.{name}]",
                     f'source = "{name}.wasm"']
    return write_app(directory, "\n".join(manifest) + "\n")


def test_endless_stdout_is_stopped_at_the_limit(tmp_path: Path, cache_dir: Path) -> None:
    _app(tmp_path, {"printer": wat.WASI_PRINT_FOREVER,
                    "ok": wat.wasi_print(b"Content-Type: text/plain\n\nok")})
    # A deadline far away: the limit, not the deadline, must stop the program.
    with HostProcess(["-f", str(tmp_path), "--cache-dir", str(cache_dir), "--quiet",
                      "--request-timeout", "10"]) as host, host.client() as client:
        before = max(memory_bytes(host.pid, "VmHWM"), memory_bytes(host.pid, "VmRSS"))
        started = time.monotonic()
        r = client.get("/printer")
        elapsed = time.monotonic() - started
        assert r.status_code == 500
        assert r.content == b""
        assert elapsed < 5, f"answered after {elapsed:.1f} s: not stopped at the limit"
        line = (f"Error processing request: component printer: the program wrote more than "
                f"{LIMIT} bytes to stdout")
        assert host.wait_for_output(line)
        # Unbounded capture reached ~470 MB in 4 s; stopped at the limit, the peak is
        # the captured bytes plus a copy or two.
        peak = memory_bytes(host.pid, "VmHWM")
        assert peak - before < 3 * LIMIT, f"peak {peak >> 20} MiB from {before >> 20} MiB"
        assert client.get("/ok").text == "ok"
        # And the captured output was freed, not kept until a later GC pass.
        assert memory_bytes(host.pid, "VmRSS") - before < LIMIT // 2
    assert host.output.count("Error processing request") == 1
    assert "Traceback" not in host.output


def test_sigterm_after_a_wagi_timeout_exits_cleanly(tmp_path: Path, cache_dir: Path) -> None:
    # The timed-out store used to live on (a trap's traceback cycle) until interpreter
    # exit; freeing it there ran a Python callback on a wasmtime tokio thread during
    # finalization, which aborted with "panic in a function that cannot unwind".
    _app(tmp_path, {"spinner": wat.WASI_PRINT_THEN_LOOP})
    host = HostProcess(["-f", str(tmp_path), "--cache-dir", str(cache_dir),
                       "--request-timeout", "1"])
    with host, host.client() as client:
        assert client.get("/spinner").status_code == 504
        assert host.wait_for_output("component spinner: deadline of 1 s exceeded")
        assert host.stop() == 0
    assert host.output_closed.wait(10)
    assert "[spinner] about to spin" in host.output  # stderr reached the log
    assert "Stopped." in host.output
    assert "panic" not in host.output.lower(), host.output


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(None)


def _executor(engine: Engine, directory: Path, program: str, limit: int) -> WagiExecutor:
    path = wat.build_module(program, directory / "program.wasm")
    return WagiExecutor(engine, "program", engine.load(path, "program"),
                        WagiProgram("${SCRIPT_NAME} ${ARGS}", {}),
                        ComponentStdio("program", None, None), max_output_bytes=limit)


@pytest.mark.parametrize("extra", [0, 1])
def test_limit_counts_every_stdout_byte(tmp_path: Path, engine: Engine, extra: int) -> None:
    limit = 100_000
    count = limit - wat.CGI_HEADER_BYTES + extra
    executor = _executor(engine, tmp_path, wat.wasi_print_bytes(count), limit)
    request = HttpRequest("GET", "http", None, "/", [], b"")
    if extra:
        with pytest.raises(OutputTooLarge, match=f"more than {limit} bytes"):
            executor.handle(request)
    else:
        assert executor.handle(request).body == b"x" * count


def test_stderr_without_newlines_is_echoed_in_pieces() -> None:
    class Echo:
        def __init__(self) -> None:
            self.written = 0

        def write(self, text: str) -> None:
            self.written += len(text)

        def flush(self) -> None:
            pass

    echo = Echo()
    stdio = ComponentStdio("c", None, echo)  # type: ignore[arg-type]
    for _ in range(100):
        stdio.stderr(b"x" * 10_000)
    assert len(stdio._partial["stderr"]) <= MAX_LINE_BYTES
    assert echo.written >= 1_000_000 - MAX_LINE_BYTES


def test_hostile_writes_get_errors_not_host_memory(tmp_path: Path, engine: Engine) -> None:
    executor = _executor(engine, tmp_path, wat.WASI_BAD_WRITES, 1_000_000)
    body = executor.handle(HttpRequest("GET", "http", None, "/", [], b"")).body
    fault, inval, badf = 21, 28, 8
    assert list(body[:4]) == [fault, inval, fault, badf]
    assert int.from_bytes(body[4:8], "little") == 1024 * 1024  # a short write, not 4 GB
