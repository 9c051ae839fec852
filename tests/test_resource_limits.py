"""What a guest can make the host hold per instance is bounded: live handles per
resource kind (host/capabilities ResourceTable) and wasi:http header bytes per
request (host/wasip2 Tables.charge). Past the bound the host call traps; the
value that did not fit is closed, so nothing leaks."""

from __future__ import annotations

import pytest
import wasmtime

from host.capabilities import ResourceTable, store_key
from host.limits import MAX_LIVE_HANDLES, SqliteLimits
from host.wasip2.resources import Tables


def test_live_handles_per_store_are_capped_and_the_refused_value_closed() -> None:
    closed: list[str] = []
    table: ResourceTable[str] = ResourceTable("connection", close=closed.append, max_live=2)
    store, other = wasmtime.Store(), wasmtime.Store()
    first = table.add(store, "a")
    table.add(store, "b")
    with pytest.raises(wasmtime.WasmtimeError, match="holds 2 connection handles"):
        table.add(store, "c")
    assert closed == ["c"]
    table.add(other, "d")  # the cap is per store (per instance)
    table.drop(first.rep)
    table.add(store, "e")  # room again once the guest drops one
    table.release_store(store_key(store))
    assert sorted(closed) == ["a", "b", "c", "e"]


def test_default_caps() -> None:
    assert ResourceTable("bucket").max_live == MAX_LIVE_HANDLES
    assert SqliteLimits().max_open_connections == 16


def test_field_bytes_are_charged_per_request_until_released() -> None:
    tables, store = Tables(), wasmtime.Store()
    tables.charge(store, 600, 1000, "header fields")
    with pytest.raises(wasmtime.WasmtimeError, match="more than 1000 bytes of header fields"):
        tables.charge(store, 600, 1000, "header fields")
    tables.release_store(store_key(store))
    tables.charge(store, 600, 1000, "header fields")  # a new request starts from zero
