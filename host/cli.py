"""`host up | check | build`: flag names, environment variables and defaults of `spin`.

Every HostError ends the command with a one-line message and a non-zero exit
code; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from host import __version__, logs
from host.app import App, AppSettings, load_app
from host.build import build_app
from host.bundle import SHIM_LISTEN, Bundle, read_bundle, variables_from_plain_env
from host.errors import ConfigError, HostError
from host.executors.component import ComponentExecutor
from host.limits import HttpLimits, KeyValueLimits, Limits
from host.manifest import Manifest, load_manifest
from host.oci.cli import add_parser as add_oci_parser
from host.oci.registry import is_image_reference
from host.oci.store import ResolvedApp, resolve_app
from host.oci.store import default_cache_dir as oci_default_cache_dir
from host.runtime.engine import Engine, default_cache_dir
from host.runtime_config import RuntimeConfig, load_runtime_config
from host.server import HostApp

log = logging.getLogger("host")

DEFAULT_LISTEN = "127.0.0.1:3000"
FREE_PORT_ATTEMPTS = 10

# Exit codes (documented in README.md).
EXIT_OK = 0
EXIT_ERROR = 1  # manifest, component or configuration error; failure to start
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_FORCED = 130  # a second SIGTERM/SIGINT cut the drain short


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
        args = parser.parse_args(argv)
    except ConfigError as exc:  # a SPINHOST_* variable with a bad value
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(getattr(args, "log_format", "plain"), getattr(args, "quiet", False))
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except HostError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="host",
                                description="Serve Spin apps of WebAssembly components.")
    p.add_argument("--version", action="version", version=f"host {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    up = sub.add_parser("up", help="serve an app")
    _manifest_flag(up, image=True)
    up.add_argument("--listen", default=os.environ.get("SPIN_HTTP_LISTEN_ADDR", DEFAULT_LISTEN),
                    metavar="HOST:PORT",
                    help="address to listen on (env SPIN_HTTP_LISTEN_ADDR; "
                         f"default {DEFAULT_LISTEN})")
    up.add_argument("--find-free-port", action="store_true",
                    help=f"if the port is taken, try the next {FREE_PORT_ATTEMPTS - 1} ports")
    up.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for every component (wins over the manifest)")
    _cache_flags(up)
    up.add_argument("--state-dir", default=None, metavar="DIR",
                    help="state directory (default: .spin next to the manifest)")
    up.add_argument("-L", "--log-dir", default=os.environ.get("SPIN_LOG_DIR"), metavar="DIR",
                    help='component stdout/stderr files (env SPIN_LOG_DIR; default '
                         'STATE_DIR/logs; "" for none)')
    up.add_argument("--build", action="store_true",
                    default=_env_flag("SPIN_ALWAYS_BUILD"),
                    help="run the build commands first (env SPIN_ALWAYS_BUILD)")
    up.add_argument("-q", "--quiet", action="store_true",
                    help="do not echo component output or start-up details")
    up.add_argument("--insecure", action="store_true",
                    help="-f names an image in a registry reachable over plain HTTP "
                         "(localhost registries always are)")
    _runtime_config_flag(up)
    _runtime_flags(up)
    _http_flags(up)
    _log_format_flag(up)
    up.set_defaults(run=cmd_up)
    _env_defaults(up)

    check = sub.add_parser("check", help="validate the manifest and components; print routes")
    _manifest_flag(check)
    _cache_flags(check)
    _runtime_config_flag(check)
    check.set_defaults(run=cmd_check, pool_size=1, memory_limit_mb=128, request_timeout=[],
                       reuse=1)

    bundle = sub.add_parser(
        "run-bundle", help="serve the Spin app in an OCI runtime bundle (containerd shim entry)",
        description="Start the app whose spin.toml is at the root of BUNDLE's root filesystem, "
                    "with the bundle's process.env and process.cwd (config.json). Listens on "
                    f"SPIN_HTTP_LISTEN_ADDR, default {SHIM_LISTEN}. Exit codes: 0 stopped cleanly "
                    "(SIGTERM drained), 1 the app could not start, 2 bad command line, "
                    "3 not a Spin app (no /spin.toml), 130 a second signal cut the drain short.")
    bundle.add_argument("bundle", metavar="BUNDLE_DIR", help="directory with config.json")
    bundle.add_argument("up_args", nargs=argparse.REMAINDER, metavar="...",
                        help="further `host up` flags (e.g. --pool-size 2)")
    bundle.set_defaults(run=cmd_run_bundle)

    add_oci_parser(sub)

    build = sub.add_parser("build", help="run each component's build command")
    _manifest_flag(build)
    build.add_argument("-c", "--component-id", action="append", default=[], metavar="ID",
                       help="build only this component (repeatable)")
    build.add_argument("-u", "--up", action="store_true", help="serve the app after building")
    build.set_defaults(run=cmd_build)
    return p


def _manifest_flag(p: argparse.ArgumentParser, image: bool = False) -> None:
    what = ("; or an OCI image: a layout directory, a .tar of one, or a registry reference "
            "like registry.example.com/apps/web:1.0") if image else ""
    p.add_argument("-f", "--from", dest="from_path", default=None, metavar="PATH",
                   help=f"spin.toml, or a directory containing one (default ./spin.toml){what}")


def _log_format_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=logs.FORMATS, default="plain",
                   help="plain text, or one JSON object per line (default plain)")


ENV_PREFIX = "SPINHOST_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_name(flag: str) -> str:
    """`--max-body-bytes` -> `SPINHOST_MAX_BODY_BYTES`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _env_defaults(p: argparse.ArgumentParser) -> None:
    """Let `SPINHOST_<FLAG>` set any long flag: containers configure by environment.

    A flag given on the command line still wins; a flag's own older variable
    (SPIN_HTTP_LISTEN_ADDR, ...) is read by its default and loses to this one.
    Repeatable flags take a comma-separated list.
    """
    for action in p._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "version"):
            continue
        name = env_name(longs[0])
        raw = os.environ.get(name)
        if raw is None:
            continue
        value: object
        if isinstance(action, argparse._StoreTrueAction):
            if raw.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"{name}={raw!r}: expected true or false")
            value = raw.lower() in _TRUE
        elif isinstance(action, argparse._AppendAction):
            value = [item for item in raw.split(",") if item]
        else:
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError):
                raise ConfigError(f"{name}={raw!r}: not a valid value for {longs[0]}") from None
            if action.choices is not None and value not in action.choices:
                raise ConfigError(f"{name}={raw!r}: choose from "
                                  f"{', '.join(map(str, action.choices))}")
        p.set_defaults(**{action.dest: value})


