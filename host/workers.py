"""`--workers N`: N processes serve one listening socket; a supervisor keeps them.

The process `host up` started does start-up once (host/serve.py `start_up`:
find and check the manifest, build, bind the socket), then supervises: it
spawns N fresh interpreters (`python -m host.workers`) that inherit the bound
socket, and each loads the app and serves it (`serve_app`) with its own
engine, epoch ticker, instance pools and limits. Nothing is forked: a process
holding wasmtime's threads (the epoch ticker, the compiler's thread pool) or
open SQLite and Redis connections cannot be forked safely, and the supervisor
never creates any. Compiled components are shared through the on-disk compile
cache: the first worker to need an artifact compiles it under the cache's
per-entry lock, the others wait for it and map the same file (with the cache
disabled or not writable, a private one for this run).

One socket shared by every worker rather than a SO_REUSEPORT socket each: an
idle worker takes the next connection (the kernel spreads connections over
SO_REUSEPORT sockets by a hash, whatever each worker's load), and a worker
that dies leaves no accept queue of its own to be reset.

Each worker pins its threads to one CPU once it has loaded (`--cpu-pinning
auto`, host/affinity.py): the supervisor hands out the CPUs it may use in
turn, starting from the one it runs on, so N workers on N cores get one each
and pods on a large node (a CPU quota, not a cpuset) start from different
cores. Floating threads cost 2.5-4x the CPU per request (bench/workers.py).

Supervisor and worker talk over a socketpair, one JSON object per line:

    supervisor -> worker   the Startup (pickled, length-prefixed, once); {"go": true}
    worker -> supervisor   {"loaded": {"compiled": N}} or {"error": MSG, "exit_code": N};
                           {"serving": true}

End of file says the other side is gone: a worker whose supervisor died
drains and exits. Workers wait for "go" until all have loaded, so nothing
answers before start-up has succeeded everywhere; the first error a worker
reports is the command's (one line, its exit code). The banner is printed once
every worker serves. One worker (the first) reports its start-up and warnings;
the others load silently. Workers run in their own process group: a terminal's
Ctrl-C reaches the supervisor only, which passes signals on.

The app's Redis subscribers (`[[trigger.redis]]`) run in the worker of slot 0
only: pub/sub delivers every message to every subscriber, so N subscribing
workers would handle each message N times (Spin runs one subscriber per
process). A replacement for that worker takes its slot and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from host import affinity, logs
from host.app import App
from host.config import Config
from host.errors import HostError, WorkerError
from host.limits import (
    WORKER_FORCED_STOP_SECONDS,
    WORKER_HEALTHY_SECONDS,
    WORKER_HEARTBEAT_SECONDS,
    WORKER_RESTART_DELAYS,
    WORKER_STOP_GRACE_SECONDS,
)
from host.manifest import Manifest, load_manifest
from host.routing import Router
from host.serve import (
    EXIT_FORCED,
    EXIT_OK,
    Lifecycle,
    Startup,
    load_runtime_config_file,
    pool_summary,
    route_lines,
    serve_app,
)

log = logging.getLogger("host.workers")

EXIT_INTERRUPTED = 130  # a signal during start-up
_FRAME = struct.Struct("!I")
# The directory holding the `host` package: workers import this copy, wherever
# their working directory is (run-bundle enters the container's).
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def supervise(startup: Startup, manifest: Manifest, sock: socket.socket) -> int:
    """Run `startup.config.workers` workers on `sock` until a signal; the exit code."""
    cache_dir, private = _shared_cache(startup.config.cache_dir)
    startup = replace(startup, config=replace(startup.config, cache_dir=cache_dir))
    if startup.state_dir is None and any(c.key_value_stores or c.sqlite_databases
                                         or c.blob_containers
                                         for c in manifest.components.values()):
        log.warning("no state directory: each of the %d workers keeps its own in-memory "
                    "key-value and SQLite stores and temporary blob containers (give "
                    "--state-dir or a runtime config to share them)", startup.config.workers)
    try:
        with contextlib.ExitStack() as stack:
            metrics = None
            if startup.config.metrics_listen is not None:
                # The supervisor serves the listener; each worker its own socket (host/metrics.py).
                from host.metrics import serve_supervisor

                metrics = stack.enter_context(serve_supervisor(
                    startup.config.metrics_listen,
                    (lambda line: None) if startup.config.quiet else logs.info))
                startup = replace(startup, metrics_dir=metrics.directory)
            supervisor = _Supervisor(startup, manifest, sock)
            if metrics is not None:
                metrics.serving = supervisor.serving
            return supervisor.run()
    finally:
        sock.close()
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _shared_cache(configured: Path | None) -> tuple[Path | None, Path | None]:
    """The compile cache every worker uses, and the private directory to remove at exit."""
    if configured is not None:
        try:
            configured.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=configured):
                pass
            return configured, None
        except OSError as exc:
            why = f"cannot write compile cache {configured} ({exc.strerror or exc})"
    else:
        why = "compile cache disabled"
    try:
        private = Path(tempfile.mkdtemp(prefix="spinhost-compiled-"))
    except OSError as exc:
        log.warning("%s, and no temporary directory (%s): every worker compiles each "
                    "component", why, exc.strerror or exc)
        return None, None
    logs.info(f"{why}: the workers share {private} for this run (components are compiled "
              "at every start)")
    return private, private


@dataclass
class _Worker:
    """The supervisor's view of one worker process."""

    proc: subprocess.Popen[bytes]
    control: socket.socket
    slot: int  # 0..N-1; a replacement takes the slot (and core) of the worker it replaces
    spawned: float  # monotonic
    replaces: int | None
    state: str = "loading"  # -> "loaded" -> "serving"
    serving_since: float | None = None
    heard: float = 0.0  # monotonic: its last message (a serving worker's heartbeat)
    compiled: int = 0
    buffer: bytes = b""

    @property
    def pid(self) -> int:
        return self.proc.pid


