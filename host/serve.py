"""The server's life: start up, serve until a signal, drain, exit with a documented code.

`serve(config)` reads top to bottom: find the app (a manifest or an OCI image),
build it if asked, bind the socket (`start_up`), load every component, subscribe
to the Redis trigger's channels, serve with uvicorn until SIGTERM/SIGINT, let
in-flight requests and Redis messages finish (up to the drain timeout), close
the app (`serve_app`). With `--workers N` the loading and
serving happen in N worker processes, each running `serve_app` on the socket
bound here (host/workers.py). Exit codes are in README.md ("Commands").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host import affinity, logs, resolve, tls, tracing
from host.access_log import AccessLog
from host.app import App, AppSettings, load_app
from host.build import build_app
from host.config import FREE_PORT_ATTEMPTS, Config
from host.errors import ConfigError
from host.executors.component import ComponentExecutor
from host.executors.wasi_http import WasiHttpExecutor
from host.limits import pooling_limits
from host.manifest import Manifest, load_manifest
from host.oci.registry import is_image_reference
from host.oci.store import ResolvedApp, resolve_app
from host.redis_trigger import RedisTriggers
from host.routing import Router
from host.runtime.engine import Engine
from host.runtime_config import RuntimeConfig, load_runtime_config
from host.server import HostApp
from host.telemetry import Telemetry

log = logging.getLogger("host")

EXIT_OK = 0
EXIT_FORCED = 130  # a second SIGTERM/SIGINT cut the drain short


@dataclass(frozen=True)
class Startup:
    """What start-up resolved once, before any component loads. A worker process
    (`--workers`, host/workers.py) receives it whole and loads the same app."""

    config: Config
    manifest_path: Path
    runtime_config_file: Path | None  # --runtime-config-file, or the image's own
    image_digest: str | None
    state_dir: Path | None
    log_dir: Path | None
    address: tuple[str, int]  # where the listening socket is bound
    metrics_dir: Path | None = None  # --workers with --metrics-listen: the workers' sockets

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{url_host(self.address[0])}:{self.address[1]}"

    def settings(self, manifest: Manifest, runtime_config: RuntimeConfig) -> AppSettings:
        return self.config.app_settings(
            manifest, runtime_config=runtime_config, state_dir=self.state_dir,
            log_dir=self.log_dir, self_origin=self_origin(*self.address, self.scheme),
            self_certificate=self.config.tls.cert if self.config.tls else None)


class Lifecycle:
    """What one serving process says and does at each step; `host up` with one
    process. A worker process has its own (host/workers.py)."""

    #: Whether executors are replaced while serving (`host watch`).
    reloads = False
    #: Whether this process runs the app's Redis subscribers: with `--workers N`
    #: only one does, or every message would be handled N times.
    subscribes = True

    def loading(self) -> contextlib.AbstractContextManager[None]:
        """Around loading the app (its report lines and warnings)."""
        return contextlib.nullcontext()

    def loaded(self, app: App, startup: Startup, compiled: int) -> bool:
        """The app is loaded (`compiled` components were not in the compile cache) and
        the port is about to answer; False: stop instead."""
        config = startup.config
        if startup.log_dir is not None and not config.quiet:
            logs.info(f'Logging component stdio to "{startup.log_dir}{os.sep}"')
        print_routes(app, startup.base_url)
        return True

    def cpu(self, config: Config) -> int | None:
        """The CPU to pin every thread to once loaded (None: leave them free).
        `host watch` never pins: its rebuilds, started while serving, would
        inherit the one CPU."""
        if config.cpu_pinning != "auto" or self.reloads:
            return None
        return affinity.process_cpu()

    def asgi(self, host_app: HostApp, engine: Engine) -> Any:
        """The ASGI app uvicorn runs: `host_app`, or (`host watch`) a wrapper that
        swaps the app it serves."""
        return host_app

    def subscribed(self, triggers: RedisTriggers) -> None:
        """The app's Redis subscribers, about to start reading."""

    def serving(self, server: Any) -> None:
        """uvicorn accepts connections; `server.should_exit = True` starts the drain."""

    def stopped(self, app: App, quiet: bool) -> None:
        if not quiet:
            logs.info(f"Stopped. Instance pools at exit: {pool_summary(app)}")

    def close(self, app: App) -> None:
        """After serving (or a failed start): release the app served last."""
        app.close()

    def forced(self) -> None:
        """A second signal, just before the process exits without waiting."""
        logs.write_lines(sys.stderr,
                         "Second signal: exiting without waiting for in-flight requests")


def serve(config: Config) -> int:
    # Start-up: everything that can fail does so here, before the port answers.
    startup, manifest, settings, sock = start_up(config)
    if config.workers > 1:
        from host.workers import supervise

        return supervise(startup, manifest, sock)
    return serve_app(startup, manifest, settings, sock, Lifecycle(),
                     report=(lambda line: None) if config.quiet else logs.info)


