"""WAGI: plain WASI preview 1 command programs as HTTP handlers, over CGI.

The request arrives as argv, environment variables (the CGI set Spin's WAGI
executor defines, SPIN.md section 6) and stdin; the response is what the
program prints: CGI headers, a blank line, the body. Programs run under
wasmtime's own WASI with stdin from memory, in a fresh instance per request,
linked once ahead of time (`InstancePre`).

`fd_write` is ours, not wasmtime's: stdout is captured in memory up to the
response limit and a program that prints past it traps at that write, and
stderr goes to the component's log. wasmtime's custom-output callbacks would
run our Python on wasmtime's tokio threads (at interpreter exit too, which
aborts the process), and they cannot stop the program: an error they return
reaches the guest as EIO, which a printing loop ignores until its deadline.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import wasmtime

from host.errors import CgiError, ComponentError, GuestError, OutputTooLarge
from host.executors.component import guest_failure, trap_reason
from host.fields import is_field_name
from host.limits import HttpLimits, Limits
from host.runtime.abi import HttpRequest, HttpResponse
from host.runtime.engine import Engine, LoadedComponent
from host.runtime.wasmtime_private import set_stdin_bytes
from host.stdio import ComponentStdio

log = logging.getLogger("host.wagi")

MISSING_HEADERS = b"Exactly one of 'location' or 'content-type' must be specified"
# Request headers CGI programs never see (credentials, hop-by-hop).
_HIDDEN_HEADERS = {"authorization", "connection"}
# spin-* request header -> WAGI variable (spin-path-info is PATH_INFO below).
_SPIN_VARS = {
    "spin-full-url": "X_FULL_URL",
    "spin-matched-route": "X_MATCHED_ROUTE",
    "spin-component-route": "X_COMPONENT_ROUTE",
    "spin-raw-component-route": "X_RAW_COMPONENT_ROUTE",
    "spin-base-path": "X_BASE_PATH",
    "spin-client-addr": "X_CLIENT_ADDR",
}
# WASI preview 1 errno values our fd_write answers with.
_ERRNO_BADF = 8
_ERRNO_FAULT = 21
_ERRNO_INVAL = 28
_IOV_MAX = 1024  # iovecs one call may name (POSIX's IOV_MAX; wasi-libc's writev stays under it)
# The most one fd_write call copies, however many (overlapping) iovecs it names.
_MAX_WRITE_BYTES = 1024 * 1024
_IOVEC = struct.Struct("<II")  # ciovec: buf, buf_len
_U32 = struct.Struct("<I")


def argv_for(template: str, path: str, query: str) -> list[str]:
    """Spin's argv: ${SCRIPT_NAME} is the request path, ${ARGS} the query with & -> space,
    then the result is split on single spaces (so an empty query leaves an empty arg)."""
    text = template.replace("${SCRIPT_NAME}", path).replace("${ARGS}", query.replace("&", " "))
    return text.split(" ")


def cgi_environment(request: HttpRequest, http_version: str = "HTTP/1.1") -> dict[str, str]:
    """The CGI variables for `request`, whose headers include the host's spin-* values."""
    path, _, query = request.path_with_query.partition("?")
    spin: dict[str, str] = {}
    env: dict[str, str] = {}
    content_type = ""
    for name, raw in request.headers:
        value = raw.decode("latin-1")
        if name.startswith("spin-"):
            spin[name] = value
            continue
        if name == "content-type":
            content_type = value
        if name not in _HIDDEN_HEADERS:
            env["HTTP_" + name.upper().replace("-", "_")] = value  # repeats: last wins
    client = spin.get("spin-client-addr", "")
    client_ip = client.rsplit(":", 1)[0].strip("[]") if client else ""
    host = request.authority or ""
    server_name, _, server_port = host.rpartition(":") if host.count(":") == 1 else (
        host, "", "")
    matched = spin.get("spin-matched-route", "")
    path_info = spin.get("spin-path-info", "")
    env.update({
        "AUTH_TYPE": "",
        "CONTENT_LENGTH": str(len(request.body)),
        # [ours] Spin looks up a header literally named CONTENT_TYPE, so its value is
        # always empty there; CGI means the request's content type.
        "CONTENT_TYPE": content_type,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "QUERY_STRING": query,
        "REMOTE_ADDR": client_ip,
        "REMOTE_HOST": client_ip,
        "REMOTE_USER": "",
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": _strip_wildcard(matched),
        "PATH_INFO": path_info,
        "X_RAW_PATH_INFO": path_info,
        "PATH_TRANSLATED": unquote(path_info),
        "SERVER_NAME": server_name or "localhost",
        "SERVER_PORT": server_port or "80",
        "SERVER_PROTOCOL": http_version,
        "SERVER_SOFTWARE": "WAGI/1",
    })
    for header, var in _SPIN_VARS.items():
        if header in spin:
            env[var] = spin[header]
    for name, value in spin.items():
        if name.startswith("spin-path-match-"):
            env["X_PATH_MATCH_" + name[len("spin-path-match-"):].upper().replace("-", "_")] = value
    return env