class _Supervisor:
    def __init__(self, startup: Startup, manifest: Manifest, sock: socket.socket) -> None:
        self.startup = startup
        self.manifest = manifest
        self.sock = sock
        self.count = startup.config.workers
        self.workers: dict[int, _Worker] = {}  # by pid
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.phase = "starting"  # -> "serving" -> "stopping"
        self.error: WorkerError | None = None  # the first start-up failure
        self.replacements: list[tuple[float, int, int]] = []  # (when, pid replaced, slot)
        # One CPU per worker slot, each pinned once it has loaded (host/affinity.py).
        self.cpus = (affinity.worker_cpus(self.count)
                     if startup.config.cpu_pinning == "auto" else None)
        self.quick_deaths = 0  # consecutive workers that died before serving long

    # -- the supervisor's life --------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.count):
                self._spawn(slot, report=slot == 0)
            if not self._start():
                return EXIT_INTERRUPTED
            return self._serve()
        finally:
            self._kill_all()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.selector.close()
            wake_r.close()
            wake_w.close()

    def serving(self) -> list[tuple[int, int]]:
        """(slot, pid) of every worker serving now; called from the metrics thread."""
        return [(w.slot, w.pid) for w in list(self.workers.values()) if w.state == "serving"]

    def _on_signal(self, sig: int, frame: object) -> None:
        self.signals.append(sig)

    def _start(self) -> bool:
        """Until every worker serves (True), a signal (False) or an error (raised)."""
        while not self.signals:
            if self.error is not None:
                raise self.error
            if self.workers and all(w.state == "serving" for w in self.workers.values()):
                self._announce()
                return True
            self._poll(None)
        return False

    def _announce(self) -> None:
        self.phase = "serving"
        startup, config = self.startup, self.startup.config
        if startup.log_dir is not None and not config.quiet:
            logs.info(f'Logging component stdio to "{startup.log_dir}{os.sep}"')
        if not config.quiet:
            workers = sorted(self.workers.values(), key=lambda w: w.spawned)
            slowest = max(time.monotonic() - w.spawned for w in workers)
            compiled = sum(1 for w in workers if w.compiled)
            pinned = (f"each pinned to one of CPUs {', '.join(map(str, self.cpus))}"
                      if self.cpus else "not pinned")
            logs.info(f"{self.count} workers serving (pids "
                      f"{', '.join(str(w.pid) for w in workers)}, {pinned}; "
                      f"ready within {slowest:.2f} s; "
                      f"workers that compiled: {compiled}, that loaded every component from "
                      f"the compile cache: {self.count - compiled})")
        router = Router.build((t.id, t.component, t.route) for t in self.manifest.triggers)
        logs.serving(startup.base_url, route_lines(self.manifest, router, startup.base_url))

    def _serve(self) -> int:
        while not self.signals:
            now = time.monotonic()
            due = [r for r in self.replacements if r[0] <= now]
            for replacement in due:
                self.replacements.remove(replacement)
                _, pid, slot = replacement
                self._spawn(slot, report=False, replaces=pid)
            wake = min([when for when, _, _ in self.replacements]
                       + [now + WORKER_HEARTBEAT_SECONDS])  # the silent check's next turn
            self._poll(max(0.0, wake - now))
            self._kill_silent()
        return self._stop()

    def _kill_silent(self) -> None:
        """Kill every serving worker whose event loop has been silent for --worker-timeout:
        the connections it holds get no answer; its exit brings a replacement."""
        timeout = self.startup.config.worker_timeout
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.state == "serving" and now - worker.heard > timeout:
                log.warning("worker %d has not answered for %.0f s (its event loop is stuck; "
                            "--worker-timeout %g); killing it", worker.pid, now - worker.heard,
                            timeout)
                worker.state = "killed"
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()

    def _stop(self) -> int:
        """First signal: drain every worker; a second one: stop them at once (130)."""
        self.phase = "stopping"
        self.sock.close()  # the port refuses new connections once the workers close theirs
        self.replacements.clear()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.startup.config.http.drain_seconds + \
            WORKER_STOP_GRACE_SECONDS
        forced = False
        while self.workers:
            if len(self.signals) > 1 and not forced:
                forced = True
                logs.write_lines(sys.stderr, "Second signal: exiting without waiting for "
                                             "in-flight requests")
                self._signal_all(signal.SIGTERM)
                deadline = time.monotonic() + WORKER_FORCED_STOP_SECONDS
            left = deadline - time.monotonic()
            if left <= 0:
                for worker in list(self.workers.values()):
                    log.warning("worker %d still running %.0f s after the signal; killing it",
                                worker.pid, time.monotonic() - worker.spawned)
                break
            self._poll(left)
        if not self.startup.config.quiet and not forced:
            logs.info("Stopped.")
        return EXIT_FORCED if forced else EXIT_OK

    # -- workers --------------------------------------------------------------

    def _spawn(self, slot: int, report: bool, replaces: int | None = None) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH"))
                                            if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "host.workers", str(theirs.fileno()),
                 str(self.sock.fileno()), "report" if report else "quiet",
                 str(self.cpus[slot]) if self.cpus else "-", str(slot)],
                pass_fds=(theirs.fileno(), self.sock.fileno()), stdin=subprocess.DEVNULL,
                env=env, process_group=0)
        except OSError as exc:
            mine.close()
            if self.phase == "starting":
                raise WorkerError(
                    f"cannot start a worker process: {exc.strerror or exc}") from None
            log.warning("cannot start a worker process (%s)", exc.strerror or exc)
            self._replace_later(replaces or 0, slot, lived=0.0)
            return
        finally:
            theirs.close()
        state = pickle.dumps(self.startup)
        mine.sendall(_FRAME.pack(len(state)) + state)
        mine.setblocking(False)
        worker = _Worker(proc, mine, slot, time.monotonic(), replaces)
        self.workers[proc.pid] = worker
        self.selector.register(mine, selectors.EVENT_READ, worker)

    def _poll(self, timeout: float | None) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:  # a signal woke us; its handler has run
                with contextlib.suppress(OSError):
                    key.fileobj.recv(4096)  # type: ignore[union-attr]
                continue
            worker: _Worker = key.data
            try:
                data = worker.control.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self._exited(worker)
                continue
            worker.heard = time.monotonic()
            worker.buffer += data
            *lines, worker.buffer = worker.buffer.split(b"\n")
            for line in lines:
                self._message(worker, json.loads(line))

    def _message(self, worker: _Worker, message: dict[str, Any]) -> None:
        if "error" in message:
            text = str(message["error"])
            if self.phase == "starting":
                if self.error is None:
                    self.error = WorkerError(text, int(message.get("exit_code", 1)))
            else:
                log.warning("worker %d could not start: %s", worker.pid, text)
        elif "loaded" in message:
            worker.state = "loaded"
            worker.compiled = int(message["loaded"].get("compiled", 0))
            if self.phase != "starting":
                self._send(worker, {"go": True})
            elif all(w.state == "loaded" for w in self.workers.values()):
                for each in self.workers.values():
                    self._send(each, {"go": True})
        elif "serving" in message:
            worker.state = "serving"
            worker.serving_since = time.monotonic()
            if worker.replaces is not None and not self.startup.config.quiet:
                logs.info(f"worker {worker.pid} serving (replaces worker {worker.replaces})")

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # gone: its end of file is on its way
            worker.control.sendall(json.dumps(message).encode() + b"\n")

    def _exited(self, worker: _Worker) -> None:
        self.selector.unregister(worker.control)
        worker.control.close()
        try:
            status = worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its end but lives on: end it
            worker.proc.kill()
            status = worker.proc.wait()
        del self.workers[worker.pid]
        if self.phase == "stopping":
            return
        if self.phase == "starting":
            if self.error is None:
                self.error = WorkerError(
                    f"worker process {worker.pid} {describe_exit(status)} during start-up",
                    status if 0 < status < 256 else 1)
            return
        lived = time.monotonic() - worker.serving_since if worker.serving_since else 0.0
        self._replace_later(worker.pid, worker.slot, lived, status)

    def _replace_later(self, pid: int, slot: int, lived: float,
                       status: int | None = None) -> None:
        self.quick_deaths = 0 if lived >= WORKER_HEALTHY_SECONDS else self.quick_deaths + 1
        first, last = WORKER_RESTART_DELAYS
        delay = 0.0 if not self.quick_deaths else min(last, first * 2 ** (self.quick_deaths - 1))
        how = describe_exit(status) if status is not None else "did not start"
        log.warning("worker %d %s; starting a new one%s", pid, how,
                    f" in {delay:g} s" if delay else "")
        self.replacements.append((time.monotonic() + delay, pid, slot))

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)

    def _kill_all(self) -> None:
        """Whatever is left when the supervisor returns (start-up failed or was
        interrupted, or a worker outlived its drain) is killed and reaped."""
        self._signal_all(signal.SIGKILL)
        for worker in self.workers.values():
            worker.proc.wait()
            worker.control.close()
        self.workers.clear()


