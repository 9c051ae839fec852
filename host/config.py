"""Every knob of `host up`, `host check` and `host run-bundle`, resolved once.

A `Config` is built from three layers, highest first: a flag on the command
line, its `SPINHOST_<FLAG>` variable (`--max-body-bytes` ->
`SPINHOST_MAX_BODY_BYTES`; repeatable flags take a comma-separated list), the
flag's older Spin variable (`SPIN_HTTP_LISTEN_ADDR`, ...), then the default
(limits come from `host/limits.py`). `Config.load` converts and validates every
value once; a bad one is a one-line `ConfigError` naming the flag or the
variable and its value. A command reads only its own flags and variables, so a
bad `SPINHOST_MAX_BODY_BYTES` stops `host up` (exit 2) and nothing else.

`OPTIONS` is the single list of flags: `host/cli.py` makes its parsers from it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from host import logs
from host.affinity import CPU_PINNING
from host.app import AppSettings
from host.capabilities.sqlite import SqliteStatement
from host.capabilities.variables import read_variable_source
from host.errors import ConfigError, VariableError
from host.limits import (
    DEFAULT_POOL_SIZE,
    DEFAULT_WORKER_TIMEOUT_SECONDS,
    DEFAULT_WORKERS,
    INSTANCE_ALLOCATORS,
    MAX_WORKERS,
    WORKER_HEARTBEAT_SECONDS,
    BlobStoreLimits,
    HttpLimits,
    KeyValueLimits,
    Limits,
    MiB,
    RedisTriggerLimits,
    default_max_concurrent,
)
from host.manifest import Manifest
from host.oci.store import default_cache_dir as oci_default_cache_dir
from host.runtime.engine import default_cache_dir
from host.runtime_config import RuntimeConfig
from host.tls import TlsFiles

DEFAULT_LISTEN = "127.0.0.1:3000"
ENV_PREFIX = "SPINHOST_"
FREE_PORT_ATTEMPTS = 10  # --find-free-port: the port asked for and the next 9
MAX_CONCURRENT_MESSAGES = 1024  # each is a handler thread and an instance slot

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_name(flag: str) -> str:
    """`--max-body-bytes` -> `SPINHOST_MAX_BODY_BYTES`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


@dataclass(frozen=True)
class Option:
    """One flag: its names, the kind of value, its help and its older variable."""

    dest: str
    flags: tuple[str, ...]
    kind: type | str  # int, float, str, "bool" (a switch) or "list" (repeatable)
    help: str
    metavar: str | None = None
    older: str | None = None  # Spin's variable for it, below SPINHOST_<FLAG>
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return next(f for f in self.flags if f.startswith("--"))

    @property
    def variable(self) -> str:
        return env_name(self.flag)


_H, _KV, _L = HttpLimits(), KeyValueLimits(), Limits()
_RT, _BLOB = RedisTriggerLimits(), BlobStoreLimits()
_IMAGE = ("; or an OCI image: a layout directory, a .tar of one, or a registry reference "
          "like registry.example.com/apps/web:1.0")

FROM = Option("source", ("-f", "--from"), str, metavar="PATH",
              help="spin.toml, or a directory containing one (default ./spin.toml)")
CACHE = [
    Option("cache_dir", ("--cache-dir",), str, metavar="DIR",
           help="compile cache (env SPINHOST_CACHE_DIR; default "
                "$XDG_CACHE_HOME/spinhost/compiled)"),
    Option("disable_cache", ("--disable-cache",), "bool", older="DISABLE_WASMTIME_CACHE",
           help="compile every component at start (env DISABLE_WASMTIME_CACHE)"),
]
RUNTIME_CONFIG = Option(
    "runtime_config_file", ("--runtime-config-file",), str, metavar="PATH",
    older="SPIN_RUNTIME_CONFIG_FILE",
    help="TOML file choosing key-value/SQLite backends and variable providers "
         "(env SPIN_RUNTIME_CONFIG_FILE; default: SQLite files in the state dir)")

