"""Blob storage (host/capabilities/blobstore.py, host/wasip2/blobstore.py, host/backends/blob_*).

The interface functions are called directly, with a wasmtime store standing for
the instance, against both backends: a file_system directory and an S3 bucket
on a real S3-protocol server (tests/s3_server.py). The last tests link a
hand-written WAT component through the host's own WASI, and check the
manifest and runtime-config keys. tests/test_blob_python.py serves a real
componentize-py app through `host up`.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import wasmtime
import wasmtime.component as wc

from host.backends.blob_files import FileContainer, encode_name
from host.backends.blob_s3 import S3Container
from host.backends.blobs import TO_END, BlobContainer
from host.capabilities import Err, Ok, store_key
from host.capabilities.blobstore import BlobStore
from host.deadline import request_deadline
from host.errors import BackendError, ConfigError
from host.limits import BlobStoreLimits, MiB
from host.manifest import load_manifest
from host.runtime.engine import Engine
from host.runtime_config import BlobStoreConfig, parse_runtime_config
from host.wasip2 import blobstore, io, wasi_host
from host.wasip2.resources import Tables
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

_buckets = itertools.count(1)
B, C, T, S = "wasi:blobstore/blobstore", "wasi:blobstore/container", "wasi:blobstore/types", \
    "wasi:io/streams"


def s3_config(server: S3Server, label: str, bucket: str | None = None,
              endpoint: str | None = None) -> BlobStoreConfig:
    return BlobStoreConfig(label, "s3", region=REGION, bucket=bucket,
                           endpoint=endpoint or server.endpoint, access_key=ACCESS_KEY,
                           secret_key=SECRET_KEY)


def make_bucket(server: S3Server) -> str:
    name = f"bucket-{os.getpid()}-{next(_buckets)}"
    client = botocore.session.get_session().create_client(
        "s3", region_name=REGION, endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=name)
    return name


def make_container(kind: str, tmp_path: Path, server: S3Server | None, label: str,
                   limits: BlobStoreLimits) -> BlobContainer:
    if kind == "file_system":
        return FileContainer.at(tmp_path / label)
    assert server is not None
    return S3Container(s3_config(server, label, make_bucket(server)), limits)


class Guest:
    """One instance's view of the interfaces: its store, and calls by WIT name."""

    def __init__(self, containers: dict[str, BlobContainer],
                 limits: BlobStoreLimits | None = None) -> None:
        self.blobs = BlobStore("guest", containers, limits)
        self.tables = Tables()
        self.functions = {**io.functions(self.tables),
                          **blobstore.functions(self.tables, self.blobs)}
        self.store = wasmtime.Store()

    def call(self, interface: str, name: str, *args: Any) -> Any:
        return self.functions[(interface, name)](self.store, *args)

    def ok(self, interface: str, name: str, *args: Any) -> Any:
        result = self.call(interface, name, *args)
        assert isinstance(result, Ok), result
        return result.value

    def err(self, interface: str, name: str, *args: Any) -> str:
        result = self.call(interface, name, *args)
        assert isinstance(result, Err), result
        assert isinstance(result.value, str)
        return result.value

    def container(self, label: str = "c") -> Any:
        return self.ok(B, "get-container", label)

    def write(self, container: Any, name: str, data: bytes, chunk: int = 64 * 1024) -> Ok | Err:
        """write-data, the body in `chunk`-byte writes, then finish (as a guest does)."""
        value = self.call(T, "[static]outgoing-value.new-outgoing-value")
        result = self.call(C, "[method]container.write-data", container, name, value)
        if isinstance(result, Err):
            return result
        stream = self.ok(T, "[method]outgoing-value.outgoing-value-write-body", value)
        for i in range(0, len(data), chunk):
            written = self.call(S, "[method]output-stream.write", stream, data[i:i + chunk])
            if isinstance(written, Err):
                self.tables["output-stream"].drop(stream.rep)
                finished: Ok | Err = self.call(T, "[static]outgoing-value.finish", value)
                assert isinstance(finished, Err)
                return Err(str(self.tables.get("error", self.store, written.value.payload)))
        self.tables["output-stream"].drop(stream.rep)
        outcome: Ok | Err = self.call(T, "[static]outgoing-value.finish", value)
        return outcome

    def read(self, container: Any, name: str, start: int = 0, end: int = TO_END) -> bytes:
        value = self.ok(C, "[method]container.get-data", container, name, start, end)
        size = self.call(T, "[method]incoming-value.size", value)
        stream = self.ok(T, "[static]incoming-value.incoming-value-consume-async", value)
        data = bytearray()
        while isinstance(chunk := self.call(S, "[method]input-stream.blocking-read", stream,
                                            65536), Ok):
            data += chunk.value
        self.tables["input-stream"].drop(stream.rep)
        assert len(data) == size
        return bytes(data)

    def names(self, container: Any, page: int) -> list[list[str]]:
        listing = self.ok(C, "[method]container.list-objects", container)
        pages, ended = [], False
        while not ended:
            names, ended = self.ok(
                C, "[method]stream-object-names.read-stream-object-names", listing, page)
            pages.append(names)
        return pages

    def release(self) -> None:
        self.tables.release_store(store_key(self.store))


