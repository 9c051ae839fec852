"""The guestbook's HTTP component: componentize-py 0.25.1, world `guestbook` (wit/world.wit:
wasi:http/proxy + wasi:blobstore + Spin's sqlite, postgres, redis, key-value, variables).

    GET  /                         the posts, newest first: JSON, or a small page for browsers
    GET  /posts                    the posts as JSON
    POST /posts                    {"name": ..., "message": ...} -> 201 and the post; notifies
                                   the Redis channel `guestbook-posts` ({"event": "post-created",
                                   "id": N}), which runs the notifier component
    PUT  /posts/{id}/attachment    streams the request body into the blob container
                                   `attachments`, object `post-{id}`
    GET  /posts/{id}/attachment    streams it back (404 when there is none)
    GET  /notifications            what the notifier recorded in the key-value store `default`

Where posts live is the runtime config's choice, not this code's: the variable
`database_url` empty -> the SQLite database `default`; `postgres://...` -> that
PostgreSQL database. The table is created on first use, with the same SQL on both.
A backend that fails answers 503 with {"error": "<backend>: <its message>"};
bad input 400 (or 413) naming the field.
"""

import html
import json
import re
import time

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import blobstore, key_value, postgres, rdbms_types, redis, sqlite, variables
from wit_world.imports.container import Container
from wit_world.imports.streams import (
    InputStream,
    OutputStream,
    StreamError_Closed,
    StreamError_LastOperationFailed,
)
from wit_world.imports.wasi_blobstore_types import IncomingValue, OutgoingValue
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

CHANNEL = "guestbook-posts"
CONTAINER = "attachments"
NOTIFICATIONS_KEY = "notifications"
CHUNK = 64 * 1024
TO_END = 2**64 - 1
MAX_POST_BYTES = 16 * 1024
MAX_NAME, MAX_MESSAGE = 100, 2000
LISTED = 100

# The same SQL on SQLite and PostgreSQL (`?` becomes `$1, $2...` for PostgreSQL).
# Ids are MAX + 1: two inserts racing for one id (PostgreSQL; SQLite serialises
# writers) make the later one insert nothing, and `Database.add` tries the next.
SCHEMA = ("CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
          "message TEXT NOT NULL, created_at TEXT NOT NULL)")
INSERT = ("INSERT INTO posts (id, name, message, created_at) "
          "SELECT COALESCE(MAX(id), 0) + 1, ?, ?, ? FROM posts WHERE true "
          "ON CONFLICT (id) DO NOTHING RETURNING id")
INSERT_ATTEMPTS = 20
LIST = f"SELECT id, name, message, created_at FROM posts ORDER BY id DESC LIMIT {LISTED}"
EXISTS = "SELECT id FROM posts WHERE id = ?"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def unavailable(backend: str, error: object) -> HttpError:
    """A backend's error value as a 503 naming the backend: the interface's variant case
    in WIT's spelling and its message (`postgres: query-failed: ...`), or its string."""
    if isinstance(error, str):
        return HttpError(503, f"{backend}: {error}")
    case = re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__.split("_", 1)[-1]).lower()
    detail = getattr(error, "value", None)
    return HttpError(503, f"{backend}: {case}" + (f": {detail}" if detail is not None else ""))


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = (request.path_with_query() or "/").partition("?")[0].rstrip("/") or "/"
        try:
            route(request, response_out, request.method(), path)
        except HttpError as e:
            respond(response_out, e.status, {"error": str(e)})


def route(request: IncomingRequest, out: ResponseOutparam, method: object, path: str) -> None:
    parts = path.strip("/").split("/")
    if path in ("/", "/posts") and isinstance(method, Method_Get):
        db = Database()
        posts = db.posts()
        if path == "/" and wants_html(request):
            send(out, 200, "text/html; charset=utf-8", page(posts))
        else:
            respond(out, 200, {"database": db.kind, "posts": posts})
    elif path == "/posts" and isinstance(method, Method_Post):
        name, message = parse_post(read_body(request, MAX_POST_BYTES))
        added = Database().add(name, message)
        added["notified"] = notify(added["id"])
        respond(out, 201, added, [("location", f"/posts/{added['id']}".encode())])
    elif len(parts) == 3 and parts[0] == "posts" and parts[2] == "attachment":
        post_id = parse_id(parts[1])
        if isinstance(method, Method_Put):
            if not Database().exists(post_id):
                raise HttpError(404, f"no post {post_id}")
            size = upload(open_container(), f"post-{post_id}", request)
            respond(out, 200, {"id": post_id, "attachment": f"/posts/{post_id}/attachment",
                               "size": size})
        elif isinstance(method, Method_Get):
            download(open_container(), f"post-{post_id}", post_id, out)
        else:
            raise HttpError(405, "use GET or PUT")
    elif path == "/notifications" and isinstance(method, Method_Get):
        respond(out, 200, notifications())
    elif path in ("/", "/posts", "/notifications"):
        raise HttpError(405, f"method not allowed on {path}")
    else:
        raise HttpError(404, f"no route {path}")