def _runtime_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime-config-file", default=os.environ.get("SPIN_RUNTIME_CONFIG_FILE"),
                   metavar="PATH",
                   help="TOML file choosing key-value/SQLite backends and variable providers "
                        "(env SPIN_RUNTIME_CONFIG_FILE; default: SQLite files in the state dir)")


def _cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=os.environ.get("SPINHOST_CACHE_DIR"), metavar="DIR",
                   help="compile cache (env SPINHOST_CACHE_DIR; default "
                        "$XDG_CACHE_HOME/spinhost/compiled)")
    p.add_argument("--disable-cache", action="store_true",
                   default=_env_flag("DISABLE_WASMTIME_CACHE"),
                   help="compile every component at start (env DISABLE_WASMTIME_CACHE)")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool-size", type=int, default=4, metavar="N",
                   help="pre-instantiated instances kept ready per component (default 4)")
    p.add_argument("--max-instance-memory", dest="memory_limit_mb", type=int, default=128,
                   metavar="MIB", help="linear memory limit per instance (default 128 MiB)")
    p.add_argument("--request-timeout", action="append", default=[],
                   metavar="SECONDS|ID=SECONDS",
                   help="execution deadline per request (default 30 s); ID=SECONDS sets it "
                        "for one component (repeatable)")
    p.add_argument("--max-instance-reuse-count", dest="reuse", type=int, default=1,
                   metavar="N",
                   help="requests one instance may serve (default 1: a fresh instance per "
                        "request; more shares guest state between requests)")
    kv = KeyValueLimits()
    p.add_argument("--max-key-value-bytes", type=int, default=kv.max_value_bytes, metavar="N",
                   help="larger key-value values answer error::other on set and get "
                        f"(default {kv.max_value_bytes}); a batch call moves at most "
                        f"{kv.max_batch_bytes} bytes or one such value")


