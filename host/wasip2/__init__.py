"""WASI 0.2 interfaces the host defines itself, for components that import or export
wasi:http (standard wasi:http components; ours that import it, e.g. for `fetch`).

A resource type belongs to whoever defines it: once the host defines
`wasi:http/types` (it must, to create the `incoming-request` and
`response-outparam` the export takes), every interface whose signatures mention
`wasi:io` resources must come from the same definitions. So this package
defines, on our trampoline, everything tied to those resources (`INTERFACES`),
one module per concern, and leaves the rest of WASI (environment, exit, random,
wall-clock, terminal-*) to wasmtime's `add_wasip2()`.

- `resources`: the resource tables, handle resolution and linking by import name.
- `io`: `wasi:io/error|poll|streams` (pollables, input and output streams).
- `cli`: stdin (empty), stdout and stderr (the component's log sinks).
- `clocks`: `wasi:clocks/monotonic-clock` (`subscribe-*` make pollables).
- `filesystem`: the component's `files`, read-only at "/" (no preopen without them).
- `sockets`: every socket denied with the interface's own error codes.
- `http`: `wasi:http/types` and `outgoing-handler` (through the outbound capability).
- `blobstore`: `wasi:blobstore/*` (through the blob-store capability: its bodies are streams).

Every function is looked up by (interface without version, name): one
definition serves every 0.2.x version a component imports, defined at the
exact name it imports.
"""

from pathlib import Path

from host.capabilities.blobstore import BlobStore
from host.stdio import ComponentStdio
from host.wasip2 import blobstore, cli, clocks, filesystem, http, io, sockets
from host.wasip2.resources import INTERFACES, Tables, WasiHost

__all__ = ["INTERFACES", "WasiHost", "wasi_host"]


def wasi_host(component_id: str, stdio: ComponentStdio,
              outbound: http.Outbound | None = None,
              files_root: Path | None = None, blobs: BlobStore | None = None) -> WasiHost:
    """Tables and functions of every host-defined interface, for one component;
    `outbound` sends its outgoing requests (None: all denied), `files_root` is
    its staged files (None: no preopen), `blobs` its blob containers (None: the
    blob-store interfaces are not defined)."""
    tables = Tables()
    functions = {
        **io.functions(tables),
        **cli.functions(tables, stdio),
        **clocks.functions(tables),
        **filesystem.functions(tables, files_root),
        **sockets.functions(tables),
        **http.functions(tables, outbound),
        **blobstore.functions(tables, blobs),
    }
    return WasiHost(component_id, tables, functions)
