"""Q1b: which version name must our definitions use to win over add_wasip2's? (writer.wasm imports @0.2.12)"""
import os, sys
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
from wasihttp import WasiHttpHost, StoreState, make_linker
from host.capabilities import store_key
from host.runtime.calls import TypedFunc
engine = wasmtime.Engine()
path = sys.argv[1] if len(sys.argv) > 1 else "writer.wasm"
comp = wc.Component.from_file(engine, path)
print("imports:", [n for n in comp.type.imports(engine)])
for v in [None, "0.2.0", "0.2.6", "0.2.9", "0.2.11", "0.2.12", "0.2.13", "0.2.99"]:
    host = WasiHttpHost()
    try:
        linker = make_linker(host, comp, engine, version_override=v)
        store = wasmtime.Store(engine); store.set_wasi(wasmtime.WasiConfig())
        inst = linker.instantiate(store, comp)
        got = []
        host.states[store_key(store)] = StoreState(stdout=got.append)
        run = inst.get_func(store, "run")
        TypedFunc(run.type(store)).call(store, run, (2, 5))
        print(f"define @{v or 'exact import names'}: OK, wrote {got}")
    except Exception as e:
        print(f"define @{v}: FAIL {str(e).split('Caused by:')[-1].strip().splitlines()[0:2]}")