def start_up(config: Config) -> tuple[Startup, Manifest, AppSettings, socket.socket]:
    """Find and check the app, bind the socket: the part of start-up done once."""
    image = find_image(config)
    manifest = load_manifest(image.manifest_path if image else config.source)
    if config.build:
        if image is not None:
            raise ConfigError(f"--build: {config.source} is an OCI image, not sources to build")
        build_app(manifest)
        manifest = load_manifest(manifest.path)
    print_warnings(manifest)
    if config.tls is not None:
        tls.check(config.tls)
    tracing.check(os.environ)
    sock = bind_socket(*config.listen, config.find_free_port)
    try:
        # An image's own /runtime-config.toml applies unless one is given, as in the shim.
        runtime_config_file = config.runtime_config_file or (
            image.runtime_config if image else None)
        runtime_config = load_runtime_config_file(runtime_config_file)
        state_dir = config.state_dir_for(manifest, runtime_config, from_image=image is not None)
        startup = Startup(
            config=config, manifest_path=manifest.path, runtime_config_file=runtime_config_file,
            image_digest=image.digest if image else None, state_dir=state_dir,
            log_dir=config.log_dir_for(state_dir), address=sock.getsockname()[:2])
        settings = startup.settings(manifest, runtime_config)
    except BaseException:
        sock.close()
        raise
    if config.limits.max_instance_reuse > 1:
        log.warning("instances serve up to %d requests each: guest state (globals, memory) "
                    "is shared between the requests one instance serves",
                    config.limits.max_instance_reuse)
    return startup, manifest, settings, sock


def serve_app(startup: Startup, manifest: Manifest, settings: AppSettings, sock: socket.socket,
              lifecycle: Lifecycle, report: Callable[[str], None]) -> int:
    """Load the app and serve it on `sock` until a signal; drain; exit code."""
    config = startup.config
    resolve.install()  # a guest's name lookups end by its deadline (host/resolve.py)
    # Before loading: capabilities' host functions are wrapped for tracing as they link.
    telemetry = Telemetry.start(startup, report)
    # `host watch` replaces executors while the old ones drain: pooled slots sized at
    # start could run out, so it maps instance memory on demand.
    on_demand = config.instance_allocator == "on-demand" or lifecycle.reloads
    # A component that Redis triggers call has a second pool (host/executors/redis.py).
    pools = len(manifest.components) + len({t.component for t in manifest.redis_triggers})
    pooling = None if on_demand else pooling_limits(
        pools, settings.pool_size,
        max(config.http.max_concurrent, config.redis_trigger.max_in_flight),
        max(limits.memory_bytes for limits in (settings.limits,
                                               *settings.component_limits.values())))
    engine = Engine(config.cache_dir, pooling=pooling)
    engine.start_ticker()
    with lifecycle.loading():
        app = load_app(manifest, engine, settings, report=report)
    host_app: HostApp | None = None
    triggers: RedisTriggers | None = None
    stuck_messages = 0
    try:
        # `host watch` keeps triggers (maybe none yet) that an app reload may fill.
        if (app.subscriptions or lifecycle.reloads) and lifecycle.subscribes:
            # Subscribed before the port answers: a wrong address stops start-up here.
            triggers = RedisTriggers(app, config.redis_trigger)
            triggers.connect(report)
        if not lifecycle.loaded(app, startup, engine.compiled):
            return EXIT_OK
        # Compiling is done (it uses every core): from now on the threads that
        # hand requests to each other share one CPU (host/affinity.py).
        cpu = lifecycle.cpu(config)
        if cpu is not None:
            affinity.pin_threads(cpu)
        host_app = HostApp(app, scheme=startup.scheme, limits=config.http,
                           image_digest=startup.image_digest)
        asgi = lifecycle.asgi(host_app, engine)
        if triggers is not None:
            lifecycle.subscribed(triggers)
            telemetry.attach_triggers(triggers)
            triggers.start()
        # Main loop, until the first signal; returns once in-flight requests are
        # done or the drain timeout has passed. The first signal also stops the
        # Redis subscribers' reading; the messages they read are drained next.
        signalled = run_uvicorn(host_app, sock, lifecycle, config.tls,
                                access_log=config.access_log,
                                asgi=asgi, telemetry=telemetry,
                                on_signal=triggers.stop_reading if triggers else None)
        if triggers is not None:
            stuck_messages = triggers.drain((signalled or time.monotonic())
                                            + config.http.drain_seconds)
        lifecycle.stopped(host_app.app, config.quiet)
    finally:
        if triggers is not None:
            triggers.close()
        lifecycle.close(app if host_app is None else host_app.app)
        telemetry.close()
    # Shutdown. Guest calls still running past the drain deadline sit in worker
    # threads the interpreter would wait for at exit; their clients are gone, so
    # leave now. (The epoch ticker keeps running until then: stopping it would
    # let a spinning guest run forever.)
    stuck = host_app.in_flight if host_app is not None else 0
    if stuck or stuck_messages:
        logs.info(f"{stuck} request(s) and {stuck_messages} Redis message(s) still running "
                  "after the drain deadline; exiting")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    engine.stop_ticker()
    return EXIT_OK