@pytest.fixture(params=["file_system", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_server(kind: str, request: pytest.FixtureRequest) -> S3Server | None:
    return request.getfixturevalue("s3_server") if kind == "s3" else None


@pytest.fixture
def guest(kind: str, tmp_path: Path, backend_server: S3Server | None) -> Iterator[Guest]:
    limits = BlobStoreLimits()
    g = Guest({"c": make_container(kind, tmp_path, backend_server, "c", limits)}, limits)
    yield g
    g.release()


def test_a_streamed_object_reads_back_whole_and_in_ranges(guest: Guest) -> None:
    data = os.urandom(3 * MiB + 123)
    c = guest.container()
    assert guest.write(c, "photos/cat.jpg", data, chunk=50_000) == Ok(None)
    assert guest.read(c, "photos/cat.jpg") == data
    assert guest.read(c, "photos/cat.jpg", 10, 19) == data[10:20]  # both ends inclusive
    assert guest.read(c, "photos/cat.jpg", len(data) - 5, TO_END) == data[-5:]
    assert guest.read(c, "photos/cat.jpg", len(data) + 10, TO_END) == b""
    info = guest.ok(C, "[method]container.object-info", c, "photos/cat.jpg")
    assert info[0] == "photos/cat.jpg" and info[1] == "c" and info[3] == len(data)
    assert info[2] > 1_600_000_000 * 10**9  # nanoseconds since the epoch
    assert guest.ok(C, "[method]container.has-object", c, "photos/cat.jpg") is True
    assert guest.ok(C, "[method]container.has-object", c, "photos/dog.jpg") is False
    assert guest.err(C, "[method]container.get-data", c, "x", 5, 4).startswith("invalid range")


def test_an_object_written_again_is_replaced_whole(guest: Guest) -> None:
    c = guest.container()
    assert guest.write(c, "k", b"first version, longer") == Ok(None)
    value = guest.ok(C, "[method]container.get-data", c, "k", 0, TO_END)  # opened before
    assert guest.write(c, "k", b"second") == Ok(None)
    assert guest.read(c, "k") == b"second"
    old = guest.ok(T, "[static]incoming-value.incoming-value-consume-sync", value)
    if isinstance(guest.blobs.containers["c"], FileContainer):
        assert old == b"first version, longer"  # a reader keeps the bytes it opened
    else:
        assert old in (b"first version, longer", b"second")


def test_consume_sync_reads_small_values_and_refuses_large_ones(guest: Guest) -> None:
    c = guest.container()
    assert guest.write(c, "small", b"hello") == Ok(None)
    value = guest.ok(C, "[method]container.get-data", c, "small", 0, TO_END)
    assert guest.ok(T, "[static]incoming-value.incoming-value-consume-sync", value) == b"hello"
    assert guest.write(c, "big", bytes(MiB + 1)) == Ok(None)
    value = guest.ok(C, "[method]container.get-data", c, "big", 0, TO_END)
    message = guest.err(T, "[static]incoming-value.incoming-value-consume-sync", value)
    assert "incoming-value-consume-async" in message


def test_listing_pages_are_capped_and_end_exactly(kind: str, tmp_path: Path,
                                                   backend_server: S3Server | None) -> None:
    limits = BlobStoreLimits(max_list_page=3)
    g = Guest({"c": make_container(kind, tmp_path, backend_server, "c", limits)}, limits)
    c = g.container()
    names = {f"n{i:02d}" for i in range(8)} | {"a/b", "a/b/c"}
    for name in names:
        assert g.write(c, name, name.encode()) == Ok(None)
    pages = g.names(c, page=1000)  # asks for more than the cap
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert set(itertools.chain(*pages)) == names
    listing = g.ok(C, "[method]container.list-objects", c)
    assert g.ok(C, "[method]stream-object-names.skip-stream-object-names", listing, 7) == (
        3, False)  # at most a page
    assert g.ok(C, "[method]stream-object-names.skip-stream-object-names", listing, 3) == (
        3, False)
    first, ended = g.ok(C, "[method]stream-object-names.read-stream-object-names", listing, 3)
    assert len(first) == 3 and not ended
    assert g.ok(C, "[method]stream-object-names.read-stream-object-names", listing, 3)[1]
    g.release()


def test_delete_and_clear(guest: Guest) -> None:
    c = guest.container()
    for name in ("a", "b", "c", "d"):
        assert guest.write(c, name, b"x") == Ok(None)
    assert guest.ok(C, "[method]container.delete-object", c, "a") is None
    assert guest.ok(C, "[method]container.delete-object", c, "never-there") is None
    assert guest.ok(C, "[method]container.delete-objects", c, ["b", "c", "nope"]) is None
    assert list(itertools.chain(*guest.names(c, 10))) == ["d"]
    assert guest.ok(C, "[method]container.clear", c) is None
    assert list(itertools.chain(*guest.names(c, 10))) == []
    message = guest.err(C, "[method]container.object-info", c, "d")
    assert message == 'object "d" does not exist in container "c"'


def test_a_container_not_granted_answers_the_error_and_logs_once(
        guest: Guest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "host.blobstore")
    for call, args in (("get-container", ()), ("create-container", ()),
                       ("delete-container", ()), ("container-exists", ())):
        message = guest.err(B, call, "secret", *args)
        assert message == ('access denied: container "secret" is not one of this '
                           "component's blob_containers")
    oid = wc.Record()
    oid.container, oid.object = "secret", "x"
    mine = wc.Record()
    mine.container, mine.object = "c", "x"
    assert guest.err(B, "copy-object", mine, oid).startswith("access denied")
    assert guest.err(B, "move-object", oid, mine).startswith("access denied")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert all('component "guest"' in line and '"secret"' in line and "access denied" in line
               for line in lines)


@pytest.mark.parametrize("name", [
    "../escape", "../../../../../../tmp/escape", "a/../../b", "..", ".", "/abs", ".hidden",
    ".container", "%2F", "a%2Fb", "sp ace", "ünïcødé/名前", "x" * 1024, "é" * 512,
    "a+/b", "+", "a" * 80 + "+",
])
def test_any_name_round_trips_and_stays_inside_the_container(guest: Guest, tmp_path: Path,
                                                             name: str) -> None:
    c = guest.container()
    assert guest.write(c, name, name.encode()) == Ok(None)
    assert guest.read(c, name) == name.encode()
    assert list(itertools.chain(*guest.names(c, 1000))) == [name]
    backend = guest.blobs.containers["c"]
    if isinstance(backend, FileContainer):
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert {p.relative_to(backend.root).as_posix() for p in files} == {
            ".container", encode_name(name)}
        assert all(len(part.encode()) < 255 for p in files for part in p.parts)
    assert guest.ok(C, "[method]container.delete-object", c, name) is None
    assert list(itertools.chain(*guest.names(c, 1000))) == []
    if isinstance(backend, FileContainer):
        assert sorted(p.name for p in backend.root.iterdir()) == [".container"]


@pytest.mark.parametrize("name, problem", [
    ("", "must not be empty"),
    ("a\x00b", "control characters"),
    ("line\nbreak", "control characters"),
    ("x" * 1025, "exceeds the limit of 1024 bytes"),
    ("é" * 513, "exceeds the limit of 1024 bytes"),
])
def test_invalid_names_answer_the_error(guest: Guest, name: str, problem: str) -> None:
    c = guest.container()
    value = guest.call(T, "[static]outgoing-value.new-outgoing-value")
    for call, args in (("write-data", (value,)), ("get-data", (0, TO_END)),
                       ("delete-object", ()), ("has-object", ()), ("object-info", ())):
        message = guest.err(C, f"[method]container.{call}", c, name, *args)
        assert message.startswith("invalid object name") and problem in message
    assert problem in guest.err(C, "[method]container.delete-objects", c, ["ok", name])


def test_an_object_over_the_size_limit_fails_and_stores_nothing(
        kind: str, tmp_path: Path, backend_server: S3Server | None) -> None:
    limits = BlobStoreLimits(max_object_bytes=200_000)
    g = Guest({"c": make_container(kind, tmp_path, backend_server, "c", limits)}, limits)
    c = g.container()
    result = g.write(c, "big", bytes(300_000), chunk=64 * 1024)
    assert isinstance(result, Err) and "exceeds the limit of 200000 bytes" in result.value
    assert g.ok(C, "[method]container.has-object", c, "big") is False
    assert g.write(c, "fits", bytes(200_000)) == Ok(None)
    g.release()
    if kind == "file_system":
        assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".container", "fits"]


def test_an_unfinished_write_stores_nothing_and_leaves_no_temp_file(
        guest: Guest, tmp_path: Path) -> None:
    c = guest.container()
    value = guest.call(T, "[static]outgoing-value.new-outgoing-value")
    assert guest.ok(C, "[method]container.write-data", c, "half", value) is None
    stream = guest.ok(T, "[method]outgoing-value.outgoing-value-write-body", value)
    assert guest.call(S, "[method]output-stream.write", stream, b"x" * 1000) == Ok(None)
    guest.release()  # the instance trapped or hit its deadline
    other = Guest(guest.blobs.containers)
    assert other.ok(C, "[method]container.has-object", other.container(), "half") is False
    if isinstance(guest.blobs.containers["c"], FileContainer):
        assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".container"]


