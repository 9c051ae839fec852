"""kv-counter: key-value, a variable and SQLite from one Python component.

Targets world `platform` of ../../wit/http.wit. The same .wasm runs on the dev
stack (SQLite files) and on the prod stack (Redis) by switching the runtime
config file; nothing in this code knows which backend it talks to.

Routes:
  GET /          increment the key `count` in the `default` store; answer it
  GET /greeting  the `greeting` variable (wasi:config/store)
  GET /visits    log this visit in the `default` SQLite database; list the last 5
"""

from wit_world import exports
from wit_world.imports import atomics, sqlite, wasi_config_store, wasi_keyvalue_store
from wit_world.imports.types import Request, Response
from componentize_py_types import Err


def text(status: int, body: str) -> Response:
    return Response(status=status, headers=[("content-type", b"text/plain; charset=utf-8")],
                    body=body.encode())


def count() -> Response:
    with wasi_keyvalue_store.open("default") as bucket:
        value = atomics.increment(bucket, "count", 1)
    return text(200, f"{value}\n")


def greeting() -> Response:
    value = wasi_config_store.get("greeting")
    return text(200, f"{value or '(no greeting configured)'}\n")


def visits(path: str) -> Response:
    with sqlite.Connection.open("default") as db:
        db.execute("CREATE TABLE IF NOT EXISTS visits ("
                   "id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, "
                   "at TEXT NOT NULL DEFAULT (datetime('now')))", [])
        db.execute("INSERT INTO visits (path) VALUES (?)", [sqlite.Value_Text(path)])
        result = db.execute("SELECT id, path, at FROM visits ORDER BY id DESC LIMIT 5", [])
    lines = [" ".join(str(v.value) for v in row.values) for row in result.rows]
    return text(200, "\n".join(lines) + "\n")


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: Request) -> Response:
        path = (request.path_with_query or "/").split("?", 1)[0]
        try:
            if path == "/":
                return count()
            if path == "/greeting":
                return greeting()
            if path == "/visits":
                return visits(path)
            return text(404, "not found\n")
        except Err as err:
            # A denied store or database, or a backend failure: say which.
            return text(500, f"error: {err.value}\n")