def _http_flags(p: argparse.ArgumentParser) -> None:
    d = HttpLimits()
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, metavar="N",
                   help=f"larger request bodies answer 413 (default {d.max_body_bytes})")
    p.add_argument("--max-header-count", type=int, default=d.max_header_count, metavar="N",
                   help=f"more request headers answer 431 (default {d.max_header_count})")
    p.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes, metavar="N",
                   help=f"larger request header blocks answer 431 (default {d.max_header_bytes})")
    p.add_argument("--max-response-bytes", type=int, default=d.max_response_bytes, metavar="N",
                   help=f"larger guest responses answer 500 (default {d.max_response_bytes})")
    p.add_argument("--max-concurrent-requests", type=int, default=None,
                   metavar="N", help="requests one component runs at once "
                                     "(default 4 x --pool-size, at least 4)")
    p.add_argument("--max-queued-requests", type=int, default=d.max_queued, metavar="N",
                   help="requests waiting per component before answering 503 "
                        f"(default {d.max_queued})")
    p.add_argument("--max-body-bytes-in-flight", type=int, default=d.max_body_bytes_in_flight,
                   metavar="N",
                   help="request body bytes handed to components at once, process-wide; more "
                        "wait in the queue, a larger body answers 413 "
                        f"(default {d.max_body_bytes_in_flight})")
    p.add_argument("--drain-timeout", type=float, default=d.drain_seconds, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long in-flight requests may finish "
                        f"(default {d.drain_seconds:g})")


def http_limits(args: argparse.Namespace) -> HttpLimits:
    if args.max_concurrent_requests is None:
        args.max_concurrent_requests = max(4, 4 * args.pool_size)
    values = {
        "--max-body-bytes": args.max_body_bytes, "--max-header-count": args.max_header_count,
        "--max-header-bytes": args.max_header_bytes,
        "--max-response-bytes": args.max_response_bytes,
        "--max-concurrent-requests": args.max_concurrent_requests,
        "--max-body-bytes-in-flight": args.max_body_bytes_in_flight,
    }
    for flag, value in values.items():
        if value <= 0:
            raise ConfigError(f"{flag} {value}: must be positive")
    if args.max_queued_requests < 0 or args.drain_timeout < 0:
        raise ConfigError("--max-queued-requests and --drain-timeout must be 0 or more")
    return HttpLimits(
        max_body_bytes=args.max_body_bytes, max_header_count=args.max_header_count,
        max_header_bytes=args.max_header_bytes, max_response_bytes=args.max_response_bytes,
        max_concurrent=args.max_concurrent_requests, max_queued=args.max_queued_requests,
        max_body_bytes_in_flight=args.max_body_bytes_in_flight, drain_seconds=args.drain_timeout,
    )


def key_value_limits(args: argparse.Namespace) -> KeyValueLimits:
    value = args.max_key_value_bytes
    if value <= 0:
        raise ConfigError(f"--max-key-value-bytes {value}: must be positive")
    return KeyValueLimits(max_value_bytes=value,
                          max_batch_bytes=max(KeyValueLimits().max_batch_bytes, value))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.from_path)
    build_app(manifest, args.component_id)
    if args.up:
        up_args = _parser().parse_args(["up", "-f", str(manifest.path)])
        return cmd_up(up_args)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.from_path)
    _print_warnings(manifest)
    engine = Engine(_cache_dir(args))
    runtime_config = _runtime_config(args)
    settings = replace(_settings(args, manifest, log_dir=None), runtime_config=runtime_config)
    app = load_app(manifest, engine, settings, report=print)
    try:
        print(f"{manifest.path}: OK")
        print("Routes (in precedence order):")
        print("\n".join(route_lines(app, "")))
    finally:
        app.close()
    return EXIT_OK


def cmd_run_bundle(args: argparse.Namespace) -> int:
    bundle = read_bundle(Path(args.bundle))
    os.environ.update(bundle.env)
    manifest = load_manifest(bundle.manifest)
    os.environ.update(variables_from_plain_env(list(manifest.variables), dict(os.environ)))
    os.chdir(bundle.cwd)
    argv = ["up", "-f", str(bundle.manifest), "--log-dir", "",
            "--listen", os.environ.get("SPIN_HTTP_LISTEN_ADDR", SHIM_LISTEN),
            "--state-dir", _bundle_state_dir(bundle)]
    if bundle.runtime_config is not None:
        argv += ["--runtime-config-file", str(bundle.runtime_config)]
    # Re-parse: SPINHOST_* settings from the bundle's environment now apply, and
    # flags given after BUNDLE_DIR win over the defaults above.
    up_args = _parser().parse_args([*argv, *args.up_args])
    logs.configure(up_args.log_format, up_args.quiet)
    return cmd_up(up_args)


def _bundle_state_dir(bundle: Bundle) -> str:
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


