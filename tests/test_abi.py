"""host/runtime/abi.py: values cross the boundary intact (WAT echo component)."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import given, settings
from hypothesis import strategies as st

from host.runtime import abi


@pytest.fixture(scope="module")
def echo(wat_components: dict[str, Path]):
    engine = wasmtime.Engine()
    component = wc.Component.from_file(engine, str(wat_components["echo"]))
    export = abi.HandlerExport.find(component, engine)
    linker = wc.Linker(engine)
    linker.add_wasip2()

    def call(request: abi.HttpRequest) -> abi.HttpResponse:
        store = wasmtime.Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        instance = linker.instantiate(store, component)
        return abi.call_handler(export.bind(store, instance), request)

    return call


def request(body: bytes, headers: list[tuple[str, bytes]] | None = None,
            method: str = "POST") -> abi.HttpRequest:
    return abi.HttpRequest(method, "http", "localhost", "/p?q", headers or [], body)


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 300, 65536, 1 << 20])
def test_body_round_trips(echo, size: int) -> None:
    body = bytes((i * 7 + 3) % 256 for i in range(size))
    response = echo(request(body))
    assert response.status == 200
    assert response.body == body


def test_headers_round_trip_bytes_and_non_ascii_names(echo) -> None:
    headers = [("x-bin", bytes(range(256))), ("x-empty", b""), ("ünï", "ç".encode()),
               ("x-rep", b"1"), ("x-rep", b"2")]
    assert echo(request(b"", headers)).headers == headers


@pytest.mark.parametrize("method", ["GET", "PATCH", "PURGE", "M-SEARCH"])
def test_methods_including_extensions(echo, method: str) -> None:
    assert echo(request(b"x", method=method)).body == b"x"


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=5000),
       headers=st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=50)),
                        max_size=8))
def test_random_values_round_trip(echo, body: bytes, headers: list[tuple[str, bytes]]) -> None:
    response = echo(request(body, headers))
    assert (response.body, response.headers) == (body, headers)


def test_component_without_handler_is_reported(tmp_path: Path) -> None:
    from tests import wat

    path = wat.build_non_handler(tmp_path)
    engine = wasmtime.Engine()
    component = wc.Component.from_file(engine, str(path))
    with pytest.raises(abi.ExportNotFound):
        abi.HandlerExport.find(component, engine)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("component", ["echo", "trap"])
def test_calls_and_traps_leak_nothing(wat_components: dict[str, Path], component: str) -> None:
    """Each call moves 10 KiB in (320 KiB of C values) and, for echo, back out:
    a leak of either would grow RSS by hundreds of MiB over these calls."""
    engine = wasmtime.Engine()
    comp = wc.Component.from_file(engine, str(wat_components[component]))
    export = abi.HandlerExport.find(comp, engine)
    linker = wc.Linker(engine)
    linker.add_wasip2()
    req = request(bytes(10 * 1024), [("x-h", b"v" * 100)] * 10)

    def run(n: int) -> None:
        for _ in range(n):
            store = wasmtime.Store(engine)
            store.set_wasi(wasmtime.WasiConfig())
            handler = export.bind(store, linker.instantiate(store, comp))
            try:
                abi.call_handler(handler, req)
            except wasmtime.WasmtimeError:
                assert component == "trap"

    run(200)  # warm up allocators
    before = _rss_kib()
    run(1000)
    assert _rss_kib() - before < 64 * 1024
