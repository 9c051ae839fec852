"""The `s3` blob backend: one S3 bucket per container, through botocore.

Any S3-compatible service: AWS by default, another (MinIO, Ceph, Garage...)
at `endpoint`, addressed path-style (`http://host:port/bucket/key`), which
they all accept. Credentials are `access_key`/`secret_key` (+ `token`), or
else botocore's usual chain (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `~/.aws`), as Spin's S3 blob store reads them.

Every call runs on this container's worker threads and is waited for at most
the time left before the request's deadline (and the client's own connect
and read timeouts, ceilings): a slow or unreachable server answers the guest
an error at its deadline, never a hang; the thread finishes on its own.
botocore retries nothing (`total_max_attempts = 1`): a retry would not fit
the deadline either. An object is uploaded as it is written: one PUT when it
is smaller than `s3_part_bytes`, otherwise a multipart upload that holds one
part in memory at a time and is aborted if the object is never finished.
Object names are S3 keys unchanged (S3 has no paths to escape).
"""

from __future__ import annotations

import concurrent.futures
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import botocore.config
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from host.backends.blobs import TO_END, ContainerNotFound, ObjectNotFound, ObjectStat
from host.deadline import DeadlineExceeded, time_left
from host.errors import BackendError
from host.limits import BlobStoreLimits
from host.runtime_config import BlobStoreConfig

# S3's bucket naming rules (the subset every S3-compatible service accepts).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_LIST_PAGE = 1000  # S3's most keys per ListObjectsV2


def bucket_of(config: BlobStoreConfig) -> str:
    return config.bucket or config.label


def _description(config: BlobStoreConfig) -> str:
    where = f" at {config.endpoint}" if config.endpoint else f" in {config.region}"
    return f"s3 bucket {bucket_of(config)}{where}"


class S3Reader:
    def __init__(self, container: S3Container, body: Any, size: int) -> None:
        self.container = container
        self.body = body
        self.size = size
        self.left = size

    def read(self, max_bytes: int) -> bytes | None:
        if self.body is None or self.left <= 0:
            self.close()
            return None
        data: bytes = self.container.call("read", self.body.read, min(max_bytes, self.left))
        if not data:
            self.close()
            raise BackendError(f"{self.container.description}: the object ended "
                               f"{self.left} bytes early")
        self.left -= len(data)
        return data

    def close(self) -> None:
        if self.body is not None:
            body, self.body = self.body, None
            body.close()


