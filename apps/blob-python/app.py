"""A componentize-py wasi:http/proxy app using wasi:blobstore@0.2.0-draft.

Every route takes `?container=LABEL` (default "default") and most `&name=OBJECT`:

    PUT    /object            streams the request body into the object (write-data, finish)
    GET    /object            streams the object back (consume-async); `&start=&end=` a range
    GET    /object/sync       the object in one value (consume-sync)
    DELETE /object            delete-object
    GET    /object/info       object-info and has-object, as JSON
    POST   /objects/delete    delete-objects of the names in the body (one per line)
    GET    /list              every name, read `&page=N` at a time, as JSON pages; `&skip=N` first
    POST   /copy, /move       `?from=C/NAME&to=C/NAME` (the first "/" splits container from name)
    GET    /container         container-exists, name, info as JSON
    POST   /container         create-container;  DELETE /container: delete-container
    POST   /clear             clear

A blob-store error answers 409 (404 for a missing object) with {"error": message}.
"""

import json
from urllib.parse import parse_qs

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import blobstore
from wit_world.imports.container import Container
from wit_world.imports.streams import (
    InputStream,
    OutputStream,
    StreamError_Closed,
    StreamError_LastOperationFailed,
)
from wit_world.imports.wasi_blobstore_types import IncomingValue, ObjectId, OutgoingValue
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingRequest,
    Method_Delete,
    Method_Get,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

CHUNK = 64 * 1024
TO_END = 2**64 - 1


class BlobError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path, _, query = (request.path_with_query() or "/").partition("?")
        args = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        method = request.method()
        try:
            route(request, response_out, method, path, args)
        except BlobError as e:
            respond(response_out, e.status, {"error": str(e)})


def route(request: IncomingRequest, out: ResponseOutparam, method: object, path: str,
          args: dict[str, str]) -> None:
    label = args.get("container", "default")
    name = args.get("name", "")
    if path == "/object" and isinstance(method, Method_Put):
        size = upload(open_container(label), name, request)
        respond(out, 200, {"stored": name, "size": size})
    elif path == "/object" and isinstance(method, Method_Get):
        start, end = int(args.get("start", "0")), int(args.get("end", str(TO_END)))
        value = call(lambda: open_container(label).get_data(name, start, end))
        download(value, out)
    elif path == "/object/sync":
        value = call(lambda: open_container(label).get_data(name, 0, TO_END))
        data = call(lambda: IncomingValue.incoming_value_consume_sync(value))
        send(out, 200, "application/octet-stream", data)
    elif path == "/object" and isinstance(method, Method_Delete):
        call(lambda: open_container(label).delete_object(name))
        respond(out, 200, {"deleted": name})
    elif path == "/object/info":
        c = open_container(label)
        has = call(lambda: c.has_object(name))
        info = call(lambda: c.object_info(name)) if has else None
        respond(out, 200, {"has": has, "info": info and {
            "name": info.name, "container": info.container, "created_at": info.created_at,
            "size": info.size}})
    elif path == "/objects/delete":
        names = read_body(request).decode().splitlines()
        call(lambda: open_container(label).delete_objects(names))
        respond(out, 200, {"deleted": names})
    elif path == "/list":
        respond(out, 200, list_pages(open_container(label), int(args.get("page", "1000")),
                                     int(args.get("skip", "0"))))
    elif path in ("/copy", "/move"):
        src, dest = object_id(args["from"]), object_id(args["to"])
        move = path == "/move"
        call(lambda: (blobstore.move_object if move else blobstore.copy_object)(src, dest))
        respond(out, 200, {"from": args["from"], "to": args["to"]})
    elif path == "/container" and isinstance(method, Method_Get):
        exists = call(lambda: blobstore.container_exists(label))
        body = {"exists": exists}
        if exists:
            c = open_container(label)
            meta = call(c.info)
            body.update(name=call(c.name), info={"name": meta.name,
                                                 "created_at": meta.created_at})
        respond(out, 200, body)
    elif path == "/container" and isinstance(method, Method_Post):
        call(lambda: blobstore.create_container(label))
        respond(out, 200, {"created": label})
    elif path == "/container" and isinstance(method, Method_Delete):
        call(lambda: blobstore.delete_container(label))
        respond(out, 200, {"deleted": label})
    elif path == "/clear":
        call(open_container(label).clear)
        respond(out, 200, {"cleared": label})
    else:
        respond(out, 404, {"error": f"no route {path}"})


