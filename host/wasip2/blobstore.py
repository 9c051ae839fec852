"""`wasi:blobstore/blobstore|container|types`: containers, objects, and values streamed
through the host's `wasi:io` streams.

Grants and backends come from the component's `BlobStore` capability
(host/capabilities/blobstore.py). Every error is the interface's `error`
string; a call that names a container the component was not granted, or
an object name no backend accepts (host.backends.blobs.check_object_name),
fails before any backend is reached.

Values move in chunks: `incoming-value-consume-async` hands the guest an
input stream reading the backend in 64 KiB reads; `outgoing-value-write-body`
an output stream whose writes go to the backend's upload as they come (before
`write-data` names the object, up to `max_early_bytes` wait in memory).
`finish` makes the object appear whole; an outgoing value dropped unfinished,
or left when its instance ends (a trap, the deadline), is discarded.
`incoming-value-consume-sync` returns one list<u8>, so it is refused over
`max_sync_bytes`. Limits: BlobStoreLimits (host/limits.py).
"""

from __future__ import annotations

from typing import Any

from host.backends.blobs import (
    TO_END,
    BlobContainer,
    ObjectNotFound,
    Reader,
    Upload,
    check_object_name,
)
from host.capabilities import store_key
from host.capabilities.blobstore import BlobStore, denied
from host.deadline import expired
from host.errors import BackendError
from host.limits import BlobStoreLimits
from host.runtime.marshal import Err, Ok
from host.wasip2.io import CHUNK, InputStream, OutputStream, StreamFailed
from host.wasip2.resources import Functions, Tables


class Container:
    def __init__(self, label: str, backend: BlobContainer) -> None:
        self.label = label
        self.backend = backend


class IncomingValue:
    """A range being read; also the source of its input stream once consumed."""

    def __init__(self, reader: Reader, on_close: Any) -> None:
        self.reader = reader
        self._on_close = on_close

    def read(self, max_bytes: int) -> bytes | None:
        try:
            return self.reader.read(max_bytes)
        except BackendError as exc:
            self.close()
            raise StreamFailed(str(exc)) from None

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            self.reader.close()
            on_close()


class OutgoingValue:
    """An object being written: bytes wait here until `write-data` names the object,
    then go to its upload as they are written."""

    def __init__(self, limits: BlobStoreLimits) -> None:
        self.limits = limits
        self.early: list[bytes] = []
        self.written = 0
        self.upload: Upload | None = None
        self.where = ""  # `container "c", object "o"`, for messages
        self.stream_taken = False
        self.failed: str | None = None
        self.finished = False

    def write(self, data: bytes) -> None:
        """The output stream's writes; StreamFailed answers last-operation-failed."""
        if self.failed is not None:
            raise StreamFailed(self.failed)
        if self.finished:
            raise StreamFailed("the outgoing-value was finished")
        self.written += len(data)
        if self.written > self.limits.max_object_bytes:
            self._fail(f"the object exceeds the limit of {self.limits.max_object_bytes} "
                       "bytes (--max-blob-bytes)")
        if self.upload is None:
            if self.written > self.limits.max_early_bytes:
                self._fail(f"more than {self.limits.max_early_bytes} bytes written before "
                           "container.write-data named the object")
            self.early.append(data)
            return
        try:
            self.upload.write(data)
        except BackendError as exc:
            self._fail(str(exc))

    def _fail(self, message: str) -> None:
        self.failed = message
        self.close()
        raise StreamFailed(message)

    def bind(self, upload: Upload, where: str) -> None:
        self.upload, self.where = upload, where
        early, self.early = self.early, []
        for chunk in early:
            upload.write(chunk)

    def finish(self) -> str | None:
        """Store the object; the error, if it was not stored."""
        if self.failed is not None:
            return self.failed
        if self.upload is None:
            self.close()
            return "finish: container.write-data was not called for this outgoing-value"
        try:
            self.upload.commit()
        except BackendError as exc:
            return str(exc)
        finally:
            self.finished = True
        return None

    def close(self) -> None:
        """Dropped unfinished, or its instance discarded: nothing is stored."""
        self.early = []
        if self.upload is not None and not self.finished:
            self.finished = True
            self.upload.abort()


