"""Registry logins: ours (`host registry login`), and Docker's, read where present.

Ours live in `$XDG_CONFIG_HOME/spinhost/registry-auth.json` (`~/.config/...`):
the host's own config directory, as Spin keeps `spin registry login` in
`$XDG_CONFIG_HOME/fermyon/registry-auth.json` rather than in Docker's file. The
shape is Docker's (`{"auths": {"SERVER": {"auth": base64("user:password")}}}`),
the file is created mode 0600 in a 0700 directory and rewritten by atomic
rename. Docker's `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`) is only
read: `credHelpers` and `credsStore` through `docker-credential-NAME get`,
then `auths` entries (`auth`, `identitytoken`).

Secrets never reach a message: `Credentials` prints as its user name, errors
name the file, server or helper, never a value read from them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.errors import OciError

AUTH_FILE_NAME = "registry-auth.json"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # Docker's key for Docker Hub
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HELPER_TIMEOUT_SECONDS = 30.0  # a helper may ask a keychain (or the user) for the secret
HELPER_IDENTITY_TOKEN_USER = "<token>"  # a helper's Username meaning Secret is a refresh token

_log = logging.getLogger("host.oci")


@dataclass(frozen=True)
class Credentials:
    """A login. `identity_token` (Docker's OAuth2 refresh token) replaces the password."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""  # where it came from, for messages: a file, a helper, a variable

    def __str__(self) -> str:
        who = repr(self.username) if self.username else "an identity token"
        return f"{who} from {self.source}" if self.source else who


def auth_file() -> Path:
    """Where `host registry login` stores logins."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spinhost" / AUTH_FILE_NAME


def docker_config_file() -> Path:
    """Docker's config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(base) / "config.json"


def server_key(server: str) -> str:
    """`https://Host:5000/v2/` -> `host:5000`: how a server is named in both files."""
    text = server.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    return text.split("/", 1)[0].lower()


def lookup(registry: str) -> Credentials | None:
    """The login for `registry` (host[:port]): ours first, then Docker's; None if none."""
    key = server_key(registry)
    ours = auth_file()
    found = _from_auths(_read_json(ours), key, str(ours))
    if found is not None:
        return found
    docker = docker_config_file()
    config = _read_json(docker)
    helpers = config.get("credHelpers")
    helper = helpers.get(key) if isinstance(helpers, dict) else None
    if not isinstance(helper, str) or not helper:
        helper = config.get("credsStore")
    if isinstance(helper, str) and helper:
        from_helper = _from_helper(helper, key)
        if from_helper is not None:
            return from_helper
    return _from_auths(config, key, str(docker))


def store(registry: str, credentials: Credentials) -> Path:
    """Save a login in our file (created 0600); return the file's path."""
    path = auth_file()
    data = _read_json(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        auths = data["auths"] = {}
    secret = f"{credentials.username}:{credentials.password}".encode()
    auths[server_key(registry)] = {"auth": base64.b64encode(secret).decode()}
    _write_private(path, data)
    return path


def remove(registry: str) -> bool:
    """Forget our login for `registry`; False if there was none."""
    path = auth_file()
    data = _read_json(path)
    auths = data.get("auths")
    key = server_key(registry)
    if not isinstance(auths, dict) or key not in auths:
        return False
    del auths[key]
    _write_private(path, data)
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise OciError(f"{path}: cannot read registry logins: "
                       f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        # The parser's message may quote the file's text, i.e. a secret: name the file only.
        raise OciError(f"{path}: not valid JSON; fix or remove the file") from None
    if not isinstance(data, dict):
        raise OciError(f"{path}: expected a JSON object")
    return data


def _write_private(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise OciError(f"{path}: cannot save the login: {exc.strerror or exc}") from None


def _from_auths(config: dict[str, Any], key: str, where: str) -> Credentials | None:
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = DOCKER_HUB_NAMES if key in DOCKER_HUB_NAMES else {key}
    for name, entry in auths.items():
        if not isinstance(entry, dict) or server_key(name) not in wanted:
            continue
        token = entry.get("identitytoken")
        encoded = entry.get("auth")
        username, password = "", ""
        if isinstance(encoded, str) and encoded:
            try:
                username, sep, password = base64.b64decode(encoded, validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise OciError(f"{where}: the `auth` of {name!r} is not base64 of "
                               "USER:PASSWORD; log in again")
        if isinstance(token, str) and token:
            return Credentials(username, "", token, where)
        if username or password:
            return Credentials(username, password, None, where)
    return None


def _from_helper(helper: str, key: str) -> Credentials | None:
    """`docker-credential-HELPER get` for `key`; None when it has nothing for it."""
    program = f"docker-credential-{helper}"
    binary = shutil.which(program)
    if binary is None:
        _log.warning(f"{docker_config_file()} names the credential helper {helper!r}, but "
                     f"{program} is not on PATH; going on without its logins")
        return None
    server = DOCKER_HUB_KEY if key in DOCKER_HUB_NAMES else key
    try:
        result = subprocess.run([binary, "get"], input=server, capture_output=True, text=True,
                                timeout=HELPER_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise OciError(f"{program} get ({server}) gave no answer within "
                       f"{HELPER_TIMEOUT_SECONDS:g} s") from None
    except OSError as exc:
        raise OciError(f"{program} get ({server}) could not run: "
                       f"{exc.strerror or exc}") from None
    if result.returncode != 0:
        # "credentials not found" is how helpers say "no login"; the output itself is
        # never repeated (it is the helper's to word, and may hold anything).
        if "not found" in (result.stdout + result.stderr).lower():
            return None
        raise OciError(f"{program} get ({server}) exited with status {result.returncode}")
    try:
        data = json.loads(result.stdout)
        username, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        raise OciError(f"{program} get ({server}) did not print Docker's JSON "
                       "(Username, Secret)") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        return None
    if username == HELPER_IDENTITY_TOKEN_USER:
        return Credentials("", "", secret, program)
    return Credentials(username, secret, None, program)
