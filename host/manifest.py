"""spin.toml (manifest version 2, or version 1 converted) -> frozen dataclasses.

Parsing is strict, as Spin's serde `deny_unknown_fields` is: an unknown key or a
wrong type is an error naming the file, the table, the key and the value, so
nothing a user writes is silently ignored. Code after `load_manifest` trusts
these types and never re-validates.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from host import templates
from host.capabilities.allowed_hosts import AllowedHostError, check_entries
from host.errors import ManifestError
from host.fields import is_field_name, is_field_value

MANIFEST_FILE = "spin.toml"

Frozen = Mapping[str, str]


def _frozen(d: dict[str, str]) -> Frozen:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Variable:
    """An application variable from `[variables]`."""

    name: str
    default: str | None
    required: bool = False
    secret: bool = False
    description: str | None = None


@dataclass(frozen=True)
class FileSource:
    """Local component source: a path relative to the manifest directory."""

    path: Path


@dataclass(frozen=True)
class UrlSource:
    """`source = { url, digest }`: parsed, but downloading is not supported yet."""

    url: str
    digest: str


@dataclass(frozen=True)
class RegistrySource:
    """`source = { registry?, package, version }`: parsed, not supported yet."""

    package: str
    version: str
    registry: str | None = None


Source = FileSource | UrlSource | RegistrySource


@dataclass(frozen=True)
class FilePattern:
    """A `files` string entry: a glob or path relative to the app directory."""

    pattern: str


@dataclass(frozen=True)
class FileMapping:
    """A `files` table entry: a host path mounted at an absolute guest path."""

    source: str
    destination: str


FileMount = FilePattern | FileMapping


@dataclass(frozen=True)
class BuildConfig:
    """`[component.ID.build]`: shell commands run in `workdir`, in order."""

    commands: tuple[str, ...]
    workdir: str | None = None
    watch: tuple[str, ...] = ()


@dataclass(frozen=True)
class Component:
    """A `[component.ID]` table."""

    id: str
    source: Source
    description: str | None = None
    files: tuple[FileMount, ...] = ()
    exclude_files: tuple[str, ...] = ()
    environment: Frozen = field(default_factory=lambda: _frozen({}))
    allowed_outbound_hosts: tuple[str, ...] = ()
    key_value_stores: tuple[str, ...] = ()
    sqlite_databases: tuple[str, ...] = ()
    blob_containers: tuple[str, ...] = ()
    variables: Frozen = field(default_factory=lambda: _frozen({}))
    build: BuildConfig | None = None


@dataclass(frozen=True)
class Executor:
    """How a trigger's component is run: `http` (our WIT) or `wagi` (CGI)."""

    kind: Literal["http", "wagi"] = "http"
    argv: str = "${SCRIPT_NAME} ${ARGS}"
    entrypoint: str = "_start"


@dataclass(frozen=True)
class StaticResponse:
    """`static_response` (Spin 3.5+): the trigger answers without a component."""

    status: int = 200
    headers: Frozen = field(default_factory=lambda: _frozen({}))
    body: str = ""


@dataclass(frozen=True)
class HttpTrigger:
    """A `[[trigger.http]]` entry. `route` is None for `{ private = true }`."""

    id: str
    route: str | None
    component: str | None
    executor: Executor = Executor()
    static_response: StaticResponse | None = None

    @property
    def private(self) -> bool:
        return self.route is None


@dataclass(frozen=True)
class RedisTrigger:
    """A `[[trigger.redis]]` entry: messages on `channel` go to `component`.

    `channel` and `address` may hold `{{ variable }}` templates over app
    variables, rendered at start-up (host/app.py); `address` None means the
    app's `[application.trigger.redis] address`.
    """

    id: str
    channel: str
    component: str
    address: str | None = None


@dataclass(frozen=True)
class Application:
    name: str
    version: str | None = None
    description: str | None = None
    authors: tuple[str, ...] = ()
    base: str = "/"
    redis_address: str | None = None  # `[application.trigger.redis] address`


@dataclass(frozen=True)
class Manifest:
    path: Path
    application: Application
    variables: Mapping[str, Variable]
    triggers: tuple[HttpTrigger, ...]
    components: Mapping[str, Component]
    warnings: tuple[str, ...] = ()
    redis_triggers: tuple[RedisTrigger, ...] = ()

    @property
    def dir(self) -> Path:
        return self.path.parent


# ---------------------------------------------------------------------------
# Identifiers (Spin's KebabId and LowerSnakeId rules)

_ID_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