def test_bytes_written_before_write_data_are_kept_up_to_a_limit(guest: Guest) -> None:
    c = guest.container()
    value = guest.call(T, "[static]outgoing-value.new-outgoing-value")
    stream = guest.ok(T, "[method]outgoing-value.outgoing-value-write-body", value)
    assert guest.call(S, "[method]output-stream.write", stream, b"early ") == Ok(None)
    assert guest.ok(C, "[method]container.write-data", c, "o", value) is None
    assert guest.call(S, "[method]output-stream.write", stream, b"late") == Ok(None)
    assert guest.ok(T, "[static]outgoing-value.finish", value) is None
    assert guest.read(c, "o") == b"early late"
    value = guest.call(T, "[static]outgoing-value.new-outgoing-value")
    stream = guest.ok(T, "[method]outgoing-value.outgoing-value-write-body", value)
    assert guest.call(T, "[method]outgoing-value.outgoing-value-write-body", value) == Err(None)
    failed = None
    for _ in range(20):
        failed = guest.call(S, "[method]output-stream.write", stream, bytes(64 * 1024))
        if isinstance(failed, Err):
            break
    assert isinstance(failed, Err)
    assert "before container.write-data" in str(
        guest.tables.get("error", guest.store, failed.value.payload))
    assert "write-data was not called" in guest.err(T, "[static]outgoing-value.finish",
                                                    guest.call(T, "[static]outgoing-value."
                                                               "new-outgoing-value"))


