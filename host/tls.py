"""`--tls-cert` / `--tls-key`: serving HTTPS, checked once before the port answers.

uvicorn loads the certificate and key itself (in each worker, from the same
files); `check` loads them first, in the process that starts, so a missing,
unreadable, malformed or mismatched file is one error line before anything
serves, never a traceback from inside the server (nor a passphrase prompt: an
encrypted key is refused, as uvicorn would ask for its passphrase on the
terminal).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from host.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM: the certificate, optionally followed by its chain
    key: Path  # PEM: its private key (PKCS#8 or traditional), not encrypted


def check(tls: TlsFiles) -> None:
    """Load the certificate and key as the server will; ConfigError naming the flag."""
    for flag, path in (("--tls-cert", tls.cert), ("--tls-key", tls.key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert, tls.key, password=_no_passphrase)
        return
    except _Encrypted:
        raise ConfigError(f"--tls-key {tls.key}: the key is encrypted; give it without a "
                          "passphrase (e.g. openssl pkey -in KEY -out KEY.plain)") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--tls-key {tls.key} is not the key of --tls-cert "
                              f"{tls.cert}") from None
    if not _is_certificate(tls.cert):
        raise ConfigError(f"--tls-cert {tls.cert}: not a PEM certificate") from None
    raise ConfigError(f"--tls-key {tls.key}: not a PEM private key") from None


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _Encrypted


def _is_certificate(path: Path) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError):
        return False
    return True