def find_image(config: Config) -> ResolvedApp | None:
    """`-f/--from` naming an OCI image (layout dir, .tar, or registry reference), or None.

    Anything that is a spin.toml or a directory holding one stays a manifest.
    """
    source = config.source
    if not source:
        return None
    path = Path(source)
    if path.is_file() and path.suffix != ".tar" or (path / "spin.toml").is_file():
        return None
    if not path.exists() and not is_image_reference(source):
        return None  # load_manifest reports the missing file
    image = resolve_app(source, config.oci_cache_dir, insecure=config.insecure or None)
    logs.info(f"Serving OCI image {source} ({image.digest})")
    return image


def load_runtime_config_file(path: Path | None) -> RuntimeConfig:
    return load_runtime_config(path) if path else RuntimeConfig()


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


def run_uvicorn(host_app: HostApp, sock: socket.socket, lifecycle: Lifecycle,
                tls_files: tls.TlsFiles | None = None, access_log: bool = False,
                asgi: Any = None, telemetry: Telemetry | None = None,
                on_signal: Callable[[], None] | None = None) -> float | None:
    """Serve until the first SIGTERM/SIGINT (`on_signal` runs in its handler) and the
    drain after it; when that signal came (monotonic), None if none did."""
    import uvicorn

    app: Any = host_app if asgi is None else asgi
    if access_log:
        app = AccessLog(app)
    if telemetry is not None:
        app = telemetry.wrap(app, host_app)  # request metrics and spans, when on
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handler (plain or JSON)
        access_log=False,  # ours: host/access_log.py
        server_header=False,
        date_header=True,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(host_app.limits.drain_seconds),
        # Checked at start-up (tls.check); each worker loads the files itself.
        ssl_certfile=tls_files.cert if tls_files else None,
        ssl_keyfile=tls_files.key if tls_files else None,
    )
    # Server.run picks uvloop (config.loop="auto"); plain asyncio.run would not,
    # and the default loop leaves Nagle on for our socket (40 ms stalls).
    server = _server_class()(config, lifecycle, on_signal)
    server.run(sockets=[sock])
    signalled: float | None = server.signalled
    return signalled


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the
        process would die by the signal (exit 143); we return and exit 0. A
        second signal stops at once instead of waiting for in-flight requests."""

        def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle,
                     on_signal: Callable[[], None] | None) -> None:
            super().__init__(config)
            self.lifecycle = lifecycle
            self.on_signal = on_signal
            self.signalled: float | None = None  # monotonic time of the first signal

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                self.lifecycle.serving(self)

        def handle_exit(self, sig: int, frame: object) -> None:
            if self.should_exit:
                # Second signal: stop now. Guest calls run in worker threads that
                # cannot be interrupted from here, so leave without joining them.
                self.lifecycle.forced()
                sys.stdout.flush()
                os._exit(EXIT_FORCED)
            self.signalled = time.monotonic()
            if self.on_signal is not None:
                self.on_signal()
            self.should_exit = True

    return Server


def self_origin(host: str, port: int, scheme: str = "http") -> str:
    """Where the app reaches itself: the listener, via loopback if bound to all addresses."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"{scheme}://{url_host(host)}:{port}"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Output


def route_lines(manifest: Manifest, router: Router, base_url: str) -> list[str]:
    """One line per public route, in precedence order, as `spin up` prints them."""
    lines = []
    for route in router.routes:
        lines.append(f"  {route.component or route.target}: {base_url}{route.display}")
        component = manifest.components.get(route.component or "")
        if component is not None and component.description:
            lines.append(f"    {component.description}")
    return lines


def print_routes(app: App, base_url: str) -> None:
    logs.serving(base_url, route_lines(app.manifest, app.router, base_url))


def print_warnings(manifest: Manifest) -> None:
    for warning in manifest.warnings:
        log.warning("%s", warning)


def pool_summary(app: App) -> str:
    executors = {e.id: e for e in app.executors.values()
                 if isinstance(e, ComponentExecutor | WasiHttpExecutor)}
    pools = [f"{e.id}={len(e.pool)}/{e.pool.size}" for e in executors.values()]
    pools += [f"{e.id} (redis)={len(e.pool)}/{e.pool.size}"
              for e in app.message_executors.values()]
    return ", ".join(pools) or "none"
