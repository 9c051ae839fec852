"""apps/spin-python: a Spin SDK 3.4.1 app (world `spin-http`, exports wasi:http/incoming-handler@0.2.0).

Routes:
  /            hello
  /echo/...    JSON echo of method, uri, path, query, headers, body length and sha256
  /counter     increments `hits` in the default key-value store and returns it
  /variable    reads the component variable `greeting`
  /sqlite      inserts a row in the default SQLite database and returns the row count
"""
import hashlib
import json
from urllib.parse import urlsplit

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response

# spin_sdk.sqlite (3.4.1) imports spin_sdk.wit.imports.sqlite, but componentize-py 0.17.2 names the
# generated binding of fermyon:spin/sqlite@2.0.0 `fermyon_spin_sqlite` (the name clashes with
# spin:sqlite/sqlite@3.0.0, bound as `spin_sqlite_sqlite`), so `from spin_sdk import sqlite` fails
# at build time with ModuleNotFoundError. Use the generated module directly.
from spin_sdk.wit.imports.fermyon_spin_sqlite import Connection, Value_Text  # type: ignore[import-not-found]


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        parts = urlsplit(request.uri)
        path = parts.path or "/"
        if path == "/":
            return Response(200, {"content-type": "text/plain"}, b"Hello from Spin SDK for Python!\n")
        if path.startswith("/echo"):
            body = request.body or b""
            doc = {
                "method": request.method,
                "uri": request.uri,
                "path": path,
                "query": parts.query,
                "headers": dict(request.headers),
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
            return Response(200, {"content-type": "application/json"}, json.dumps(doc).encode())
        if path == "/counter":
            with key_value.open_default() as store:
                raw = store.get("hits")
                n = int(raw or b"0") + 1
                store.set("hits", str(n).encode())
            return Response(200, {"content-type": "text/plain"}, f"{n}\n".encode())
        if path == "/variable":
            return Response(200, {"content-type": "text/plain"}, f"{variables.get('greeting')}\n".encode())
        if path == "/sqlite":
            with Connection.open("default") as db:
                db.execute("CREATE TABLE IF NOT EXISTS visits (path TEXT)", [])
                db.execute("INSERT INTO visits (path) VALUES (?)", [Value_Text(path)])
                result = db.execute("SELECT COUNT(*) FROM visits", [])
                count = result.rows[0].values[0].value
            return Response(200, {"content-type": "text/plain"}, f"{count}\n".encode())
        return Response(404, {"content-type": "text/plain"}, b"not found\n")