def id_error(value: str, sep: str, lower_only: bool) -> str | None:
    """Return why `value` is not a valid Spin id, or None if it is valid."""
    if not value:
        return "empty"
    other = "_" if sep == "-" else "-"
    if other in value:
        return f"words must be separated with '{sep}', not '{other}'"
    for word in value.split(sep):
        if not word:
            return f"'{sep}'-separated words must not be empty"
        if not word[0].isascii() or not word[0].isalpha():
            return f"'{sep}'-separated words must start with an ASCII letter; got '{word[0]}'"
        for ch in word:
            if not (ch.isascii() and ch.isalnum()):
                return f"'{sep}'-separated words may only contain alphanumeric ASCII; got '{ch}'"
        if lower_only:
            if word != word.lower():
                return "Lower-case identifiers must be all lowercase"
        elif word != word.lower() and word != word.upper():
            return f"'{sep}'-separated words must be all lowercase or all UPPERCASE"
    return None


_LABEL = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*\Z")


# ---------------------------------------------------------------------------
# The keys each table of spin.toml may hold: Spin's schema (manifest/src/schema,
# http/src/config.rs), so a manifest Spin accepts is never refused for a key name.
# Keys we accept but do not act on are listed too; the parser says which.

TOP_KEYS = ("spin_manifest_version", "application", "variables", "trigger", "component")
APPLICATION_KEYS = ("name", "version", "description", "authors", "targets", "trigger", "tool")
APP_HTTP_KEYS = ("base",)
APP_REDIS_KEYS = ("address",)
VARIABLE_KEYS = ("description", "default", "required", "secret")
COMPONENT_KEYS = (
    "source", "description", "variables", "environment", "files", "exclude_files",
    "allowed_http_hosts", "allowed_outbound_hosts", "key_value_stores", "sqlite_databases",
    "blob_containers",
    "ai_models", "targets", "build", "tool", "dependencies_inherit_configuration",
    "dependencies", "profile",
)
SOURCE_KEYS = ("url", "digest", "registry", "package", "version")
FILES_ENTRY_KEYS = ("source", "destination")
BUILD_KEYS = ("command", "workdir", "watch")
PROFILE_KEYS = ("source", "environment", "dependencies", "build")
PROFILE_BUILD_KEYS = ("command",)
HTTP_TRIGGER_KEYS = (
    "id", "component", "components", "dependencies", "route", "executor", "static_response",
)
REDIS_TRIGGER_KEYS = ("id", "component", "components", "dependencies", "channel", "address")
TRIGGER_TYPES = ("http", "redis")
EXECUTOR_KEYS = ("type", "argv", "entrypoint")
STATIC_RESPONSE_KEYS = ("status_code", "headers", "body")
V1_TOP_KEYS = ("spin_manifest_version", "spin_version", "name", "version", "description",
               "authors", "trigger", "variables", "component")
V1_TRIGGER_KEYS = ("type", "base", "address")
V1_COMPONENT_KEYS = (
    "id", "source", "description", "files", "exclude_files", "environment",
    "allowed_http_hosts", "allowed_outbound_hosts", "key_value_stores", "sqlite_databases",
    "ai_models", "build", "config", "trigger",
)
V1_TRIGGER_SETTINGS = {"http": ("base",), "redis": ("address",)}
V1_COMPONENT_TRIGGER_KEYS = {"http": ("route", "executor"), "redis": ("channel", "address")}


def unknown_key_message(where: str, key: str, value: Any, known: Collection[str]) -> str:
    """`<table> has unknown key 'x' (value 1); did you mean 'y'? Expected keys: ...`"""
    close = difflib.get_close_matches(key, list(known), n=1) or [
        k for k in sorted(known) if len(key) >= 3 and k.startswith(key)][:1]
    hint = f"did you mean '{close[0]}'? Expected" if close else "expected"
    return (f"{where} has unknown key '{key}' (value {_show(value)}); "
            f"{hint} keys: {', '.join(sorted(known))}")


# ---------------------------------------------------------------------------
# A strict table reader: unknown keys are refused before anything else is read
# (a misspelt key must not surface as "missing the required key"); every key is
# then taken once, and `finish` refuses leftovers (keys valid only in another
# variant, e.g. `argv` on an http executor).