def cmd_up(args: argparse.Namespace) -> int:
    image = _image_app(args)
    manifest = load_manifest(image.manifest_path if image else args.from_path)
    if args.build:
        if image is not None:
            raise ConfigError(f"--build: {args.from_path} is an OCI image, not sources to build")
        build_app(manifest)
        manifest = load_manifest(manifest.path)
    _print_warnings(manifest)
    limits = http_limits(args)
    host, port = parse_listen(args.listen)
    sock = bind_socket(host, port, args.find_free_port)
    if image is not None and image.runtime_config and not args.runtime_config_file:
        args.runtime_config_file = str(image.runtime_config)  # the image's own, as the shim
    runtime_config = _runtime_config(args)
    if image is not None and args.state_dir is None and not runtime_config.sets_state_dir:
        args.state_dir = ""  # Spin: apps from a registry have no state dir (stores in memory)
    state_dir = _state_dir(args, manifest, runtime_config)
    log_dir = _log_dir(args, state_dir)
    bound_host, bound_port = sock.getsockname()[:2]
    base_url = f"http://{_url_host(bound_host)}:{bound_port}"
    settings = replace(_settings(args, manifest, log_dir), runtime_config=runtime_config,
                       state_dir=state_dir, self_origin=_self_origin(bound_host, bound_port),
                       key_value_limits=key_value_limits(args),
                       max_response_bytes=limits.max_response_bytes)
    engine = Engine(_cache_dir(args))
    engine.start_ticker()
    quiet = args.quiet
    app = load_app(manifest, engine, settings,
                   report=(lambda line: None) if quiet else _info)
    host_app: HostApp | None = None
    try:
        if log_dir is not None and not quiet:
            _info(f'Logging component stdio to "{log_dir}{os.sep}"')
        print_routes(app, base_url)
        host_app = HostApp(app, limits=limits, image_digest=image.digest if image else None)
        _serve(host_app, sock)
        if not quiet:
            executors = {e.id: e for e in app.executors.values()
                         if isinstance(e, ComponentExecutor)}
            pools = ", ".join(f"{e.id}={len(e.pool)}/{e.pool.size}" for e in executors.values())
            _info(f"Stopped. Instance pools at exit: {pools or 'none'}")
    finally:
        app.close()
    # Guest calls still running past the drain deadline sit in worker threads the
    # interpreter would wait for at exit; their clients are gone, so leave now.
    # (The epoch ticker keeps running until then: stopping it would let a
    # spinning guest run forever.)
    stuck = host_app.in_flight if host_app is not None else 0
    if stuck:
        _info(f"{stuck} request(s) still running after the drain deadline; exiting")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    engine.stop_ticker()
    return EXIT_OK


