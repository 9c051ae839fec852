"""The OCI distribution API, as much as pushing and pulling app images needs (httpx).

Plain HTTP for loopback registries by default; `insecure` asks for it, and
for any other host it also needs `allow_insecure_remote` (or
`SPINHOST_ALLOW_INSECURE_REMOTE=1`), since a login and the image would cross
the network in the clear. HTTPS otherwise. Auth: anonymous, Basic, or the
Bearer token challenge (with a password, or Docker's identity token), with
credentials from arguments, `SPINHOST_REGISTRY_USERNAME`/`_PASSWORD`, or the
stored logins (host/oci/credentials.py), looked up only when a registry asks.
Whatever the registry sends is checked against its sha256 digest before it is
kept: blobs go to temporary files renamed into place only once verified, and a
pulled layout replaces its destination only when complete.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from host import __version__
from host.errors import OciError
from host.limits import OciLimits
from host.oci import credentials as logins
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
ALLOW_INSECURE_REMOTE_ENV = "SPINHOST_ALLOW_INSECURE_REMOTE"
ALLOW_INSECURE_REMOTE_FLAG = "--allow-insecure-remote"
TOKEN_CLIENT_ID = "spinhost"  # OAuth2 client_id sent with an identity token
DEFAULT_TAG = "latest"
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


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed): traffic that stays on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plain_http(registry: str, insecure: bool | None,
               allow_insecure_remote: bool | None = None) -> bool:
    """Whether to talk to `registry` (host[:port]) over plain HTTP.

    None: only loopback registries. True: asked for; a registry elsewhere also
    needs `allow_insecure_remote` (None: `SPINHOST_ALLOW_INSECURE_REMOTE`).
    """
    host = Reference(registry, "").host
    if insecure is None:
        return is_loopback(host)
    if not insecure or is_loopback(host):
        return insecure
    if allow_insecure_remote is None:
        allow_insecure_remote = os.environ.get(ALLOW_INSECURE_REMOTE_ENV, "").lower() in (
            "1", "true", "yes", "on")
    if not allow_insecure_remote:
        raise OciError(f"{registry}: --insecure (plain HTTP) is only for loopback registries; "
                       "the login and the image would cross the network unencrypted. Add "
                       f"{ALLOW_INSECURE_REMOTE_FLAG} (or set {ALLOW_INSECURE_REMOTE_ENV}=1) "
                       "if you mean it")
    return True


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
                 push: bool = False, limits: OciLimits | None = None,
                 allow_insecure_remote: bool | None = None) -> None:
        self.ref = ref
        self.limits = limits = limits or OciLimits()
        plain = plain_http(ref.registry, insecure, allow_insecure_remote)
        self.root = f"{'http' if plain else 'https'}://{ref.registry}/v2/"
        self.base = f"{self.root}{ref.repository}"
        source = ""  # given as arguments: the caller knows where they came from
        if username is None and password is None:
            username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
            source = f"{USERNAME_ENV}/{PASSWORD_ENV}"
        self._given: logins.Credentials | None = None
        if username is not None or password is not None:
            self._given = logins.Credentials(username or "", password or "", None, source)
        self._stored: logins.Credentials | None = None
        self._looked_up = False
        # None: no scope (what `docker login` asks a token service for).
        self.scope: str | None = \
            f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
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

    def _credentials(self) -> logins.Credentials | None:
        """Given ones, else the stored login (read at the first challenge, so an
        anonymous registry never runs a credential helper)."""
        if self._given is not None:
            return self._given
        if not self._looked_up:
            self._stored = logins.lookup(self.ref.registry)
            self._looked_up = True
        return self._stored

    def _no_login(self) -> str:
        return (f"run `host registry login {self.ref.registry}`, pass -u/--username and "
                f"--password-stdin, or set {USERNAME_ENV} and {PASSWORD_ENV}")

    def _authenticate(self, challenge: str) -> str:
        """The Authorization value answering a `WWW-Authenticate` challenge."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(rest)}
        credentials = self._credentials()
        if scheme.lower() == "basic":
            if credentials is None:
                raise OciError(f"{self.ref.registry}: the registry requires a login; "
                               f"{self._no_login()}")
            if credentials.identity_token and not credentials.password:
                raise OciError(f"{self.ref.registry}: the login from {credentials.source} is "
                               "an identity token, which only a Bearer token service accepts")
            secret = f"{credentials.username}:{credentials.password}".encode()
            return f"Basic {base64.b64encode(secret).decode()}"
        if scheme.lower() == "bearer":
            return f"Bearer {self._token(params, credentials)}"
        raise OciError(f"{self.ref.registry}: unsupported authentication challenge "
                       f"{challenge!r} (Basic and Bearer are supported)")

    def _token(self, params: dict[str, str], credentials: logins.Credentials | None) -> str:
        """A token from the challenge's realm (the distribution token flow).

        A password goes as Basic auth on a GET; Docker's identity token is an
        OAuth2 refresh token, POSTed as a form. Either way the realm must be
        HTTPS unless the registry itself is reached over plain HTTP.
        """
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise OciError(f"{self.ref.registry}: Bearer challenge without a usable realm "
                           f"({realm!r})")
        if realm.startswith("http://") and self.root.startswith("https://") and credentials:
            raise OciError(f"{self.ref.registry}: the registry sends logins to a plain-HTTP "
                           f"token service ({_without_query(realm)}); refusing to send them")
        scopes = sorted({s for s in (self.scope, params.get("scope")) if s})
        query: dict[str, str | list[str]] = {"scope": scopes} if scopes else {}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            if credentials is not None and credentials.identity_token:
                form = {"grant_type": "refresh_token", "client_id": TOKEN_CLIENT_ID,
                        "refresh_token": credentials.identity_token, **{
                            k: " ".join(v) if isinstance(v, list) else v
                            for k, v in query.items()}}
                response = self._client.post(realm, data=form)
            else:
                if credentials is not None and credentials.username:
                    query["account"] = credentials.username
                auth = (credentials.username, credentials.password) if credentials else None
                response = self._client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise OciError(f"{_without_query(realm)}: cannot get a registry token: "
                           f"{type(exc).__name__}") from None
        if response.status_code in (401, 403):
            who = f"the login ({credentials})" if credentials else "anonymous access"
            hint = "check the username and password" if credentials else self._no_login()
            raise OciError(f"{_without_query(realm)}: the token service refused {who} (HTTP "
                           f"{response.status_code}); {hint}")
        if not response.is_success:
            raise OciError(f"{_without_query(realm)}: the token service answered HTTP "
                           f"{response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise OciError(f"{_without_query(realm)}: the token service sent no token")
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
            credentials = self._credentials()
            hint = (f"the registry refused the login ({credentials}); check the username and "
                    "password" if credentials else self._no_login())
            return OciError(f"{self.ref.registry}: authentication failed for {what} ({detail}); "
                            f"{hint}")
        if response.status_code == 403:
            return OciError(f"{self.ref.registry}: access to {what} denied ({detail})")
        return OciError(f"{self.ref.registry}: {what} failed ({detail})")

    def ping(self) -> None:
        """`GET /v2/`, authenticating if asked: proves the registry takes the login."""
        response = self._send("GET", self.root)
        response.close()
        if response.status_code == 401:
            credentials = self._credentials()
            who = f"the login ({credentials})" if credentials else "anonymous access"
            raise OciError(f"{self.ref.registry}: the registry refused {who}; check the "
                           "username and password")
        if not response.is_success:
            raise self._fail(response, "GET /v2/")

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


def login(registry: str, username: str, password: str, insecure: bool | None = None,
          allow_insecure_remote: bool | None = None, limits: OciLimits | None = None) -> None:
    """Check that `registry` (host[:port]) accepts this login, as `docker login` does.

    The Bearer flow asks the token service for a token without a scope.
    """
    if not _HOST.match(registry):
        raise OciError(f"{registry!r}: not a registry server; expected host[:port], "
                       "e.g. localhost:5000 or ghcr.io")
    with RegistryClient(Reference(registry, ""), insecure, username, password, limits=limits,
                        allow_insecure_remote=allow_insecure_remote) as client:
        client.scope = None
        client.ping()


def push(layout: Path, ref: str, insecure: bool | None = None, username: str | None = None,
         password: str | None = None, limits: OciLimits | None = None,
         allow_insecure_remote: bool | None = None) -> PushResult:
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
                            limits=limits, allow_insecure_remote=allow_insecure_remote) as client:
            for blob in manifest.blobs:
                if not client.has_blob(blob):
                    client.upload_blob(blob, source.read_blob(blob, bounded=False))
                    uploaded += 1
            client.put_manifest(manifest, reference.digest or reference.tag or DEFAULT_TAG)
    size = manifest.descriptor.size + sum(b.size for b in manifest.blobs)
    return PushResult(manifest.digest, size, uploaded, len(manifest.blobs) - uploaded)


def pull(ref: str, dest_layout_dir: Path, insecure: bool | None = None,
         username: str | None = None, password: str | None = None,
         limits: OciLimits | None = None, allow_insecure_remote: bool | None = None) -> str:
    """Pull `ref` into an image layout directory (replacing one there); return its digest.

    Nothing reaches `dest_layout_dir` unless every blob verified.
    """
    reference = parse_reference(ref)
    with RegistryClient(reference, insecure, username, password, limits=limits,
                        allow_insecure_remote=allow_insecure_remote) as client:
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
