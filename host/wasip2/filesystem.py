"""`wasi:filesystem`: no preopened directories, so no descriptor ever exists.

The executor refuses `files` grants for wasi:http components at start-up
(host/executors/wasi_http.py) rather than serve them without their files.
"""

from __future__ import annotations

from host.wasip2.resources import Functions, Tables


def functions(t: Tables) -> Functions:
    return {
        ("wasi:filesystem/preopens", "get-directories"): lambda s: [],
        ("wasi:filesystem/types", "filesystem-error-code"): lambda s, e: None,
    }