class _Table:
    def __init__(self, file: Path, where: str, data: Any,
                 keys: Collection[str] | None = None) -> None:
        self.file = file
        self.where = where
        if not isinstance(data, dict):
            self.fail(f"{where} must be a table, got {_show(data)}")
        self.data: dict[str, Any] = dict(data)
        if keys is not None:
            for key in self.data:
                if key not in keys:
                    self.fail(unknown_key_message(where, key, self.data[key], keys))

    def fail(self, message: str) -> ManifestError:
        raise ManifestError(f"{self.file}: {message}")

    def key_error(self, key: str, message: str) -> ManifestError:
        return self.fail(f"{self.where} key '{key}': {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def take_any(self, key: str) -> Any:
        return self.data.pop(key, None)

    def string(self, key: str, required: bool = False) -> str | None:
        value = self.data.pop(key, None)
        if value is None:
            if required:
                self.fail(f"{self.where} is missing the required key '{key}'")
            return None
        if not isinstance(value, str):
            self.key_error(key, f"expected a string, got {_show(value)}")
        return str(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.data.pop(key, default)
        if not isinstance(value, bool):
            self.key_error(key, f"expected true or false, got {_show(value)}")
        return bool(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.pop(key, [])
        if not isinstance(value, list):
            self.key_error(key, f"expected an array of strings, got {_show(value)}")
        for item in value:
            if not isinstance(item, str):
                self.key_error(key, f"expected an array of strings, got element {_show(item)}")
        return tuple(value)

    def array(self, key: str) -> list[Any]:
        value = self.data.pop(key, [])
        if not isinstance(value, list):
            self.key_error(key, f"expected an array, got {_show(value)}")
        return list(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.data.pop(key, {})
        if not isinstance(value, dict):
            self.key_error(key, f"expected a table of strings, got {_show(value)}")
        for k, v in value.items():
            if not isinstance(v, str):
                self.key_error(key, f"value of '{k}' must be a string, got {_show(v)}")
        return dict(value)

    def table(self, key: str, where: str, required: bool = False,
              keys: Collection[str] | None = None) -> _Table | None:
        value = self.data.pop(key, None)
        if value is None:
            if required:
                self.fail(f"{self.where} is missing the required table '{key}'")
            return None
        return _Table(self.file, where, value, keys)

    def finish(self) -> None:
        if self.data:
            key = sorted(self.data)[0]
            self.fail(f"{self.where} has unknown key '{key}' (value {_show(self.data[key])})")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


# ---------------------------------------------------------------------------
# Loading


def find_manifest(from_path: str | Path | None) -> Path:
    """Resolve `-f`: a spin.toml file or a directory that contains one."""
    path = Path(from_path) if from_path else Path(MANIFEST_FILE)
    if path.is_dir():
        candidate = path / MANIFEST_FILE
        if not candidate.is_file():
            raise ManifestError(f"{path}: directory has no {MANIFEST_FILE}")
        return candidate.resolve()
    if not path.exists():
        if from_path is None:
            raise ManifestError(
                f"Default file '{MANIFEST_FILE}' not found. Run from an app directory "
                "or pass -f PATH (a spin.toml or a directory containing one)"
            )
        raise ManifestError(f"{path}: no such file or directory")
    return path.resolve()


def load_manifest(from_path: str | Path | None = None) -> Manifest:
    path = find_manifest(from_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    return parse_manifest(text, path)


def parse_manifest(text: str, path: Path) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: invalid TOML: {exc}") from None
    version = data.get("spin_manifest_version", data.get("spin_version"))
    if version is None:
        raise ManifestError(f"{path}: missing field `spin_manifest_version` (use 2)")
    warnings: list[str] = []
    if version == "1":
        data = _convert_v1(path, data)
        warnings.append(
            f"{path}: manifest version 1 is deprecated and was converted in memory; "
            "convert the file to `spin_manifest_version = 2` "
            "([application], [[trigger.http]], [component.ID])"
        )
    elif version != 2 or isinstance(version, bool):
        shown = f'"{version}"' if isinstance(version, str) else _show(version)
        raise ManifestError(
            f"{path}: invalid manifest version: {shown} "
            "(spin_manifest_version must be the integer 2, or the string \"1\")"
        )
    return _parse_v2(path, data, warnings)


def _parse_v2(path: Path, data: dict[str, Any], warnings: list[str]) -> Manifest:
    top = _Table(path, "top level", data, TOP_KEYS)
    top.take_any("spin_manifest_version")
    app_table = top.table("application", "[application]", required=True, keys=APPLICATION_KEYS)
    assert app_table is not None
    variables = _parse_variables(top.table("variables", "[variables]"))
    application = _parse_application(app_table, variables, warnings)
    comp_tables = top.table("component", "[component]")
    components: dict[str, Component] = {}
    if comp_tables is not None:
        for cid in list(comp_tables.data):
            err = id_error(cid, "-", lower_only=False)
            if err:
                top.fail(f"[component.{cid}]: invalid component id \"{cid}\": {err}")
            table = _Table(path, f"[component.{cid}]", comp_tables.data.pop(cid), COMPONENT_KEYS)
            components[cid] = _parse_component(cid, table, variables, warnings)
    trig = top.table("trigger", "[trigger]", required=True)
    assert trig is not None
    triggers, redis_triggers = _parse_triggers(trig, components, variables, warnings)
    top.finish()
    for trigger in redis_triggers:
        if trigger.address is None and application.redis_address is None:
            trig.fail(f"[[trigger.redis]] '{trigger.id}' has no Redis address: set address = "
                      '"redis://HOST:PORT" on it, or in [application.trigger.redis]')
    return Manifest(
        path=path,
        application=application,
        variables=MappingProxyType(variables),
        triggers=tuple(triggers),
        components=MappingProxyType(components),
        warnings=tuple(warnings),
        redis_triggers=tuple(redis_triggers),
    )


def _parse_application(t: _Table, variables: Mapping[str, Variable],
                       warnings: list[str]) -> Application:
    name = t.string("name", required=True)
    assert name is not None
    version = t.string("version")
    description = t.string("description")
    authors = t.strings("authors")
    t.array("targets")
    tool = t.take_any("tool")
    if tool is not None and not isinstance(tool, dict):
        t.key_error("tool", f"expected a table, got {_show(tool)}")
    base = "/"
    redis_address: str | None = None
    triggers = t.table("trigger", "[application.trigger]")
    if triggers is not None:
        http = triggers.table("http", "[application.trigger.http]", keys=APP_HTTP_KEYS)
        if http is not None:
            base = http.string("base") or "/"
            http.finish()
            if base != "/":
                http.key_error(
                    "base",
                    f'"{base}" is not supported: the deprecated trigger base must be "/"; '
                    "prepend it to each [[trigger.http]] route instead",
                )
            warnings.append(
                "[application.trigger.http] base is deprecated and has no effect; remove it"
            )
        redis = triggers.table("redis", "[application.trigger.redis]", keys=APP_REDIS_KEYS)
        if redis is not None:
            redis_address = _redis_address(redis, variables, required=True)
            redis.finish()
        triggers.finish()
    t.finish()
    return Application(name, version, description, authors, base, redis_address)


def _parse_variables(t: _Table | None) -> dict[str, Variable]:
    out: dict[str, Variable] = {}
    if t is None:
        return out
    for name in list(t.data):
        err = id_error(name, "_", lower_only=True)
        if err:
            t.fail(f"[variables] invalid variable name \"{name}\": {err}")
        v = _Table(t.file, f"[variables.{name}]", t.data.pop(name), VARIABLE_KEYS)
        description = v.string("description")
        default = v.string("default")
        required = v.boolean("required")
        secret = v.boolean("secret")
        v.finish()
        if required == (default is not None):
            v.fail(
                f"[variables.{name}] must be `required` OR have a `default` "
                f"(required = {_show(required)}, default = "
                f"{'unset' if default is None else _show(default)})"
            )
        out[name] = Variable(name, default, required, secret, description)
    return out


def check_template(t: _Table, key: str, template: str, variables: Mapping[str, Variable]) -> None:
    """Reject templates that are unbalanced or name an undeclared app variable."""
    rest = templates.TEMPLATE.sub("", template)
    if "{{" in rest or "}}" in rest:
        t.key_error(key, f'invalid variable template "{template}": unbalanced braces')
    for name in templates.names(template):
        if name not in variables:
            t.key_error(
                key,
                f'invalid variable template "{template}": unknown variable "{name}" '
                "(declare it in [variables])",
            )


def _parse_component(
    cid: str, t: _Table, variables: Mapping[str, Variable], warnings: list[str]
) -> Component:
    source = _parse_source(t)
    description = t.string("description")
    files = _parse_files(t)
    exclude_files = t.strings("exclude_files")
    environment = t.string_map("environment")
    hosts = list(t.strings("allowed_outbound_hosts"))
    try:
        converted = convert_http_hosts(t.strings("allowed_http_hosts"))
    except ValueError as exc:
        t.key_error("allowed_http_hosts", str(exc))
    if converted:
        hosts.extend(converted)
        warnings.append(
            f"[component.{cid}] allowed_http_hosts is deprecated: "
            f"replace it with allowed_outbound_hosts = {_toml_list(converted)}"
        )
    for host in hosts:
        check_template(t, "allowed_outbound_hosts", host, variables)
        if host == "insecure:allow-all":
            t.key_error(
                "allowed_outbound_hosts",
                '"insecure:allow-all" is not a valid entry; use "*://*:*"',
            )
    try:
        check_entries(hosts, {name: v.default for name, v in variables.items()})
    except AllowedHostError as exc:
        t.key_error("allowed_outbound_hosts", str(exc))
    kv = t.strings("key_value_stores")
    sqlite = t.strings("sqlite_databases")
    blobs = t.strings("blob_containers")
    for key, labels in (("key_value_stores", kv), ("sqlite_databases", sqlite),
                        ("blob_containers", blobs)):
        for label in labels:
            if not _LABEL.match(label):
                t.key_error(key, f'invalid label "{label}": expected kebab-case or snake_case')
    comp_vars = t.string_map("variables")
    for name, template in comp_vars.items():
        err = id_error(name, "_", lower_only=True)
        if err:
            t.key_error("variables", f'invalid variable name "{name}": {err}')
        check_template(t, "variables", template, variables)
    build = _parse_build(t.table("build", f"[component.{cid}.build]", keys=BUILD_KEYS))
    t.array("targets")  # deployment targets (`spin deploy`): nothing to check when serving
    for unsupported in ("ai_models",):
        if t.strings(unsupported):
            t.key_error(unsupported, "AI models are not supported by this host; remove the key")
    if t.take_any("dependencies"):
        t.key_error("dependencies", "not supported by this host yet; remove the key")
    _check_profiles(t, cid)
    if t.has("dependencies_inherit_configuration"):
        t.boolean("dependencies_inherit_configuration")
    t.take_any("tool")  # [component.ID.tool.*] is for external tools; Spin ignores it too.
    t.finish()
    return Component(
        id=cid,
        source=source,
        description=description,
        files=files,
        exclude_files=exclude_files,
        environment=_frozen(environment),
        allowed_outbound_hosts=tuple(hosts),
        key_value_stores=kv,
        sqlite_databases=sqlite,
        blob_containers=blobs,
        variables=_frozen(comp_vars),
        build=build,
    )


def _check_profiles(t: _Table, cid: str) -> None:
    """`[component.ID.profile.NAME]` is for `spin up --profile`, which this host lacks:
    the default profile always runs, as in Spin without the flag. Only key names are
    checked, so a misspelt override is not silently kept for later."""
    profiles = t.table("profile", f"[component.{cid}.profile]")
    if profiles is None:
        return
    for name in list(profiles.data):
        where = f"[component.{cid}.profile.{name}]"
        profile = _Table(t.file, where, profiles.data.pop(name), PROFILE_KEYS)
        profile.table("build", f"{where[:-1]}.build]", keys=PROFILE_BUILD_KEYS)


def _parse_source(t: _Table) -> Source:
    value = t.take_any("source")
    if value is None:
        t.fail(f"{t.where} is missing the required key 'source'")
    if isinstance(value, str):
        if not value:
            t.key_error("source", "must not be empty")
        return FileSource(Path(value))
    if isinstance(value, dict):
        s = _Table(t.file, f"{t.where} source", value, SOURCE_KEYS)
        if s.has("url"):
            url = s.string("url", required=True)
            digest = s.string("digest", required=True)
            s.finish()
            assert url is not None and digest is not None
            if not digest.startswith("sha256:"):
                t.key_error("source", f"invalid `digest` \"{digest}\"; must start with 'sha256:'")
            return UrlSource(url, digest)
        package = s.string("package", required=True)
        version = s.string("version", required=True)
        registry = s.string("registry")
        s.finish()
        assert package is not None and version is not None
        return RegistrySource(package, version, registry)
    t.key_error("source", f"expected a path string or a table, got {_show(value)}")
    raise AssertionError  # unreachable


def _parse_files(t: _Table) -> tuple[FileMount, ...]:
    value = t.take_any("files")
    if value is None:
        return ()
    if not isinstance(value, list):
        t.key_error("files", f"expected an array, got {_show(value)}")
    out: list[FileMount] = []
    for item in value:
        if isinstance(item, str):
            if item in (".", "..", ""):
                t.key_error("files", f'"{item}" is not allowed; name files or globs')
            out.append(FilePattern(item))
        elif isinstance(item, dict):
            m = _Table(t.file, f"{t.where} files entry", item, FILES_ENTRY_KEYS)
            source = m.string("source", required=True)
            destination = m.string("destination", required=True)
            m.finish()
            assert source is not None and destination is not None
            if not destination.startswith("/"):
                t.key_error("files", f'destination "{destination}" must be an absolute path')
            out.append(FileMapping(source, destination))
        else:
            t.key_error("files", f"entries must be strings or tables, got {_show(item)}")
    return tuple(out)


def _parse_build(t: _Table | None) -> BuildConfig | None:
    if t is None:
        return None
    command = t.take_any("command")
    if isinstance(command, str):
        commands: tuple[str, ...] = (command,)
    elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        commands = tuple(command)
    else:
        t.key_error("command", f"expected a string or an array of strings, got {_show(command)}")
    workdir = t.string("workdir")
    if workdir is not None and Path(workdir).is_absolute():
        t.key_error(
            "workdir",
            f'"{workdir}": The workdir specified in the application file must be relative.',
        )
    watch = t.strings("watch")
    t.finish()
    return BuildConfig(commands, workdir, watch)


def _parse_triggers(
    t: _Table,
    components: dict[str, Component],
    variables: Mapping[str, Variable],
    warnings: list[str],
) -> tuple[list[HttpTrigger], list[RedisTrigger]]:
    for kind in t.data:
        if kind not in TRIGGER_TYPES:
            t.fail(f"[[trigger.{kind}]]: trigger type '{kind}' is not supported "
                   "(only http and redis)")
    http = _trigger_tables(t, "http", HTTP_TRIGGER_KEYS)
    redis = _trigger_tables(t, "redis", REDIS_TRIGGER_KEYS)
    if not http and not redis:
        t.fail("[[trigger.http]] must be a non-empty array of tables")
    explicit = [tid for _, tid in http + redis if tid]
    for given in explicit:
        if explicit.count(given) > 1:
            kind = "http" if any(i == given for _, i in http) else "redis"
            t.fail(f'[[trigger.{kind}]]: duplicate trigger id "{given}"')
    used_ids = set(explicit)
    triggers: list[HttpTrigger] = []
    counter = 0
    for tt, tid in http:
        comp_value = tt.take_any("component")
        if tid is None:
            if isinstance(comp_value, str):
                tid = f"{comp_value}-http-trigger"
                # Several triggers on one component: keep ids unique (they key executors).
                k = 2
                while tid in used_ids:
                    tid = f"{comp_value}-http-trigger{k}"
                    k += 1
            else:
                counter += 1
                while f"http-trigger{counter}" in used_ids:
                    counter += 1
                tid = f"http-trigger{counter}"
            used_ids.add(tid)
        tt.where = f"[[trigger.http]] '{tid}'"
        static = _parse_static_response(tt)
        component_id = _trigger_component(tt, tid, comp_value, components, variables, warnings)
        if (component_id is None) == (static is None):
            tt.fail(
                "Triggers must specify either component or static_response - "
                f"{tid} has {'neither' if component_id is None else 'both'}"
            )
        route = _parse_route(tt, tid)
        executor = _parse_executor(tt, tid)
        _finish_trigger(tt)
        triggers.append(HttpTrigger(tid, route, component_id, executor, static))
    redis_triggers = _parse_redis_triggers(redis, used_ids, components, variables, warnings)
    t.finish()
    return triggers, redis_triggers


def _trigger_tables(t: _Table, kind: str, keys: Collection[str]) -> list[tuple[_Table, str | None]]:
    """`[[trigger.KIND]]` entries as strict tables, with their explicit ids."""
    if kind not in t.data:
        return []
    entries = t.data.pop(kind)
    if not isinstance(entries, list) or not entries:
        t.fail(f"[[trigger.{kind}]] must be a non-empty array of tables")
    out = []
    for n, raw in enumerate(entries, start=1):
        tt = _Table(t.file, f"[[trigger.{kind}]] #{n}", raw, keys)
        out.append((tt, tt.string("id")))
    return out


def _trigger_component(tt: _Table, tid: str, comp_value: Any, components: dict[str, Component],
                       variables: Mapping[str, Variable], warnings: list[str]) -> str | None:
    """A trigger's `component`: an id, or an inline table added to `components` under a
    generated id (Spin's normalisation: `TRIGGER-ID-component`, else `inline-componentN`)."""
    if isinstance(comp_value, str):
        if comp_value not in components:
            tt.key_error("component", f'no such component "{comp_value}"')
        return comp_value
    if isinstance(comp_value, dict):
        inline_id = f"{tid}-component"
        if id_error(inline_id, "-", False) or inline_id in components:
            k = 1
            while f"inline-component{k}" in components:
                k += 1
            inline_id = f"inline-component{k}"
        ct = _Table(tt.file, f"{tt.where} inline component", comp_value, COMPONENT_KEYS)
        components[inline_id] = _parse_component(inline_id, ct, variables, warnings)
        return inline_id
    if comp_value is not None:
        tt.key_error("component", f"expected a component id or a table, got {_show(comp_value)}")
    return None


def _finish_trigger(tt: _Table) -> None:
    tt.take_any("components")  # Spin's, for trigger types that use several; none here does
    if tt.take_any("dependencies"):
        tt.key_error("dependencies", "trigger dependencies are not supported by this host "
                     "yet; remove the key")
    tt.finish()


def _parse_redis_triggers(
    entries: list[tuple[_Table, str | None]],
    used_ids: set[str],
    components: dict[str, Component],
    variables: Mapping[str, Variable],
    warnings: list[str],
) -> list[RedisTrigger]:
    """`[[trigger.redis]]`: `channel` and `component` required, `address` optional (Spin's
    trigger-redis config); ids as Spin generates them (`COMPONENT-redis-trigger`, else
    `redis-triggerN`)."""
    triggers: list[RedisTrigger] = []
    counter = 1
    for tt, tid in entries:
        comp_value = tt.take_any("component")
        if tid is None:
            tid = f"{comp_value}-redis-trigger" if isinstance(comp_value, str) else None
            if tid is None or tid in used_ids:
                while f"redis-trigger{counter}" in used_ids:
                    counter += 1
                tid = f"redis-trigger{counter}"
            used_ids.add(tid)
        tt.where = f"[[trigger.redis]] '{tid}'"
        component_id = _trigger_component(tt, tid, comp_value, components, variables, warnings)
        if component_id is None:
            tt.fail(f"{tt.where} is missing the required key 'component'")
        assert component_id is not None
        channel = tt.string("channel", required=True)
        assert channel is not None
        check_template(tt, "channel", channel, variables)
        address = _redis_address(tt, variables, required=False)
        _finish_trigger(tt)
        trigger = RedisTrigger(tid, channel, component_id, address)
        same = next((other for other in triggers if (other.channel, other.component,
                     other.address) == (channel, component_id, address)), None)
        if same is not None:
            warnings.append(
                f"[[trigger.redis]] '{tid}' repeats '{same.id}' (channel \"{channel}\", "
                f"component \"{component_id}\"): each message is handled twice")
        triggers.append(trigger)
    return triggers


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _redis_address(t: _Table, variables: Mapping[str, Variable], required: bool) -> str | None:
    address = t.string("address", required=required)
    if address is None:
        return None
    check_template(t, "address", address, variables)
    if not templates.names(address):  # templated ones are checked once rendered
        problem = redis_address_problem(address)
        if problem is not None:
            t.key_error("address", problem)
    return address


def redis_address_problem(address: str) -> str | None:
    """Why `address` is not a Redis URL redis-py can connect to (None: it is one).
    The message shows the address with any password hidden."""
    from host.backends.redis import redact_url  # redis-py: only for apps with Redis triggers

    shown = f'"{redact_url(address)}"'
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        return f"{shown} is not a valid URL ({exc})"
    if parts.scheme not in REDIS_SCHEMES:
        return (f"{shown} is not a Redis address: expected redis://HOST[:PORT][/DB], "
                "rediss://... (TLS) or unix:///PATH")
    if parts.scheme == "unix":
        return None if parts.path else f"{shown} names no socket path"
    if not parts.hostname:
        return f"{shown} names no host"
    if port == 0:
        return f"{shown}: port 0 is not a port"
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        return f"{shown}: the path must be a database number, e.g. /0"
    return None


def _parse_route(tt: _Table, tid: str) -> str | None:
    value = tt.take_any("route")
    if value is None:
        tt.fail(f"{tt.where} is missing the required key 'route'")
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"private"} and value["private"] is True:
        return None
    if isinstance(value, dict) and value.get("private") is False:
        tt.key_error(
            "route",
            f"route must be a string pattern or '{{ private = true }}': '{tid}' has "
            "{ private = false }",
        )
    tt.key_error(
        "route", f"route must be a string pattern or '{{ private = true }}', got {_show(value)}"
    )
    raise AssertionError  # unreachable


def _parse_executor(tt: _Table, tid: str) -> Executor:
    e = tt.table("executor", f"{tt.where} executor", keys=EXECUTOR_KEYS)
    if e is None:
        return Executor()
    kind = e.string("type", required=True)
    if kind in ("http", "spin"):
        e.finish()
        return Executor("http")
    if kind == "wagi":
        argv = e.string("argv") or "${SCRIPT_NAME} ${ARGS}"
        entrypoint = e.string("entrypoint") or "_start"
        e.finish()
        if entrypoint != "_start":
            e.fail(
                f"{tt.where}: Wagi component '{tid}' cannot use deprecated 'entrypoint' field "
                f'(got "{entrypoint}"; only "_start" is supported)'
            )
        return Executor("wagi", argv, entrypoint)
    e.key_error("type", f'unknown executor type "{kind}" (expected "http", "spin" or "wagi")')
    raise AssertionError  # unreachable


def _parse_static_response(tt: _Table) -> StaticResponse | None:
    s = tt.table("static_response", f"{tt.where} static_response", keys=STATIC_RESPONSE_KEYS)
    if s is None:
        return None
    status = s.take_any("status_code")
    if status is None:
        status = 200
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999:
        s.key_error("status_code", f"expected an HTTP status code, got {_show(status)}")
    headers = s.string_map("headers")
    for name, value in headers.items():
        if not is_field_name(name.encode()) or not is_field_value(value.encode()):
            s.key_error("headers", f"invalid HTTP header {name!r}: {value!r}")
    body = s.string("body") or ""
    s.finish()
    return StaticResponse(status, _frozen(headers), body)


# ---------------------------------------------------------------------------
# Manifest version 1, converted as Spin's compat layer does


_DEFAULT_PORTS = {"http": 80, "https": 443}


def convert_http_hosts(entries: tuple[str, ...] | list[str]) -> list[str]:
    """Deprecated `allowed_http_hosts` -> `allowed_outbound_hosts` entries, as Spin does.

    An entry names a host and an optional port; a scheme, if written, must be
    http or https and only says how to read the rest: every host gets both
    schemes (the old key never distinguished them). `insecure:allow-all`
    anywhere allows every HTTP destination. Raises ValueError naming a bad entry.
    """
    if "insecure:allow-all" in entries:
        return ["http://*:*", "https://*:*", "http://self"]
    out: list[str] = []
    for entry in entries:
        host, port = _http_host(entry)
        if host == "self":
            out.append("http://self")
        else:
            suffix = "" if port is None else f":{port}"
            out.extend([f"http://{host}{suffix}", f"https://{host}{suffix}"])
    return out


def _http_host(entry: str) -> tuple[str, int | None]:
    # "localhost:3001" would parse as scheme "localhost": only "//" marks a scheme.
    schemed = "//" in entry
    parts = urlsplit(entry if schemed else f"http://{entry}")
    if schemed and parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f'"{entry}" is not a host or host:port (scheme must be http or https)')
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f'"{entry}" is not a host or host:port (bad port)') from None
    host = parts.hostname
    if not host:
        raise ValueError(f'"{entry}" has no host name')
    if len(parts.path) > 1:  # a trailing "/" is allowed
        raise ValueError(f'"{entry}" contains a path; give a host and an optional port only')
    if port == _DEFAULT_PORTS[parts.scheme]:
        port = None  # Spin drops a port that is the scheme's default
    return (f"[{host}]" if ":" in host else host), port


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _convert_v1(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    top = _Table(path, "top level (manifest v1)", data, V1_TOP_KEYS)
    top.take_any("spin_manifest_version")
    top.take_any("spin_version")
    app: dict[str, Any] = {"name": top.string("name", required=True)}
    for key in ("version", "description"):
        value = top.string(key)
        if value is not None:
            app[key] = value
    if top.has("authors"):
        app["authors"] = list(top.strings("authors"))
    trigger = top.table("trigger", "[trigger] (manifest v1)", required=True, keys=V1_TRIGGER_KEYS)
    assert trigger is not None
    kind = trigger.string("type", required=True)
    if kind not in TRIGGER_TYPES:
        trigger.key_error("type",
                          f'trigger type "{kind}" is not supported (only "http" and "redis")')
    assert kind is not None
    # The rest of [trigger] is the type's app-wide settings (Spin: trigger_global_configs).
    settings = {key: trigger.data.pop(key) for key in V1_TRIGGER_SETTINGS[kind]
                if key in trigger.data}
    trigger.finish()
    if settings:
        app["trigger"] = {kind: settings}
    out: dict[str, Any] = {"spin_manifest_version": 2, "application": app}
    variables = top.take_any("variables")
    if variables is not None:
        out["variables"] = variables
    comps = top.take_any("component") or []
    if not isinstance(comps, list):
        top.key_error("component", "expected an array of [[component]] tables")
    components: dict[str, Any] = {}
    triggers: list[dict[str, Any]] = []
    for n, raw in enumerate(comps, start=1):
        c = _Table(path, f"[[component]] #{n} (manifest v1)", raw, V1_COMPONENT_KEYS)
        cid_raw = c.string("id", required=True)
        assert cid_raw is not None
        cid = cid_raw.replace("_", "-").lower()
        ctrig = c.table("trigger", f"[component.trigger] of '{cid_raw}'", required=True,
                        keys=V1_COMPONENT_TRIGGER_KEYS[kind])
        assert ctrig is not None
        trig: dict[str, Any] = {"id": f"trigger-{cid}", "component": cid}
        for key in list(ctrig.data):  # the trigger type's keys, checked as version 2's
            trig[key] = ctrig.data.pop(key)
        ctrig.finish()
        comp: dict[str, Any] = {}
        for key, value in c.data.items():
            comp["variables" if key == "config" else key] = value
        if "allowed_outbound_hosts" not in comp:
            comp["allowed_outbound_hosts"] = ["redis://*:*", "mysql://*:*", "postgres://*:*"]
        components[cid] = comp
        triggers.append(trig)
    top.finish()
    out["component"] = components
    out["trigger"] = {kind: triggers}
    return out
