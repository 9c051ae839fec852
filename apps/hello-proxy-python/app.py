"""A componentize-py app for the standard wasi:http/proxy world (no Spin SDK).

    /         plain-text hello
    /echo     streams the request body back, chunk by chunk, as it arrives
    /headers  JSON: method, path, query, headers
    else      404
"""

import json

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import InputStream, OutputStream, StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method,
    Method_Connect,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Options,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    Method_Trace,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

CHUNK = 64 * 1024
METHODS = {Method_Get: "GET", Method_Head: "HEAD", Method_Post: "POST", Method_Put: "PUT",
           Method_Delete: "DELETE", Method_Connect: "CONNECT", Method_Options: "OPTIONS",
           Method_Trace: "TRACE", Method_Patch: "PATCH"}


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path, _, query = (request.path_with_query() or "/").partition("?")
        if path == "/":
            respond(response_out, 200, "text/plain", b"Hello from componentize-py\n")
        elif path == "/headers":
            respond(response_out, 200, "application/json", describe(request, path, query))
        elif path == "/echo":
            echo(request, response_out)
        else:
            respond(response_out, 404, "text/plain", b"Not found\n")


def start(response_out: ResponseOutparam, status: int, content_type: str) -> OutgoingBody:
    response = OutgoingResponse(Fields.from_list([("content-type", content_type.encode())]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    return body


def respond(response_out: ResponseOutparam, status: int, content_type: str,
            content: bytes) -> None:
    body = start(response_out, status, content_type)
    with body.write() as out:
        write_all(out, content)
        out.blocking_flush()
    OutgoingBody.finish(body, None)


def describe(request: IncomingRequest, path: str, query: str) -> bytes:
    headers: dict[str, list[str]] = {}
    for key, value in request.headers().entries():
        headers.setdefault(key, []).append(value.decode("latin-1"))
    return json.dumps({"method": method_name(request.method()), "path": path, "query": query,
                       "headers": headers}).encode()


def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    # The head goes out with the first write; each chunk is written back before the
    # next is read, so neither side ever holds the whole body.
    incoming = request.consume()
    body = start(response_out, 200, "application/octet-stream")
    with incoming.stream() as source, body.write() as out:
        copy(source, out)
        out.blocking_flush()
    OutgoingBody.finish(body, None)


def copy(source: InputStream, out: OutputStream) -> None:
    while True:
        try:
            chunk = source.blocking_read(CHUNK)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                return
            raise
        write_all(out, chunk)


def write_all(out: OutputStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        allowed = out.check_write()
        if allowed == 0:
            with out.subscribe() as ready:  # a child of `out`: dropped before it
                ready.block()
            continue
        out.write(bytes(view[:allowed]))
        view = view[allowed:]


def method_name(method: Method) -> str:
    return method.value if isinstance(method, Method_Other) else METHODS[type(method)]
