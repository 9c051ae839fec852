import os, sys, threading, time
if os.environ.get("SWITCH"): sys.setswitchinterval(float(os.environ["SWITCH"]))
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
from wasihttp import WasiHttpHost, Handler, IncomingRequest, Exchange, make_linker
path = sys.argv[1]
cfg = wasmtime.Config(); cfg.memory_init_cow = True
engine = wasmtime.Engine(cfg)
comp = wc.Component.deserialize_file(engine, path + ".cwasm")
host = WasiHttpHost(); linker = make_linker(host, comp, engine)
def worker(n, out):
    for _ in range(n):
        h = Handler(host, linker, comp, engine)
        ex = h.handle(IncomingRequest("GET", "/", "http", "h", [], iter(())))
        h.close()
        out.append(ex.status)
for nthreads in (1, 2, 1, 2):
    out = []; n = 150
    ts = [threading.Thread(target=worker, args=(n, out)) for _ in range(nthreads)]
    c0 = time.process_time(); t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]
    dt = time.perf_counter() - t; cpu = time.process_time() - c0
    print(f"{nthreads} thread(s): {len(out)} reqs, {len(out)/dt:.0f} req/s wall, CPU {1000*cpu/len(out):.2f} ms/req, "
          f"CPU use {cpu/dt:.2f} cores")
