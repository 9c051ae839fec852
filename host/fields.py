"""HTTP field (header) syntax, shared by the manifest, the server and WAGI."""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token


def is_field_name(name: bytes) -> bool:
    return _TOKEN.match(name) is not None


def is_field_value(value: bytes) -> bool:
    """No bytes that would end or split the header line."""
    return b"\r" not in value and b"\n" not in value and b"\0" not in value