def test_copy_and_move_within_and_across_backends(kind: str, tmp_path: Path,
                                                  backend_server: S3Server | None,
                                                  s3_server: S3Server) -> None:
    limits = BlobStoreLimits()
    here = make_container(kind, tmp_path, backend_server, "here", limits)
    other_kind = "s3" if kind == "file_system" else "file_system"
    there = make_container(other_kind, tmp_path, s3_server, "there", limits)
    g = Guest({"here": here, "there": there}, limits)
    data = os.urandom(200_000)
    assert g.write(g.container("here"), "src", data) == Ok(None)

    def oid(container: str, name: str) -> wc.Record:
        record = wc.Record()
        record.container, record.object = container, name
        return record

    assert g.ok(B, "copy-object", oid("here", "src"), oid("here", "copy")) is None
    assert g.ok(B, "copy-object", oid("here", "src"), oid("there", "a/copy")) is None
    assert g.ok(B, "move-object", oid("here", "copy"), oid("here", "moved")) is None
    assert g.ok(B, "move-object", oid("there", "a/copy"), oid("here", "back")) is None
    for name in ("src", "moved", "back"):
        assert g.read(g.container("here"), name) == data
    assert g.ok(C, "[method]container.has-object", g.container("here"), "copy") is False
    assert list(itertools.chain(*g.names(g.container("there"), 10))) == []
    assert g.err(B, "copy-object", oid("here", "nope"), oid("there", "x")) == (
        'object "nope" does not exist in container "here"')
    g.release()


