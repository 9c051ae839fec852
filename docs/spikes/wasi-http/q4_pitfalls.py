"""Q4: traps mid-stream, unfinished bodies, missing response, drops, wrong type ids, threads."""
import os, sys, threading, time
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
from wasihttp import WasiHttpHost, Handler, IncomingRequest, Exchange, make_linker
path = sys.argv[1] if len(sys.argv) > 1 else "pyapp/pyapp.wasm"
cfg = wasmtime.Config(); cfg.memory_init_cow = True
engine = wasmtime.Engine(cfg)
cached = path + ".cwasm"
if os.path.exists(cached):
    comp = wc.Component.deserialize_file(engine, cached)
else:
    comp = wc.Component.from_file(engine, path); open(cached, "wb").write(comp.serialize())
host = WasiHttpHost()
linker = make_linker(host, comp, engine)
def req(p, method="GET"):
    return IncomingRequest(method, p, "http", "h", [], iter(()))
def short(e):
    t = str(e).strip()
    return t.split("Caused by:")[-1].strip().replace("\n", " ")[:160] if "Caused by:" in t else t.splitlines()[0][:160]

for route in ["/trap", "/unfinished", "/noresponse"]:
    h = Handler(host, linker, comp, engine)
    ex = Exchange()
    try:
        h.handle(req(route), ex); err = None
    except wasmtime.WasmtimeError as e:
        err = short(e)
    live = sum(len(t._by_store.get(__import__("wasihttp").store_key(h.store), ())) for t in host.t.values())
    print(f"{route}: raised={err!r} status={ex.status} body={b''.join(ex.chunks)!r} finished={ex.finished} "
          f"host entries still live for this store={live}")
    try:
        h.handle(req("/"), Exchange())
        print("   same instance reusable after it: yes")
    except wasmtime.WasmtimeError as e:
        print(f"   same instance reusable after it: no ({short(e)})")
    h.close()
    print(f"   after release: live entries={sum(len(t._entries) for t in host.t.values())}")

# drops: which callbacks fire, and does store.close() call them?
host.drops.clear()
h = Handler(host, linker, comp, engine)
h.handle(req("/"), Exchange())
print("drop callbacks fired by the guest during one hello:", dict(host.drops))
host.drops.clear()
h.store.close()  # no host.release(): does wasmtime call dtors for what the guest still holds?
print("drop callbacks fired by store.close():", dict(host.drops), "entries left in tables:",
      sum(len(t._entries) for t in host.t.values()))
host.t["incoming-request"]._entries.clear(); [t._by_store.clear() for t in host.t.values()]
for t in host.t.values(): t._entries.clear()

# wrong type id on a handle passed to the export
h = Handler(host, linker, comp, engine)
from wasihttp import Outparam
bad = wc.ResourceHost.own(1, 424242)
try:
    h.typed.call(h.store, h.func, (bad, host.t["response-outparam"].add(h.store, Outparam(Exchange()))))
    print("wrong type id accepted?!")
except Exception as e:
    print("handle with wrong type id:", type(e).__name__, short(e))
h.close()

# a borrowed-vs-owned mistake: pass a borrow where the export wants own
h = Handler(host, linker, comp, engine)
r = host.t["incoming-request"].add(h.store, req("/"))
b = wc.ResourceHost.borrow(r.rep, r.type)
try:
    h.typed.call(h.store, h.func, (b, host.t["response-outparam"].add(h.store, Outparam(Exchange()))))
    print("borrow accepted for own param?!")
except Exception as e:
    print("borrow handle for an own<> param:", type(e).__name__, short(e))
h.close()

# threads: 2 threads, each its own store, hello in a loop
def worker(n, out):
    ok = 0
    for _ in range(n):
        h = Handler(host, linker, comp, engine)
        ex = h.handle(req("/"))
        ok += ex.status == 200 and b"".join(ex.chunks).startswith(b"Hello")
        h.close()
    out.append(ok)
for nthreads in (1, 2):
    out = []; n = 150
    ts = [threading.Thread(target=worker, args=(n, out)) for _ in range(nthreads)]
    t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
    dt = time.perf_counter() - t
    print(f"{nthreads} thread(s): {sum(out)}/{n*nthreads} ok, {n*nthreads/dt:.0f} req/s total")
print("entries left:", sum(len(t._entries) for t in host.t.values()))
