"""host/capabilities/variables.py: providers, resolution order, templates, dotenv."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.capabilities.variables import (
    EnvProvider,
    StaticProvider,
    parse_dotenv,
    resolve_app_variables,
)
from host.errors import ConfigError
from host.manifest import parse_manifest
from host.templates import render

MANIFEST = """spin_manifest_version = 2
[application]
name = "v"
[variables]
host = { default = "default.example" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/"
static_response = { body = "x" }
"""


def manifest(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_manifest(MANIFEST, tmp_path / "spin.toml")


def test_providers_in_order_then_default(tmp_path: Path) -> None:
    first = StaticProvider({"token": "from-static"})
    env = EnvProvider(environ={"SPIN_VARIABLE_TOKEN": "from-env",
                               "SPIN_VARIABLE_HOST": "env.example"}, dotenv=None)
    assert resolve_app_variables(manifest(tmp_path), [first, env]) == {
        "token": "from-static", "host": "env.example"}
    only_env = EnvProvider(environ={"SPIN_VARIABLE_TOKEN": "t"}, dotenv=None)
    assert resolve_app_variables(manifest(tmp_path), [only_env])["host"] == "default.example"


def test_required_variable_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='required variable "token" has no value: set '
                                          "SPIN_VARIABLE_TOKEN"):
        resolve_app_variables(manifest(tmp_path), [EnvProvider(environ={}, dotenv=None)])


def test_dotenv(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('# comment\nexport SPIN_VARIABLE_TOKEN="quoted value"\n\nA=b=c\n')
    assert parse_dotenv(path) == {"SPIN_VARIABLE_TOKEN": "quoted value", "A": "b=c"}
    assert EnvProvider(environ={}, dotenv=path).get("token") == "quoted value"
    path.write_text("no equals sign\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=VALUE"):
        parse_dotenv(path)


def test_render() -> None:
    assert render("https://{{ host }}:{{port}}/x", {"host": "a", "port": "1"}) == "https://a:1/x"
