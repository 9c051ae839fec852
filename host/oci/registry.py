"""The OCI distribution API, as much as pushing and pulling app images needs (httpx).

Plain HTTP only for loopback registries or when asked (`insecure`), HTTPS
otherwise. Auth: anonymous, Basic, or the Bearer token challenge, with
credentials from arguments or `SPINHOST_REGISTRY_USERNAME`/`_PASSWORD`.
Whatever the registry sends is checked against its sha256 digest before it is
kept: blobs go to temporary files renamed into place only once verified, and a
pulled layout replaces its destination only when complete.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from host import __version__
from host.errors import OciError
from host.limits import OciLimits
from host.oci.atomic import os_errors, temp_file
from host.oci.digest import CHUNK_BYTES, BlobCheck, file_digest, sha256_digest
from host.oci.layout import LocalLayout
from host.oci.spec import (
    ANNOTATION_REF_NAME,
    DOCKER_INDEX,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Descriptor,
    ImageManifest,
    check_tag,
    digest_hex,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from host.oci.writer import LayoutWriter

USERNAME_ENV = "SPINHOST_REGISTRY_USERNAME"
PASSWORD_ENV = "SPINHOST_REGISTRY_PASSWORD"
DEFAULT_TAG = "latest"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
MANIFEST_ACCEPT = ", ".join((MEDIA_MANIFEST, MEDIA_INDEX, DOCKER_MANIFEST, DOCKER_INDEX))
REF_SYNTAX = "host[:port]/name[:tag|@sha256:<digest>], e.g. localhost:5000/my-app:v1"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]*))')


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`; a digest, when given, is what gets fetched."""

    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def target(self) -> str:
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def host(self) -> str:
        if self.registry.startswith("["):
            return self.registry[: self.registry.index("]") + 1].lower()
        return self.registry.partition(":")[0].lower()

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_image_reference(text: str) -> bool:
    """Whether `text` names an image in a registry rather than a local path.

    Docker's rule: the first part is a registry host only if it has a `.` or
    a `:port`, or is `localhost`, so `apps/web` stays a (missing) path.
    """
    first = text.partition("/")[0]
    if not ("." in first or ":" in first or first == "localhost"):
        return False
    try:
        parse_reference(text)
    except OciError:
        return False
    return True


def parse_reference(text: str) -> Reference:
    """`host[:port]/name[:tag|@sha256:...]`; the tag defaults to `latest`."""
    registry, slash, rest = text.partition("/")
    if not slash or not rest or not _HOST.match(registry):
        raise OciError(f"{text!r}: not a registry reference; expected {REF_SYNTAX}")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        digest_hex(digest, text)
    tag = None
    head, colon, tail = rest.rpartition(":")
    if colon and "/" not in tail:
        rest, tag = head, check_tag(tail, text)
    if not _NAME.match(rest):
        raise OciError(f"{text!r}: invalid repository name {rest!r} (lowercase letters and "
                       "digits, separated by '.', '_', '__', '-' or '/')")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, rest, tag, digest)