SERVE = [
    Option("listen", ("--listen",), str, metavar="HOST:PORT", older="SPIN_HTTP_LISTEN_ADDR",
           help=f"address to listen on (env SPIN_HTTP_LISTEN_ADDR; default {DEFAULT_LISTEN})"),
    Option("find_free_port", ("--find-free-port",), "bool",
           help=f"if the port is taken, try the next {FREE_PORT_ATTEMPTS - 1} ports"),
    Option("tls_cert", ("--tls-cert",), str, metavar="FILE", older="SPIN_TLS_CERT",
           help="serve HTTPS with this PEM certificate (chain); needs --tls-key "
                "(env SPIN_TLS_CERT)"),
    Option("tls_key", ("--tls-key",), str, metavar="FILE", older="SPIN_TLS_KEY",
           help="the PEM private key of --tls-cert (env SPIN_TLS_KEY)"),
    Option("env", ("-e", "--env"), "list", metavar="KEY=VALUE",
           help="environment variable for every component (wins over the manifest)"),
    *CACHE,
    Option("state_dir", ("--state-dir",), str, metavar="DIR",
           help="state directory (default: .spin next to the manifest)"),
    Option("log_dir", ("-L", "--log-dir"), str, metavar="DIR", older="SPIN_LOG_DIR",
           help='component stdout/stderr files (env SPIN_LOG_DIR; default STATE_DIR/logs; '
                '"" for none)'),
    Option("build", ("--build",), "bool", older="SPIN_ALWAYS_BUILD",
           help="run the build commands first (env SPIN_ALWAYS_BUILD)"),
    Option("quiet", ("-q", "--quiet"), "bool",
           help="do not echo component output or start-up details"),
    Option("follow", ("--follow",), "list", metavar="ID",
           help="echo only this component's output (repeatable; default: every "
                "component's; not with --quiet)"),
    Option("variable", ("--variable",), "list",
           metavar="KEY=VALUE|KEY=@FILE|@FILE.json|@FILE.toml",
           help="an app variable's value, before every other provider; KEY=@FILE reads "
                "it from a file, @FILE.json / @FILE.toml several (repeatable; the last wins)"),
    Option("key_value", ("--key-value",), "list", metavar="KEY=VALUE",
           help='set KEY in the "default" key-value store at start-up, overwriting it '
                "(repeatable)"),
    Option("sqlite", ("--sqlite",), "list", metavar="STATEMENT|@FILE[:LABEL]",
           help='run a statement on the "default" SQLite database at start-up, or a '
                "file's statements on database LABEL (repeatable, in order)"),
    Option("insecure", ("--insecure",), "bool",
           help="-f names an image in a registry reachable over plain HTTP "
                "(localhost registries always are)"),
    RUNTIME_CONFIG,
    Option("workers", ("--workers",), int, metavar="N",
           help=f"processes serving the port, each with its own instance pools and limits "
                f"(default {DEFAULT_WORKERS}; host run-bundle: every usable core; at most "
                f"{MAX_WORKERS})"),
    Option("worker_timeout", ("--worker-timeout",), float, metavar="SECONDS",
           help=f"--workers: a worker whose event loop has not answered for this long is "
                f"killed and replaced (default {DEFAULT_WORKER_TIMEOUT_SECONDS:g})"),
    Option("cpu_pinning", ("--cpu-pinning",), str, choices=CPU_PINNING,
           help="auto: each serving process runs all its threads on one CPU (host up: "
                "the one it starts on; workers: one each), measured 2.5-4x less CPU per "
                "request than threads free to run on several cores at once; off: leave "
                "them free, e.g. for guests that compute for long in one process (default "
                "auto)"),
    Option("pool_size", ("--pool-size",), int, metavar="N",
           help=f"pre-instantiated instances kept ready per component "
                f"(default {DEFAULT_POOL_SIZE})"),
    Option("max_instance_memory", ("--max-instance-memory",), int, metavar="MIB",
           help=f"linear memory limit per instance (default {_L.memory_bytes // MiB} MiB)"),
    Option("request_timeout", ("--request-timeout",), "list", metavar="SECONDS|ID=SECONDS",
           help=f"execution deadline per request (default {_L.deadline_seconds:g} s); "
                "ID=SECONDS sets it for one component (repeatable)"),
    Option("max_instance_reuse_count", ("--max-instance-reuse-count",), int, metavar="N",
           help=f"requests one instance may serve (default {_L.max_instance_reuse}: a fresh "
                "instance per request; more shares guest state between requests)"),
    Option("max_key_value_bytes", ("--max-key-value-bytes",), int, metavar="N",
           help=f"larger key-value values answer error::other on set and get (default "
                f"{_KV.max_value_bytes}); a batch call moves at most {_KV.max_batch_bytes} "
                "bytes or one such value"),
    Option("max_blob_bytes", ("--max-blob-bytes",), int, metavar="N",
           help=f"larger blob-store objects fail their write and finish (default "
                f"{_BLOB.max_object_bytes})"),
    Option("max_body_bytes", ("--max-body-bytes",), int, metavar="N",
           help=f"larger request bodies answer 413 (default {_H.max_body_bytes})"),
    Option("max_header_count", ("--max-header-count",), int, metavar="N",
           help=f"more request headers answer 431 (default {_H.max_header_count})"),
    Option("max_header_bytes", ("--max-header-bytes",), int, metavar="N",
           help=f"larger request header blocks answer 431 (default {_H.max_header_bytes})"),
    Option("max_response_bytes", ("--max-response-bytes",), int, metavar="N",
           help=f"larger guest responses answer 500 (default {_H.max_response_bytes})"),
    Option("max_concurrent_requests", ("--max-concurrent-requests",), int, metavar="N",
           help="requests one component runs at once (default 4 x --pool-size, at least 4)"),
    Option("max_queued_requests", ("--max-queued-requests",), int, metavar="N",
           help=f"requests waiting per component before answering 503 "
                f"(default {_H.max_queued})"),
    Option("max_body_bytes_in_flight", ("--max-body-bytes-in-flight",), int, metavar="N",
           help="request body bytes handed to components at once, process-wide; more wait "
                f"in the queue, a larger body answers 413 "
                f"(default {_H.max_body_bytes_in_flight})"),
    Option("max_guest_threads", ("--max-guest-threads",), int, metavar="N",
           help="threads running guest calls, process-wide (default: "
                "--max-concurrent-requests x the number of components)"),
    Option("max_concurrent_messages", ("--max-concurrent-messages",), int, metavar="N",
           help=f"Redis trigger: messages one subscriber (Redis address) handles at once; "
                f"at N it stops reading and Redis holds the rest (default "
                f"{_RT.max_in_flight}: one at a time, in order, as Spin)"),
    Option("max_message_bytes", ("--max-message-bytes",), int, metavar="N",
           help=f"Redis trigger: larger messages are logged and not handled "
                f"(default {_RT.max_message_bytes})"),
    Option("drain_timeout", ("--drain-timeout",), float, metavar="SECONDS",
           help=f"on SIGTERM/SIGINT, how long in-flight requests and Redis messages may "
                f"finish (default {_H.drain_seconds:g})"),
    Option("log_format", ("--log-format",), str, choices=logs.FORMATS,
           help="plain text, or one JSON object per line (default plain)"),
    Option("no_access_log", ("--no-access-log",), "bool",
           help="no line per request on stdout (method, path without query, status, "
                "component, duration, bytes sent)"),
    Option("metrics_listen", ("--metrics-listen",), str, metavar="HOST:PORT",
           help="serve Prometheus metrics at http://HOST:PORT/metrics, a listener of its "
                "own (default: off)"),
    Option("instance_allocator", ("--instance-allocator",), str,
           choices=INSTANCE_ALLOCATORS,
           help="pooling: instance memory from slots reserved at start (faster; large "
                "virtual size); on-demand: mapped per instance (default pooling)"),
]

