"""apps/spin-python: a Spin SDK for Python 3.4.1 app, built the standard way.

PyPI `spin-sdk==3.4.1` + `componentize-py==0.17.2`, world `spin-http` (exports
`wasi:http/incoming-handler@0.2.0`, imports Spin's `fermyon:spin@2.0.0` platform).
The same component runs on Spin 3.x and on this host, unchanged.

Routes:
  /                  hello
  /echo/...          JSON echo of method, uri, path, query, headers, body length and sha256
  /counter           fermyon:spin/key-value: increments `hits` in the default store
  /kv?store=LABEL    fermyon:spin/key-value: opens any label (the manifest decides)
  /variable?name=N   fermyon:spin/variables: reads a component variable
  /sqlite            fermyon:spin/sqlite: inserts a row, returns the row count
  /sqlite3           spin:sqlite@3.0.0: inserts a row, returns rowid, changes and count
  /redis             fermyon:spin/redis at the variable `redis_address`: incr, set/get, sets,
                     execute, publish
  /pg?address=A&version=V
                     PostgreSQL at A through fermyon:spin/postgres@2.0.0 (V=2, the default),
                     spin:postgres@3.0.0 (3) or @4.0.0 (4): creates a table, inserts a row
                     with parameters (a NULL among them), selects every row back as JSON
  /mqtt?address=A&topic=T&qos=Q&count=N&payload=P&username=U&password=W
                     fermyon:spin/mqtt@2.0.0 (spin_sdk.mqtt): publishes P to T N times at QoS
                     Q (0, 1 or 2) on one connection; answers the count and the seconds
                     the publishes took, as the guest measured them
  /unavailable/NAME  opens postgres, postgres3, postgres4, mysql, mqtt or calls llm: the
                     interface's own error value, as text
  /outbound?url=U    wasi:http/outgoing-handler (spin_sdk.http.send)
  /file?path=P       reads a file through wasi:filesystem (the component's `files`)
"""
import hashlib
import json
import time
from urllib.parse import parse_qs, urlsplit

from spin_sdk import http, key_value, mqtt, variables
from spin_sdk.http import Request, Response

# spin_sdk.sqlite (3.4.1) imports spin_sdk.wit.imports.sqlite, but componentize-py 0.17.2 binds
# fermyon:spin/sqlite@2.0.0 as `fermyon_spin_sqlite` (the name clashes with spin:sqlite@3.0.0,
# `spin_sqlite_sqlite`), so `from spin_sdk import sqlite` fails at build time. Use the bindings.
from spin_sdk.wit.imports import fermyon_spin_sqlite as sqlite2  # type: ignore[import-not-found]
from spin_sdk.wit.imports import spin_sqlite_sqlite as sqlite3  # type: ignore[import-not-found]


def text(body: str, status: int = 200) -> Response:
    return Response(status, {"content-type": "text/plain"}, (body + "\n").encode())


def as_json(doc: object, status: int = 200) -> Response:
    return Response(status, {"content-type": "application/json"}, json.dumps(doc).encode())


def error_text(exc: Exception) -> str:
    """`Err(Error_AccessDenied())` -> `Error_AccessDenied()`; `Error_Other(value='x')` as is."""
    value = getattr(exc, "value", exc)
    return repr(value)


def unavailable(name: str) -> str:
    if name == "postgres":
        from spin_sdk.wit.imports import postgres
        postgres.Connection.open("postgres://127.0.0.1:5432/db")
    elif name == "postgres3":
        # componentize-py 0.17.2 names this binding after its version (it clashes with 4.0.0)
        from spin_sdk.wit.imports import spin_postgres_postgres_3_0_0 as pg3  # type: ignore
        pg3.Connection.open("postgres://127.0.0.1:5432/db")
    elif name == "postgres4":
        from spin_sdk.wit.imports import spin_postgres_postgres_4_0_0 as pg4
        pg4.Connection.open("postgres://127.0.0.1:5432/db")
    elif name == "mysql":
        from spin_sdk.wit.imports import mysql
        mysql.Connection.open("mysql://127.0.0.1:3306/db")
    elif name == "mqtt":
        from spin_sdk.wit.imports import mqtt
        mqtt.Connection.open("mqtt://127.0.0.1:1883", "", "", 30)
    elif name == "llm":
        from spin_sdk.wit.imports import llm
        llm.infer("llama2-chat", "hello", None)
    else:
        raise ValueError(name)
    return "no error"


def postgres_module(version: str):
    """(the interface's bindings, the module with its parameter-value cases)."""
    if version == "2":
        from spin_sdk.wit.imports import postgres, rdbms_types
        return postgres, rdbms_types
    if version == "3":
        from spin_sdk.wit.imports import spin_postgres_postgres_3_0_0 as pg3  # type: ignore
        return pg3, pg3
    from spin_sdk.wit.imports import spin_postgres_postgres_4_0_0 as pg4
    return pg4, pg4


def db_value(value: object) -> object:
    """A db-value as JSON: its case name and its value."""
    payload = getattr(value, "value", None)
    if isinstance(payload, bytes):
        payload = payload.hex()
    return [type(value).__name__.split("_", 1)[1], payload]