# ---------------------------------------------------------------------------
# Posts: SQLite or PostgreSQL


class Database:
    """The posts' database, chosen by the variable `database_url`."""

    def __init__(self) -> None:
        url = variables.get("database_url").strip()
        if url and not url.startswith(("postgres://", "postgresql://")):
            raise HttpError(503, "database: the variable database_url must be empty "
                            "(SQLite) or a postgres:// URL")
        self.kind = "postgres" if url else "sqlite"
        self._url = url
        self._conn: sqlite.Connection | postgres.Connection | None = None

    def posts(self) -> list[dict[str, object]]:
        return [post(*row) for row in self.run(LIST, [])]

    def add(self, name: str, message: str) -> dict[str, object]:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for _ in range(INSERT_ATTEMPTS):
            inserted = self.run(INSERT, [name, message, created])
            if inserted:
                return post(inserted[0][0], name, message, created)
        raise HttpError(503, f"{self.kind}: {INSERT_ATTEMPTS} concurrent posts took every id "
                        "this one tried; try again")

    def exists(self, post_id: int) -> bool:
        return bool(self.run(EXISTS, [post_id]))

    def run(self, statement: str, params: list[object]) -> list[list[object]]:
        """The statement's rows. A statement that fails may have met no table yet (first
        use): create it and try once more."""
        self._connect()
        try:
            return self._query(statement, params)
        except HttpError as first:
            try:
                self._query(SCHEMA, [])
            except HttpError:
                raise first from None
            return self._query(statement, params)

    def _connect(self) -> None:
        if self._conn is not None:
            return
        try:
            if self.kind == "sqlite":
                self._conn = sqlite.Connection.open("default")
            else:
                self._conn = postgres.Connection.open(self._url)
        except Err as e:
            raise unavailable(self.kind, e.value) from None

    def _query(self, statement: str, params: list[object]) -> list[list[object]]:
        try:
            if isinstance(self._conn, sqlite.Connection):
                return sqlite_rows(self._conn, statement, params)
            assert isinstance(self._conn, postgres.Connection)
            return postgres_rows(self._conn, statement, params)
        except Err as e:
            raise unavailable(self.kind, e.value) from None


def sqlite_rows(conn: sqlite.Connection, statement: str,
                params: list[object]) -> list[list[object]]:
    values: list[sqlite.Value] = [
        sqlite.Value_Integer(p) if isinstance(p, int) else sqlite.Value_Text(str(p))
        for p in params]
    result = conn.execute(statement, values)
    return [[getattr(v, "value", None) for v in row.values] for row in result.rows]


def postgres_rows(conn: postgres.Connection, statement: str,
                  params: list[object]) -> list[list[object]]:
    numbered = statement.split("?")  # `?` -> `$1, $2...`
    statement = numbered[0] + "".join(f"${i}{rest}" for i, rest in enumerate(numbered[1:], 1))
    values: list[rdbms_types.ParameterValue] = [
        rdbms_types.ParameterValue_Int64(p) if isinstance(p, int)
        else rdbms_types.ParameterValue_Str(str(p)) for p in params]
    return [[getattr(v, "value", None) for v in row] for row in conn.query(statement, values).rows]


def post(post_id: object, name: object, message: object, created: object) -> dict[str, object]:
    return {"id": post_id, "name": name, "message": message, "created_at": created,
            "attachment": f"/posts/{post_id}/attachment"}