OPTIONS: dict[str, list[Option]] = {
    "up": [replace(FROM, help=FROM.help + _IMAGE), *SERVE],
    "check": [FROM, *CACHE, RUNTIME_CONFIG],
    "run-bundle": SERVE,  # the manifest is the bundle's /spin.toml
}


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Declare a command's flags. Every default is None: "not given", resolved by load."""
    for option in OPTIONS[command]:
        if option.kind == "bool":
            parser.add_argument(*option.flags, dest=option.dest, action="store_true",
                                default=None, help=option.help)
        elif option.kind == "list":
            parser.add_argument(*option.flags, dest=option.dest, action="append",
                                default=None, metavar=option.metavar, help=option.help)
        else:
            assert isinstance(option.kind, type)
            parser.add_argument(*option.flags, dest=option.dest, type=option.kind,
                                default=None, metavar=option.metavar,
                                choices=option.choices, help=option.help)


@dataclass(frozen=True)
class Config:
    """Everything `host up`, `host check` and `host run-bundle` need to know."""

    command: str = "up"
    source: str | None = None  # -f: a manifest, its directory, or an OCI image
    listen: tuple[str, int] = ("127.0.0.1", 3000)
    find_free_port: bool = False
    tls: TlsFiles | None = None  # --tls-cert and --tls-key: serve HTTPS
    env: Mapping[str, str] = field(default_factory=dict)  # -e, for every component
    build: bool = False
    cache_dir: Path | None = None  # the compile cache; None: disabled
    oci_cache_dir: Path = field(default_factory=oci_default_cache_dir)
    state_dir: Path | None = None  # only when set_state_dir; None there: in memory
    set_state_dir: bool = False  # --state-dir given (else the runtime config's, or .spin)
    log_dir: Path | None = None  # only when set_log_dir; None there: no files
    set_log_dir: bool = False
    runtime_config_file: Path | None = None
    insecure: bool = False
    quiet: bool = False
    follow: frozenset[str] | None = None  # --follow: whose output is echoed (None: all)
    variables: Mapping[str, str] = field(default_factory=dict)  # --variable, files read
    key_values: tuple[tuple[str, str], ...] = ()  # --key-value
    sqlite_statements: tuple[SqliteStatement, ...] = ()  # --sqlite, files read
    log_format: str = "plain"
    access_log: bool = True  # a line per request (host/access_log.py)
    metrics_listen: tuple[str, int] | None = None  # Prometheus metrics (host/metrics.py)
    workers: int = DEFAULT_WORKERS  # processes serving the port (host/workers.py)
    instance_allocator: str = "pooling"
    cpu_pinning: str = "auto"  # host/affinity.py
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS  # host/workers.py
    pool_size: int = DEFAULT_POOL_SIZE
    limits: Limits = Limits()
    deadlines: Mapping[str, float] = field(default_factory=dict)  # --request-timeout ID=S
    http: HttpLimits = HttpLimits()
    key_value: KeyValueLimits = KeyValueLimits()
    redis_trigger: RedisTriggerLimits = RedisTriggerLimits()
    blob: BlobStoreLimits = BlobStoreLimits()

    @classmethod
    def load(cls, command: str, flags: Mapping[str, Any], environ: Mapping[str, str],
             defaults: Mapping[str, Any] | None = None) -> Config:
        """Resolve and validate `command`'s knobs. `defaults` (by dest; text for a
        flag of the command) replace the built-in ones: run-bundle listens on
        0.0.0.0:80, `host check` keeps one instance per component."""
        r = _Reader(OPTIONS[command], flags, environ, defaults or {})
        deadline, deadlines = r.timeouts()
        pool_size = r.integer("pool_size", DEFAULT_POOL_SIZE, minimum=0)
        return cls(
            command=command,
            source=r.text("source"),
            listen=r.listen(),
            find_free_port=r.switch("find_free_port"),
            tls=r.tls(),
            env=r.pairs("env"),
            build=r.switch("build"),
            cache_dir=None if r.switch("disable_cache") else r.cache_dir(),
            oci_cache_dir=Path(r.text("cache_dir") or oci_default_cache_dir()),
            state_dir=r.directory("state_dir"),
            set_state_dir=r.given("state_dir"),
            log_dir=r.directory("log_dir"),
            set_log_dir=r.given("log_dir"),
            runtime_config_file=r.path("runtime_config_file"),
            insecure=r.switch("insecure"),
            quiet=r.switch("quiet"),
            follow=r.follow(),
            variables=r.variables(),
            key_values=tuple(r.pairs("key_value", "--key-value").items()),
            sqlite_statements=r.sqlite(),
            log_format=r.text("log_format") or "plain",
            access_log=not r.switch("no_access_log"),
            metrics_listen=r.address("metrics_listen") if r.text("metrics_listen") else None,
            workers=r.integer("workers", DEFAULT_WORKERS, minimum=1, maximum=MAX_WORKERS),
            instance_allocator=r.text("instance_allocator") or "pooling",
            cpu_pinning=r.text("cpu_pinning") or "auto",
            worker_timeout=r.number("worker_timeout", DEFAULT_WORKER_TIMEOUT_SECONDS,
                                    minimum=WORKER_HEARTBEAT_SECONDS * 2),
            pool_size=pool_size,
            limits=Limits(
                memory_bytes=MiB * r.integer("max_instance_memory", _L.memory_bytes // MiB,
                                             minimum=1),
                deadline_seconds=deadline,
                max_instance_reuse=r.integer("max_instance_reuse_count",
                                             _L.max_instance_reuse, minimum=1),
            ),
            deadlines=deadlines,
            http=HttpLimits(
                max_body_bytes=r.integer("max_body_bytes", _H.max_body_bytes, minimum=1),
                max_header_count=r.integer("max_header_count", _H.max_header_count, minimum=1),
                max_header_bytes=r.integer("max_header_bytes", _H.max_header_bytes, minimum=1),
                max_response_bytes=r.integer("max_response_bytes", _H.max_response_bytes,
                                             minimum=1),
                max_concurrent=r.integer("max_concurrent_requests",
                                         default_max_concurrent(pool_size), minimum=1),
                max_queued=r.integer("max_queued_requests", _H.max_queued, minimum=0),
                max_body_bytes_in_flight=r.integer("max_body_bytes_in_flight",
                                                   _H.max_body_bytes_in_flight, minimum=1),
                max_guest_threads=r.optional_int("max_guest_threads", minimum=1),
                drain_seconds=r.number("drain_timeout", _H.drain_seconds, minimum=0.0),
            ),
            key_value=_key_value_limits(
                r.integer("max_key_value_bytes", _KV.max_value_bytes, minimum=1)),
            redis_trigger=replace(
                _RT,
                max_in_flight=r.integer("max_concurrent_messages", _RT.max_in_flight,
                                        minimum=1, maximum=MAX_CONCURRENT_MESSAGES),
                max_message_bytes=r.integer("max_message_bytes", _RT.max_message_bytes,
                                            minimum=1)),
            blob=BlobStoreLimits(
                max_object_bytes=r.integer("max_blob_bytes", _BLOB.max_object_bytes,
                                           minimum=1)),
        )

    def state_dir_for(self, manifest: Manifest, runtime_config: RuntimeConfig,
                      from_image: bool) -> Path | None:
        """--state-dir, else the runtime config's state_dir, else .spin next to the
        manifest; apps from an image have none (stores in memory), as in Spin."""
        if self.set_state_dir:
            return self.state_dir
        if runtime_config.sets_state_dir:
            return runtime_config.state_dir
        return None if from_image else manifest.dir / ".spin"

    def log_dir_for(self, state_dir: Path | None) -> Path | None:
        if self.set_log_dir:
            return self.log_dir
        return state_dir / "logs" if state_dir is not None else None

    def component_limits(self, manifest: Manifest) -> dict[str, Limits]:
        """Per-component limits (--request-timeout ID=SECONDS), checked against the app."""
        for cid in self.deadlines:
            if cid not in manifest.components:
                value = f"{cid}={self.deadlines[cid]:g}"
                raise ConfigError(f"--request-timeout {value!r}: no component \"{cid}\" in "
                                  f"{manifest.path}")
        return {cid: replace(self.limits, deadline_seconds=seconds)
                for cid, seconds in self.deadlines.items()}

    def followed(self, manifest: Manifest) -> frozenset[str] | None:
        """--follow, checked against the app."""
        if self.follow is not None:
            unknown = sorted(self.follow - set(manifest.components))
            if unknown:
                raise ConfigError(
                    f"--follow {unknown[0]!r}: no component \"{unknown[0]}\" in "
                    f"{manifest.path} (components: {', '.join(sorted(manifest.components))})")
        return self.follow

    def app_settings(self, manifest: Manifest, runtime_config: RuntimeConfig,
                     state_dir: Path | None = None, log_dir: Path | None = None,
                     self_origin: str | None = None,
                     self_certificate: Path | None = None) -> AppSettings:
        """What the loader needs, with what is known only at start-up."""
        check = self.command == "check"
        return AppSettings(
            env=dict(self.env), pool_size=self.pool_size, limits=self.limits,
            component_limits=self.component_limits(manifest),
            echo_output=None if self.quiet or check else sys.stdout,
            follow=self.followed(manifest), variables=self.variables,
            key_values=self.key_values, sqlite_statements=self.sqlite_statements,
            runtime_config=runtime_config, state_dir=state_dir, log_dir=log_dir,
            self_origin=self_origin, self_certificate=self_certificate,
            key_value_limits=self.key_value,
            blob_limits=self.blob,
            max_response_bytes=self.http.max_response_bytes, check_only=check,
        )


