"""Capabilities as factors (host/grants.py, host/capabilities/__init__.py): the registry,
the hooks every capability has, and a new capability added as one class plus one
registry line, through a real load of a WAT component."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc

from host import grants
from host.app import AppSettings, load_app
from host.capabilities import AppContext, Capability, Factor
from host.capabilities.variables import VariablesFactor
from host.grants import FACTORS, Grants
from host.manifest import Component, load_manifest
from host.runtime.abi import HttpRequest
from host.runtime.engine import Engine
from tests import wat
from tests.conftest import write_app

# [component] keys that are not a capability's grants.
NOT_GRANTS = {"id", "source", "description", "environment", "build"}


def test_the_registry_lists_every_capability_in_configuration_order() -> None:
    assert [f.__name__ for f in FACTORS] == [
        "VariablesFactor", "OutboundFactor", "KeyValueFactor", "SqliteFactor", "FilesFactor",
        "RedisFactor", "PostgresFactor", "MqttFactor", "BlobStoreFactor", "UnprovidedFactor"]
    assert all(issubclass(f, Factor) for f in FACTORS)


def test_every_grant_key_of_a_component_is_read_by_exactly_one_factor() -> None:
    claimed = [key for f in FACTORS for key in f.manifest_keys]
    assert len(claimed) == len(set(claimed)), claimed
    grant_keys = {f.name for f in dataclasses.fields(Component)} - NOT_GRANTS
    assert set(claimed) == grant_keys


def test_runtime_config_tables_are_claimed_by_their_factors() -> None:
    tables = {f.__name__: f.runtime_config_keys for f in FACTORS if f.runtime_config_keys}
    assert tables == {"VariablesFactor": ("variables_provider",),
                      "KeyValueFactor": ("key_value_store",),
                      "SqliteFactor": ("sqlite_database",),
                      "BlobStoreFactor": ("blob_store",)}


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_the_hook_interface() -> None:
    # Per app, per component, once at the end.
    assert _params(Factor.__init__) == ["self", "app"]
    assert _params(Factor.for_component) == ["self", "component"]
    assert _params(Factor.close) == ["self"]
    # Per component linker, then per instance.
    assert _params(Capability.link) == ["self", "linker", "component", "engine", "linked"]
    assert _params(Capability.prepare) == ["self", "wasi"]
    assert _params(Capability.release_store) == ["self", "key"]
    assert {f.name for f in dataclasses.fields(AppContext)} == {
        "manifest", "settings", "report", "factors"}


# ---------------------------------------------------------------------------
# A new capability: this class and one registry line (monkeypatched below)


class Recorder(Capability):
    calls: list[str] = []

    def link(self, linker: wc.Linker, component: wc.Component, engine: wasmtime.Engine,
             linked: set[str] | frozenset[str] = frozenset()) -> set[str]:
        self.calls.append("link")
        return super().link(linker, component, engine, linked)

    def prepare(self, wasi: wasmtime.WasiConfig) -> None:
        self.calls.append("prepare")

    def release_store(self, key: int) -> None:
        self.calls.append("release")
        super().release_store(key)


class FakeFactor(Factor):
    manifest_keys = ()

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        # An earlier factor's app state is there to read.
        self.variables = app.factor(VariablesFactor).values
        Recorder.calls.append(f"configure check_only={app.check_only}")

    def for_component(self, component: Component) -> Capability:
        Recorder.calls.append(f"for_component {component.id}")
        return Recorder(component.id)

    def close(self) -> None:
        Recorder.calls.append("close")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    monkeypatch.setattr(grants, "FACTORS", (*FACTORS, FakeFactor))
    Recorder.calls = []
    yield Recorder.calls


def echo_app(directory: Path) -> Path:
    directory.mkdir(parents=True)
    wat.build_component(wat.ECHO, directory / "echo.wasm")
    return write_app(directory, """spin_manifest_version = 2
[application]
name = "factors"
[variables]
greeting = { default = "hi" }
[[trigger.http]]
route = "/..."
component = "echo"
[component.echo]
source = "echo.wasm"
""")


def test_a_registered_factor_gets_every_hook_in_order(registered: list[str],
                                                       tmp_path: Path) -> None:
    manifest = load_manifest(echo_app(tmp_path / "app"))
    app = load_app(manifest, Engine(None), AppSettings(pool_size=1))
    try:
        fake = app.grants.app.factors[FakeFactor]
        assert isinstance(fake, FakeFactor) and fake.variables == {"greeting": "hi"}
        # No "prepare": the echo component imports no WASI, so its instances get no
        # WASI context to prepare (tests/test_files.py covers a component that does).
        assert registered[:3] == ["configure check_only=False", "for_component echo", "link"]
        assert "prepare" not in registered
        (executor,) = app.executors.values()
        registered.clear()
        response = executor.handle(HttpRequest("GET", "http", None, "/", [], b"x"))
        assert response.status == 200
        assert "release" in registered  # the request's instance, when it was discarded
    finally:
        app.close()
    assert registered[-1] == "close"


def test_check_only_reaches_the_factors(registered: list[str], tmp_path: Path) -> None:
    manifest = load_manifest(echo_app(tmp_path / "app"))
    Grants(manifest, AppSettings(check_only=True)).close()
    assert registered == ["configure check_only=True", "close"]


def test_a_factor_before_the_one_it_reads_is_a_clear_error(tmp_path: Path) -> None:
    manifest = load_manifest(echo_app(tmp_path / "app"))
    with pytest.raises(LookupError, match="VariablesFactor must come before"):
        Grants(manifest, AppSettings(), factors=[FakeFactor, VariablesFactor])
