"""host/reload.py: a replaced version's executors close once its last request (or Redis
message) is done, and never while another version still uses them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from host.reload import Reloadable


class Part:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.stdio = self

    def close(self) -> None:
        self.closed = True


class Version:
    def __init__(self, grants: Part, messages: dict[str, Part] | None = None,
                 **executors: Part) -> None:
        self.executors = executors
        self.message_executors = messages or {}
        self.grants = grants


class FakeHostApp:
    """Serves `app`; a request to path P waits until `release[P]` is set."""

    def __init__(self, app: Version) -> None:
        self.app = app
        self.forgotten: list[Any] = []
        self.release: dict[str, asyncio.Event] = {}
        self.served: list[tuple[str, Any]] = []

    def use(self, app: Version) -> None:
        self.app = app

    def forget(self, executors: Any) -> None:
        self.forgotten += list(executors)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        await self.release.setdefault(scope["path"], asyncio.Event()).wait()
        self.served.append((scope["path"], app))


def wait_closed(part: Part) -> bool:
    deadline = time.monotonic() + 5
    while not part.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    return part.closed


def test_old_executor_closes_after_its_requests_and_shared_ones_stay() -> None:
    grants, shared, old_a, new_a = Part("grants"), Part("b"), Part("a1"), Part("a2")
    v1 = Version(grants, a=old_a, b=shared)
    v2 = Version(grants, a=new_a, b=shared)
    host_app = FakeHostApp(v1)  # type: ignore[arg-type]
    reloadable = Reloadable(host_app)  # type: ignore[arg-type]

    async def scenario() -> None:
        slow = asyncio.create_task(reloadable({"type": "http", "path": "/slow"}, None, None))
        await asyncio.sleep(0)
        assert reloadable.running(v1) == 1  # type: ignore[arg-type]
        reloadable.swap(v2)  # type: ignore[arg-type]
        assert host_app.app is v2 and not old_a.closed
        host_app.release["/fast"] = asyncio.Event()
        host_app.release["/fast"].set()
        await reloadable({"type": "http", "path": "/fast"}, None, None)
        assert not old_a.closed  # the slow request still runs on v1
        host_app.release["/slow"].set()
        await slow

    asyncio.run(scenario())
    assert host_app.served == [("/fast", v2), ("/slow", v1)]
    assert wait_closed(old_a)
    assert host_app.forgotten == [old_a]
    assert not shared.closed and not new_a.closed and not grants.closed
    reloadable.close()  # at exit: nothing more of v1's to close
    assert not shared.closed and not new_a.closed


def test_a_replaced_manifest_closes_its_grants_when_idle() -> None:
    old_grants, new_grants = Part("g1"), Part("g2")
    v1 = Version(old_grants, a=Part("a1"))
    v2 = Version(new_grants, a=Part("a2"))
    reloadable = Reloadable(FakeHostApp(v1))  # type: ignore[arg-type]
    reloadable.swap(v2)  # type: ignore[arg-type]
    assert wait_closed(old_grants) and wait_closed(v1.executors["a"])
    assert not new_grants.closed


def test_a_replaced_redis_executor_closes_after_its_last_message() -> None:
    grants, old_r, new_r, shared_r = Part("grants"), Part("r1"), Part("r2"), Part("s")
    v1 = Version(grants, {"r": old_r, "s": shared_r}, a=Part("a"))
    v2 = Version(grants, {"r": new_r, "s": shared_r}, a=v1.executors["a"])
    reloadable = Reloadable(FakeHostApp(v1))  # type: ignore[arg-type]
    reloadable.hold(v1, 2)  # type: ignore[arg-type]  # two handler calls of one message
    reloadable.swap(v2)  # type: ignore[arg-type]
    done = threading.Thread(target=reloadable.release, args=(v1,))  # a subscriber's thread
    done.start()
    done.join()
    assert reloadable.running(v1) == 1 and not old_r.closed  # type: ignore[arg-type]
    reloadable.release(v1)  # type: ignore[arg-type]
    assert wait_closed(old_r)
    assert not shared_r.closed and not new_r.closed and not grants.closed
