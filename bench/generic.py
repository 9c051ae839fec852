"""The naive path: wasmtime-py's generic component API, nothing from `host`.

`host.runtime.abi` patches wasmtime-py's `list<u8>` conversion when imported,
so this module (and the processes that use it: `bench.naive_app`,
`bench.generic_micro`) must never import `host`; `assert_host_free()` checks.
The engine settings match the host's (epoch interruption, cranelift speed) so
the comparison is about the call path, not the compiled code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import wasmtime
import wasmtime.component as wc

INCOMING_HANDLER = "spinhost:http/incoming-handler@0.1.0"
HANDLE = "handle"
_METHODS = {m.upper(): m for m in ("get", "head", "post", "put", "delete", "connect",
                                    "options", "trace", "patch")}

# Micro-benchmark cases, shared with bench.micro: (header count, body bytes).
CASES: list[tuple[int, int]] = [(h, b) for h in (0, 10) for b in (0, 10 * 1024, 1024 * 1024)]


def case_name(headers: int, body: int) -> str:
    size = "0 B" if body == 0 else f"{body // 1024} KiB" if body < 1024 * 1024 \
        else f"{body // (1024 * 1024)} MiB"
    return f"{headers} headers, {size}"


def case_request(headers: int, body: int) -> tuple[str, str, list[tuple[str, bytes]], bytes]:
    """(method, path, headers, body) for a case; both sides build the same values."""
    hdrs = [(f"x-bench-header-{i}", f"value {i} of a typical header".encode())
            for i in range(headers)]
    return ("POST" if body else "GET", "/bench?x=1", hdrs, bytes(range(256)) * (body // 256))


def assert_host_free() -> None:
    loaded = [m for m in sys.modules if m == "host" or m.startswith("host.")]
    if loaded:
        raise RuntimeError(f"generic path must not import host (loaded: {loaded})")


def request_record(method: str, path: str, headers: list[tuple[str, bytes]],
                   body: bytes, authority: str = "x") -> wc.Record:
    case = _METHODS.get(method)
    record = wc.Record()
    # WIT field names are kebab-case: set through __dict__.
    record.__dict__.update({
        "method": wc.Variant(case) if case else wc.Variant("other", method),
        "scheme": wc.Variant("HTTP"),
        "authority": authority,
        "path-with-query": path,
        "headers": headers,
        "body": body,
    })
    return record


class GenericHandler:
    """A component served the naive way: fresh Store + linker.instantiate per request."""

    def __init__(self, wasm: Path) -> None:
        assert_host_free()
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        self.engine = wasmtime.Engine(config)
        self.component = wc.Component(self.engine, wasm.read_bytes())
        self.linker = wc.Linker(self.engine)
        self.linker.add_wasip2()
        interface = self.component.get_export_index(INCOMING_HANDLER)
        if interface is None:
            raise RuntimeError(f"{wasm} does not export {INCOMING_HANDLER}")
        index = self.component.get_export_index(HANDLE, interface)
        if index is None:
            raise RuntimeError(f"{wasm} does not export {INCOMING_HANDLER}#{HANDLE}")
        self.index = index

    def instantiate(self) -> tuple[wasmtime.Store, wc.Func]:
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1 << 40)  # no ticker runs: never fires
        instance = self.linker.instantiate(store, self.component)
        func = instance.get_func(store, self.index)
        assert func is not None
        return store, func

    @staticmethod
    def call(store: wasmtime.Store, func: wc.Func, method: str, path: str,
             headers: list[tuple[str, bytes]], body: bytes
             ) -> tuple[int, list[tuple[str, bytes]], bytes]:
        value: Any = func(store, request_record(method, path, headers, body))
        result = (int(value.status), [(str(n), bytes(v)) for n, v in value.headers],
                  bytes(value.body))
        func.post_return(store)
        return result

    def handle(self, method: str, path: str, headers: list[tuple[str, bytes]],
               body: bytes) -> tuple[int, list[tuple[str, bytes]], bytes]:
        store, func = self.instantiate()
        return self.call(store, func, method, path, headers, body)
