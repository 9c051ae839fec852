"""WASI 0.3 probe (issue 14 item 6): run with /work/main/.venv/bin/python probe_wasi03.py spin5-hello/app.wasm

Shows how far wasmtime-py 50 gets with a component exporting wasi:http/handler@0.3.0."""
import sys, ctypes, time, traceback
from ctypes import byref, pointer
import wasmtime
from wasmtime import Config, Engine, Store, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker, ResourceType, ResourceHost
from wasmtime.component._types import FuncType, ComponentInstanceType

path = sys.argv[1] if len(sys.argv) > 1 else "spin5-hello/app.wasm"
data = open(path, "rb").read()

def step(name, fn):
    t = time.time()
    try:
        r = fn()
        print(f"[OK]   {name} ({time.time()-t:.1f}s)" + (f" -> {r!r}" if isinstance(r, (bool, int, str)) else ""))
        return r
    except Exception as e:
        print(f"[FAIL] {name}: {type(e).__name__}: {e}")
        return e

cfg = Config(); cfg.wasm_component_model = True; cfg.cache = True
eng = Engine(cfg)
comp = step("Component() compile, default Config (no async flag set)", lambda: Component(eng, data))

# ---- types of the export
ct = comp.type
hexp = ct.exports(eng)["wasi:http/handler@0.3.0"].ty
assert isinstance(hexp, ComponentInstanceType)
handle_ty = hexp.exports(eng)["handle"].ty
print("handle params:", [(n, type(t).__name__) for n, t in handle_ty.params], "result:", handle_ty.result)
print("wasmtime_component_func_type_async(handle) =", ffi.wasmtime_component_func_type_async(handle_ty.ptr()))

# walk imports, count async funcs / stream / future types
from wasmtime.component import _types as T
nasync = 0; streamfut = set()
def walk_val(t, where):
    if isinstance(t, (T.StreamType, T.FutureType)):
        streamfut.add(where)
for iname, ext in ct.imports(eng).items():
    it = ext.ty
    if isinstance(it, ComponentInstanceType):
        for fname, fe in it.exports(eng).items():
            ft = fe.ty
            if isinstance(ft, FuncType):
                if ffi.wasmtime_component_func_type_async(ft.ptr()):
                    nasync += 1
                for _, pt in ft.params:
                    walk_val(pt, f"{iname}#{fname}")
                if ft.result is not None:
                    walk_val(ft.result, f"{iname}#{fname}")
print("imported funcs declared `async`:", nasync)
print("imported funcs with a top-level stream/future param/result:", len(streamfut), sorted(streamfut)[:6])

# ---- instantiate: wasmtime's own WASI p2 + http p2, our host resources for wasi:http/types@0.3.0, rest traps
linker = Linker(eng)
linker.add_wasip2(); linker.add_wasi_http()
RT = {"fields": 1, "request": 2, "response": 3, "request-options": 4}
li = linker.root().add_instance("wasi:http/types@0.3.0")
for n, t in RT.items():
    li.add_resource(n, ResourceType.host(1000 + t), lambda store, rep: None)
del li
step("define_unknown_imports_as_traps", lambda: linker.define_unknown_imports_as_traps(comp))
store = Store(eng); store.set_wasi(wasmtime.WasiConfig())
inst = step("Linker.instantiate (sync)", lambda: linker.instantiate(store, comp))

def instantiate_async(store):
    out = ffi.wasmtime_component_instance_t()
    err = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_component_linker_instantiate_async(linker.ptr(), store._context(), comp.ptr(), byref(out), byref(err))
    polls = 0
    while not ffi.wasmtime_call_future_poll(fut):
        polls += 1
    ffi.wasmtime_call_future_delete(fut)
    if err:
        raise WasmtimeError._from_ptr(err)
    from wasmtime.component._instance import Instance
    return Instance._from_raw(out)
if isinstance(inst, Exception):
    store = Store(eng); store.set_wasi(wasmtime.WasiConfig())
    inst = step("ffi.wasmtime_component_linker_instantiate_async + poll", lambda: instantiate_async(store))
    if isinstance(inst, Exception):
        sys.exit(0)
ix = inst.get_export_index(store, "wasi:http/handler@0.3.0")
handle = inst.get_func(store, inst.get_export_index(store, "handle", ix))
print("got handle func:", handle is not None)

req = ResourceHost.own(7, 1000 + RT["request"])
# a) the Python binding (sync wasmtime_component_func_call)
step("handle(store, request) via wasmtime_component_func_call (sync)", lambda: handle(store, req))

# b) the raw async entry point
def call_async():
    store2 = Store(eng); store2.set_wasi(wasmtime.WasiConfig())
    inst2 = instantiate_async(store2)
    ix2 = inst2.get_export_index(store2, "wasi:http/handler@0.3.0")
    h2 = inst2.get_func(store2, inst2.get_export_index(store2, "handle", ix2))
    fty = h2.type(store2)
    args = (ffi.wasmtime_component_val_t * 1)()
    fty.params[0][1].convert_to_c(store2, ResourceHost.own(8, 1000 + RT["request"]), pointer(args[0]))
    res = ffi.wasmtime_component_val_t()
    err = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_component_func_call_async(byref(h2._func), store2._context(), args, 1, byref(res), 1, byref(err))
    polls = 0
    while not ffi.wasmtime_call_future_poll(fut):
        polls += 1
        if polls > 100000:
            raise RuntimeError("future never completed")
    ffi.wasmtime_call_future_delete(fut)
    if err:
        raise WasmtimeError._from_ptr(err)
    return f"completed after {polls} polls, result kind {res.kind}"
step("handle via ffi.wasmtime_component_func_call_async + wasmtime_call_future_poll", call_async)
