"""The access log: one line per request, written when its response is done.

`AccessLog` wraps the ASGI app (`--no-access-log` leaves it out): it watches
the response messages go by for the status and the body bytes sent, and reads
which component served the request from the scope (`COMPONENT_KEY`, set by
host/server.py once the route matched). The line (host/logs.py `access`) has
the method, the path without its query, the status, the component, the time
from the request's arrival to its last body byte handed to the server, and the
body bytes sent. Never the query string (it carries tokens), never a header
value.
"""

from __future__ import annotations

import re
import time
from typing import Any

from host import logs
from host.server import COMPONENT_KEY, Receive, ResponseWatch, Scope, Send

# Printable ASCII but space: anything else in a path or method is %-escaped, so a
# line can never be split or forged by what a client sends.
_PLAIN = re.compile(r"[!-~]*")


class AccessLog:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        except BaseException:
            watch.raised()
            raise
        finally:
            path = scope.get("raw_path") or scope["path"].encode()
            logs.access(_escape(scope["method"]), _escape(path.split(b"?", 1)[0]),
                        watch.status, scope.get(COMPONENT_KEY), time.perf_counter() - start,
                        watch.sent)


def _escape(text: str | bytes) -> str:
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else text
    decoded = raw.decode("latin-1")
    if _PLAIN.fullmatch(decoded):
        return decoded
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in raw)
