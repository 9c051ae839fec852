"""End to end: componentize-py wasi:http/proxy app served by the Python host (no server)."""
import hashlib, os, sys, time
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
from wasihttp import WasiHttpHost, Handler, IncomingRequest, make_linker

path = sys.argv[1] if len(sys.argv) > 1 else "pyapp/pyapp.wasm"
cfg = wasmtime.Config(); cfg.memory_init_cow = True
engine = wasmtime.Engine(cfg)
t = time.perf_counter()
cached = path + ".cwasm"
if os.path.exists(cached):
    comp = wc.Component.deserialize_file(engine, cached)
else:
    comp = wc.Component.from_file(engine, path)
    open(cached, "wb").write(comp.serialize())
print(f"load {time.perf_counter()-t:.3f}s")
host = WasiHttpHost()
t = time.perf_counter()
linker = make_linker(host, comp, engine)
print(f"link {1000*(time.perf_counter()-t):.1f} ms")

def req(method="GET", path="/", body=b"", chunk=65536):
    return IncomingRequest(method, path, "http", "localhost", [("host", b"localhost")],
                           iter([body[i:i+chunk] for i in range(0, len(body), chunk)]))

t = time.perf_counter()
h = Handler(host, linker, comp, engine)
t1 = time.perf_counter()
ex = h.handle(req())
t2 = time.perf_counter()
print(f"instantiate {1000*(t1-t):.1f} ms, first call {1000*(t2-t1):.1f} ms")
print("status", ex.status, ex.headers, b"".join(ex.chunks), "finished", ex.finished)
h.close()

N = 200
t = time.perf_counter()
for _ in range(N):
    h = Handler(host, linker, comp, engine)
    ex = h.handle(req())
    assert ex.status == 200 and b"".join(ex.chunks).startswith(b"Hello"), ex
    h.close()
dt = time.perf_counter() - t
print(f"hello loop (fresh instance per request): {N/dt:.0f} req/s, {1000*dt/N:.2f} ms/req")

h = Handler(host, linker, comp, engine)
t = time.perf_counter()
for _ in range(N):
    ex = h.handle(req())
dt = time.perf_counter() - t
print(f"hello loop (same instance): {N/dt:.0f} req/s")
h.close()

body = os.urandom(4 << 20)
h = Handler(host, linker, comp, engine)
t = time.perf_counter()
ex = h.handle(req("POST", "/echo", body))
dt = time.perf_counter() - t
out = b"".join(ex.chunks)
print(f"echo 4 MiB: {dt*1000:.0f} ms, ok={out == body}, chunks={len(ex.chunks)}, sha={hashlib.sha256(out).hexdigest()[:16]} want {hashlib.sha256(body).hexdigest()[:16]}")
h.close()
print("drops", host.drops)