def test_containers_are_created_deleted_and_told_apart(kind: str, tmp_path: Path,
                                                       s3_server: S3Server) -> None:
    limits = BlobStoreLimits()
    if kind == "file_system":
        backend: BlobContainer = FileContainer(tmp_path / "later")
    else:
        bucket = f"later-{os.getpid()}-{next(_buckets)}"
        backend = S3Container(s3_config(s3_server, "later", bucket), limits)
    g = Guest({"later": backend}, limits)
    assert g.ok(B, "container-exists", "later") is False
    assert "does not exist" in g.err(B, "get-container", "later")
    c = g.ok(B, "create-container", "later")
    assert g.ok(C, "[method]container.name", c) == "later"
    name, created = g.ok(C, "[method]container.info", c)
    assert name == "later" and created >= 0
    assert "already exists" in g.err(B, "create-container", "later")
    assert g.write(c, "x", b"1") == Ok(None)
    assert g.ok(B, "delete-container", "later") is None
    assert g.ok(B, "container-exists", "later") is False
    assert "does not exist" in g.err(C, "[method]container.object-info", c, "x")
    g.release()


def test_handles_per_instance_are_capped(kind: str, tmp_path: Path,
                                         backend_server: S3Server | None,
                                         caplog: pytest.LogCaptureFixture) -> None:
    limits = BlobStoreLimits(max_open_containers=2, max_open_values=2, max_open_listings=1)
    g = Guest({"c": make_container(kind, tmp_path, backend_server, "c", limits)}, limits)
    c = g.container()
    assert g.write(c, "x", b"1") == Ok(None)
    g.container()
    assert "container handles, the most it may" in g.err(B, "get-container", "c")
    v1 = g.ok(C, "[method]container.get-data", c, "x", 0, TO_END)
    g.ok(T, "[static]incoming-value.incoming-value-consume-async", v1)  # still open
    g.ok(C, "[method]container.get-data", c, "x", 0, TO_END)
    assert "values open for reading" in g.err(C, "[method]container.get-data", c, "x", 0,
                                              TO_END)
    g.ok(C, "[method]container.list-objects", c)
    assert "object listings" in g.err(C, "[method]container.list-objects", c)
    g.call(T, "[static]outgoing-value.new-outgoing-value")
    g.call(T, "[static]outgoing-value.new-outgoing-value")
    with pytest.raises(wasmtime.WasmtimeError, match="outgoing-value handles"):
        g.call(T, "[static]outgoing-value.new-outgoing-value")
    g.release()
    assert any("the most it may" in r.getMessage() for r in caplog.records)


def test_an_s3_server_that_is_down_answers_an_error(s3_server: S3Server, tmp_path: Path) -> None:
    port = _closed_port()
    limits = BlobStoreLimits()
    backend = S3Container(s3_config(s3_server, "c", "bucket-down",
                                    endpoint=f"http://127.0.0.1:{port}"), limits)
    g = Guest({"c": backend}, limits)
    with request_deadline(10):
        message = g.err(B, "get-container", "c")
    assert "s3 bucket bucket-down at http://127.0.0.1" in message and "connect" in message.lower()


def test_an_s3_server_that_never_answers_is_cut_at_the_deadline(s3_server: S3Server) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts connections, never answers
        port = listener.getsockname()[1]
        limits = BlobStoreLimits()
        backend = S3Container(s3_config(s3_server, "c", "bucket-hang",
                                        endpoint=f"http://127.0.0.1:{port}"), limits)
        g = Guest({"c": backend}, limits)
        with request_deadline(0.5):
            message = g.err(B, "get-container", "c")
        assert message.endswith("no answer before the request's deadline")
        backend.close()


