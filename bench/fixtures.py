"""What the benchmarks serve: the WAT test components and the example apps.

WAT components are assembled with wasm-tools into a work directory (as the
tests do); the example apps come from `tests.apps.built_app` (cached builds).
No `host` import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests import wat
from tests.apps import OUTPUTS, built_app

EXAMPLE_APPS = {"hello-python": "/hello", "hello-ts": "/hello-ts", "echo": "/echo"}

_WAT_MANIFEST = """spin_manifest_version = 2
[application]
name = "bench-wat"
version = "0.1.0"

[[trigger.http]]
route = "/fixed"
component = "fixed"

[component.fixed]
source = "fixed.wasm"
"""


@dataclass(frozen=True)
class Fixtures:
    work: Path
    fixed_wasm: Path  # answers 200 "fixed response"
    echo_wasm: Path  # answers 200 with the request's headers and body
    wat_app: Path  # a spin.toml directory serving fixed.wasm at /fixed
    burn_app: Path  # the same, its component computing ~10 ms first (wat.burn)

    def app_dir(self, name: str) -> Path:
        return built_app(name)

    def app_wasm(self, name: str) -> Path:
        return built_app(name) / OUTPUTS[name]


def prepare(work: Path) -> Fixtures:
    wat_dir = work / "wat"
    wat_dir.mkdir(parents=True, exist_ok=True)
    fixed = wat.build_component(wat.FIXED, wat_dir / "fixed.wasm")
    echo = wat.build_component(wat.ECHO, wat_dir / "echo.wasm")
    (wat_dir / "spin.toml").write_text(_WAT_MANIFEST)
    burn_dir = work / "burn"
    burn_dir.mkdir(parents=True, exist_ok=True)
    wat.build_component(wat.burn(30_000_000), burn_dir / "fixed.wasm")
    (burn_dir / "spin.toml").write_text(_WAT_MANIFEST)
    return Fixtures(work, fixed, echo, wat_dir, burn_dir)
