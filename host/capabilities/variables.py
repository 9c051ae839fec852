"""Variables: app `[variables]` resolved by providers, served as `wasi:config/store`
and Spin's `fermyon:spin/variables@2.0.0`.

Resolution, per app variable, in Spin's order: `host up --variable` values,
the runtime config's `[[variables_provider]]` entries in file order (`static`, `env`), then the
default environment provider (`SPIN_VARIABLE_<NAME>` in the host's environment,
then in `./.env`), then the manifest's `default`. A required variable that no
provider knows stops start-up with its name.

A component sees only its own `variables` table, each entry a template over
app variables rendered once at start-up. Secret values never reach a log line.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime.component as wc

from host.capabilities import AppContext, Capability, Err, Factor, Ok
from host.errors import ConfigError
from host.manifest import Component, Manifest
from host.templates import render

CONFIG_STORE = "wasi:config/store@0.2.0-draft-2024-09-27"
SPIN_VARIABLES = "fermyon:spin/variables@2.0.0"
ENV_PREFIX = "SPIN_VARIABLE"

log = logging.getLogger("host.variables")

class Provider:
    """Knows values for some variables; `get` answers None for the others."""

    def get(self, name: str) -> str | None:
        raise NotImplementedError


@dataclass
class StaticProvider(Provider):
    values: Mapping[str, str]

    def get(self, name: str) -> str | None:
        return self.values.get(name)


class EnvProvider(Provider):
    """`<PREFIX>_<NAME>` from the process environment, then from a dotenv file."""

    def __init__(self, prefix: str = ENV_PREFIX, dotenv: Path | None = Path(".env"),
                 environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ
        self.dotenv = dotenv
        self._dotenv_values: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        key = f"{self.prefix}_{name.upper()}"
        if key in self.environ:
            return self.environ[key]
        return self._from_dotenv().get(key)

    def _from_dotenv(self) -> dict[str, str]:
        if self._dotenv_values is None:
            self._dotenv_values = {}
            if self.dotenv is not None and self.dotenv.is_file():
                self._dotenv_values = parse_dotenv(self.dotenv)
        return self._dotenv_values


def parse_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, `export ` prefixes and matching quotes allowed."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read dotenv file: {exc}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_variable_source(source: str) -> dict[str, str]:
    """One `--variable`, as `spin up` reads it: `KEY=VALUE`, `KEY=@FILE` (the file's
    text is the value), `@FILE.json` or `@FILE.toml` (a table of string values).
    Files are relative to the current directory. ValueError says what is wrong."""
    if source.startswith("@"):
        path = Path(source[1:])
        if path.suffix not in (".json", ".toml"):
            raise ValueError("variable files must end in .json or .toml")
        text = _read(path)
        try:
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ValueError(f"{path}: expected a table of NAME = \"string value\"")
        return values
    key, sep, value = source.partition("=")
    if not sep or not key:
        raise ValueError("expected KEY=VALUE, KEY=@FILE, @FILE.json or @FILE.toml")
    return {key: _read(Path(value[1:])) if value.startswith("@") else value}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def resolve_app_variables(manifest: Manifest, providers: Sequence[Provider]) -> dict[str, str]:
    """Every app variable's value; a required one without a value is a ConfigError."""
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, variable in manifest.variables.items():
        value = next((v for p in providers if (v := p.get(name)) is not None), None)
        if value is None:
            value = variable.default
        if value is None:
            missing.append(name)
        else:
            values[name] = value
    if missing:
        names = ", ".join(f'"{n}"' for n in missing)
        hint = " or ".join(f"{ENV_PREFIX}_{n.upper()}" for n in missing)
        raise ConfigError(
            f"{manifest.path}: required variable{'s' if len(missing) > 1 else ''} {names} "
            f"ha{'ve' if len(missing) > 1 else 's'} no value: set {hint} in the environment, "
            "or give a value in the runtime config's [[variables_provider]]"
        )
    return values


def invalid_name(name: str) -> str | None:
    """Why `name` is not a variable name, by Spin's rules (None: it is one).

    Lower-case ASCII letters, digits and single underscores, starting with a
    letter and ending with a letter or digit.
    """
    if not name:
        return f"{name!r}: must not be empty"
    bad = next((c for c in name if not (c.islower() and c.isascii() or c.isdigit()
                                        and c.isascii() or c == "_")), None)
    if bad is not None:
        return (f"{name!r}: invalid character {bad!r}. Variable names may contain only "
                "lower-case letters, numbers, and underscores.")
    if not ("a" <= name[0] <= "z"):
        return f"{name!r}: must start with a lowercase ASCII letter"
    if name[-1] == "_":
        return f"{name!r}: must end with a lowercase ASCII letter or digit"
    if "__" in name:
        return f"{name!r}: must not contain multiple consecutive underscores"
    return None


class Config(Capability):
    """One component's rendered `variables` table, through either interface.

    As in Spin: `wasi:config/store` answers `none` for a name that is invalid or
    not the component's; `fermyon:spin/variables` answers `invalid-name` or
    `undefined`.
    """

    interfaces = (CONFIG_STORE, SPIN_VARIABLES)

    def __init__(self, component_id: str, values: Mapping[str, str]) -> None:
        super().__init__(component_id)
        self.values = dict(values)
        self._all = list(self.values.items())

    def functions(self, interface: str) -> dict[str, Callable[..., Any]]:
        if interface == SPIN_VARIABLES:
            return {"get": self.spin_get}
        return {"get": self.get, "get-all": self.get_all}

    def get(self, store: Any, key: str) -> Ok:
        return Ok(self.values.get(key))

    def spin_get(self, store: Any, name: str) -> Ok | Err:
        reason = invalid_name(name)
        if reason is not None:
            return Err(wc.Variant("invalid-name", reason))
        value = self.values.get(name)
        if value is None:
            return Err(wc.Variant("undefined",
                                  f"no variable for {self.component_id!r}.{name!r}"))
        return Ok(value)

    def get_all(self, store: Any) -> Ok:
        return Ok(self._all)


class VariablesFactor(Factor):
    """Resolves every app variable at start-up; later factors read `values` too."""

    manifest_keys = ("variables",)
    runtime_config_keys = ("variables_provider",)

    def __init__(self, app: AppContext) -> None:
        super().__init__(app)
        given = app.settings.variables  # --variable: before every other provider
        for name in given:
            if name not in app.manifest.variables:
                log.warning('--variable %s: the app declares no variable "%s" ([variables] in '
                            "%s)", name, name, app.manifest.path)
        providers = [StaticProvider(given), *app.runtime_config.variables_providers,
                     EnvProvider()]
        self.values = resolve_app_variables(app.manifest, providers)

    def for_component(self, component: Component) -> Config:
        return Config(component.id, {name: render(template, self.values)
                                     for name, template in component.variables.items()})
