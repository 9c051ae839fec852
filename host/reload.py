"""Serving a new version of an app without dropping a request (`host watch`).

`Reloadable` is the ASGI app uvicorn runs when watching: it hands each request
to the `HostApp` and counts, per version of the app (an `App`: router,
executors, grants), the requests running on it. `swap(new)`, called on the
event loop, makes the HostApp serve `new` from the next request on
(`HostApp.use`, one assignment); requests already running finish on the version
they started with, and once the last of them is done, whatever no live version
shares (the replaced executors and their pools, the grants of a replaced
manifest) is closed off the event loop. A component that did not change is the
same executor object in both versions: its pool is neither refilled nor closed.

The version a request runs on is the one `HostApp.__call__` reads first,
before it awaits anything; this wrapper reads the same attribute just before
calling it, on the same thread, so the two agree.

Redis messages count too (`hold`/`release`, from the subscribers' threads:
host/redis_trigger.py): a version's Redis executors (`App.message_executors`)
and its grants are closed once neither a request nor a message runs on it.
"""

from __future__ import annotations

import threading

from host.app import App, Executor
from host.executors.redis import InboundRedisExecutor
from host.grants import Grants
from host.server import HostApp, Receive, Scope, Send


class Reloadable:
    def __init__(self, host_app: HostApp) -> None:
        self.host_app = host_app
        # Requests and Redis messages running, by id() of their App.
        self._running: dict[int, int] = {}
        self._retired: list[App] = []  # replaced versions, closed once nothing runs on them
        self._lock = threading.Lock()  # messages are counted from the subscribers' threads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.host_app(scope, receive, send)
            return
        app = self.host_app.app
        self.hold(app)
        try:
            await self.host_app(scope, receive, send)
        finally:
            self.release(app)

    def hold(self, app: App, count: int = 1) -> None:
        """`count` more requests or messages run on `app`. Any thread."""
        key = id(app)
        with self._lock:
            self._running[key] = self._running.get(key, 0) + count

    def release(self, app: App) -> None:
        """One of them is done; a replaced version closes after its last. Any thread."""
        key = id(app)
        with self._lock:
            left = self._running.pop(key) - 1
            if left:
                self._running[key] = left
                return
            if not self._retired:
                return
        self._close_idle()

    @property
    def app(self) -> App:
        return self.host_app.app

    def running(self, app: App) -> int:
        """Requests and messages running on `app` (a version served now or before)."""
        return self._running.get(id(app), 0)

    def swap(self, app: App) -> None:
        """Serve `app` from the next request on. On the event loop (the Redis
        subscribers are handed `app` before: host/watch.py)."""
        with self._lock:
            self._retired.append(self.host_app.app)
            self.host_app.use(app)
        self._close_idle()

    def close(self) -> None:
        """After serving: close what only replaced versions hold (the current app is
        closed by its owner)."""
        with self._lock:
            retired, self._retired = self._retired, []
        self._close(retired, [self.host_app.app], background=False)

    def _close_idle(self) -> None:
        with self._lock:
            idle = [app for app in self._retired if id(app) not in self._running]
            if not idle:
                return
            self._retired = [app for app in self._retired if id(app) in self._running]
            live = [self.host_app.app, *self._retired]
        self._close(idle, live, background=True)

    def _close(self, apps: list[App], live: list[App], background: bool) -> None:
        kept = {id(e) for app in live for e in _executors(app)}
        executors: dict[int, Executor | InboundRedisExecutor] = {
            id(e): e for app in apps for e in _executors(app) if id(e) not in kept}
        kept_grants = {id(app.grants) for app in live}
        grants: dict[int, Grants] = {id(app.grants): app.grants for app in apps
                                     if id(app.grants) not in kept_grants}
        if not executors and not grants:
            return
        self.host_app.forget(executors.values())
        closing = _Closing(list(executors.values()), list(grants.values()))
        if background:  # a store's close may wait on I/O (Redis, SQLite): not on the loop
            threading.Thread(target=closing.run, name="reload-close", daemon=True).start()
        else:
            closing.run()


def _executors(app: App) -> list[Executor | InboundRedisExecutor]:
    return [*app.executors.values(), *app.message_executors.values()]


class _Closing:
    def __init__(self, executors: list[Executor | InboundRedisExecutor],
                 grants: list[Grants]) -> None:
        self.executors = executors
        self.grants = grants

    def run(self) -> None:
        for executor in self.executors:
            executor.close()
            executor.stdio.close()
        for grants in self.grants:
            grants.close()


def new_only(new: App, old: App) -> _Closing:
    """What `new` holds that `old` does not: closed when `new` is never served."""
    kept = {id(e) for e in _executors(old)}
    return _Closing([e for e in {id(e): e for e in _executors(new)}.values()
                     if id(e) not in kept],
                    [new.grants] if new.grants is not old.grants else [])
