"""Tiny hand-written components for fast tests, assembled with wasm-tools at test time.

Each is a core module in WAT that implements `spinhost:http/incoming-handler`
at the canonical ABI level; `wasm-tools component embed` + `component new` wrap
it into a component against our WIT. Layout of the `request` record (size 68,
align 4): method 0..12, scheme 12..28, authority 28..40, path-with-query
40..52, headers 52..60 (ptr, len), body 60..68 (ptr, len). `handle` returns a
pointer to a `response` record: status u16 at 0, headers at 4, body at 12.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIT_DIR = ROOT / "wit"
EXPORT = "cm32p2|spinhost:http/incoming-handler@0.1|handle"

PRELUDE = """
  (memory (export "cm32p2_memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func $realloc (export "cm32p2_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.div_u
                  (i32.sub (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
                  (i32.const 65536)) (i32.const 1))) (i32.const -1))
              (then unreachable))))
    (local.get $p))
  (func (export "cm32p2_initialize"))
"""
_HANDLE_POST = """
  (func (export "cm32p2|spinhost:http/incoming-handler@0.1|handle_post") (param i32))
"""

# Echo: status 200, the request's headers and body sent back unchanged.
ECHO = """
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store16 (i32.const 16) (i32.const 200))
    (i64.store (i32.const 20) (i64.load offset=52 (local.get $req)))
    (i64.store (i32.const 28) (i64.load offset=60 (local.get $req)))
    (i32.const 16))
""".replace("{export}", EXPORT)

# Fixed: status 200, header `content-type: text/plain`, body `fixed response`.
FIXED = """
  (data (i32.const 100) "content-typetext/plainfixed response")
  (data (i32.const 200) "\\64\\00\\00\\00\\0c\\00\\00\\00\\70\\00\\00\\00\\0a\\00\\00\\00")
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 200))
    (i32.store (i32.const 24) (i32.const 1))
    (i32.store (i32.const 28) (i32.const 122))
    (i32.store (i32.const 32) (i32.const 14))
    (i32.const 16))
""".replace("{export}", EXPORT)

# Trap: `unreachable` on every call.
TRAP = """
  (func (export "{export}") (param $req i32) (result i32)
    unreachable)
""".replace("{export}", EXPORT)

# Counter: a global incremented per call; the body is its value as one digit.
# With a fresh instance per request the body is always "1".
COUNTER = """
  (global $count (mut i32) (i32.const 0))
  (func (export "{export}") (param $req i32) (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store8 (i32.const 300) (i32.add (i32.const 48) (global.get $count)))
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 300))
    (i32.store (i32.const 32) (i32.const 1))
    (i32.const 16))
""".replace("{export}", EXPORT)

# Status: answers with the status code stored at build time (see `status()`).
STATUS = """
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store16 (i32.const 16) (i32.const {status}))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const 0))
    (i32.const 16))
""".replace("{export}", EXPORT)

# Spin: an infinite loop (for deadline tests).
SPIN = """
  (func (export "{export}") (param $req i32) (result i32)
    (loop $l (br $l))
    (i32.const 0))
""".replace("{export}", EXPORT)


def burn(iterations: int) -> str:
    """FIXED after a busy loop of `iterations` (30 million: ~10 ms of CPU here): a
    guest whose time is its own computation, not the host's."""
    return FIXED.replace('  (func (export', '  (func $burn (param $n i32)\n'
                         '    (loop $l (local.set $n (i32.sub (local.get $n) (i32.const 1)))\n'
                         '      (br_if $l (local.get $n))))\n  (func (export', 1).replace(
        '(i32.store16 (i32.const 16) (i32.const 200))',
        f'(call $burn (i32.const {iterations}))\n    (i32.store16 (i32.const 16) (i32.const 200))',
        1)


def status(code: int) -> str:
    return STATUS.replace("{status}", str(code))


def wasm_tools() -> str:
    found = shutil.which("wasm-tools") or str(Path(sys.executable).parent / "wasm-tools")
    return found


def build_component(body: str, out: Path, world: str = "handler", wit_dir: Path = WIT_DIR,
                    prelude: bool = True) -> Path:
    """Assemble `body` (functions of a core module) into a component at `out`."""
    wat = out.with_suffix(".wat")
    wat.write_text(f"(module {PRELUDE + _HANDLE_POST if prelude else ''}\n{body})\n")
    return assemble(wat, out, wit_dir, world)


def assemble(wat: Path, out: Path, wit_dir: Path, world: str) -> Path:
    """WAT core module + WIT world -> component, with wasm-tools."""
    core = out.with_suffix(".core.wasm")
    tool = wasm_tools()
    subprocess.run([tool, "component", "embed", str(wit_dir), "--world", world, str(wat),
                    "-o", str(core)], check=True)
    subprocess.run([tool, "component", "new", str(core), "-o", str(out)], check=True)
    return out


