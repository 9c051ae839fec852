"""capability-probe: shows, as JSON, what a component can and cannot reach.

Targets world `platform` of ../../wit/http.wit. Each route tries one
capability and reports the outcome, including the error value the host
returned, so the host's grants can be checked from outside (the host's
end-to-end tests use it). Query parameters choose the label, key or URL.

  GET  /kv/open?label=L                    open a key-value store
  GET  /kv/get?key=K[&label=L]             the value (raw body), 404 if absent
  POST /kv/set?key=K[&label=L]             store the request body
  GET  /kv/fill?key=K&n=N                  store N bytes made by the guest
  GET  /kv/incr?key=K[&delta=N]            atomics.increment
  GET  /kv/keys[?label=L]                  every key, following cursors
  GET  /kv/batch                           set-many / get-many / delete-many
  GET  /kv/cas?key=K&value=V               compare-and-swap from a fresh snapshot
  GET  /config?key=K | /config/all         wasi:config/store
  POST /sqlite[?label=L]                   body {"sql": ..., "params": [...]}
  GET  /http?url=U[&method=M]              outbound HTTP
  GET  /http?authority=A&path=P[&scheme=S] outbound HTTP with the parts given verbatim
  GET  /bytes?n=N                          a response body of N bytes
  GET  /loop                               print a line, then spin until the deadline
  GET  /files?path=P | /files/list?path=P  the filesystem the host mounted
  GET  /env                                the environment
"""

import json
import os
from urllib.parse import parse_qs

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import (
    atomics,
    batch,
    outgoing_handler,
    sqlite,
    types,
    wasi_config_store,
    wasi_keyvalue_store,
)
from wit_world.imports.types import Request, Response


def reply(status: int, value: object) -> Response:
    return Response(status=status, headers=[("content-type", b"application/json")],
                    body=json.dumps(value).encode())


def error_name(value: object) -> str:
    """`Error_AccessDenied()` -> "access-denied"; payload appended as ": text"."""
    name = type(value).__name__.split("_", 1)[-1]
    kebab = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    payload = getattr(value, "value", None)
    return f"{kebab}: {payload}" if isinstance(payload, str) else kebab


def sql_value(v: object) -> object:
    if v is None:
        return sqlite.Value_Null()
    if isinstance(v, bool) or isinstance(v, int):
        return sqlite.Value_Integer(int(v))
    if isinstance(v, float):
        return sqlite.Value_Real(v)
    if isinstance(v, dict) and "blob" in v:
        return sqlite.Value_Blob(bytes.fromhex(v["blob"]))
    return sqlite.Value_Text(str(v))


def json_value(v: object) -> object:
    if isinstance(v, sqlite.Value_Null):
        return None
    if isinstance(v, sqlite.Value_Blob):
        return {"blob": bytes(v.value).hex()}
    return v.value


def keyvalue(route: str, q: dict, body: bytes) -> Response:
    label = q.get("label", "default")
    with wasi_keyvalue_store.open(label) as bucket:
        if route == "/kv/open":
            return reply(200, {"opened": label})
        if route == "/kv/get":
            value = bucket.get(q["key"])
            if value is None:
                return reply(404, {"missing": q["key"]})
            return Response(status=200, headers=[("content-type", b"application/octet-stream")],
                            body=value)
        if route == "/kv/set":
            bucket.set(q["key"], body)
            return reply(200, {"set": q["key"], "bytes": len(body)})
        if route == "/kv/fill":
            bucket.set(q["key"], b"v" * int(q["n"]))
            return reply(200, {"set": q["key"], "bytes": int(q["n"])})
        if route == "/kv/delete":
            bucket.delete(q["key"])
            return reply(200, {"deleted": q["key"], "exists": bucket.exists(q["key"])})
        if route == "/kv/incr":
            return reply(200, {"value": atomics.increment(bucket, q["key"],
                                                          int(q.get("delta", "1")))})
        if route == "/kv/keys":
            keys, cursor, pages = [], None, 0
            while True:
                page = bucket.list_keys(cursor)
                keys.extend(page.keys)
                pages += 1
                cursor = page.cursor
                if cursor is None:
                    break
            return reply(200, {"keys": sorted(keys), "pages": pages})
        if route == "/kv/batch":
            batch.set_many(bucket, [("b1", b"one"), ("b2", b"two")])
            got = batch.get_many(bucket, ["b1", "b2", "b-missing"])
            batch.delete_many(bucket, ["b1"])
            after = batch.get_many(bucket, ["b1", "b2"])
            show = lambda items: [None if i is None else [i[0], i[1].decode()] for i in items]
            return reply(200, {"got": show(got), "after": show(after)})
        if route == "/kv/cas":
            with atomics.Cas.new(bucket, q["key"]) as cas:
                before = cas.current()
            cas = atomics.Cas.new(bucket, q["key"])
            bucket.set(q["key"], (before or b"") + b"!")  # the snapshot is now stale
            try:
                atomics.swap(cas, q["value"].encode())
                stale = "swapped"
            except Err as err:
                stale = error_name(err.value)
                retry = err.value.value  # a fresh snapshot to retry from
                atomics.swap(retry, q["value"].encode())
            return reply(200, {"before": None if before is None else before.decode(),
                               "stale": stale, "now": bucket.get(q["key"]).decode()})
    return reply(404, {"unknown": route})