def _strip_wildcard(route: str) -> str:
    for suffix in ("/...", "/*"):
        if route.endswith(suffix):
            return route[: -len(suffix)]
    return route


def parse_cgi_output(out: bytes) -> HttpResponse:
    """CGI stdout -> response, with Spin's rules for Status, Location and errors."""
    if not out:
        raise CgiError("the program wrote nothing to stdout", 500)
    headers: dict[str, tuple[str, bytes]] = {}  # lower name -> (name, value); last wins
    status: int | None = None
    pos = 0
    body = b""
    while pos < len(out):
        end = out.find(b"\n", pos)
        if end < 0:
            line, pos = out[pos:], len(out)
        else:
            line, pos = out[pos:end], end + 1
        line = line.rstrip(b"\r")
        if not line:
            body = out[pos:]
            break
        name, colon, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        if not colon or not is_field_name(name):
            log.warning("ignoring malformed CGI header line %r", line[:100])
            continue
        key = name.decode("latin-1").lower()
        if key == "status":
            try:
                status = int(value.split()[0])
            except (ValueError, IndexError):
                raise CgiError(f"unparsable CGI Status {value[:50]!r}", 502) from None
            if not 100 <= status <= 599:
                raise CgiError(f"CGI Status {status} out of range", 502)
            continue
        headers[key] = (key, value)
    if not {"content-type", "location"} & headers.keys() and status is None:
        raise CgiError("CGI output has no Content-Type, Status or Location", 500, MISSING_HEADERS)
    if status is None:
        status = 302 if "location" in headers else 200
    return HttpResponse(status, list(headers.values()), body)


