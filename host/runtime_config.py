"""`--runtime-config-file`: where an app's stores, databases and variables live.

The same app binary runs on a dev stack and a prod stack by switching this
file, never its code. Spin's shapes:

    state_dir = ".spin"                  # "" = no state dir (in-memory defaults)
    [key_value_store.LABEL]              # type "spin" (SQLite; path?) or "redis" (url)
    [sqlite_database.LABEL]              # type "spin" (path?)
    [blob_store.LABEL]                   # type "file_system" (path?) or "s3" (region,
                                         # bucket?, endpoint?, access_key?, secret_key?, token?)
    [[variables_provider]]               # type "static" (values) or "env" (prefix?, dotenv_path?)

Relative paths are resolved against the file's directory. Anything unknown,
missing or of the wrong type is a ConfigError naming the file, table and key.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.backends import KEY_VALUE_TYPES
from host.backends.blobs import BLOB_STORE_TYPES
from host.capabilities.variables import ENV_PREFIX, EnvProvider, Provider, StaticProvider
from host.errors import ConfigError

SQLITE_TYPES = ("spin",)
PROVIDER_TYPES = ("static", "env")

# Spin's runtime-config keys this host does not read, and what is true instead.
UNSUPPORTED = {
    "log_dir": "use `host up --log-dir DIR` (or SPIN_LOG_DIR) instead",
    "max_instance_memory": "use `host up --max-instance-memory MIB` instead",
    "outbound_http": "outbound HTTP always goes through one pooled client per host "
                     "process, with fixed limits (README, \"Capabilities\")",
    "outbound_networking": "this host has no network block list or socket cap; limit "
                           "destinations with allowed_outbound_hosts in spin.toml",
    "llm_compute": "this host has no AI inferencing",
    "outbound_mqtt": "MQTT payloads (2 MiB) and connections (16 per instance) have fixed "
                     "limits here (README, \"Outbound MQTT\")",
}


@dataclass(frozen=True)
class KeyValueStoreConfig:
    label: str
    type: str  # "spin" or "redis"
    path: Path | None = None  # spin: the SQLite file; None = in memory
    url: str | None = None  # redis


@dataclass(frozen=True)
class BlobStoreConfig:
    """`[blob_store.LABEL]`: the keys of Spin's file_system and s3 blob stores, plus
    `endpoint` for S3-compatible services other than AWS."""

    label: str
    type: str  # "file_system" or "s3"
    path: Path | None = None  # file_system: the container's directory
    region: str | None = None  # s3
    bucket: str | None = None  # s3; None = the label
    endpoint: str | None = None  # s3; None = AWS
    access_key: str | None = None  # s3; None (with secret_key) = the environment's
    secret_key: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class SqliteDatabaseConfig:
    label: str
    path: Path | None = None  # None = in memory


_UNSET: Any = object()


@dataclass(frozen=True)
class RuntimeConfig:
    path: Path | None = None
    #: `state_dir` from the file: _UNSET when absent, None for "" (no state dir)
    state_dir: Path | None = _UNSET
    key_value_stores: dict[str, KeyValueStoreConfig] = field(default_factory=dict)
    sqlite_databases: dict[str, SqliteDatabaseConfig] = field(default_factory=dict)
    variables_providers: tuple[Provider, ...] = ()
    blob_stores: dict[str, BlobStoreConfig] = field(default_factory=dict)

    @property
    def sets_state_dir(self) -> bool:
        return self.state_dir is not _UNSET


class _Where:
    def __init__(self, path: Path, table: str, data: Any) -> None:
        self.path, self.table = path, table
        if not isinstance(data, dict):
            raise self.fail(f"expected a table, got {type(data).__name__}")
        self.data = dict(data)

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.table}: {message}")

    def string(self, key: str, required: bool = False) -> str | None:
        value = self.data.pop(key, None)
        if value is None:
            if required:
                raise self.fail(f'missing required key "{key}"')
            return None
        if not isinstance(value, str):
            raise self.fail(f'"{key}" must be a string, got {value!r}')
        return value

    def file(self, key: str) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        if not value:
            raise self.fail(f'"{key}" must not be empty')
        return (self.path.parent / value).resolve()

    def expect(self, known: tuple[str, ...]) -> None:
        """Refuse keys not in `known` before reading any (a misspelt key is named
        as unknown, not reported as missing), suggesting what each may be a typo of."""
        unknown = [k for k in self.data if k not in known]
        if unknown:
            names = ", ".join(f'"{k}"' for k in unknown)
            hints = [f'"{close[0]}"' for k in unknown
                     if (close := difflib.get_close_matches(k, known, n=1))]
            hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
            raise self.fail(f"unknown key{'s' if len(unknown) > 1 else ''} {names}{hint}; "
                            f"expected keys: {', '.join(known)}")


def load_runtime_config(path: Path) -> RuntimeConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"runtime config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read runtime config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_runtime_config(data, path.resolve())


def parse_runtime_config(data: dict[str, Any], path: Path) -> RuntimeConfig:
    top = _Where(path, "top level", data)
    top.expect(("state_dir", "key_value_store", "sqlite_database", "blob_store",
                "variables_provider", "config_provider", *UNSUPPORTED))
    state_dir: Path | None = _UNSET
    if "state_dir" in top.data:
        raw = top.string("state_dir")
        state_dir = (path.parent / raw).resolve() if raw else None
    stores = {label: _kv_store(_Where(path, f"[key_value_store.{label}]", table), label)
              for label, table in _tables(top, "key_value_store").items()}
    databases = {label: _sqlite_db(_Where(path, f"[sqlite_database.{label}]", table), label)
                 for label, table in _tables(top, "sqlite_database").items()}
    blobs = {label: _blob_store(_Where(path, f"[blob_store.{label}]", table), label)
             for label, table in _tables(top, "blob_store").items()}
    providers: list[Provider] = []
    for key in ("variables_provider", "config_provider"):  # config_provider: Spin 1 alias
        entries = top.data.pop(key, [])
        if not isinstance(entries, list):
            raise top.fail(f'"{key}" must be an array of tables ([[{key}]])')
        for i, entry in enumerate(entries):
            providers.append(_provider(_Where(path, f"[[{key}]] #{i + 1}", entry)))
    for unsupported, instead in UNSUPPORTED.items():
        if unsupported in top.data:
            raise top.fail(f'"{unsupported}" is not supported by this host; remove it: {instead}')
    return RuntimeConfig(path, state_dir, stores, databases, tuple(providers), blobs)


def _tables(top: _Where, key: str) -> dict[str, Any]:
    value = top.data.pop(key, {})
    if not isinstance(value, dict):
        raise top.fail(f'"{key}" must be a table of [{key}.LABEL] tables')
    return value


def _kv_store(t: _Where, label: str) -> KeyValueStoreConfig:
    kind = t.string("type", required=True)
    if kind == "spin":
        t.expect(("type", "path"))
        config = KeyValueStoreConfig(label, kind, path=t.file("path"))
    elif kind == "redis":
        t.expect(("type", "url"))
        url = t.string("url", required=True) or ""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise t.fail(f'"url" must be a redis://, rediss:// or unix:// URL, got "{url}"')
        config = KeyValueStoreConfig(label, kind, url=url)
    else:
        raise t.fail(f'unsupported key-value store type "{kind}" '
                     f"(supported: {', '.join(KEY_VALUE_TYPES)})")
    return config


def _blob_store(t: _Where, label: str) -> BlobStoreConfig:
    kind = t.string("type", required=True) or ""
    if kind == "file_system":
        t.expect(("type", "path"))
        return BlobStoreConfig(label, kind, path=t.file("path"))
    if kind != "s3":
        raise t.fail(f'unsupported blob store type "{kind}" '
                     f"(supported: {', '.join(BLOB_STORE_TYPES)})")
    t.expect(("type", "region", "bucket", "endpoint", "access_key", "secret_key", "token"))
    region = t.string("region", required=True)
    endpoint = t.string("endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise t.fail(f'"endpoint" must be an http:// or https:// URL, got "{endpoint}"')
    config = BlobStoreConfig(
        label, kind, region=region, bucket=t.string("bucket"), endpoint=endpoint,
        access_key=t.string("access_key"), secret_key=t.string("secret_key"),
        token=t.string("token"))
    if (config.access_key is None) != (config.secret_key is None):
        raise t.fail('give both "access_key" and "secret_key", or neither (then the '
                     "host's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used)")
    return config


def _sqlite_db(t: _Where, label: str) -> SqliteDatabaseConfig:
    kind = t.string("type", required=True)
    if kind != "spin":
        raise t.fail(f'unsupported SQLite database type "{kind}" '
                     f"(supported: {', '.join(SQLITE_TYPES)})")
    t.expect(("type", "path"))
    config = SqliteDatabaseConfig(label, path=t.file("path"))
    return config


def _provider(t: _Where) -> Provider:
    kind = t.string("type", required=True)
    provider: Provider
    if kind == "static":
        t.expect(("type", "values"))
        values = t.data.pop("values", None)
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise t.fail('"values" must be a table of strings, e.g. values = { name = "x" }')
        provider = StaticProvider(values)
    elif kind == "env":
        t.expect(("type", "prefix", "dotenv_path"))
        prefix = t.string("prefix") or ENV_PREFIX
        dotenv = t.file("dotenv_path")
        provider = EnvProvider(prefix, dotenv)
    else:
        raise t.fail(f'unsupported variables provider type "{kind}" '
                     f"(supported: {', '.join(PROVIDER_TYPES)})")
    return provider