def postgres_round(address: str, version: str) -> dict:
    pg, types = postgres_module(version)
    table = f"spin_python_notes_v{version}"
    with pg.Connection.open(address) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY, title text, "
                   "score int4, big int8, ratio float8, ok bool, data bytea, note text)", [])
        inserted = db.execute(
            f"INSERT INTO {table} (title, score, big, ratio, ok, data, note) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [types.ParameterValue_Str("hello"), types.ParameterValue_Int32(42),
             types.ParameterValue_Int64(2**40), types.ParameterValue_Floating64(0.5),
             types.ParameterValue_Boolean(True), types.ParameterValue_Binary(b"\x00\xff"),
             types.ParameterValue_DbNull()])
        rows = db.query(f"SELECT title, score, big, ratio, ok, data, note FROM {table} "
                        "WHERE score = $1 ORDER BY id", [types.ParameterValue_Int32(42)])
    return {"inserted": inserted,
            "columns": [[c.name, str(getattr(c.data_type, "name", c.data_type))]
                        for c in rows.columns],
            "rows": [[db_value(v) for v in row] for row in rows.rows]}


def redis_round(address: str) -> dict:
    from spin_sdk.wit.imports import redis
    with redis.Connection.open(address) as db:
        hits = db.incr("spin-python:hits")
        db.set("spin-python:greeting", b"hello")
        value = db.get("spin-python:greeting")
        missing = db.get("spin-python:missing")
        added = db.sadd("spin-python:set", ["a", "b"])
        members = sorted(db.smembers("spin-python:set"))
        removed = db.srem("spin-python:set", ["a"])
        deleted = db.del_(["spin-python:set", "spin-python:greeting"])
        results = db.execute("ECHO", [redis.RedisParameter_Binary(b"ping")])
        db.publish("spin-python:events", b"hit")
    return {"hits": hits, "value": value.decode() if value else None, "missing": missing,
            "added": added, "members": members, "removed": removed, "deleted": deleted,
            "execute": [repr(r) for r in results]}


def mqtt_publish(query: dict) -> dict:
    # Imported at the top: componentize-py bundles the spin_sdk modules the app imports as
    # it is built, and spin_sdk.mqtt imported here, at run time, was not found.
    qos = {"0": mqtt.Qos.AT_MOST_ONCE, "1": mqtt.Qos.AT_LEAST_ONCE,
           "2": mqtt.Qos.EXACTLY_ONCE}[query.get("qos", "1")]
    count = int(query.get("count", "1"))
    payload = query.get("payload", "hello").encode()
    with mqtt.open(query["address"], query.get("username", ""), query.get("password", ""),
                   30) as conn:
        started = time.monotonic()
        for _ in range(count):
            conn.publish(query["topic"], payload, qos)
        seconds = time.monotonic() - started
    return {"published": count, "seconds": seconds}


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        parts = urlsplit(request.uri)
        path = parts.path or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            return self.route(request, path, query)
        except Exception as exc:  # an interface's error value, raised by the bindings as Err
            return text(f"error: {error_text(exc)}", 500)

    def route(self, request: Request, path: str, query: dict) -> Response:
        if path == "/":
            return text("Hello from Spin SDK for Python!")
        if path.startswith("/echo"):
            body = request.body or b""
            return as_json({
                "method": request.method,
                "uri": request.uri,
                "path": path,
                "query": urlsplit(request.uri).query,
                "headers": dict(request.headers),
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            })
        if path == "/counter":
            with key_value.open_default() as store:
                n = int(store.get("hits") or b"0") + 1
                store.set("hits", str(n).encode())
            return text(str(n))
        if path == "/kv":
            with key_value.open(query.get("store", "default")) as store:
                store.set("probe", b"1")
                return as_json({"exists": store.exists("probe"), "keys": store.get_keys()})
        if path == "/variable":
            return text(variables.get(query.get("name", "greeting")))
        if path == "/sqlite":
            with sqlite2.Connection.open("default") as db:
                db.execute("CREATE TABLE IF NOT EXISTS visits (path TEXT)", [])
                db.execute("INSERT INTO visits (path) VALUES (?)", [sqlite2.Value_Text(path)])
                result = db.execute("SELECT COUNT(*) FROM visits", [])
                return text(str(result.rows[0].values[0].value))
        if path == "/sqlite3":
            with sqlite3.Connection.open("default") as db:
                db.execute("CREATE TABLE IF NOT EXISTS visits3 (path TEXT)", [])
                db.execute("INSERT INTO visits3 (path) VALUES (?)", [sqlite3.Value_Text(path)])
                rowid, changes = db.last_insert_rowid(), db.changes()
                result = db.execute("SELECT COUNT(*) AS n FROM visits3", [])
                return as_json({"rowid": rowid, "changes": changes, "columns": result.columns,
                                "count": result.rows[0].values[0].value})
        if path == "/redis":
            return as_json(redis_round(variables.get("redis_address")))
        if path == "/pg":
            return as_json(postgres_round(query["address"], query.get("version", "2")))
        if path == "/mqtt":
            return as_json(mqtt_publish(query))
        if path.startswith("/unavailable/"):
            return text(unavailable(path.removeprefix("/unavailable/")))
        if path == "/outbound":
            response = http.send(Request("GET", query["url"], {}, None))
            return Response(response.status, {"content-type": "text/plain"}, response.body)
        if path == "/file":
            try:
                with open(query.get("path", "/"), "rb") as f:
                    return Response(200, {"content-type": "application/octet-stream"}, f.read())
            except OSError as exc:
                return text(f"file error: {type(exc).__name__}: {exc.strerror}", 404)
        return text("not found", 404)
