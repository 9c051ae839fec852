"""The server's life: start up, serve until a signal, drain, exit with a documented code.

`serve(config)` reads top to bottom: find the app (a manifest or an OCI image),
build it if asked, bind the socket, load every component, serve with uvicorn
until SIGTERM/SIGINT, let in-flight requests finish (up to the drain timeout),
close the app. Exit codes are in README.md ("Commands").
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import sys
from pathlib import Path

from host import logs
from host.app import App, load_app
from host.build import build_app
from host.config import FREE_PORT_ATTEMPTS, Config
from host.errors import ConfigError
from host.executors.component import ComponentExecutor
from host.executors.wasi_http import WasiHttpExecutor
from host.limits import pooling_limits
from host.manifest import Manifest, load_manifest
from host.oci.registry import is_image_reference
from host.oci.store import ResolvedApp, resolve_app
from host.runtime.engine import Engine
from host.runtime_config import RuntimeConfig, load_runtime_config
from host.server import HostApp

log = logging.getLogger("host")

EXIT_OK = 0
EXIT_FORCED = 130  # a second SIGTERM/SIGINT cut the drain short


def serve(config: Config) -> int:
    # Start-up: everything that can fail does so here, before the port answers.
    image = find_image(config)
    manifest = load_manifest(image.manifest_path if image else config.source)
    if config.build:
        if image is not None:
            raise ConfigError(f"--build: {config.source} is an OCI image, not sources to build")
        build_app(manifest)
        manifest = load_manifest(manifest.path)
    print_warnings(manifest)
    sock = bind_socket(*config.listen, config.find_free_port)
    bound_host, bound_port = sock.getsockname()[:2]
    # An image's own /runtime-config.toml applies unless one is given, as in the shim.
    runtime_config = load_runtime_config_file(
        config.runtime_config_file or (image.runtime_config if image else None))
    state_dir = config.state_dir_for(manifest, runtime_config, from_image=image is not None)
    log_dir = config.log_dir_for(state_dir)
    settings = config.app_settings(
        manifest, runtime_config=runtime_config, state_dir=state_dir, log_dir=log_dir,
        self_origin=self_origin(bound_host, bound_port))
    if config.limits.max_instance_reuse > 1:
        log.warning("instances serve up to %d requests each: guest state (globals, memory) "
                    "is shared between the requests one instance serves",
                    config.limits.max_instance_reuse)
    pooling = None if config.instance_allocator == "on-demand" else pooling_limits(
        len(manifest.components), settings.pool_size, config.http.max_concurrent,
        max(limits.memory_bytes for limits in (settings.limits,
                                               *settings.component_limits.values())))
    engine = Engine(config.cache_dir, pooling=pooling)
    engine.start_ticker()
    app = load_app(manifest, engine, settings,
                   report=(lambda line: None) if config.quiet else logs.info)
    host_app: HostApp | None = None
    try:
        if log_dir is not None and not config.quiet:
            logs.info(f'Logging component stdio to "{log_dir}{os.sep}"')
        print_routes(app, f"http://{url_host(bound_host)}:{bound_port}")
        host_app = HostApp(app, limits=config.http, image_digest=image.digest if image else None)
        # Main loop, until the first signal; returns once in-flight requests are
        # done or the drain timeout has passed.
        run_uvicorn(host_app, sock)
        if not config.quiet:
            logs.info(f"Stopped. Instance pools at exit: {pool_summary(app)}")
    finally:
        app.close()
    # Shutdown. Guest calls still running past the drain deadline sit in worker
    # threads the interpreter would wait for at exit; their clients are gone, so
    # leave now. (The epoch ticker keeps running until then: stopping it would
    # let a spinning guest run forever.)
    stuck = host_app.in_flight if host_app is not None else 0
    if stuck:
        logs.info(f"{stuck} request(s) still running after the drain deadline; exiting")
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


def run_uvicorn(host_app: HostApp, sock: socket.socket) -> None:
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
    # Server.run picks uvloop (config.loop="auto"); plain asyncio.run would not,
    # and the default loop leaves Nagle on for our socket (40 ms stalls).
    _server_class()(config).run(sockets=[sock])


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


def self_origin(host: str, port: int) -> str:
    """Where the app reaches itself: the listener, via loopback if bound to all addresses."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{url_host(host)}:{port}"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Output


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


def print_warnings(manifest: Manifest) -> None:
    for warning in manifest.warnings:
        log.warning("%s", warning)


def pool_summary(app: App) -> str:
    executors = {e.id: e for e in app.executors.values()
                 if isinstance(e, ComponentExecutor | WasiHttpExecutor)}
    pools = ", ".join(f"{e.id}={len(e.pool)}/{e.pool.size}" for e in executors.values())
    return pools or "none"