def functions(t: Tables, blobs: BlobStore | None) -> Functions:
    if blobs is None:
        return {}
    limits = blobs.limits
    t.limit("container", limits.max_open_containers)
    t.limit("outgoing-value", limits.max_open_values)
    t.limit("stream-object-names", limits.max_open_listings)
    reading: dict[int, int] = {}  # store key -> values open for reading (any handle kind)

    def name_error(name: str) -> Err | None:
        problem = check_object_name(name)
        return None if problem is None else Err(f"invalid object name {name[:100]!r}: {problem}")

    def guarded(call: Any) -> Any:
        """A backend failure answers its message, whatever the call."""
        def run(*args: Any) -> Any:
            try:
                return call(*args)
            except BackendError as exc:
                return Err(str(exc))
        return run

    def missing(container: Container, name: str) -> Err:
        return Err(f'object "{name}" does not exist in container "{container.label}"')

    # wasi:blobstore/blobstore

    def granted(label: str, call: str) -> BlobContainer | Err:
        backend = blobs.granted(label, call)
        return Err(denied(label)) if backend is None else backend

    def too_many_containers() -> Err:
        return Err(blobs.refuse(f"the instance holds {limits.max_open_containers} container "
                                "handles, the most it may; drop some first"))

    def get_container(s: Any, label: str) -> Any:
        backend = granted(label, "get-container")
        if isinstance(backend, Err):
            return backend
        if t["container"].full(s):
            return too_many_containers()
        if not backend.exists():
            return Err(f'container "{label}" does not exist (create-container makes it)')
        return Ok(t.add("container", s, Container(label, backend)))

    def create_container(s: Any, label: str) -> Any:
        backend = granted(label, "create-container")
        if isinstance(backend, Err):
            return backend
        if t["container"].full(s):
            return too_many_containers()
        backend.create()
        return Ok(t.add("container", s, Container(label, backend)))

    def delete_container(s: Any, label: str) -> Any:
        backend = granted(label, "delete-container")
        if isinstance(backend, Err):
            return backend
        backend.delete()
        return Ok(None)

    def container_exists(s: Any, label: str) -> Any:
        backend = granted(label, "container-exists")
        return backend if isinstance(backend, Err) else Ok(backend.exists())

    def transfer(call: str, move: bool) -> Any:
        def run(s: Any, src: Any, dest: Any) -> Any:
            ends = []
            for oid in (src, dest):
                backend = granted(oid.container, call)
                if isinstance(backend, Err):
                    return backend
                error = name_error(oid.object)
                if error is not None:
                    return error
                ends.append(Container(oid.container, backend))
            source, target = ends
            try:
                _transfer(source, src.object, target, dest.object, move)
            except ObjectNotFound:
                return missing(source, src.object)
            return Ok(None)
        return run

    # wasi:blobstore/container

    def container(s: Any, h: Any) -> Container:
        value: Container = t.get("container", s, h)
        return value

    def info(s: Any, h: Any) -> Any:
        c = container(s, h)
        return Ok((c.label, c.backend.created_at()))

    def get_data(s: Any, h: Any, name: str, start: int, end: int) -> Any:
        c = container(s, h)
        error = name_error(name)
        if error is not None:
            return error
        if start > end:
            return Err(f"invalid range: start {start} is after end {end} (both inclusive)")
        key = store_key(s)
        if reading.get(key, 0) >= limits.max_open_values:
            return Err(blobs.refuse(f"the instance has {limits.max_open_values} values open "
                                    "for reading, the most it may; drop or finish some first"))
        try:
            reader = c.backend.read(name, start, end)
        except ObjectNotFound:
            return missing(c, name)
        reading[key] = reading.get(key, 0) + 1

        def closed() -> None:
            left = reading.get(key, 1) - 1
            if left:
                reading[key] = left
            else:
                reading.pop(key, None)
        return Ok(t.add("incoming-value", s, IncomingValue(reader, closed)))

    def write_data(s: Any, h: Any, name: str, value: Any) -> Any:
        c = container(s, h)
        error = name_error(name)
        if error is not None:
            return error
        outgoing: OutgoingValue = t.get("outgoing-value", s, value)
        if outgoing.failed is not None:
            return Err(outgoing.failed)
        if outgoing.upload is not None:
            return Err(f"this outgoing-value already writes {outgoing.where}")
        upload = c.backend.upload(name)
        try:
            outgoing.bind(upload, f'container "{c.label}", object "{name}"')
        except BackendError:
            outgoing.close()
            raise
        return Ok(None)

    def list_objects(s: Any, h: Any) -> Any:
        c = container(s, h)
        if t["stream-object-names"].full(s):
            return Err(blobs.refuse(f"the instance holds {limits.max_open_listings} "
                                    "object listings, the most it may; drop some first"))
        return Ok(t.add("stream-object-names", s, c.backend.list()))

    def delete_object(s: Any, h: Any, name: str) -> Any:
        c = container(s, h)
        error = name_error(name)
        if error is not None:
            return error
        c.backend.delete_object(name)
        return Ok(None)

    def delete_objects(s: Any, h: Any, names: list[str]) -> Any:
        c = container(s, h)
        for name in names:
            error = name_error(name)
            if error is not None:
                return error
        for i, name in enumerate(names):
            if expired():
                return Err(f"delete-objects: the request's deadline passed after {i} of "
                           f"{len(names)} objects")
            c.backend.delete_object(name)
        return Ok(None)

    def has_object(s: Any, h: Any, name: str) -> Any:
        c = container(s, h)
        error = name_error(name)
        if error is not None:
            return error
        try:
            c.backend.stat(name)
        except ObjectNotFound:
            return Ok(False)
        return Ok(True)

    def object_info(s: Any, h: Any, name: str) -> Any:
        c = container(s, h)
        error = name_error(name)
        if error is not None:
            return error
        try:
            stat = c.backend.stat(name)
        except ObjectNotFound:
            return missing(c, name)
        return Ok((name, c.label, stat.created_at, stat.size))

    def clear(s: Any, h: Any) -> Any:
        container(s, h).backend.clear()
        return Ok(None)

    def read_names(s: Any, h: Any, count: int) -> Any:
        names, ended = t.get("stream-object-names", s, h).read(min(count, limits.max_list_page))
        return Ok((names, ended))

    def skip_names(s: Any, h: Any, count: int) -> Any:
        skipped, ended = t.get("stream-object-names", s, h).skip(
            min(count, limits.max_list_page))
        return Ok((skipped, ended))

    # wasi:blobstore/types

    def new_outgoing(s: Any) -> Any:
        return t.add("outgoing-value", s, OutgoingValue(limits))

    def write_body(s: Any, h: Any) -> Any:
        outgoing: OutgoingValue = t.get("outgoing-value", s, h)
        if outgoing.stream_taken:
            return Err(None)
        outgoing.stream_taken = True
        return Ok(t.add("output-stream", s, OutputStream(outgoing.write)))

    def finish(s: Any, h: Any) -> Any:
        outgoing: OutgoingValue = t.take("outgoing-value", s, h)
        error = outgoing.finish()
        return Ok(None) if error is None else Err(error)

    def consume_sync(s: Any, h: Any) -> Any:
        value: IncomingValue = t.take("incoming-value", s, h)
        try:
            if value.reader.size > limits.max_sync_bytes:
                return Err(blobs.refuse(
                    f"incoming-value-consume-sync: the value has {value.reader.size} bytes, "
                    f"over the limit of {limits.max_sync_bytes}; read it with "
                    "incoming-value-consume-async"))
            data = bytearray()
            while (chunk := value.reader.read(CHUNK)) is not None:
                data += chunk
            return Ok(bytes(data))
        finally:
            value.close()

    def consume_async(s: Any, h: Any) -> Any:
        value: IncomingValue = t.take("incoming-value", s, h)
        return Ok(t.add("input-stream", s, InputStream(value)))

    def size(s: Any, h: Any) -> int:
        value: IncomingValue = t.get("incoming-value", s, h)
        return value.reader.size

    B, C, T = "wasi:blobstore/blobstore", "wasi:blobstore/container", "wasi:blobstore/types"
    table: Functions = {
        (B, "create-container"): create_container,
        (B, "get-container"): get_container,
        (B, "delete-container"): delete_container,
        (B, "container-exists"): container_exists,
        (B, "copy-object"): transfer("copy-object", move=False),
        (B, "move-object"): transfer("move-object", move=True),
        (C, "[method]container.name"): lambda s, h: Ok(container(s, h).label),
        (C, "[method]container.info"): info,
        (C, "[method]container.get-data"): get_data,
        (C, "[method]container.write-data"): write_data,
        (C, "[method]container.list-objects"): list_objects,
        (C, "[method]container.delete-object"): delete_object,
        (C, "[method]container.delete-objects"): delete_objects,
        (C, "[method]container.has-object"): has_object,
        (C, "[method]container.object-info"): object_info,
        (C, "[method]container.clear"): clear,
        (C, "[method]stream-object-names.read-stream-object-names"): read_names,
        (C, "[method]stream-object-names.skip-stream-object-names"): skip_names,
        (T, "[static]outgoing-value.new-outgoing-value"): new_outgoing,
        (T, "[method]outgoing-value.outgoing-value-write-body"): write_body,
        (T, "[static]outgoing-value.finish"): finish,
        (T, "[static]incoming-value.incoming-value-consume-sync"): consume_sync,
        (T, "[static]incoming-value.incoming-value-consume-async"): consume_async,
        (T, "[method]incoming-value.size"): size,
    }
    # Functions with no error case (the constructor, size) trap on a backend failure.
    results = {key for key in table if key[1] not in (
        "[static]outgoing-value.new-outgoing-value", "[method]incoming-value.size")}
    return {key: guarded(func) if key in results else func for key, func in table.items()}


def _transfer(source: Container, name: str, target: Container, dest_name: str,
              move: bool) -> None:
    """Copy (or move) an object, within one backend when it can, else in chunks."""
    if source.backend is target.backend and name == dest_name:
        source.backend.stat(name)  # the object must exist; nothing else to do
        return
    if target.backend.copy_within(source.backend, name, dest_name, move):
        return
    reader = source.backend.read(name, 0, TO_END)
    try:
        upload = target.backend.upload(dest_name)
        try:
            while (chunk := reader.read(CHUNK)) is not None:
                if expired():
                    raise BackendError("the request's deadline passed during the copy")
                upload.write(chunk)
            upload.commit()
        except BaseException:
            upload.abort()
            raise
    finally:
        reader.close()
    if move:
        source.backend.delete_object(name)