def parse_post(body: bytes) -> tuple[str, str]:
    try:
        fields = json.loads(body)
    except ValueError as e:
        raise HttpError(400, f"the body is not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise HttpError(400, 'expected a JSON object: {"name": ..., "message": ...}')
    values = []
    for field, most in (("name", MAX_NAME), ("message", MAX_MESSAGE)):
        value = fields.get(field)
        if not isinstance(value, str) or not value.strip():
            raise HttpError(400, f'"{field}" must be a non-empty string')
        if len(value) > most:
            raise HttpError(400, f'"{field}" is {len(value)} characters, at most {most}')
        values.append(value.strip())
    return values[0], values[1]


def parse_id(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise HttpError(404, f"no post {text[:40]!r}")
    return int(text)


# ---------------------------------------------------------------------------
# Notifications: Redis publish out, the notifier's record back from key-value


def notify(post_id: int) -> bool:
    """Publish the new post's id; the post is stored either way, so a Redis failure
    is printed (the host logs it) and answered as "notified": false."""
    payload = json.dumps({"event": "post-created", "id": post_id}).encode()
    try:
        with redis.Connection.open(variables.get("redis_address")) as conn:
            conn.publish(CHANNEL, payload)
        return True
    except Err as e:
        print(f"publishing post {post_id} to {CHANNEL} failed: "
              f"{unavailable('redis', e.value)}", flush=True)
        return False


def notifications() -> object:
    try:
        with key_value.Store.open("default") as store:
            raw = store.get(NOTIFICATIONS_KEY)
    except Err as e:
        raise unavailable("key-value", e.value) from None
    return json.loads(raw) if raw else {"count": 0, "recent": []}


# ---------------------------------------------------------------------------
# Attachments: streamed both ways, 64 KiB at a time


def open_container() -> Container:
    try:
        return blobstore.get_container(CONTAINER)
    except Err as e:
        raise unavailable("attachments", e.value) from None


def upload(container: Container, name: str, request: IncomingRequest) -> int:
    value = OutgoingValue.new_outgoing_value()
    try:
        container.write_data(name, value)
    except Err as e:
        raise unavailable("attachments", e.value) from None
    size = 0
    with request.consume().stream() as source, value.outgoing_value_write_body() as sink:
        while (chunk := read_chunk(source)) is not None:
            write_all(sink, chunk, "attachments")
            size += len(chunk)
        flush(sink, "attachments")
    try:
        OutgoingValue.finish(value)  # until now, nothing is stored
    except Err as e:
        raise unavailable("attachments", e.value) from None
    return size


def download(container: Container, name: str, post_id: int, out: ResponseOutparam) -> None:
    try:
        if not container.has_object(name):
            raise HttpError(404, f"post {post_id} has no attachment")
        value = container.get_data(name, 0, TO_END)
        source = IncomingValue.incoming_value_consume_async(value)
    except Err as e:
        raise unavailable("attachments", e.value) from None
    body = start(out, 200, "application/octet-stream")
    # The head is sent: a failure from here on can only cut the body short.
    with source, body.write() as sink:
        while (chunk := read_chunk(source, "attachments")) is not None:
            write_all(sink, chunk, "response")
        flush(sink, "response")
    OutgoingBody.finish(body, None)


# ---------------------------------------------------------------------------
# HTTP plumbing


def read_chunk(source: InputStream, what: str = "request body") -> bytes | None:
    try:
        return source.blocking_read(CHUNK)
    except Err as e:
        if isinstance(e.value, StreamError_Closed):
            return None
        if what == "request body":
            raise HttpError(400, f"request body: {stream_error(e)}") from None
        raise unavailable(what, stream_error(e)) from None


def read_body(request: IncomingRequest, most: int) -> bytes:
    data = bytearray()
    with request.consume().stream() as source:
        while (chunk := read_chunk(source)) is not None:
            data += chunk
            if len(data) > most:
                raise HttpError(413, f"a post is at most {most} bytes")
    return bytes(data)


def write_all(sink: OutputStream, data: bytes, what: str) -> None:
    view = memoryview(data)
    try:
        while view:
            allowed = sink.check_write()
            if allowed == 0:
                with sink.subscribe() as ready:  # a child of `sink`: dropped before it
                    ready.block()
                continue
            sink.write(bytes(view[:allowed]))
            view = view[allowed:]
    except Err as e:
        raise unavailable(what, stream_error(e)) from None


def flush(sink: OutputStream, what: str) -> None:
    try:
        sink.blocking_flush()
    except Err as e:
        raise unavailable(what, stream_error(e)) from None


def stream_error(e: Err) -> str:
    if isinstance(e.value, StreamError_LastOperationFailed):
        return e.value.value.to_debug_string()
    return "stream closed"


def wants_html(request: IncomingRequest) -> bool:
    accept = b",".join(request.headers().get("accept")).decode("latin-1")
    return "text/html" in accept


def start(out: ResponseOutparam, status: int, content_type: str,
          headers: list[tuple[str, bytes]] | None = None) -> OutgoingBody:
    response = OutgoingResponse(
        Fields.from_list([("content-type", content_type.encode()), *(headers or [])]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(out, Ok(response))
    return body


def send(out: ResponseOutparam, status: int, content_type: str, content: bytes,
         headers: list[tuple[str, bytes]] | None = None) -> None:
    body = start(out, status, content_type, headers)
    with body.write() as sink:
        write_all(sink, content, "response")
        flush(sink, "response")
    OutgoingBody.finish(body, None)


def respond(out: ResponseOutparam, status: int, payload: object,
            headers: list[tuple[str, bytes]] | None = None) -> None:
    send(out, status, "application/json", json.dumps(payload).encode(), headers)


def page(posts: list[dict[str, object]]) -> bytes:
    items = "\n".join(
        f"<li><b>{html.escape(str(p['name']))}</b>: {html.escape(str(p['message']))} "
        f"<small>{html.escape(str(p['created_at']))}</small></li>" for p in posts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Guestbook</title></head>
<body><h1>Guestbook</h1>
<form id="post"><input name="name" placeholder="name" required>
<input name="message" placeholder="message" size="60" required><button>Sign</button></form>
<ul>{items or "<li>No posts yet.</li>"}</ul>
<script>
document.getElementById("post").onsubmit = async (event) => {{
  event.preventDefault();
  const form = new FormData(event.target);
  await fetch("/posts", {{method: "POST", headers: {{"content-type": "application/json"}},
    body: JSON.stringify({{name: form.get("name"), message: form.get("message")}})}});
  location.reload();
}};
</script></body></html>
""".encode()
