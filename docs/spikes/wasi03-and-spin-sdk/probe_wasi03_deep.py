"""WASI 0.3 deep probe: drive a Spin SDK 5 handler through wasmtime-py 50 as far as the C API allows.

All imports are first defined as traps (define_unknown_imports_as_traps: the only C-API way to
define an `async func` import), then individual *sync* functions the guest calls are shadowed
with Python host functions. The request is a host resource. Prints where it stops."""
import ctypes, sys, os
from ctypes import byref, pointer
import wasmtime
from wasmtime import Config, Engine, Store, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker, ResourceType, ResourceHost
from wasmtime.component._instance import Instance

path = sys.argv[1] if len(sys.argv) > 1 else "spin5-hello/app.wasm"
cfg = Config(); cfg.cache = True
eng = Engine(cfg)
comp = Component(eng, open(path, "rb").read())
linker = Linker(eng)
HTTP = "wasi:http/types@0.3.0"
RT = {"fields": 1001, "request": 1002, "response": 1003, "request-options": 1004}
li = linker.root().add_instance(HTTP)
for n, t in RT.items():
    li.add_resource(n, ResourceType.host(t), lambda store, rep: None)
del li

mode = os.environ.get("MODE", "trace")
if mode == "async-import":
    # try to define an `async func` import from Python (sync C callback), before traps
    li = linker.root().add_instance("spin:variables/variables@3.0.0")
    li.add_func("get", lambda store, name: ("ok", "x"))
    del li
linker.define_unknown_imports_as_traps(comp)
linker.allow_shadowing = True

calls = []
def stub(iface, name, fn):
    li = linker.root().add_instance(iface)
    def wrapped(store, *args):
        calls.append(f"{iface}#{name}{args!r}"[:160])
        return fn(store, *args)
    li.add_func(name, wrapped)
    del li

# sync WASI 0.2.9 functions the componentize-py runtime calls
stub("wasi:cli/environment@0.2.9", "get-environment", lambda s: [])
stub("wasi:cli/environment@0.2.9", "get-arguments", lambda s: [])
stub("wasi:cli/environment@0.2.9", "initial-cwd", lambda s: None)
stub("wasi:random/random@0.2.9", "get-random-bytes", lambda s, n: bytes(n))
stub("wasi:random/random@0.2.9", "get-random-u64", lambda s: 4)
stub("wasi:random/insecure-seed@0.2.9", "insecure-seed", lambda s: (1, 2))
stub("wasi:clocks/monotonic-clock@0.2.9", "now", lambda s: 1)
stub("wasi:clocks/wall-clock@0.2.9", "now", lambda s: wasmtime.component.Record() if False else None)
stub("wasi:filesystem/preopens@0.2.9", "get-directories", lambda s: [])
# wasi:http/types@0.3.0: the guest builds its response with these
fields_rep = [0]
def new_fields(s, *a):
    fields_rep[0] += 1
    return ResourceHost.own(fields_rep[0], RT["fields"])
stub(HTTP, "[constructor]fields", new_fields)
stub(HTTP, "[static]fields.from-list", lambda s, entries: ("ok", new_fields(s)) if True else None)
def borrow_rep(s, this):
    return this.to_host(s).rep if isinstance(this, wasmtime.component.ResourceAny) else this.rep
stub(HTTP, "[method]request.get-method", lambda s, this: (borrow_rep(s, this), wasmtime.component.Variant("get"))[1])
stub(HTTP, "[method]request.get-path-with-query", lambda s, this: (borrow_rep(s, this), "/")[1])
stub(HTTP, "[method]request.get-scheme", lambda s, this: (borrow_rep(s, this), None)[1])
stub(HTTP, "[method]request.get-authority", lambda s, this: (borrow_rep(s, this), "localhost")[1])
stub(HTTP, "[method]request.get-headers", lambda s, this: (borrow_rep(s, this), new_fields(s))[1])
stub(HTTP, "[method]fields.copy-all", lambda s, this: (borrow_rep(s, this), [])[1])
stub(HTTP, "[method]fields.entries", lambda s, this: (borrow_rep(s, this), [])[1])
stub(HTTP, "[static]request.consume-body", lambda s, this, res: (this, res))
stub(HTTP, "[static]response.new", lambda s, *a: (ResourceHost.own(1, RT["response"]), None))

def instantiate_async(store):
    out = ffi.wasmtime_component_instance_t()
    err = ctypes.POINTER(ffi.wasmtime_error_t)()
    fut = ffi.wasmtime_component_linker_instantiate_async(linker.ptr(), store._context(), comp.ptr(), byref(out), byref(err))
    while not ffi.wasmtime_call_future_poll(fut):
        pass
    ffi.wasmtime_call_future_delete(fut)
    if err:
        raise WasmtimeError._from_ptr(err)
    return Instance._from_raw(out)

store = Store(eng)
try:
    inst = instantiate_async(store)
except WasmtimeError as e:
    print("[FAIL] instantiate_async:", str(e).splitlines()[0]); print("\n".join(str(e).splitlines()[-4:])); sys.exit(0)
print("[OK] instantiate_async")
ix = inst.get_export_index(store, "wasi:http/handler@0.3.0")
h = inst.get_func(store, inst.get_export_index(store, "handle", ix))
fty = h.type(store)
args = (ffi.wasmtime_component_val_t * 1)()
fty.params[0][1].convert_to_c(store, ResourceHost.own(8, RT["request"]), pointer(args[0]))
res = ffi.wasmtime_component_val_t()
err = ctypes.POINTER(ffi.wasmtime_error_t)()
print("calling handle via wasmtime_component_func_call_async ...", flush=True)
fut = ffi.wasmtime_component_func_call_async(byref(h._func), store._context(), args, 1, byref(res), 1, byref(err))
polls = 0
while not ffi.wasmtime_call_future_poll(fut):
    polls += 1
ffi.wasmtime_call_future_delete(fut)
print("host calls made by the guest:"); [print("   ", c) for c in calls]
if err:
    e = str(WasmtimeError._from_ptr(err))
    print("[FAIL] handle:", e.splitlines()[0]); print("   ...", "\n".join(e.splitlines()[-3:]))
else:
    print("[OK] handle returned, kind", res.kind, "after", polls, "polls")