def database(q: dict, body: bytes) -> Response:
    request = json.loads(body or b"{}")
    with sqlite.Connection.open(q.get("label", "default")) as db:
        result = db.execute(request["sql"], [sql_value(p) for p in request.get("params", [])])
    return reply(200, {"columns": result.columns,
                       "rows": [[json_value(v) for v in row.values] for row in result.rows]})


def outbound(q: dict) -> Response:
    if "url" in q:
        url = q["url"]
        scheme, rest = url.split("://", 1) if "://" in url else (None, url)
        authority, slash, path = rest.partition("/") if scheme else (None, "", rest)
    else:  # parts exactly as given, for requests no URL parser would produce
        scheme, authority, slash, path = q.get("scheme", "http"), q["authority"], "", q["path"]
    method = q.get("method", "GET").lower()
    methods = {"get": types.Method_Get(), "post": types.Method_Post(),
               "put": types.Method_Put()}
    req = Request(
        method=methods.get(method, types.Method_Other(method.upper())),
        scheme=None if scheme is None else
        (types.Scheme_Https() if scheme == "https" else types.Scheme_Http()),
        authority=authority,
        path_with_query=(slash + path) if scheme else rest,
        headers=[("x-probe", b"1")],
        body=q.get("body", "").encode(),
    )
    resp = outgoing_handler.handle(req)
    return reply(200, {"status": resp.status, "body": resp.body.decode(errors="replace"),
                       "headers": {k: v.decode() for k, v in resp.headers}})


def files(route: str, q: dict) -> Response:
    path = q.get("path", "/")
    try:
        if route == "/files/list":
            return reply(200, {"entries": sorted(os.listdir(path))})
        with open(path, "rb") as f:
            data = f.read()
        if q.get("write"):
            with open(path, "ab") as f:
                f.write(b"x")
        return reply(200, {"content": data.decode(errors="replace")})
    except OSError as exc:
        return reply(200, {"os-error": exc.__class__.__name__, "errno": exc.errno})


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: Request) -> Response:
        path, _, query = (request.path_with_query or "/").partition("?")
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            if path.startswith("/kv/"):
                return keyvalue(path, q, request.body)
            if path == "/config":
                return reply(200, {"value": wasi_config_store.get(q["key"])})
            if path == "/config/all":
                return reply(200, {"values": dict(wasi_config_store.get_all())})
            if path == "/sqlite":
                return database(q, request.body)
            if path == "/http":
                return outbound(q)
            if path.startswith("/files"):
                return files(path, q)
            if path == "/bytes":
                return Response(status=200, headers=[], body=b"x" * int(q["n"]))
            if path == "/loop":
                print("looping until the deadline", flush=True)
                while True:
                    pass
            if path == "/env":
                return reply(200, dict(os.environ))
            return reply(404, {"unknown": path})
        except Err as err:
            return reply(200, {"error": error_name(err.value)})
