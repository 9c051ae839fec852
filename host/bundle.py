"""OCI runtime bundles: what a containerd shim hands the host to start a container.

A bundle is a directory with `config.json` (the OCI runtime spec) and the
container's root filesystem (`root.path`, usually `rootfs/`). For a Spin app
the root holds `/spin.toml` (and, optionally, `/runtime-config.toml`), as
containerd-shim-spin expects. `enter` makes the host the container's process,
as a shim would start it: `process.env` becomes its environment (so
`SPIN_HTTP_LISTEN_ADDR`, `SPIN_VARIABLE_*` and `SPINHOST_*` settings apply),
and `process.cwd` its working directory, inside the root. `defaults` are the
`host up` settings a shim implies (listen address, state dir, no log files,
a worker process per usable core).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host import logs
from host.errors import ConfigError, NotASpinApp
from host.limits import usable_cpus

SHIM_LISTEN = "0.0.0.0:80"  # containerd-shim-spin's default


@dataclass(frozen=True)
class Bundle:
    path: Path
    rootfs: Path
    manifest: Path
    env: dict[str, str]
    cwd: Path
    runtime_config: Path | None  # /runtime-config.toml when present


def read_bundle(path: Path) -> Bundle:
    config_path = path / "config.json"
    try:
        spec = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not an OCI runtime bundle (no config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read the runtime spec: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{config_path}: expected a JSON object")
    root = _table(spec, "root", config_path)
    root_path = root.get("path", "rootfs")
    if not isinstance(root_path, str) or not root_path:
        raise ConfigError(f"{config_path}: root.path must be a non-empty string")
    rootfs = (path / root_path).resolve()
    if not rootfs.is_dir():
        raise ConfigError(f"{config_path}: root.path {root_path!r}: {rootfs} is not a directory")
    process = _table(spec, "process", config_path)
    env = _environment(process.get("env", []), config_path)
    cwd = _inside(rootfs, process.get("cwd", "/"), config_path)
    manifest = rootfs / "spin.toml"
    if not manifest.is_file():
        raise NotASpinApp(
            f"{path}: this container is not a Spin app: no spin.toml at the root of its "
            f"filesystem ({rootfs}); build app images with `host oci build`"
        )
    runtime_config = rootfs / "runtime-config.toml"
    return Bundle(path, rootfs, manifest, env, cwd,
                  runtime_config if runtime_config.is_file() else None)


def _table(spec: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be an object")
    return value


def _environment(items: Any, where: Path) -> dict[str, str]:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: process.env must be a list of KEY=VALUE strings")
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: process.env entry {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _inside(rootfs: Path, cwd: Any, where: Path) -> Path:
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError(f"{where}: process.cwd must be an absolute path, got {cwd!r}")
    resolved = (rootfs / cwd.lstrip("/")).resolve()
    if resolved != rootfs and rootfs not in resolved.parents:
        raise ConfigError(f"{where}: process.cwd {cwd!r} leaves the container's root")
    return resolved


def variables_from_plain_env(app_variables: list[str], env: dict[str, str]) -> dict[str, str]:
    """The shim's convenience: container env `FOO` also sets app variable `foo`.

    Only for declared app variables, and never over an explicit SPIN_VARIABLE_FOO.
    """
    out = {}
    for name in app_variables:
        plain = name.upper()
        if plain in env and f"SPIN_VARIABLE_{plain}" not in env:
            out[f"SPIN_VARIABLE_{plain}"] = env[plain]
    return out


def enter(bundle: Bundle, app_variables: list[str]) -> None:
    """Become the container's process: its environment and working directory.

    A shim starts the process with these; run-bundle is that process already.
    Components never see the host's environment (only their manifest's).
    """
    os.environ.update(bundle.env)
    os.environ.update(variables_from_plain_env(app_variables, dict(os.environ)))
    os.chdir(bundle.cwd)


def defaults(bundle: Bundle) -> dict[str, str]:
    """`host up` settings a shim implies, by Config field; flags and variables win."""
    settings = {"listen": SHIM_LISTEN, "log_dir": "", "state_dir": _state_dir(bundle),
                "source": str(bundle.manifest), "workers": str(usable_cpus())}
    if bundle.runtime_config is not None:
        settings["runtime_config_file"] = str(bundle.runtime_config)
    return settings


def _state_dir(bundle: Bundle) -> str:
    """`/.spin` in the container, as the shim does; none on a read-only root."""
    state = bundle.rootfs / ".spin"
    try:
        state.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=state):
            pass
    except OSError as exc:
        logs.info(f"{state} is not writable ({exc.strerror}): default key-value and SQLite "
                  "stores are in memory; point them elsewhere with a runtime config")
        return ""
    return str(state)