def _key_value_limits(max_value_bytes: int) -> KeyValueLimits:
    # A batch moves its budget or one value of the largest size, whichever is more.
    return KeyValueLimits(max_value_bytes=max_value_bytes,
                          max_batch_bytes=max(_KV.max_batch_bytes, max_value_bytes))


class _Reader:
    """Looks each knob up in the layers and converts it, naming where a value came from."""

    def __init__(self, options: Sequence[Option], flags: Mapping[str, Any],
                 environ: Mapping[str, str], defaults: Mapping[str, Any]) -> None:
        self.options = {o.dest: o for o in options}
        self.flags = flags
        self.environ = environ
        self.defaults = defaults

    def _raw(self, dest: str) -> tuple[Any, str, bool] | None:
        """(value, where, from the environment), or None when nothing sets it."""
        option = self.options.get(dest)
        if option is not None:
            given = self.flags.get(dest)
            if given is not None:
                shown = given if not isinstance(given, list) else given[-1]
                return given, f"{option.flag} {shown}", False
            for name in (option.variable, option.older):
                if name is not None and name in self.environ:
                    raw = self.environ[name]
                    return self._convert(option, name, raw), f"{name}={raw!r}", True
        if dest in self.defaults:
            raw = self.defaults[dest]
            if option is None or not isinstance(raw, str):  # set by the command itself
                return raw, dest, False
            return self._convert(option, dest, raw), option.flag, False
        return None

    def _convert(self, option: Option, name: str, raw: str) -> Any:
        where = f"{name}={raw!r}"
        if option.kind == "bool":
            if name == option.older:  # Spin's own variables: anything else is off
                return raw.lower() in _TRUE
            if raw.lower() not in _TRUE + _FALSE:
                raise VariableError(f"{where}: expected true or false")
            return raw.lower() in _TRUE
        if option.kind == "list":
            return [item for item in raw.split(",") if item]
        assert isinstance(option.kind, type)
        try:
            value = option.kind(raw)
        except ValueError:
            raise VariableError(f"{where}: not a valid value for {option.flag}") from None
        if option.choices is not None and value not in option.choices:
            raise VariableError(f"{where}: choose from {', '.join(option.choices)}")
        return value

    def given(self, dest: str) -> bool:
        return self._raw(dest) is not None

    def fail(self, where: str, from_env: bool, dest: str, problem: str) -> ConfigError:
        if from_env:
            return VariableError(f"{where} ({self.options[dest].flag}): {problem}")
        return ConfigError(f"{where}: {problem}")

    def text(self, dest: str) -> str | None:
        found = self._raw(dest)
        return None if found is None else str(found[0])

    def switch(self, dest: str) -> bool:
        found = self._raw(dest)
        return bool(found and found[0])

    def integer(self, dest: str, default: int, minimum: int,
                maximum: int | None = None) -> int:
        value = self.optional_int(dest, minimum, maximum)
        return default if value is None else value

    def optional_int(self, dest: str, minimum: int, maximum: int | None = None) -> int | None:
        found = self._raw(dest)
        if found is None:
            return None
        value, where, from_env = found
        if value < minimum:
            problem = "must be positive" if minimum == 1 else f"must be {minimum} or more"
            raise self.fail(where, from_env, dest, problem)
        if maximum is not None and value > maximum:
            raise self.fail(where, from_env, dest, f"must be {maximum} or less")
        return int(value)

    def number(self, dest: str, default: float, minimum: float) -> float:
        found = self._raw(dest)
        if found is None:
            return default
        value, where, from_env = found
        if value < minimum:
            raise self.fail(where, from_env, dest, f"must be {minimum:g} or more")
        return float(value)

    def path(self, dest: str) -> Path | None:
        text = self.text(dest)
        return Path(text) if text else None

    def directory(self, dest: str) -> Path | None:
        """A directory flag where "" means none."""
        text = self.text(dest)
        return Path(text).resolve() if text else None

    def cache_dir(self) -> Path:
        text = self.text("cache_dir")
        return Path(text) if text else default_cache_dir()

    def listen(self) -> tuple[str, int]:
        return self.address("listen") or parse_listen(DEFAULT_LISTEN, "--listen")

    def address(self, dest: str) -> tuple[str, int] | None:
        """A HOST:PORT knob; None when nothing sets it."""
        found = self._raw(dest)
        if found is None:
            return None
        value, where, from_env = found
        flag = self.options[dest].flag
        try:
            return parse_listen(value, where.split("=")[0] if from_env else flag)
        except ConfigError as exc:
            raise (VariableError(str(exc)) if from_env else exc) from None

    def tls(self) -> TlsFiles | None:
        """--tls-cert and --tls-key (or their variables): both, or neither ("" is not given)."""
        cert, key = (found if (found := self._raw(dest)) and found[0] else None
                     for dest in ("tls_cert", "tls_key"))
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            given, dest, missing = ((cert, "tls_cert", "tls_key") if key is None
                                    else (key, "tls_key", "tls_cert"))
            assert given is not None
            option = self.options[missing]
            raise self.fail(given[1], given[2], dest,
                            f"{option.flag} (or {option.older}) is missing: give both or "
                            "neither")
        return TlsFiles(Path(cert[0]).resolve(), Path(key[0]).resolve())

    def items(self, dest: str, label: str) -> list[tuple[str, str, bool]]:
        """A repeatable knob's items: (item, where, from the environment)."""
        found = self._raw(dest)
        if found is None:
            return []
        values, where, from_env = found
        name = where.split("=")[0] if from_env else label
        return [(item, f"{name} {item!r}", from_env) for item in values]

    def pairs(self, dest: str, label: str = "-e/--env") -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item, where, from_env in self.items(dest, label):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise self.fail(where, from_env, dest, "expected KEY=VALUE")
            pairs[key] = value
        return pairs

    def follow(self) -> frozenset[str] | None:
        ids = [item for item, _, _ in self.items("follow", "--follow")]
        if not ids:
            return None
        if self.switch("quiet"):  # as in Spin: one silences what the other selects
            raise ConfigError("--follow and -q/--quiet cannot be used together")
        return frozenset(ids)

    def variables(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for item, where, from_env in self.items("variable", "--variable"):
            try:
                values.update(read_variable_source(item))
            except ValueError as exc:
                raise self.fail(where, from_env, "variable", str(exc)) from None
        return values

    def sqlite(self) -> tuple[SqliteStatement, ...]:
        statements = []
        for item, where, from_env in self.items("sqlite", "--sqlite"):
            try:
                statements.append(SqliteStatement.parse(item))
            except ValueError as exc:
                raise self.fail(where, from_env, "sqlite", str(exc)) from None
        return tuple(statements)

    def timeouts(self) -> tuple[float, dict[str, float]]:
        """`--request-timeout 30` and `--request-timeout ID=SECONDS` (repeatable)."""
        deadline, per_component = _L.deadline_seconds, {}
        for value, where, from_env in self.items("request_timeout", "--request-timeout"):
            cid, sep, text = value.rpartition("=")
            try:
                seconds = float(text)
            except ValueError:
                raise self.fail(where, from_env, "request_timeout",
                                "expected SECONDS or COMPONENT=SECONDS") from None
            if seconds <= 0:
                raise self.fail(where, from_env, "request_timeout", "must be positive")
            if sep:
                per_component[cid] = seconds
            else:
                deadline = seconds
        return deadline, per_component


def parse_listen(value: str, name: str = "--listen") -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT`; `localhost` means IPv4 loopback, as in Spin."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name} {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{name} {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} {value!r}: port {port} is out of range")
    return host, port
