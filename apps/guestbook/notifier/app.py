"""The guestbook's notifier: a Redis-triggered Spin SDK for Python 3.4.1 component.

PyPI `spin-sdk==3.4.1` + `componentize-py==0.17.2`, world `spin-redis`. Each
message on `guestbook-posts` (published by the guestbook component when a post
is stored: `{"event": "post-created", "id": N}`) is recorded in the key-value
store `default` under the key `notifications`:

    {"count": 3, "recent": [3, 2, 1]}     # the last RECENT post ids, newest first

The guestbook's GET /notifications reads that key back: the round trip
HTTP -> database -> Redis -> this component -> key-value -> HTTP. The record is
read, changed and written back: correct while the host hands this component
one message at a time (`--max-concurrent-messages 1`, the default, as Spin).
A message that is not such a notification is the interface's `error` (the
host logs it) and changes nothing.
"""
import json

from spin_sdk import key_value
from spin_sdk.wit import exports
from spin_sdk.wit.imports import redis_types
from spin_sdk.wit.types import Err

KEY = "notifications"
RECENT = 10


class InboundRedis(exports.InboundRedis):
    def handle_message(self, message: bytes) -> None:
        post_id = parse(message)
        if post_id is None:
            print(f"not a guestbook notification, ignored: {message[:200]!r}", flush=True)
            raise Err(redis_types.Error.ERROR)
        with key_value.open_default() as store:
            raw = store.get(KEY)
            record = json.loads(raw) if raw else {"count": 0, "recent": []}
            record["count"] += 1
            record["recent"] = [post_id, *record["recent"]][:RECENT]
            store.set(KEY, json.dumps(record).encode())


def parse(message: bytes) -> int | None:
    try:
        event = json.loads(message)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != "post-created":
        return None
    post_id = event.get("id")
    return post_id if isinstance(post_id, int) and not isinstance(post_id, bool) else None