def build_non_handler(directory: Path) -> Path:
    """A valid component that exports something other than our handler."""
    wit_dir = directory / "other-wit"
    wit_dir.mkdir(parents=True, exist_ok=True)
    (wit_dir / "other.wit").write_text("package test:other;\nworld other { export run: func(); }\n")
    return build_component('(func (export "run"))', directory / "other.wasm", world="other",
                           wit_dir=wit_dir, prelude=False)


# ---------------------------------------------------------------------------
# WASI preview 1 command programs (for the WAGI executor): core modules.

_WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 64)
  ;; write(ptr, len) to stdout; iovec at 0..8, nwritten at 8
  (func $write (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


def wasi_print(output: bytes, exit_code: int | None = None) -> str:
    """A command that prints `output` to stdout, then optionally exits with a code."""
    exit_call = f"(call $proc_exit (i32.const {exit_code}))" if exit_code is not None else ""
    return f"""(module {_WASI_IMPORTS}
  (data (i32.const 1024) "{_wat_bytes(output)}")
  (func (export "_start") (call $write (i32.const 1024) (i32.const {len(output)})) {exit_call}))
"""


# Prints a CGI header, then its environment buffer ("K=V\\0"...), a \\x01, its argv
# buffer ("arg\\0"...), a \\x01 and everything read from stdin.
WASI_CGI_ECHO = f"""(module {_WASI_IMPORTS}
  (data (i32.const 64) "Content-Type: application/octet-stream\\0a\\0a\\01")
  (func (export "_start") (local $n i32) (local $total i32)
    (call $write (i32.const 64) (i32.const 41))
    ;; environment: sizes at 16/20, pointers at 4096, strings at 65536
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 4096) (i32.const 65536)))
    (call $write (i32.const 65536) (i32.load (i32.const 20)))
    (call $write (i32.const 104) (i32.const 1))
    ;; argv: pointers at 4096, strings at 131072
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 4096) (i32.const 131072)))
    (call $write (i32.const 131072) (i32.load (i32.const 20)))
    (call $write (i32.const 104) (i32.const 1))
    ;; stdin, 64 KiB at a time, into 262144
    (block $done (loop $more
      (i32.store (i32.const 32) (i32.const 262144))
      (i32.store (i32.const 36) (i32.const 65536))
      (drop (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
      (local.set $n (i32.load (i32.const 40)))
      (br_if $done (i32.eqz (local.get $n)))
      (call $write (i32.const 262144) (local.get $n))
      (br $more)))))
"""

# Never returns (deadline tests) / traps.
WASI_LOOP = f"""(module {_WASI_IMPORTS}
  (func (export "_start") (loop $l (br $l))))
"""
WASI_TRAP = f"""(module {_WASI_IMPORTS}
  (func (export "_start") unreachable))
"""


def build_module(wat_text: str, out: Path) -> Path:
    """A WASI preview 1 core module from WAT (wasmtime's own assembler)."""
    import wasmtime

    out.write_bytes(wasmtime.wat2wasm(wat_text))
    return out


# Fault components for reliability tests (all export our incoming handler).
MEMORY_BOMB = """
  (func (export "%s") (param i32) (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
""".replace("%s", EXPORT)

STACK_OVERFLOW = """
  (func $recurse (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "%s") (param i32) (result i32)
    (call $recurse (i32.const 0)))
""".replace("%s", EXPORT)

OUT_OF_BOUNDS = """
  (func (export "%s") (param i32) (result i32)
    (i32.load (i32.const -8)))
""".replace("%s", EXPORT)

DIVIDE_BY_ZERO = """
  (func (export "%s") (param $req i32) (result i32)
    (i32.div_u (i32.const 1) (i32.sub (local.get $req) (local.get $req))))
""".replace("%s", EXPORT)


# WAGI output limits: a CGI header, then 64 KiB writes to stdout for ever, calling
# fd_write directly and ignoring its result (so an error it returns stops nothing).
WASI_PRINT_FOREVER = f"""(module {_WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: text/plain\\0a\\0a")
  (func (export "_start")
    (call $write (i32.const 1024) (i32.const 26))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))
"""
# A CGI header on stdout and a line on stderr, then never returns (deadline tests
# of a program that has written output).
WASI_PRINT_THEN_LOOP = f"""(module {_WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: text/plain\\0a\\0a")
  (data (i32.const 1056) "about to spin\\0a")
  (func (export "_start")
    (call $write (i32.const 1024) (i32.const 26))
    (i32.store (i32.const 0) (i32.const 1056))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (loop $l (br $l))))
"""


def wasi_print_bytes(count: int) -> str:
    """A command that prints a CGI header and then `count` bytes of "x" in 1000-byte writes
    (the last shorter); stdout is `CGI_HEADER_BYTES + count` bytes in all."""
    return f"""(module {_WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: text/plain\\0a\\0a")
  (func (export "_start") (local $left i32)
    (memory.fill (i32.const 4096) (i32.const 120) (i32.const 1000))
    (call $write (i32.const 1024) (i32.const 26))
    (local.set $left (i32.const {count}))
    (block $done (loop $l
      (br_if $done (i32.le_s (local.get $left) (i32.const 0)))
      (call $write (i32.const 4096) (select (i32.const 1000) (local.get $left)
                                            (i32.gt_s (local.get $left) (i32.const 1000))))
      (local.set $left (i32.sub (local.get $left) (i32.const 1000)))
      (br $l)))))
"""


CGI_HEADER_BYTES = 26

# Hostile fd_write calls; prints a CGI header, then the errno of each as one byte:
# a buffer past the end of memory, 5000 iovecs, an iovec array past the end, fd 5,
# and 1000 iovecs each naming all 4 MiB of memory (copied at most 1 MiB, a short write).
WASI_BAD_WRITES = f"""(module {_WASI_IMPORTS}
  (data (i32.const 1024) "Content-Type: application/octet-stream\\0a\\0a")
  (func $try (param $fd i32) (param $iovs i32) (param $n i32) (param $at i32)
    (i32.store8 (local.get $at)
      (call $fd_write (local.get $fd) (local.get $iovs) (local.get $n) (i32.const 8))))
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 16) (i32.const 0xFFFFFFF0))
    (i32.store (i32.const 20) (i32.const 100))
    (call $try (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 2000))
    (call $try (i32.const 1) (i32.const 16) (i32.const 5000) (i32.const 2001))
    (call $try (i32.const 1) (i32.const 0x3FFFFFF8) (i32.const 2) (i32.const 2002))
    (call $try (i32.const 5) (i32.const 16) (i32.const 1) (i32.const 2003))
    (block $done (loop $l
      (br_if $done (i32.eq (local.get $i) (i32.const 1000)))
      (i32.store (i32.add (i32.const 8192) (i32.shl (local.get $i) (i32.const 3)))
                 (i32.const 0))
      (i32.store (i32.add (i32.const 8196) (i32.shl (local.get $i) (i32.const 3)))
                 (i32.const 0x400000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (drop (call $fd_write (i32.const 2) (i32.const 8192) (i32.const 1000) (i32.const 8)))
    (i32.store (i32.const 2004) (i32.load (i32.const 8)))
    (call $write (i32.const 1024) (i32.const 40))
    (call $write (i32.const 2000) (i32.const 8))))
"""


# ---------------------------------------------------------------------------
# Standard wasi:http components (WIT from apps/hello-js/wit, wasi 0.2.10 names).

WASI_HTTP_WIT = ROOT / "apps" / "hello-js" / "wit"

# `handle` traps at once: no response was set, so the client gets a 500.
WASI_HTTP_TRAP = """(module
  (func (export "wasi:http/incoming-handler@0.2.10#handle") (param i32 i32)
    unreachable))
"""


def build_wasi_http(core_wat: str, out: Path) -> Path:
    """A component exporting wasi:http/incoming-handler@0.2.10, from a core module."""
    wit_dir = out.parent / "wasi-http-wit"
    if not wit_dir.exists():
        shutil.copytree(WASI_HTTP_WIT / "deps", wit_dir / "deps")
        (wit_dir / "world.wit").write_text(
            "package test:wasi-http;\n"
            "world handler { export wasi:http/incoming-handler@0.2.10; }\n")
    wat = out.with_suffix(".wat")
    wat.write_text(core_wat)
    return assemble(wat, out, wit_dir, "handler")


def build_wasi03_handler(directory: Path) -> Path:
    """A component exporting an interface named like WASI 0.3's `wasi:http/handler`
    (only the name matters: the host refuses it before instantiating)."""
    wit_dir = directory / "wasi03-wit"
    (wit_dir / "deps").mkdir(parents=True, exist_ok=True)
    (wit_dir / "deps" / "http.wit").write_text(
        "package wasi:http@0.3.0-rc-2025-09-16;\ninterface handler { handle: func(); }\n")
    (wit_dir / "world.wit").write_text(
        "package test:wasi03;\n"
        "world app { export wasi:http/handler@0.3.0-rc-2025-09-16; }\n")
    wat = directory / "wasi03.wat"
    wat.write_text('(module (func (export "wasi:http/handler@0.3.0-rc-2025-09-16#handle")))\n')
    return assemble(wat, directory / "wasi03.wasm", wit_dir, "app")


# ---------------------------------------------------------------------------
# Redis trigger handlers: export Spin's fermyon:spin/inbound-redis (wit/deps/spin-redis),
# print to stdout through wasi:cli (WIT from apps/hello-js/wit, wasi 0.2.10 names).

REDIS_WORLD = """package test:redis;
world printer {
  import wasi:cli/stdout@0.2.10;
  export fermyon:spin/inbound-redis;
}
"""
_REDIS_EXPORT = "cm32p2|fermyon:spin/inbound-redis|handle-message"

# `handle-message`, by the payload's first byte: "t" traps, "e" returns error::error, "m"
# returns ok at once without printing (benchmarks); anything else prints "got PAYLOAD" on a
# line of its own, then returns ok, or ("s") loops for ever (deadline and drain tests).
# The result (result<_, enum>) is at 16: case at 16, the error's case at 17.
REDIS_PRINTER = f"""(module
  (import "cm32p2|wasi:cli/stdout@0.2" "get-stdout" (func $get_stdout (result i32)))
  (import "cm32p2|wasi:io/streams@0.2" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "cm32p2|wasi:io/streams@0.2" "output-stream_drop" (func $drop (param i32)))
  {PRELUDE}
  (data (i32.const 1024) "got ")
  (func (export "{_REDIS_EXPORT}") (param $ptr i32) (param $len i32) (result i32)
    (local $buf i32) (local $out i32) (local $first i32)
    (i32.store8 (i32.const 16) (i32.const 0))
    (if (local.get $len) (then (local.set $first (i32.load8_u (local.get $ptr)))))
    (if (i32.eq (local.get $first) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $first) (i32.const 101))
      (then (i32.store8 (i32.const 16) (i32.const 1)) (i32.store8 (i32.const 17) (i32.const 1))
            (return (i32.const 16))))
    (if (i32.eq (local.get $first) (i32.const 109)) (then (return (i32.const 16))))
    (local.set $buf (call $realloc (i32.const 0) (i32.const 0) (i32.const 1)
                                   (i32.add (local.get $len) (i32.const 5))))
    (memory.copy (local.get $buf) (i32.const 1024) (i32.const 4))
    (memory.copy (i32.add (local.get $buf) (i32.const 4)) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (local.get $buf) (i32.add (local.get $len) (i32.const 4)))
                (i32.const 10))
    (local.set $out (call $get_stdout))
    (call $write (local.get $out) (local.get $buf) (i32.add (local.get $len) (i32.const 5))
                 (i32.const 32))
    (call $drop (local.get $out))
    (if (i32.eq (local.get $first) (i32.const 115)) (then (loop $l (br $l))))
    (i32.const 16))
  (func (export "{_REDIS_EXPORT}_post") (param i32)))
"""


def build_redis_handler(out: Path, core_wat: str = REDIS_PRINTER) -> Path:
    """A component exporting fermyon:spin/inbound-redis (and importing wasi:cli/stdout)."""
    wit_dir = out.parent / "redis-wit"
    if not wit_dir.exists():
        shutil.copytree(WASI_HTTP_WIT / "deps", wit_dir / "deps")
        shutil.copyfile(WIT_DIR / "deps" / "spin-redis" / "inbound-redis.wit",
                        wit_dir / "deps" / "spin-redis.wit")
        (wit_dir / "world.wit").write_text(REDIS_WORLD)
    wat = out.with_suffix(".wat")
    wat.write_text(core_wat)
    return assemble(wat, out, wit_dir, "printer")


def build_async_redis_handler(directory: Path) -> Path:
    """A component exporting an interface named like Spin 4's async
    `spin:redis/inbound-redis@3.0.0` (only the name matters: the host refuses it)."""
    wit_dir = directory / "redis3-wit"
    (wit_dir / "deps").mkdir(parents=True, exist_ok=True)
    (wit_dir / "deps" / "redis.wit").write_text(
        "package spin:redis@3.0.0;\ninterface inbound-redis { handle-message: func(); }\n")
    (wit_dir / "world.wit").write_text(
        "package test:redis3;\nworld app { export spin:redis/inbound-redis@3.0.0; }\n")
    wat = directory / "redis3.wat"
    wat.write_text('(module (func (export "spin:redis/inbound-redis@3.0.0#handle-message")))\n')
    return assemble(wat, directory / "redis3.wasm", wit_dir, "app")