class RegistryClient:
    """One repository of one registry: authenticated requests, verified transfers."""

    def __init__(self, ref: Reference, insecure: bool | None = None,
                 username: str | None = None, password: str | None = None,
                 push: bool = False, limits: OciLimits | None = None) -> None:
        self.ref = ref
        self.limits = limits = limits or OciLimits()
        plain = ref.host in LOOPBACK_HOSTS if insecure is None else insecure
        self.base = f"{'http' if plain else 'https'}://{ref.registry}/v2/{ref.repository}"
        self.username = username if username is not None else os.environ.get(USERNAME_ENV)
        self.password = password if password is not None else os.environ.get(PASSWORD_ENV)
        self.scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self._authorization: str | None = None
        timeout = httpx.Timeout(connect=limits.connect_timeout_seconds,
                                read=limits.read_timeout_seconds,
                                write=limits.write_timeout_seconds,
                                pool=limits.pool_timeout_seconds)
        self._client = httpx.Client(timeout=timeout, follow_redirects=True,
                                    headers={"User-Agent": f"spinhost/{__version__}"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- requests and auth ---------------------------------------------------

    def _send(self, method: str, url: str | httpx.URL, headers: dict[str, str] | None = None,
              content: bytes | None = None, stream: bool = False) -> httpx.Response:
        """One request; on a 401 challenge, authenticate and send it once more.

        httpx drops the Authorization header on redirects to another origin
        (blob storage), so credentials never leave the registry.
        """
        for attempt in (1, 2):
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            request = self._client.build_request(method, url, headers=sent, content=content)
            try:
                response = self._client.send(request, stream=stream)
            except httpx.TimeoutException:
                raise OciError(f"{self.ref.registry}: no answer within the timeout "
                               f"({method} {_without_query(url)})") from None
            except httpx.HTTPError as exc:
                raise OciError(f"{self.ref.registry}: cannot reach the registry "
                               f"({method} {_without_query(url)}): {exc}") from None
            if response.status_code != 401 or attempt == 2:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._authorization = self._authenticate(challenge)
        raise AssertionError("unreachable")

    def _credentials(self) -> tuple[str, str] | None:
        if self.username is None and self.password is None:
            return None
        return self.username or "", self.password or ""

    def _authenticate(self, challenge: str) -> str:
        """The Authorization value answering a `WWW-Authenticate` challenge."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(rest)}
        credentials = self._credentials()
        if scheme.lower() == "basic":
            if credentials is None:
                raise OciError(f"{self.ref.registry}: the registry requires a login; pass "
                               f"-u/--username and -p/--password (or set {USERNAME_ENV} and "
                               f"{PASSWORD_ENV})")
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            return f"Basic {token}"
        if scheme.lower() == "bearer":
            return f"Bearer {self._token(params, credentials)}"
        raise OciError(f"{self.ref.registry}: unsupported authentication challenge "
                       f"{challenge!r} (Basic and Bearer are supported)")

    def _token(self, params: dict[str, str], credentials: tuple[str, str] | None) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise OciError(f"{self.ref.registry}: Bearer challenge without a usable realm "
                           f"({realm!r})")
        query: dict[str, str | list[str]] = {
            "scope": sorted({self.scope, params.get("scope") or self.scope})}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            response = self._client.get(realm, params=query, auth=credentials)
        except httpx.HTTPError as exc:
            raise OciError(f"{realm}: cannot get a registry token: {exc}") from None
        if response.status_code in (401, 403):
            who = "the login" if credentials else "anonymous access"
            raise OciError(f"{realm}: the token service refused {who} (HTTP "
                           f"{response.status_code}); check the username and password")
        if not response.is_success:
            raise OciError(f"{realm}: the token service answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise OciError(f"{realm}: the token service sent no token")
        return token

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        """The registry's own error codes and messages, else the HTTP status."""
        try:
            response.read()
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors)
        except (ValueError, AttributeError, httpx.HTTPError):
            detail = ""
        return detail or f"HTTP {response.status_code}"

    def _fail(self, response: httpx.Response, what: str) -> OciError:
        detail = self._detail(response)
        if response.status_code == 401:
            return OciError(f"{self.ref.registry}: authentication failed for {what} ({detail}); "
                            f"check -u/-p or {USERNAME_ENV}/{PASSWORD_ENV}")
        if response.status_code == 403:
            return OciError(f"{self.ref.registry}: access to {what} denied ({detail})")
        return OciError(f"{self.ref.registry}: {what} failed ({detail})")

    # -- pull ----------------------------------------------------------------

    def get_manifest(self) -> ImageManifest:
        """The image the reference names, through a multi-platform index if there is one."""
        where = str(self.ref)
        raw, media_type, digest = self._fetch_manifest(self.ref.target, self.ref.digest)
        if media_type in INDEX_TYPES:
            entry = select_platform(parse_index(raw, where), where)
            raw, media_type, digest = self._fetch_manifest(entry.digest, entry.digest)
        return parse_manifest(raw, Descriptor(media_type, digest, len(raw)), where)

    def _fetch_manifest(self, target: str, expected: str | None) -> tuple[bytes, str, str]:
        url = f"{self.base}/manifests/{target}"
        response = self._send("GET", url, headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            if response.status_code == 404:
                raise self._not_found(response, target)
            if not response.is_success:
                raise self._fail(response, f"manifest {target}")
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.limits.max_manifest_bytes:
                        raise OciError(f"{self.ref}: manifest {target} is larger than "
                                       f"{self.limits.max_manifest_bytes} bytes; refusing it")
                    chunks.append(chunk)
            except httpx.HTTPError as exc:
                raise OciError(f"{self.ref}: reading manifest {target} failed: {exc}") from None
            claimed = response.headers.get("Docker-Content-Digest")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        finally:
            response.close()
        raw = b"".join(chunks)
        digest = sha256_digest(raw)
        for wanted in (expected, claimed if claimed and claimed.startswith("sha256:") else None):
            if wanted is not None and wanted != digest:
                raise OciError(f"{self.ref}: the manifest the registry sent for {target} hashes "
                               f"to {digest}, not {wanted}; it was tampered with or corrupted, "
                               "refusing it")
        return raw, media_type_of(raw, content_type, str(self.ref)), digest

    def _not_found(self, response: httpx.Response, target: str) -> OciError:
        return OciError(f"{self.ref}: not found in the registry ({target}: "
                        f"{self._detail(response)})")

    def fetch_blob(self, descriptor: Descriptor, blob_dir: Path) -> Path:
        """`blob_dir/<hex>`: downloaded and verified, unless a verified copy is already there."""
        dest = blob_dir / digest_hex(descriptor.digest, str(self.ref))
        if dest.is_file():
            if dest.stat().st_size == descriptor.size and file_digest(dest) == descriptor.digest:
                return dest
            dest.unlink(missing_ok=True)  # a corrupted cache entry: fetch it again
        response = self._send("GET", f"{self.base}/blobs/{descriptor.digest}", stream=True)
        try:
            if not response.is_success:
                raise self._fail(response, f"blob {descriptor.digest}")
            check = BlobCheck(descriptor, str(self.ref))
            fd, tmp = temp_file(blob_dir, f".{descriptor.hex[:16]}.tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        check.update(chunk)
                        out.write(chunk)
                check.finish()
                os.replace(tmp, dest)
            except httpx.HTTPError as exc:
                os.unlink(tmp)
                raise OciError(f"{self.ref}: downloading blob {descriptor.digest} failed: "
                               f"{exc}") from None
            except BaseException:
                os.unlink(tmp)
                raise
        finally:
            response.close()
        return dest

    # -- push ----------------------------------------------------------------

    def has_blob(self, descriptor: Descriptor) -> bool:
        response = self._send("HEAD", f"{self.base}/blobs/{descriptor.digest}")
        if response.status_code == 404:
            return False
        if not response.is_success:
            raise self._fail(response, f"checking blob {descriptor.digest}")
        return True

    def upload_blob(self, descriptor: Descriptor, data: bytes) -> None:
        """POST an upload session, then one monolithic PUT `?digest=`."""
        response = self._send("POST", f"{self.base}/blobs/uploads/")
        if not response.is_success:
            raise self._fail(response, f"starting the upload of blob {descriptor.digest}")
        location = response.headers.get("Location")
        if not location:
            raise OciError(f"{self.ref.registry}: the upload of blob {descriptor.digest} got "
                           "no Location to send it to")
        url = httpx.URL(self.base).join(location).copy_merge_params(
            {"digest": descriptor.digest})
        response = self._send("PUT", url, content=data,
                              headers={"Content-Type": "application/octet-stream"})
        if not response.is_success:
            raise self._fail(response, f"uploading blob {descriptor.digest}")

    def put_manifest(self, manifest: ImageManifest, target: str) -> None:
        response = self._send("PUT", f"{self.base}/manifests/{target}", content=manifest.raw,
                              headers={"Content-Type": manifest.descriptor.media_type})
        if not response.is_success:
            raise self._fail(response, f"pushing manifest {manifest.digest} as {target}")
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != manifest.digest:
            raise OciError(f"{self.ref}: the registry stored the manifest as {stored}, not "
                           f"{manifest.digest}")


@dataclass(frozen=True)
class PushResult:
    digest: str  # of the image manifest
    size: int  # manifest + config + layers, in bytes
    uploaded: int  # blobs sent
    present: int  # blobs the registry already had


def push(layout: Path, ref: str, insecure: bool | None = None, username: str | None = None,
         password: str | None = None, limits: OciLimits | None = None) -> PushResult:
    """Push the image of `layout` (directory or `.tar`) to `ref`.

    A layout with one image pushes that one; with several, the one tagged like `ref`.
    Blobs the registry already has are not sent again.
    """
    reference = parse_reference(ref)
    with os_errors(str(layout)), LocalLayout(layout, limits) as source:
        tag = None if len(source.index()) == 1 else reference.tag
        manifest = source.manifest(tag)
        if reference.digest and reference.digest != manifest.digest:
            raise OciError(f"{ref}: the layout's image is {manifest.digest}, not "
                           f"{reference.digest}")
        source.verify(manifest)  # a tampered layout is refused before anything is sent
        uploaded = 0
        with RegistryClient(reference, insecure, username, password, push=True,
                            limits=limits) as client:
            for blob in manifest.blobs:
                if not client.has_blob(blob):
                    client.upload_blob(blob, source.read_blob(blob, bounded=False))
                    uploaded += 1
            client.put_manifest(manifest, reference.digest or reference.tag or DEFAULT_TAG)
    size = manifest.descriptor.size + sum(b.size for b in manifest.blobs)
    return PushResult(manifest.digest, size, uploaded, len(manifest.blobs) - uploaded)


def pull(ref: str, dest_layout_dir: Path, insecure: bool | None = None,
         username: str | None = None, password: str | None = None,
         limits: OciLimits | None = None) -> str:
    """Pull `ref` into an image layout directory (replacing one there); return its digest.

    Nothing reaches `dest_layout_dir` unless every blob verified.
    """
    reference = parse_reference(ref)
    with RegistryClient(reference, insecure, username, password, limits=limits) as client:
        manifest = client.get_manifest()
        with os_errors(str(dest_layout_dir)), LayoutWriter(dest_layout_dir) as writer:
            for blob in manifest.blobs:
                client.fetch_blob(blob, writer.blob_dir)
            (writer.blob_dir / manifest.descriptor.hex).write_bytes(manifest.raw)
            annotations = {ANNOTATION_REF_NAME: reference.tag} if reference.tag else {}
            writer.commit([Descriptor(manifest.descriptor.media_type, manifest.digest,
                                      manifest.descriptor.size, annotations)])
    return manifest.digest


def _without_query(url: str | httpx.URL) -> httpx.URL:
    """`url` for a message: an upload location's query holds the session's state token."""
    return httpx.URL(url).copy_with(query=None)
