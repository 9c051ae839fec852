"""List a component's imports/exports through wasmtime-py 50 and try linking with add_wasip2 + add_wasi_http.
Usage: /work/main/.venv/bin/python inspect_imports.py APP.wasm"""
import sys
import wasmtime
from wasmtime import Config, Engine, Store
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker
from wasmtime.component._types import ComponentInstanceType, FuncType

cfg = Config(); cfg.cache = True
eng = Engine(cfg)
comp = Component(eng, open(sys.argv[1], "rb").read())
ct = comp.type
for kind, items in (("import", ct.imports(eng)), ("export", ct.exports(eng))):
    for name, ext in items.items():
        it = ext.ty
        if isinstance(it, ComponentInstanceType):
            fs = {n: e.ty for n, e in it.exports(eng).items()}
            nf = sum(isinstance(t, FuncType) for t in fs.values())
            na = sum(isinstance(t, FuncType) and ffi.wasmtime_component_func_type_async(t.ptr()) for t in fs.values())
            print(f"{kind} {name}: {nf} funcs" + (f" ({na} async)" if na else "") + f", {len(fs) - nf} types/resources")
        else:
            print(f"{kind} {name}: {type(it).__name__}")
linker = Linker(eng); linker.add_wasip2(); linker.add_wasi_http()
store = Store(eng); store.set_wasi(wasmtime.WasiConfig())
try:
    linker.instantiate(store, comp); print("instantiate with add_wasip2 + add_wasi_http: OK")
except wasmtime.WasmtimeError as e:
    print("instantiate with add_wasip2 + add_wasi_http:", str(e).splitlines()[0])
