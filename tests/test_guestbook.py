"""apps/guestbook through a real `host up`, on both of its stacks, with the same .wasm files.

dev: apps/guestbook/runtime-config.dev.toml as written (SQLite, files, embedded
key-value) with a temp state dir and a private redis-server. prod:
runtime-config.prod.toml with its two store addresses pointed at the test's
servers (a runtime config is not templated), variables and S3 credentials from
the environment as its comments say: a real PostgreSQL (tests/postgres_server.py),
S3 on a real moto_server (tests/s3_server.py), a private redis-server. The same
sequence runs on both, then each check reads the stack's own backend directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import psycopg
import pytest
import redis

from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.loopback import stop_process
from tests.redis_server import start_redis
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = pytest.mark.toolchain
MiB = 1024 * 1024
BUCKET = "guestbook-attachments"  # runtime-config.prod.toml's
PROD_REDIS = "redis://redis.internal:6379/0"  # ... and its placeholder addresses
PROD_S3 = "http://minio.internal:9000"
POSTED = threading.Lock()
WAIT_SECONDS = 60.0  # for the notifier; the loop ends as soon as the record is there


@pytest.fixture(scope="module")
def app() -> Path:
    return built_app("guestbook")


@dataclass
class Stack:
    """One running stack: the host, and direct access to the backends it uses."""

    name: str
    host: HostProcess
    redis: redis.Redis
    state_dir: Path | None = None
    postgres: str | None = None  # conninfo of the posts' database
    s3: Any = None  # a botocore S3 client on the test's server
    posted: int = 0  # posts created through this stack's host (each one notified once)

    def stored_posts(self) -> list[tuple[int, str, str]]:
        query = "SELECT id, name, message FROM posts ORDER BY id"
        if self.postgres is not None:
            with psycopg.connect(self.postgres) as conn:
                return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]
        assert self.state_dir is not None
        with sqlite3.connect(self.state_dir / "sqlite_db.db") as conn:
            return list(conn.execute(query))

    def stored_attachment(self, post_id: int) -> bytes:
        if self.s3 is not None:
            return bytes(self.s3.get_object(Bucket=BUCKET, Key=f"post-{post_id}")["Body"].read())
        assert self.state_dir is not None
        return (self.state_dir / "blob_store" / "attachments" / f"post-{post_id}").read_bytes()

    def stored_notifications(self) -> dict[str, Any]:
        if self.s3 is not None:  # prod: key-value store `default` is this Redis, keys as-is
            raw = self.redis.get("notifications")
        else:
            assert self.state_dir is not None
            with sqlite3.connect(self.state_dir / "sqlite_key_value.db") as conn:
                row = conn.execute("SELECT value FROM spin_key_value WHERE store = 'default' "
                                   "AND key = 'notifications'").fetchone()
            raw = row and row[0]
        assert raw, "the notifier recorded nothing"
        return dict(json.loads(raw))


def dev_host(app: Path, cache_dir: Path, tmp: Path, redis_port: int) -> tuple[HostProcess, Path]:
    state = tmp / "state"
    return HostProcess([
        "-f", str(app), "--runtime-config-file", str(app / "runtime-config.dev.toml"),
        "--state-dir", str(state), "--cache-dir", str(cache_dir), "--pool-size", "1",
        "--variable", f"redis_host=127.0.0.1:{redis_port}"]), state


def _fresh_database(postgres_port: int, name: str) -> str:
    with psycopg.connect(host="127.0.0.1", port=postgres_port, user="postgres",
                         dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"host=127.0.0.1 port={postgres_port} user=postgres dbname={name}"


def prod_host(app: Path, cache_dir: Path, tmp: Path, redis_port: int, postgres_port: int,
          s3: S3Server) -> tuple[HostProcess, str, Any]:
    text = (app / "runtime-config.prod.toml").read_text()
    assert text.count(PROD_REDIS) == 1 and text.count(PROD_S3) == 1, "the prod file changed"
    config = tmp / "runtime-config.prod.toml"
    config.write_text(text.replace(PROD_REDIS, f"redis://127.0.0.1:{redis_port}/0")
                      .replace(PROD_S3, s3.endpoint))
    client = botocore.session.get_session().create_client(
        "s3", region_name=REGION, endpoint_url=s3.endpoint, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    conninfo = _fresh_database(postgres_port, "guestbook")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUESTBOOK_", "AWS_"))}
    env.update(
        GUESTBOOK_DATABASE_URL=f"postgres://postgres:secret@127.0.0.1:{postgres_port}/guestbook",
        GUESTBOOK_ALLOWED_DATABASE_HOST=f"postgres://127.0.0.1:{postgres_port}",
        GUESTBOOK_REDIS_HOST=f"127.0.0.1:{redis_port}",
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    host = HostProcess(["-f", str(app), "--runtime-config-file", str(config),
                        "--cache-dir", str(cache_dir), "--pool-size", "1"], env=env)
    return host, conninfo, client


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request: pytest.FixtureRequest, app: Path, cache_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"guestbook-{request.param}")
    proc, redis_port = start_redis(tmp)  # each stack its own Redis: one notifier per channel
    admin = redis.Redis(port=redis_port)
    try:
        if request.param == "dev":
            host, state = dev_host(app, cache_dir, tmp, redis_port)
            made = Stack("dev", host, admin, state_dir=state)
        else:
            host, conninfo, s3 = prod_host(app, cache_dir, tmp, redis_port,
                                       request.getfixturevalue("postgres_port"),
                                       request.getfixturevalue("s3_server"))
            made = Stack("prod", host, admin, postgres=conninfo, s3=s3)
        with host:
            yield made
    finally:
        admin.close()
        stop_process(proc)


def _post(stack: Stack, name: str, message: str) -> dict[str, Any]:
    with stack.host.client() as client:
        answer = client.post("/posts", json={"name": name, "message": message})
    assert answer.status_code == 201, answer.text
    with POSTED:
        stack.posted += 1
    assert answer.headers["location"] == f"/posts/{answer.json()['id']}"
    return dict(answer.json())


def _wait_for(read: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
    """`read()` again until `done` says so or WAIT_SECONDS pass; the last value read."""
    deadline = time.monotonic() + WAIT_SECONDS
    value = read()
    while not done(value) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
        value = read()
    return value


def test_posts_live_in_the_stacks_database(stack: Stack) -> None:
    posts = [_post(stack, f"guest-{i}", f"message {i} from the {stack.name} stack")
             for i in range(3)]
    ids = [p["id"] for p in posts]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(p["notified"] for p in posts)
    with stack.host.client() as client:
        listed = client.get("/posts").json()
        landing = client.get("/")
        page = client.get("/", headers={"accept": "text/html"})
    assert listed["database"] == ("postgres" if stack.name == "prod" else "sqlite")
    newest_first = [(p["id"], p["name"], p["message"]) for p in reversed(posts)]
    assert [(p["id"], p["name"], p["message"]) for p in listed["posts"][:3]] == newest_first
    assert landing.json() == listed
    assert page.headers["content-type"].startswith("text/html")
    assert f"message 2 from the {stack.name} stack" in page.text
    stored = stack.stored_posts()
    assert sorted(newest_first) == [row for row in stored if row[0] in ids]


def test_notifications_make_the_round_trip_through_redis(stack: Stack) -> None:
    with stack.host.client() as client:
        def read() -> dict[str, Any]:
            return dict(client.get("/notifications").json())
        # The notifier handles one message at a time, in the order published: once
        # this post is recorded, every earlier one is too.
        first = _post(stack, "notified", "one")
        after_first = _wait_for(read, lambda n: first["id"] in n["recent"])
        assert after_first["recent"][0] == first["id"]
        assert after_first["count"] == stack.posted
        # Anyone may publish on the channel: the notifier refuses what is not a
        # notification (the handler's error, logged) and records nothing for it.
        assert stack.redis.publish("guestbook-posts", b"not json") == 1
        assert stack.host.wait_for_output("component notifier: the handler returned error::error")
        assert stack.host.wait_for_output("[notifier] not a guestbook notification, ignored")
        second = _post(stack, "notified", "two")
        after = _wait_for(read, lambda n: second["id"] in n["recent"])
    assert after["count"] == after_first["count"] + 1 == stack.posted
    assert after["recent"][:2] == [second["id"], first["id"]]
    assert stack.stored_notifications() == after


def test_concurrent_posts_get_distinct_ids(stack: Stack) -> None:
    with ThreadPoolExecutor(8) as pool:
        posts = list(pool.map(lambda i: _post(stack, f"guest {i}", "at the same time"),
                              range(16)))
    ids = sorted(p["id"] for p in posts)
    assert ids == list(range(ids[0], ids[0] + 16))
    assert [row[0] for row in stack.stored_posts() if row[2] == "at the same time"] == ids


def test_an_attachment_streams_in_and_out_intact(stack: Stack) -> None:
    post = _post(stack, "uploader", "with a file")
    data = os.urandom(5 * MiB + 12345)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]

    with stack.host.client() as client:
        stored = client.put(post["attachment"], content=chunks(), timeout=120)
        assert stored.status_code == 200, stored.text
        assert stored.json() == {"id": post["id"], "attachment": post["attachment"],
                                 "size": len(data)}
        back = client.get(post["attachment"], timeout=120)
        assert back.status_code == 200
        assert hashlib.sha256(back.content).digest() == hashlib.sha256(data).digest()
        other = _post(stack, "no file", "nothing attached")
        missing = client.get(other["attachment"])
        assert missing.status_code == 404
        assert missing.json() == {"error": f"post {other['id']} has no attachment"}
        nowhere = client.put("/posts/999999/attachment", content=b"x")
        assert nowhere.status_code == 404 and nowhere.json() == {"error": "no post 999999"}
    assert stack.stored_attachment(post["id"]) == data
    if stack.s3 is not None:
        keys = [o["Key"] for o in stack.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert f"post-{post['id']}" in keys and f"post-{other['id']}" not in keys


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"not json", 400, "the body is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"[1, 2]", 400, 'expected a JSON object: {"name": ..., "message": ...}'),
    (b'{"name": "x"}', 400, '"message" must be a non-empty string'),
    (b'{"name": "  ", "message": "m"}', 400, '"name" must be a non-empty string'),
    (json.dumps({"name": "x" * 101, "message": "m"}).encode(), 400,
     '"name" is 101 characters, at most 100'),
    (b"x" * (16 * 1024 + 1), 413, "a post is at most 16384 bytes"),
])
def test_bad_posts_answer_what_is_wrong_and_store_nothing(stack: Stack, body: bytes, status: int,
                                                          error: str) -> None:
    before = len(stack.stored_posts())
    with stack.host.client() as client:
        answer = client.post("/posts", content=body)
        assert (answer.status_code, answer.json()) == (status, {"error": error})
        assert client.get("/posts/abc/attachment").status_code == 404
        assert client.delete("/posts").status_code == 405
    assert len(stack.stored_posts()) == before


def test_a_database_url_or_a_store_label_is_not_a_grant(app: Path, cache_dir: Path,
                                                        postgres_port: int, redis_url: str,
                                                        tmp_path: Path) -> None:
    """The same .wasm, given a PostgreSQL URL but no allowed_database_host, and a
    manifest without blob_containers: each call is refused with the interface's
    error, logged, and reaches nothing."""
    manifest = (app / "spin.toml").read_text()
    grant = 'blob_containers = ["attachments"]\n'
    assert manifest.count(grant) == 1
    copy = write_app(tmp_path / "app", manifest.replace(grant, ""))
    for wasm in ("guestbook/guestbook.wasm", "notifier/notifier.wasm"):
        (copy.parent / wasm).parent.mkdir(exist_ok=True)
        (copy.parent / wasm).write_bytes((app / wasm).read_bytes())
    conninfo = _fresh_database(postgres_port, "guestbook_denied")
    url = f"postgres://postgres:hunter2@127.0.0.1:{postgres_port}/guestbook_denied"
    host = HostProcess([
        "-f", str(copy), "--runtime-config-file", str(app / "runtime-config.dev.toml"),
        "--state-dir", str(tmp_path / "state"), "--cache-dir", str(cache_dir),
        "--pool-size", "1", "--variable", f"redis_host={redis_url.split('/')[2]}",
        "--variable", f"database_url={url}"])
    with host, host.client() as client:
        denied = client.post("/posts", json={"name": "n", "message": "m"})
        assert denied.status_code == 503
        message = denied.json()["error"]
        assert message.startswith(f"postgres: connection-failed: address postgres://postgres:***@"
                                  f"127.0.0.1:{postgres_port}/guestbook_denied is not permitted")
        blob = client.get("/posts/1/attachment")
        assert blob.status_code == 503
        assert blob.json() == {"error": 'attachments: access denied: container "attachments" '
                                        "is not one of this component's blob_containers"}
        assert host.wait_for_output("GET /posts/1/attachment 503")
    log = host.output
    assert log.count(f'component "guestbook": PostgreSQL connection to postgres://postgres:***@'
                     f"127.0.0.1:{postgres_port}/guestbook_denied refused: allowed_outbound_hosts"
                     " does not allow it") == 1
    assert ('component "guestbook": get-container of blob container "attachments", which it was'
            " not granted (blob_containers = []): access denied") in log
    assert "hunter2" not in log and "hunter2" not in message
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT to_regclass('posts')").fetchone() == (None,)
    assert not (tmp_path / "state" / "blob_store" / "attachments").exists() or \
        not any((tmp_path / "state" / "blob_store" / "attachments").iterdir())


def test_a_post_is_kept_when_redis_is_down(app: Path, cache_dir: Path, tmp_path: Path) -> None:
    proc, redis_port = start_redis(tmp_path)
    host, state = dev_host(app, cache_dir, tmp_path, redis_port)
    try:
        with host:
            stop_process(proc)  # after the subscriber connected: publishing fails now
            with host.client() as client:
                answer = client.post("/posts", json={"name": "offline", "message": "still here"})
                assert answer.status_code == 201, answer.text
                assert answer.json()["notified"] is False
                assert [p["name"] for p in client.get("/posts").json()["posts"]] == ["offline"]
            assert host.wait_for_output("[guestbook] publishing post 1 to guestbook-posts failed: "
                                        "redis: other: ")
    finally:
        stop_process(proc)
    with sqlite3.connect(state / "sqlite_db.db") as conn:
        assert list(conn.execute("SELECT id, name FROM posts")) == [(1, "offline")]