def test_s3_uploads_past_the_part_size_go_multipart(s3_server: S3Server) -> None:
    limits = BlobStoreLimits(s3_part_bytes=5 * MiB)  # S3's (and moto's) minimum part size
    bucket = make_bucket(s3_server)
    backend = S3Container(s3_config(s3_server, "c", bucket), limits)
    g = Guest({"c": backend}, limits)
    data = os.urandom(11 * MiB + 7)
    assert g.write(g.container(), "big", data) == Ok(None)
    head = backend.client.head_object(Bucket=bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert g.read(g.container(), "big") == data
    g.release()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------------------
# A real component, linked through the host's own WASI

WIT = Path(__file__).resolve().parent.parent / "apps" / "blob-python" / "wit"
# get-container("c"), new-outgoing-value, write-data(c, "obj", value) (two borrowed
# handles in one call), write-body, write "hello", finish; returns write-data's tag
# (0 = ok) + 10 x finish's.
GUEST = """
(module
  (import "wasi:blobstore/blobstore@VERSION" "get-container" (func $get (param i32 i32 i32)))
  (import "wasi:blobstore/types@VERSION" "[static]outgoing-value.new-outgoing-value"
    (func $new (result i32)))
  (import "wasi:blobstore/types@VERSION" "[method]outgoing-value.outgoing-value-write-body"
    (func $body (param i32 i32)))
  (import "wasi:blobstore/types@VERSION" "[static]outgoing-value.finish"
    (func $finish (param i32 i32)))
  (import "wasi:blobstore/container@VERSION" "[method]container.write-data"
    (func $write (param i32 i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $put (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $drop (param i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 100) "c")
  (data (i32.const 120) "obj")
  (data (i32.const 140) "hello")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (i32.add (local.get 3) (i32.const 8))))
    (local.get $p))
  (func (export "run") (result i32)
    (local $c i32) (local $v i32) (local $s i32)
    (call $get (i32.const 100) (i32.const 1) (i32.const 200))
    (local.set $c (i32.load (i32.const 204)))
    (local.set $v (call $new))
    (call $write (local.get $c) (i32.const 120) (i32.const 3) (local.get $v) (i32.const 300))
    (call $body (local.get $v) (i32.const 400))
    (local.set $s (i32.load (i32.const 404)))
    (call $put (local.get $s) (i32.const 140) (i32.const 5) (i32.const 416))
    (call $drop (local.get $s))
    (call $finish (local.get $v) (i32.const 500))
    (i32.add (i32.load8_u (i32.const 300)) (i32.mul (i32.const 10) (i32.load8_u (i32.const 500)))))
)
"""


def _guest_component(tmp_path: Path, version: str) -> Path:
    wit = tmp_path / "wit"
    shutil.copytree(WIT, wit)
    deps = wit / "deps" / "blobstore"
    for path in deps.iterdir():
        path.write_text(path.read_text().replace("0.2.0-draft", version))
    (wit / "world.wit").write_text(f"""package test:blob;
world w {{
  import wasi:blobstore/blobstore@{version};
  export run: func() -> u32;
}}
""")
    wat = tmp_path / "guest.wat"
    wat.write_text(GUEST.replace("VERSION", version))
    binary = shutil.which("wasm-tools") or str(Path(sys.executable).parent / "wasm-tools")
    core, out = tmp_path / "guest.core.wasm", tmp_path / "guest.wasm"
    subprocess.run([binary, "component", "embed", str(wit), "--world", "w", str(wat), "-o",
                    str(core)], check=True)
    subprocess.run([binary, "component", "new", str(core), "-o", str(out)], check=True)
    return out


@pytest.mark.parametrize("version", ["0.2.0-draft", "0.2.0-draft-2024-09-01"])
def test_a_component_writes_an_object_through_the_hosts_wasi(tmp_path: Path,
                                                             version: str) -> None:
    path = _guest_component(tmp_path, version)
    engine = Engine(None)
    component = wc.Component.from_file(engine.wasmtime, str(path))
    linker = wc.Linker(engine.wasmtime)
    blobs = BlobStore("guest", {"c": FileContainer.at(tmp_path / "c")})
    wasi = wasi_host("guest", None, None, None, blobs)  # type: ignore[arg-type]
    linked = wasi.link(linker, component, engine.wasmtime)
    assert f"wasi:blobstore/container@{version}" in linked
    store = wasmtime.Store(engine.wasmtime)
    store.set_epoch_deadline(engine.ticks(30))  # no ticker runs here
    instance = linker.instantiate(store, component)
    run = instance.get_func(store, "run")
    assert run is not None
    assert run(store) == 0
    assert (tmp_path / "c" / "obj").read_bytes() == b"hello"
    wasi.release(store)


def test_an_unknown_draft_is_not_linked(tmp_path: Path) -> None:
    path = _guest_component(tmp_path, "0.2.0-draft-2099-01-01")
    engine = Engine(None)
    component = wc.Component.from_file(engine.wasmtime, str(path))
    wasi = wasi_host("guest", None, None, None, BlobStore("guest", {}))  # type: ignore[arg-type]
    linked = wasi.link(wc.Linker(engine.wasmtime), component, engine.wasmtime)
    assert not any("blobstore" in name for name in linked)


# ---------------------------------------------------------------------------
# Manifest and runtime config


def test_blob_containers_are_read_and_checked(tmp_path: Path) -> None:
    manifest = tmp_path / "spin.toml"
    manifest.write_text("""spin_manifest_version = 2
[application]
name = "a"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
blob_containers = ["default", "photo-archive"]
""")
    assert load_manifest(manifest).components["c"].blob_containers == (
        "default", "photo-archive")
    manifest.write_text(manifest.read_text().replace('"photo-archive"', '"Bad Label"'))
    with pytest.raises(Exception, match='blob_containers.*invalid label "Bad Label"'):
        load_manifest(manifest)


@pytest.mark.parametrize("table, message", [
    ({"type": "azure_blob"}, 'unsupported blob store type "azure_blob" (supported: '
                             "file_system, s3)"),
    ({"type": "s3"}, 'missing required key "region"'),
    ({"type": "s3", "region": "r", "access_key": "a"}, 'give both "access_key" and '
                                                        '"secret_key"'),
    ({"type": "s3", "region": "r", "endpoint": "minio:9000"}, '"endpoint" must be an http://'),
    ({"type": "s3", "region": "r", "bucket": 3}, '"bucket" must be a string'),
    ({"type": "file_system", "url": "x"}, 'unknown key "url"'),
])
def test_bad_blob_store_tables_name_the_file_table_and_key(tmp_path: Path, table: Any,
                                                           message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_runtime_config({"blob_store": {"photos": table}}, tmp_path / "rt.toml")
    assert str(raised.value).startswith(f"{tmp_path / 'rt.toml'}: [blob_store.photos]: ")
    assert message in str(raised.value)


def test_blob_store_tables_parse(tmp_path: Path) -> None:
    config = parse_runtime_config({"blob_store": {
        "a": {"type": "file_system", "path": "blobs/a"},
        "b": {"type": "s3", "region": "eu-west-1", "bucket": "my-bucket",
              "endpoint": "http://127.0.0.1:9000", "access_key": "k", "secret_key": "s"},
    }}, tmp_path / "rt.toml")
    assert config.blob_stores["a"] == BlobStoreConfig("a", "file_system",
                                                      path=(tmp_path / "blobs/a").resolve())
    assert config.blob_stores["b"].bucket == "my-bucket"


def test_an_invalid_bucket_name_is_refused_without_connecting() -> None:
    config = BlobStoreConfig("my_label", "s3", region="r", endpoint="http://127.0.0.1:1")
    with pytest.raises(BackendError, match='"my_label" .*not a valid S3 bucket name'):
        S3Container.check_config(config, BlobStoreLimits())


def test_no_state_dir_means_a_temporary_directory_removed_at_close(tmp_path: Path) -> None:
    from host.app import AppSettings
    from host.capabilities import AppContext
    from host.capabilities.blobstore import BlobStoreFactor

    manifest = tmp_path / "spin.toml"
    manifest.write_text("""spin_manifest_version = 2
[application]
name = "a"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
blob_containers = ["default"]
""")
    factor = BlobStoreFactor(AppContext(load_manifest(manifest), AppSettings(state_dir=None)))
    capability = factor.for_component(load_manifest(manifest).components["c"])
    backend = capability.containers["default"]
    assert isinstance(backend, FileContainer) and backend.root.is_dir()
    factor.close()
    assert not backend.root.exists()


def test_concurrent_writers_of_one_name_leave_one_whole_object(tmp_path: Path) -> None:
    backend = FileContainer.at(tmp_path / "c")
    payloads = [bytes([i]) * 300_000 for i in range(8)]

    def write(data: bytes) -> None:
        upload = backend.upload("same")
        for i in range(0, len(data), 65536):
            upload.write(data[i:i + 65536])
        upload.commit()

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "c" / "same").read_bytes() in payloads
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [".container", "same"]
