"""Baseline ASGI apps, served by uvicorn with the same settings as `host up`.

    raw_app          (a) bare ASGI: the floor of uvicorn + httptools + uvloop
    starlette_app    (b) Starlette hello
    python_hello_app (f) apps/hello-python's handler written as a native Starlette route
    echo_app         bare ASGI echo streaming the request body back as it arrives
                     (the floor of the body-throughput rows)

No `host` import here.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

HELLO = b"Hello from ASGI\n"


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(HELLO)).encode())]})
    await send({"type": "http.response.body", "body": HELLO})


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await raw_app(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": message.get("body", b""),
                    "more_body": more})


async def _starlette_hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette\n")


async def _python_hello(request: Request) -> PlainTextResponse:
    # What apps/hello-python answers: 200, `content-type: text/plain` exactly (media_type
    # would append "; charset=utf-8"), this body.
    return PlainTextResponse("Hello from Python\n", headers={"content-type": "text/plain"})


starlette_app = Starlette(routes=[Route("/hello", _starlette_hello)])
python_hello_app = Starlette(routes=[Route("/hello", _python_hello)])
