"""Runs Redis messages through components that export Spin's `fermyon:spin/inbound-redis`.

The export Spin 1.x-3.x call for `[[trigger.redis]]` and Spin SDK 3.x
components make (Python: spin-sdk 3.4.1, world `spin-redis`; our wit/ worlds
`redis-handler` and `redis-platform`):

    handle-message: func(message: payload) -> result<_, error>   // error: enum { success, error }

The same machinery as an HTTP component (host/executors/component.py): the
component's grants linked once, a pool of pre-instantiated instances, a fresh
one per message, the memory limit and the execution deadline
(`--request-timeout`). A trap, a deadline or the handler's `error` raise a
GuestError for the subscriber (host/redis_trigger.py) to log.

Spin 4's `spin:redis/inbound-redis@3.0.0` is an async export (WASI 0.3), which
wasmtime-py's C API cannot call: refused at start-up, as WASI 0.3 HTTP is.
"""

from __future__ import annotations

from host.errors import ComponentError, HandlerError
from host.executors.component import PooledComponent
from host.runtime import abi
from host.runtime.calls import TypedFunc, export_func_type

INBOUND_REDIS = "fermyon:spin/inbound-redis"
HANDLE_MESSAGE = "handle-message"
SIGNATURE = "func(message: list<u8>) -> result<_, enum { success, error }>"
ASYNC_PREFIX = "spin:redis/inbound-redis@"


def exports_inbound_redis(names: list[str]) -> bool:
    """Whether a component exporting `names` is meant for a Redis trigger."""
    return any(name == INBOUND_REDIS or name.startswith(ASYNC_PREFIX) for name in names)


class InboundRedisExecutor(PooledComponent):
    _core_module_hint = ("a Redis trigger needs a component exporting "
                         f"{INBOUND_REDIS} (e.g. Spin SDK 3, world spin-redis)")
    _result_name = "result"

    def _find_export(self) -> abi.HandlerExport:
        engine = self.engine.wasmtime
        exports = abi.exported_names(self.component, engine)
        if INBOUND_REDIS not in exports:
            v3 = next((name for name in exports if name.startswith(ASYNC_PREFIX)), None)
            if v3 is not None:
                raise ComponentError(
                    f'component "{self.id}" exports {v3} (async, WASI 0.3: Spin SDK 4/5), '
                    "which this host cannot call: wasmtime-py's C API has no async calls. "
                    f"Build it to export {INBOUND_REDIS} instead: Spin SDK 3.4.1 with "
                    "componentize-py 0.17.2 (world spin-redis)")
            raise ComponentError(
                f'component "{self.id}" is used by a [[trigger.redis]] but does not export '
                f"{INBOUND_REDIS} (it exports: {', '.join(exports) or 'nothing'}); build it "
                "against Spin SDK 3's spin-redis world or wit/'s redis-handler")
        signature = abi.describe_func(
            export_func_type(self.component, engine, INBOUND_REDIS, HANDLE_MESSAGE))
        interface = self.component.get_export_index(INBOUND_REDIS)
        func = self.component.get_export_index(HANDLE_MESSAGE, interface) if interface else None
        if func is None or signature != SIGNATURE:
            found = "no handle-message" if func is None else f"handle-message: `{signature}`"
            raise ComponentError(
                f'component "{self.id}" exports {INBOUND_REDIS} with {found}, not '
                f"`{SIGNATURE}`; rebuild it against Spin SDK 3 or wit/")
        typed = TypedFunc(export_func_type(self.component, engine, INBOUND_REDIS,
                                           HANDLE_MESSAGE))
        assert typed.result is not None
        return abi.HandlerExport(func, typed, typed.result.lift_at)

    def handle_message(self, payload: bytes) -> None:
        """Run one message in a fresh instance; raises a GuestError when the guest traps,
        runs past its deadline or returns its `error`. Blocking: call it off the event
        loop."""
        error = self._run(lambda h: h.typed.call(h.store, h.func, (payload,), h.context))
        if error is not None:  # result<_, enum>: None is ok, the enum's case name is err
            raise HandlerError(f"the handler returned error::{error}")
