"""Peak host memory (VmHWM) of one streamed request vs body size.

usage: mem_bench.py APP.wasm PATH SIZE_MIB [CHUNK]
Request body is produced lazily in 64 KiB chunks (like ASGI receive); the response
is hashed as it arrives and not kept. Prints VmHWM growth over the warm baseline.
"""
import hashlib, os, sys, time
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
import wasihttp
from wasihttp import WasiHttpHost, Handler, IncomingRequest, Exchange, make_linker

path, route, mib = sys.argv[1], sys.argv[2], float(sys.argv[3])
if len(sys.argv) > 4:
    wasihttp.CHUNK = int(sys.argv[4])
size = int(mib * (1 << 20))

def status():
    out = {}
    for line in open("/proc/self/status"):
        k, v = line.split(":", 1)
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) // 1024
    return out

cfg = wasmtime.Config(); cfg.memory_init_cow = True
engine = wasmtime.Engine(cfg)
comp = wc.Component.deserialize_file(engine, path + ".cwasm")
host = WasiHttpHost()
linker = make_linker(host, comp, engine)

def body_chunks(seed=b"x"):
    block = (hashlib.sha256(seed).digest() * 2048)  # 64 KiB
    left = size
    while left > 0:
        n = min(left, len(block))
        yield block[:n]
        left -= n

def expected_sha():
    h = hashlib.sha256()
    for c in body_chunks():
        h.update(c)
    return h.hexdigest()

def run(method, p):
    h = Handler(host, linker, comp, engine)
    sha = hashlib.sha256()
    ex = Exchange(on_chunk=sha.update)
    req = IncomingRequest(method, p, "http", "localhost", [("content-length", str(size).encode())],
                          body_chunks() if method == "POST" else iter(()))
    h.handle(req, ex)
    h.close()
    return ex, sha.hexdigest()

# warm up with a small body so allocators and code are resident
small = size; size = 65536; run("POST", route); size = small
import gc; gc.collect()
before = status()
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
method = "POST" if not route.startswith("/big") else "GET"
ex, got = run(method, route if not route.startswith("/big") else f"/big?n={size}")
dt = time.perf_counter() - t
after = status()
ok = ex.size == size and (method == "GET" or got == expected_sha())
growth = after["VmHWM"] - before["VmRSS"]
print(f"{os.path.basename(path)} {route} {mib:g} MiB chunk={wasihttp.CHUNK}: status={ex.status} ok={ok} "
      f"time={dt*1000:.0f} ms  RSS before={before['VmRSS']} MiB  peak={after['VmHWM']} MiB  "
      f"growth={growth} MiB ({growth/mib:.2f}x body)")