def describe_exit(status: int) -> str:
    """`exited with status 1`, `was killed by SIGKILL` (Popen's negative status)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


# -- the worker side -----------------------------------------------------------


class WorkerLifecycle(Lifecycle):
    """A worker's steps, told to the supervisor instead of the terminal."""

    def __init__(self, control: socket.socket, report: bool, slot: int = 0,
                 cpu: int | None = None) -> None:
        self.control = control
        self.report = report
        self.subscribes = slot == 0  # the Redis trigger runs in one worker
        self._cpu = cpu  # the supervisor's choice for this slot

    def cpu(self, config: Config) -> int | None:
        return self._cpu

    def send(self, message: dict[str, Any]) -> bool:
        try:
            self.control.sendall(json.dumps(message).encode() + b"\n")
            return True
        except OSError:
            return False

    def loading(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.report else logs.silenced()

    def loaded(self, app: App, startup: Startup, compiled: int) -> bool:
        """Tell the supervisor, then wait for "go" (every worker has loaded); False
        when the supervisor is gone or stopped the start-up."""
        if not self.send({"loaded": {"compiled": compiled}}):
            return False
        with self.control.makefile("rb") as reader:
            line = reader.readline()
        return bool(line) and bool(json.loads(line).get("go"))

    def serving(self, server: Any) -> None:
        if not self.send({"serving": True}):
            server.should_exit = True
            return
        # On the event loop: a beat proves the loop turns, not just that a thread lives.
        loop = asyncio.get_running_loop()
        beat = json.dumps({"alive": True}).encode() + b"\n"

        def heartbeat() -> None:
            with contextlib.suppress(OSError):  # full or gone: never block the loop
                self.control.send(beat, socket.MSG_DONTWAIT)
            loop.call_later(WORKER_HEARTBEAT_SECONDS, heartbeat)
        loop.call_later(WORKER_HEARTBEAT_SECONDS, heartbeat)

        def watch() -> None:  # the supervisor never writes again: this waits for its end
            with contextlib.suppress(OSError):
                while self.control.recv(4096):
                    pass
            server.should_exit = True  # supervisor gone: drain and exit

        threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()

    def stopped(self, app: App, quiet: bool) -> None:
        if not quiet:
            logs.info(f"Worker {os.getpid()} stopped. Instance pools at exit: "
                      f"{pool_summary(app)}")

    def forced(self) -> None:
        """The supervisor has said it once for every worker."""


def worker_main(argv: Sequence[str]) -> int:
    """`python -m host.workers CONTROL_FD LISTEN_FD report|quiet CPU|- SLOT`, spawned by
    `supervise`."""
    control = socket.socket(fileno=int(argv[0]))
    sock = socket.socket(fileno=int(argv[1]))
    lifecycle = WorkerLifecycle(control, report=argv[2] == "report", slot=int(argv[4]),
                                cpu=None if argv[3] == "-" else int(argv[3]))
    with control.makefile("rb") as reader:
        header = reader.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return EXIT_OK  # the supervisor is gone already
        startup: Startup = pickle.loads(reader.read(_FRAME.unpack(header)[0]))
    config = startup.config
    logs.configure(config.log_format, config.quiet)
    try:
        manifest = load_manifest(startup.manifest_path)
        settings = startup.settings(manifest,
                                    load_runtime_config_file(startup.runtime_config_file))
        # --key-value/--sqlite data for shared stores: put there once, by the first worker.
        settings = replace(settings, seed_shared=lifecycle.report)
        return serve_app(startup, manifest, settings, sock, lifecycle,
                         report=logs.info if lifecycle.report and not config.quiet
                         else (lambda line: None))
    except HostError as exc:
        lifecycle.send({"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
