"""`wasi:cli/stdin|stdout|stderr`: no input; output to the component's log sinks."""

from __future__ import annotations

from host.stdio import ComponentStdio
from host.wasip2.io import EmptySource, InputStream, OutputStream
from host.wasip2.resources import Functions, Tables


def functions(t: Tables, stdio: ComponentStdio) -> Functions:
    return {
        ("wasi:cli/stdin", "get-stdin"):
            lambda s: t.add("input-stream", s, InputStream(EmptySource())),
        ("wasi:cli/stdout", "get-stdout"):
            lambda s: t.add("output-stream", s, OutputStream(stdio.stdout)),
        ("wasi:cli/stderr", "get-stderr"):
            lambda s: t.add("output-stream", s, OutputStream(stdio.stderr)),
    }

