"""WASI 0.3 probe: how far does wasmtime-py 50 get with a Spin SDK 5 (wasi:http/handler@0.3.0) component?"""
import sys, ctypes, time
import wasmtime
from wasmtime import Config, Engine, Store, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker

path = sys.argv[1] if len(sys.argv) > 1 else "spin5-hello/app.wasm"
data = open(path, "rb").read()
print("wasmtime-py", wasmtime.__version__ if hasattr(wasmtime, "__version__") else "?")

def step(name, fn):
    t = time.time()
    try:
        r = fn()
        print(f"[OK]   {name} ({time.time()-t:.1f}s)")
        return r
    except Exception as e:
        print(f"[FAIL] {name}: {type(e).__name__}: {e}")
        return None

# 1. default config
cfg = Config(); cfg.wasm_component_model = True; cfg.cache = True
eng = Engine(cfg)
step("compile, default Config", lambda: Component(eng, data))

# 2. component-model-async flags via raw ffi (no Python property exists)
def mk(flags):
    c = Config(); c.wasm_component_model = True; c.cache = True
    for f in flags:
        getattr(ffi, f)(c.ptr(), True)
    return Engine(c)

for flags in (["wasmtime_config_wasm_component_model_async_set"],
              ["wasmtime_config_concurrency_support_set", "wasmtime_config_wasm_component_model_async_set"],
              ["wasmtime_config_concurrency_support_set", "wasmtime_config_wasm_component_model_async_set",
               "wasmtime_config_wasm_component_model_more_async_builtins_set",
               "wasmtime_config_wasm_component_model_async_stackful_set"]):
    eng = step(f"Engine with {flags}", lambda: mk(flags))
    if eng is None: continue
    comp = step("compile", lambda: Component(eng, data))
    if comp is None: continue
    break
else:
    sys.exit(1)

# inspect export type
ct = comp.type
for name, item in ct.exports(eng).items():
    print("export:", name, type(item).__name__)
    if hasattr(item, "exports"):
        for n2, f in item.exports(eng).items():
            print("   ", n2, type(f).__name__)
            if hasattr(f, "params"):
                print("      params:", [(p, str(t)) for p, t in f.params], "result:", f.result)
                print("      is async (wasmtime_component_func_type_async):", ffi.wasmtime_component_func_type_async(f.ptr()))