class _Stdout:
    """One request's stdout, in memory, refusing to grow past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.exceeded = False

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.limit:
            self.exceeded = True
            self.data = bytearray()  # the response is lost anyway: free it now
            raise OutputTooLarge(f"stdout passed {self.limit} bytes")
        self.data += data


@dataclass(frozen=True)
class WagiProgram:
    """What one request needs from the manifest: the argv template and environment."""

    argv: str
    environment: Mapping[str, str]


class WagiExecutor:
    """Runs one WAGI trigger's program; a fresh instance per request."""

    def __init__(self, engine: Engine, component_id: str, loaded: LoadedComponent,
                 program: WagiProgram, stdio: ComponentStdio,
                 limits: Limits | None = None, files_root: Path | None = None,
                 max_output_bytes: int = HttpLimits().max_response_bytes) -> None:
        self.engine = engine
        self.id = component_id
        self.program = program
        self.files_root = files_root  # the component's `files`, mounted read-only at "/"
        self.stdio = stdio
        self.limits = limits or Limits()
        self.max_output_bytes = max_output_bytes
        # The stdout of the request running on this thread (the program calls
        # fd_write on the thread that called _start).
        self._running = threading.local()
        module = loaded.component
        if not isinstance(module, wasmtime.Module):
            raise ComponentError(
                f'component "{component_id}": the WAGI executor runs WASI preview 1 command '
                "modules (a core .wasm with _start); this file is a component"
            )
        if not any(e.name == "_start" for e in module.exports):
            raise ComponentError(
                f'component "{component_id}": WAGI programs must export _start '
                "(build a WASI command, not a library)"
            )
        linker = wasmtime.Linker(engine.wasmtime)
        linker.allow_shadowing = True
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        linker.define_func("wasi_snapshot_preview1", "fd_write",
                           wasmtime.FuncType([i32, i32, i32, i32], [i32]), self._fd_write,
                           access_caller=True)
        try:
            self.pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise ComponentError(
                f'component "{component_id}" cannot be linked: {trap_reason(exc)}'
            ) from None

    def start(self) -> None:
        """Instantiate once now, so link and start-up errors surface before serving."""
        self._run(HttpRequest("GET", "http", None, "/", [], b""), dry_run=True)

    def close(self) -> None:
        pass

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Run the program for one request. Blocking: call it off the event loop."""
        return parse_cgi_output(self._run(request))

    def _run(self, request: HttpRequest, dry_run: bool = False) -> bytes:
        path, _, query = request.path_with_query.partition("?")
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv_for(self.program.argv, path, query)
        env = dict(self.program.environment)
        env.update(cgi_environment(request))
        wasi.env = list(env.items())
        set_stdin_bytes(wasi, request.body)
        # stdout and stderr are left to wasmtime's default (discard): fd_write below
        # takes the program's writes to fds 1 and 2 before they get there.
        if self.files_root is not None:
            wasi.preopen_dir(str(self.files_root), "/", fs_mutable=False)
        stdout = _Stdout(self.max_output_bytes)
        store = wasmtime.Store(self.engine.wasmtime)
        try:
            store.set_wasi(wasi)
            store.set_limits(memory_size=self.limits.memory_bytes)
            store.set_epoch_deadline(self.engine.ticks(self.limits.deadline_seconds))
            instance = self.pre.instantiate(store)
            if dry_run:
                return b""
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            self._running.stdout = stdout
            try:
                start(store)
            finally:
                self._running.stdout = None
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                raise GuestError(f"the program exited with status {exc.code}") from None
        except Exception as exc:
            # Checked first: wasmtime-py hands a host function's exception to
            # whichever thread next leaves wasm, so ours may arrive as another type.
            if stdout.exceeded:
                raise OutputTooLarge(
                    f"the program wrote more than {self.max_output_bytes} bytes to stdout "
                    "(the response limit, --max-response-bytes); stopped it there"
                ) from None
            if not isinstance(exc, (wasmtime.WasmtimeError, wasmtime.Trap)):  # core traps
                raise
            if dry_run:
                raise ComponentError(
                    f'component "{self.id}" cannot be instantiated: {trap_reason(exc)}'
                ) from None
            raise guest_failure(exc, self.limits) from None
        finally:
            # Now, on this thread: a trap's traceback holds this frame in a reference
            # cycle, which would keep the store (and its output) until a later GC
            # pass or interpreter exit.
            store.close()
        return bytes(stdout.data)

    def _fd_write(self, caller: wasmtime.Caller, fd: int, iovs: int, iovs_len: int,
                  nwritten: int) -> int:
        """WASI fd_write for fds 1 and 2; other fds are not writable in a WAGI program."""
        if fd not in (1, 2):
            return _ERRNO_BADF
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return _ERRNO_FAULT
        size = memory.data_len(caller)
        iovs, iovs_len, nwritten = iovs & 0xFFFFFFFF, iovs_len & 0xFFFFFFFF, nwritten & 0xFFFFFFFF
        if iovs_len > _IOV_MAX:
            return _ERRNO_INVAL
        if iovs + iovs_len * _IOVEC.size > size or nwritten + _U32.size > size:
            return _ERRNO_FAULT  # also an empty memory, whose data pointer is null
        view = memoryview((ctypes.c_char * size).from_address(  # no copy
            ctypes.addressof(memory.data_ptr(caller).contents))).cast("B")
        parts = []
        room = _MAX_WRITE_BYTES  # a short write beyond it: the program writes the rest again
        for ptr, length in _IOVEC.iter_unpack(view[iovs:iovs + iovs_len * _IOVEC.size]):
            if ptr + length > size:
                return _ERRNO_FAULT
            take = min(length, room)
            parts.append(view[ptr:ptr + take].tobytes())
            room -= take
            if not room:
                break
        data = b"".join(parts)
        if fd == 2:
            self.stdio.stderr(data)
        else:
            stdout: _Stdout | None = getattr(self._running, "stdout", None)
            if stdout is not None:  # None: a start function, before _start
                stdout.write(data)  # raises past the limit: the program traps here
        _U32.pack_into(view, nwritten, len(data))
        return 0