class S3Upload:
    def __init__(self, container: S3Container, name: str) -> None:
        self.container = container
        self.key = name
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.container.limits.s3_part_bytes:
            self._send_part()

    def _send_part(self) -> None:
        c = self.container
        try:
            if self.upload_id is None:
                self.upload_id = c.call("upload", c.client.create_multipart_upload,
                                        Bucket=c.bucket, Key=self.key)["UploadId"]
            number = len(self.parts) + 1
            reply = c.call("upload", c.client.upload_part, Bucket=c.bucket, Key=self.key,
                           UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer))
        except BackendError:
            self.abort()
            raise
        self.parts.append({"ETag": reply["ETag"], "PartNumber": number})
        self.buffer.clear()

    def commit(self) -> None:
        c = self.container
        if self.upload_id is None:
            try:
                c.call("upload", c.client.put_object, Bucket=c.bucket, Key=self.key,
                       Body=bytes(self.buffer))
            finally:
                self.buffer.clear()
            return
        if self.buffer:
            self._send_part()
        try:
            c.call("upload", c.client.complete_multipart_upload, Bucket=c.bucket, Key=self.key,
                   UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        except BackendError:
            self.abort()
            raise
        self.upload_id = None

    def abort(self) -> None:
        self.buffer = bytearray()
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            c = self.container
            try:
                c.call("abort upload", c.client.abort_multipart_upload, Bucket=c.bucket,
                       Key=self.key, UploadId=upload_id)
            except BackendError:
                pass  # the bucket's lifecycle rules remove abandoned parts


class S3Listing:
    def __init__(self, container: S3Container) -> None:
        self.container = container
        self.names: deque[str] = deque()
        self.token: str | None = None
        self.more = True

    def _fill(self, count: int) -> None:
        c = self.container
        while len(self.names) < count and self.more:
            args: dict[str, Any] = {"Bucket": c.bucket, "MaxKeys": _LIST_PAGE}
            if self.token is not None:
                args["ContinuationToken"] = self.token
            page = c.call("list", c.client.list_objects_v2, **args)
            self.names.extend(entry["Key"] for entry in page.get("Contents", ()))
            self.more = bool(page.get("IsTruncated"))
            self.token = page.get("NextContinuationToken")
            if self.more and not self.token:
                raise BackendError(f"{c.description}: list: a truncated page without a "
                                   "continuation token")

    def read(self, count: int) -> tuple[list[str], bool]:
        self._fill(count)
        names = [self.names.popleft() for _ in range(min(count, len(self.names)))]
        return names, not self.names and not self.more

    def skip(self, count: int) -> tuple[int, bool]:
        names, ended = self.read(count)
        return len(names), ended

    def close(self) -> None:
        self.names.clear()
        self.more = False


class S3Container:
    def __init__(self, config: BlobStoreConfig, limits: BlobStoreLimits) -> None:
        self.limits = limits
        self.bucket = bucket_of(config)
        # Copies within one service and account need no bytes through the host.
        self.account = (config.endpoint, config.region, config.access_key)
        self.description = _description(config)
        self._secret = config.secret_key
        session = botocore.session.get_session()
        client_config = botocore.config.Config(
            connect_timeout=limits.s3_connect_timeout_seconds,
            read_timeout=limits.s3_read_timeout_seconds,
            retries={"total_max_attempts": 1},
            max_pool_connections=limits.s3_max_calls,
            s3={"addressing_style": "path"} if config.endpoint else None,
        )
        self.client = session.create_client(
            "s3", region_name=config.region, endpoint_url=config.endpoint,
            aws_access_key_id=config.access_key, aws_secret_access_key=config.secret_key,
            aws_session_token=config.token, config=client_config)
        if config.access_key is None and session.get_credentials() is None:
            raise BackendError(
                f"{self.description}: no credentials: set access_key and secret_key, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the host's environment")
        self._calls = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.s3_max_calls, thread_name_prefix="s3")

    @classmethod
    def from_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> S3Container:
        cls.check_config(config, limits)
        container = cls(config, limits)
        try:
            container.exists()  # wrong endpoint or credentials: fail at start-up
        except BackendError:
            container.close()
            raise
        return container

    @classmethod
    def check_config(cls, config: BlobStoreConfig, limits: BlobStoreLimits) -> str:
        bucket = bucket_of(config)
        if not BUCKET_NAME.match(bucket):
            source = "bucket" if config.bucket else "the label (no bucket given)"
            raise BackendError(f'"{bucket}" ({source}) is not a valid S3 bucket name: 3-63 '
                               "lower-case letters, digits, dots and hyphens; set "
                               'bucket = "..."')
        return _description(config)

    def call(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`func(*args, **kwargs)` on a worker thread, waited for at most the time left;
        every failure a BackendError naming the container and `what`."""
        ceiling = self.limits.s3_connect_timeout_seconds + self.limits.s3_read_timeout_seconds
        try:
            wait = time_left(ceiling)
        except DeadlineExceeded:
            raise BackendError(f"{self.description}: {what}: the request's deadline "
                               "passed") from None
        future = self._calls.submit(func, *args, **kwargs)
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BackendError(f"{self.description}: {what}: no answer before the "
                               "request's deadline") from None
        except ClientError as exc:
            raise self._client_error(what, exc) from None
        except (BotoCoreError, OSError, ValueError) as exc:
            raise BackendError(self._scrub(f"{self.description}: {what}: {exc}")) from None

    def _client_error(self, what: str, exc: ClientError) -> BackendError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("NoSuchKey", "404"):
            return ObjectNotFound(f"no such object ({what})")
        if code == "NoSuchBucket":
            return ContainerNotFound(f"{self.description}: the container does not exist")
        message = error.get("Message") or code
        return BackendError(self._scrub(f"{self.description}: {what}: {code}: {message}"))

    def _scrub(self, message: str) -> str:
        if self._secret:
            message = message.replace(self._secret, "***")
        return " ".join(message.split())

    def exists(self) -> bool:
        try:
            self.call("head bucket", self.client.head_bucket, Bucket=self.bucket)
        except ObjectNotFound:  # HEAD answers a bare 404
            return False
        except ContainerNotFound:
            return False
        return True

    def create(self) -> None:
        if self.exists():
            raise BackendError(f"{self.description}: the container already exists")
        self.call("create bucket", self.client.create_bucket, Bucket=self.bucket)

    def delete(self) -> None:
        self.clear()
        self.call("delete bucket", self.client.delete_bucket, Bucket=self.bucket)

    def created_at(self) -> int:
        if not self.exists():
            raise ContainerNotFound(f"{self.description}: the container does not exist")
        return 0  # S3 tells a bucket's creation date only by listing every bucket

    def stat(self, name: str) -> ObjectStat:
        reply = self.call("object info", self.client.head_object, Bucket=self.bucket, Key=name)
        return ObjectStat(int(reply["ContentLength"]),
                          int(reply["LastModified"].timestamp() * 1_000_000_000))

    def read(self, name: str, start: int, end: int) -> S3Reader:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start > 0 or end < TO_END:
            args["Range"] = f"bytes={start}-" + ("" if end >= TO_END else str(end))
        try:
            reply = self.call("get data", self.client.get_object, **args)
        except BackendError as exc:
            if "InvalidRange" in str(exc):  # the range starts past the end
                return S3Reader(self, None, 0)
            raise
        return S3Reader(self, reply["Body"], int(reply["ContentLength"]))

    def upload(self, name: str) -> S3Upload:
        return S3Upload(self, name)

    def delete_object(self, name: str) -> None:
        self.call("delete object", self.client.delete_object, Bucket=self.bucket, Key=name)

    def list(self) -> S3Listing:
        return S3Listing(self)

    def clear(self) -> None:
        listing = self.list()
        while True:
            names, ended = listing.read(_LIST_PAGE)
            if names:
                reply = self.call("clear", self.client.delete_objects, Bucket=self.bucket,
                                  Delete={"Objects": [{"Key": n} for n in names],
                                          "Quiet": True})
                failed = reply.get("Errors") or ()
                if failed:
                    first = failed[0]
                    raise BackendError(f"{self.description}: clear: {len(failed)} object(s) "
                                       f"not deleted, e.g. {first.get('Key')!r}: "
                                       f"{first.get('Code')}")
            if ended:
                return

    def copy_within(self, source: object, name: str, dest_name: str, move: bool) -> bool:
        if not isinstance(source, S3Container) or source.account != self.account:
            return False
        self.call("copy", self.client.copy_object, Bucket=self.bucket, Key=dest_name,
                  CopySource={"Bucket": source.bucket, "Key": name})
        if move and (source.bucket, name) != (self.bucket, dest_name):
            source.delete_object(name)
        return True

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)
        self.client.close()