def _serve(host_app: HostApp, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        host_app,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handler (plain or JSON)
        access_log=False,
        server_header=False,
        date_header=True,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(host_app.limits.drain_seconds),
    )
    server = _server_class()(config)
    # Server.run picks uvloop (config.loop="auto"); plain asyncio.run would not,
    # and the default loop leaves Nagle on for our socket (40 ms stalls).
    server.run(sockets=[sock])


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the
        process would die by the signal (exit 143); we return and exit 0. A
        second signal stops at once instead of waiting for in-flight requests."""

        def handle_exit(self, sig: int, frame: object) -> None:
            if self.should_exit:
                # Second signal: stop now. Guest calls run in worker threads that
                # cannot be interrupted from here, so leave without joining them.
                print("Second signal: exiting without waiting for in-flight requests",
                      file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(EXIT_FORCED)
            self.should_exit = True

    return Server


# ---------------------------------------------------------------------------
# Settings


def _settings(args: argparse.Namespace, manifest: Manifest, log_dir: Path | None) -> AppSettings:
    env = {}
    for item in getattr(args, "env", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"-e/--env {item!r}: expected KEY=VALUE")
        env[key] = value
    if args.pool_size < 0:
        raise ConfigError(f"--pool-size {args.pool_size}: must be 0 or more")
    if args.memory_limit_mb <= 0:
        raise ConfigError(f"--max-instance-memory {args.memory_limit_mb}: must be positive")
    deadline, per_component = _timeouts(args.request_timeout, manifest)
    if args.reuse < 1:
        raise ConfigError(f"--max-instance-reuse-count {args.reuse}: must be 1 or more")
    if args.reuse > 1:
        log.warning("instances serve up to %d requests each: guest state (globals, memory) "
                    "is shared between the requests one instance serves", args.reuse)
    limits = Limits(
        memory_bytes=args.memory_limit_mb * 1024 * 1024,
        deadline_seconds=deadline,
        max_instance_reuse=args.reuse,
    )
    component_limits = {cid: replace(limits, deadline_seconds=seconds)
                        for cid, seconds in per_component.items()}
    echo = None if getattr(args, "quiet", True) else sys.stdout
    return AppSettings(env=env, log_dir=log_dir, pool_size=args.pool_size, limits=limits,
                       component_limits=component_limits, echo_output=echo)


def _timeouts(values: list[str], manifest: Manifest) -> tuple[float, dict[str, float]]:
    """`--request-timeout 30` and `--request-timeout ID=SECONDS` (repeatable)."""
    deadline = Limits().deadline_seconds
    per_component: dict[str, float] = {}
    for value in values:
        cid, sep, text = value.rpartition("=")
        try:
            seconds = float(text)
        except ValueError:
            raise ConfigError(f"--request-timeout {value!r}: expected SECONDS or "
                              "COMPONENT=SECONDS") from None
        if seconds <= 0:
            raise ConfigError(f"--request-timeout {value!r}: must be positive")
        if not sep:
            deadline = seconds
        elif cid not in manifest.components:
            raise ConfigError(f"--request-timeout {value!r}: no component \"{cid}\" in "
                              f"{manifest.path}")
        else:
            per_component[cid] = seconds
    return deadline, per_component


def _cache_dir(args: argparse.Namespace) -> Path | None:
    if args.disable_cache:
        return None
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def _image_app(args: argparse.Namespace) -> ResolvedApp | None:
    """`-f/--from` naming an OCI image (layout dir, .tar, or registry reference), or None.

    Anything that is a spin.toml or a directory holding one stays a manifest.
    """
    source = args.from_path
    if not source:
        return None
    path = Path(source)
    if path.is_file() and path.suffix != ".tar" or (path / "spin.toml").is_file():
        return None
    if not path.exists() and not is_image_reference(source):
        return None  # load_manifest reports the missing file
    oci_cache = Path(args.cache_dir) if args.cache_dir else oci_default_cache_dir()
    image = resolve_app(source, oci_cache, insecure=args.insecure or None)
    logs.info(f"Serving OCI image {source} ({image.digest})")
    return image


def _runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    path = getattr(args, "runtime_config_file", None)
    return load_runtime_config(Path(path)) if path else RuntimeConfig()


def _state_dir(args: argparse.Namespace, manifest: Manifest,
               runtime_config: RuntimeConfig) -> Path | None:
    """--state-dir, else the runtime config's state_dir, else .spin next to the manifest."""
    if args.state_dir is not None:
        return Path(args.state_dir).resolve() if args.state_dir else None
    if runtime_config.sets_state_dir:
        return runtime_config.state_dir
    return manifest.dir / ".spin"


def _self_origin(host: str, port: int) -> str:
    """Where the app reaches itself: the listener, via loopback if bound to all addresses."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{_url_host(host)}:{port}"


def _log_dir(args: argparse.Namespace, state_dir: Path | None) -> Path | None:
    if args.log_dir is not None:
        return Path(args.log_dir).resolve() if args.log_dir else None
    return state_dir / "logs" if state_dir is not None else None


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT`; `localhost` means IPv4 loopback, as in Spin."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen {value!r}: port {port} is out of range")
    return host, port


def bind_socket(host: str, port: int, find_free_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    attempts = FREE_PORT_ATTEMPTS if find_free_port and port else 1
    for attempt in range(attempts):
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port + attempt))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise ConfigError(f"cannot listen on {host}:{port + attempt}: {exc.strerror}") from None
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock
    if find_free_port:
        raise ConfigError(
            f"{host}:{port}..{port + attempts - 1} are all in use; choose another --listen port"
        )
    raise ConfigError(
        f"{host}:{port} is already in use. To have host search for a free port, "
        "use the --find-free-port option."
    )


# ---------------------------------------------------------------------------
# Output


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def route_lines(app: App, base_url: str) -> list[str]:
    """One line per public route, in precedence order, as `spin up` prints them."""
    lines = []
    for route in app.router.routes:
        lines.append(f"  {route.component or route.target}: {base_url}{route.display}")
        component = app.manifest.components.get(route.component or "")
        if component is not None and component.description:
            lines.append(f"    {component.description}")
    return lines


def print_routes(app: App, base_url: str) -> None:
    logs.serving(base_url, route_lines(app, base_url))


def _print_warnings(manifest: Manifest) -> None:
    for warning in manifest.warnings:
        log.warning("%s", warning)


def _info(line: str) -> None:
    logs.info(line)
