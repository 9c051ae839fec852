"""(g) The naive path over HTTP: a Starlette route that runs the component through
wasmtime-py's generic API, fresh Store + linker.instantiate per request.

    BENCH_WASM=fixed.wasm uvicorn bench.naive_app:app

Like `host up`, the wasm work runs off the event loop (run_in_threadpool).
No `host` import (see bench.generic).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.generic import GenericHandler

_handler = GenericHandler(Path(os.environ["BENCH_WASM"]))


async def _handle(request: Request) -> Response:
    body = await request.body()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    headers = [(k.decode("latin-1"), v) for k, v in request.headers.raw]
    status, out_headers, out_body = await run_in_threadpool(
        _handler.handle, request.method, path, headers, body)
    response = Response(out_body, status_code=status)
    for name, value in out_headers:
        response.headers.append(name, value.decode("latin-1"))
    return response


app = Starlette(routes=[Route("/fixed", _handle, methods=["GET", "POST"])])
