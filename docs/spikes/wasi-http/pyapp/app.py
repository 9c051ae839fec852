"""componentize-py wasi:http/proxy app: / hello, /echo streams the body back, /big?n=N writes N bytes."""
import hashlib
from wit_world import exports
from wit_world.imports.types import (
    IncomingRequest, ResponseOutparam, OutgoingResponse, OutgoingBody, Fields, Method_Post)
from wit_world.imports.streams import StreamError_Closed
from componentize_py_types import Ok, Err

CHUNK = 65536


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        if path.startswith("/echo"):
            headers = [("content-type", b"application/octet-stream")]
            resp = OutgoingResponse(Fields.from_list(headers))
            body = resp.body()
            ResponseOutparam.set(response_out, Ok(resp))
            req_body = request.consume()
            instream = req_body.stream()
            out = body.write()
            h = hashlib.sha256()
            while True:
                try:
                    data = instream.blocking_read(CHUNK)
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
                h.update(data)
                while data:  # respect check-write
                    n = out.check_write()
                    if n == 0:
                        out.subscribe().block()
                        continue
                    out.write(data[:n])
                    data = data[n:]
            out.blocking_flush()
            instream.__exit__(None, None, None)
            out.__exit__(None, None, None)
            print("echo sha256", h.hexdigest())
            OutgoingBody.finish(body, None)
            return
        if path.startswith("/trap") or path.startswith("/unfinished"):
            resp = OutgoingResponse(Fields.from_list([]))
            body = resp.body()
            ResponseOutparam.set(response_out, Ok(resp))
            out = body.write()
            out.blocking_write_and_flush(b"partial")
            if path.startswith("/trap"):
                raise RuntimeError("guest failure mid-stream")
            return  # never finishes the body
        if path.startswith("/noresponse"):
            return
        if path.startswith("/big"):
            n = int(path.split("n=")[1]) if "n=" in path else 4 << 20
            resp = OutgoingResponse(Fields.from_list([]))
            body = resp.body()
            ResponseOutparam.set(response_out, Ok(resp))
            out = body.write()
            block = b"x" * 4096
            left = n
            while left:
                k = min(left, 4096)
                out.blocking_write_and_flush(block[:k])
                left -= k
            out.__exit__(None, None, None)
            OutgoingBody.finish(body, None)
            return
        resp = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = resp.body()
        ResponseOutparam.set(response_out, Ok(resp))
        out = body.write()
        out.blocking_write_and_flush(b"Hello from componentize-py\n")
        out.__exit__(None, None, None)
        OutgoingBody.finish(body, None)