def call(func):  # type: ignore[no-untyped-def]
    """A blob-store call; its Err(message) becomes a BlobError (404 for a missing object)."""
    try:
        return func()
    except Err as e:
        message = str(e.value)
        raise BlobError(message, 404 if "does not exist" in message else 409) from None


def open_container(label: str) -> Container:
    return call(lambda: blobstore.get_container(label))


def object_id(spec: str) -> ObjectId:
    container, _, name = spec.partition("/")
    return ObjectId(container=container, object=name)


def upload(container: Container, name: str, request: IncomingRequest) -> int:
    """The request body, streamed chunk by chunk into the object."""
    value = OutgoingValue.new_outgoing_value()
    call(lambda: container.write_data(name, value))
    size = 0
    incoming = request.consume()
    with incoming.stream() as source, value.outgoing_value_write_body() as sink:
        while (chunk := read_chunk(source)) is not None:
            write_all(sink, chunk)
            size += len(chunk)
        try:
            sink.blocking_flush()
        except Err as e:
            raise BlobError(stream_error(e)) from None
    call(lambda: OutgoingValue.finish(value))
    return size


def download(value: IncomingValue, out: ResponseOutparam) -> None:
    """The value, streamed chunk by chunk into the response."""
    size = value.size()
    source = call(lambda: IncomingValue.incoming_value_consume_async(value))
    body = start(out, 200, "application/octet-stream", [("x-blob-size", str(size).encode())])
    with source, body.write() as sink:
        while (chunk := read_chunk(source)) is not None:
            write_all(sink, chunk)
        sink.blocking_flush()
    OutgoingBody.finish(body, None)


def list_pages(container: Container, page: int, skip: int) -> dict[str, object]:
    pages: list[list[str]] = []
    skipped = 0
    with call(container.list_objects) as names:
        ended = False
        while skip and not ended:
            left = skip - skipped
            count, ended = call(lambda n=left: names.skip_stream_object_names(n))
            skipped += count
            if count == 0 and not ended:
                break
        while not ended:
            chunk, ended = call(lambda: names.read_stream_object_names(page))
            pages.append(chunk)
    return {"pages": pages, "skipped": skipped}


def read_chunk(source: InputStream) -> bytes | None:
    try:
        return source.blocking_read(CHUNK)
    except Err as e:
        if isinstance(e.value, StreamError_Closed):
            return None
        raise BlobError(stream_error(e)) from None


def write_all(sink: OutputStream, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            allowed = sink.check_write()
            if allowed == 0:
                with sink.subscribe() as ready:
                    ready.block()
                continue
            sink.write(bytes(view[:allowed]))
            view = view[allowed:]
    except Err as e:
        raise BlobError(stream_error(e)) from None


def stream_error(e: Err) -> str:
    if isinstance(e.value, StreamError_LastOperationFailed):
        return e.value.value.to_debug_string()
    return "stream closed"


def read_body(request: IncomingRequest) -> bytes:
    data = bytearray()
    with request.consume().stream() as source:
        while (chunk := read_chunk(source)) is not None:
            data += chunk
    return bytes(data)


def start(out: ResponseOutparam, status: int, content_type: str,
          headers: list[tuple[str, bytes]] | None = None) -> OutgoingBody:
    fields = Fields.from_list([("content-type", content_type.encode()), *(headers or [])])
    response = OutgoingResponse(fields)
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(out, Ok(response))
    return body


def send(out: ResponseOutparam, status: int, content_type: str, content: bytes) -> None:
    body = start(out, status, content_type)
    with body.write() as sink:
        write_all(sink, content)
        sink.blocking_flush()
    OutgoingBody.finish(body, None)


def respond(out: ResponseOutparam, status: int, payload: object) -> None:
    send(out, status, "application/json", json.dumps(payload).encode())
