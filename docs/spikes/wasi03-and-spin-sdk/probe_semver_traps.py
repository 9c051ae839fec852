"""Does define_unknown_imports_as_traps shadow add_wasip2's semver-compatible definitions?"""
import wasmtime
from wasmtime import Config, Engine, Store
from wasmtime.component import Component, Linker
WAT = '''
(component
  (import "wasi:cli/environment@VER" (instance $env
    (export "get-arguments" (func (result (list string))))))
  (core module $mem (memory (export "mem") 1)
     (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024)))
  (core instance $mi0 (instantiate $mem))
  (alias core export $mi0 "mem" (core memory $mem0))
  (alias core export $mi0 "realloc" (core func $realloc))
  (core func $lowered (canon lower (func $env "get-arguments") (memory $mem0) (realloc $realloc)))
  (core module $m2 (import "" "args" (func $a (param i32))) (import "" "mem" (memory 1))
     (func (export "run") (result i32) (call $a (i32.const 16)) (i32.load offset=4 (i32.const 16))))
  (core instance $mi (instantiate $m2 (with "" (instance (export "args" (func $lowered)) (export "mem" (memory $mem0))))))
  (func (export "run") (result u32) (canon lift (core func $mi "run")))
)'''
import sys
for ver in (sys.argv[1:] or ["0.2.0", "0.2.6", "0.2.9"]):
    for traps in (False, True):
        eng = Engine(Config())
        comp = Component(eng, WAT.replace("VER", ver))
        l = Linker(eng); l.add_wasip2()
        if traps: l.define_unknown_imports_as_traps(comp)
        st = Store(eng); w = wasmtime.WasiConfig(); w.argv = ["a", "b", "c"]; st.set_wasi(w)
        try:
            inst = l.instantiate(st, comp)
            print(ver, "traps" if traps else "no-traps", "argc =", inst.get_func(st, "run")(st))
        except Exception as e:
            print(ver, "traps" if traps else "no-traps", "FAIL", str(e).splitlines()[0], "|", str(e).splitlines()[-1])
