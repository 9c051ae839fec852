"""apps/spin-redis-python: a Redis-triggered Spin SDK for Python 3.4.1 app.

PyPI `spin-sdk==3.4.1` + `componentize-py==0.17.2`, world `spin-redis` (exports
`fermyon:spin/inbound-redis`, imports Spin's `fermyon:spin@2.0.0` platform). The
same component runs on Spin 3.x and on this host, unchanged.

Each message on the trigger's channel is appended, as published, to the Redis
list `handled` at the component variable `redis_address` (outbound Redis,
`fermyon:spin/redis`), so a test or a benchmark can count what was handled.
Messages starting with:
  error           return the interface's `error` (the host logs it)
  trap            raise an exception: componentize-py traps
  sleep:SECONDS   sleep that long first (printing "sleeping"), then append
"""
import time

from spin_sdk import variables
from spin_sdk.wit import exports
from spin_sdk.wit.imports import redis, redis_types
from spin_sdk.wit.types import Err

HANDLED = b"handled"


class InboundRedis(exports.InboundRedis):
    def handle_message(self, message: bytes) -> None:
        if message.startswith(b"error"):
            raise Err(redis_types.Error.ERROR)
        if message.startswith(b"trap"):
            raise RuntimeError("asked to trap")
        if message.startswith(b"sleep:"):
            print("sleeping", flush=True)
            time.sleep(float(message[6:].split(b" ")[0]))
        with redis.Connection.open(variables.get("redis_address")) as db:
            db.execute("RPUSH", [redis.RedisParameter_Binary(HANDLED),
                                 redis.RedisParameter_Binary(message)])
