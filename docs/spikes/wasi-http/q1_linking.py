"""Q1: which linking arrangements work (run against pyapp.wasm: imports @0.2.9 and @0.2.12)."""
import os, sys, traceback
import wasmtime, wasmtime.component as wc
sys.path.insert(0, os.path.dirname(__file__))
import wasihttp
from wasihttp import WasiHttpHost, Handler, IncomingRequest, make_linker

path = sys.argv[1] if len(sys.argv) > 1 else "pyapp/pyapp.wasm"
cfg = wasmtime.Config(); cfg.memory_init_cow = True
engine = wasmtime.Engine(cfg)
comp = wc.Component.deserialize_file(engine, path + ".cwasm")

def hello(linker, host):
    h = Handler(host, linker, comp, engine)
    ex = h.handle(IncomingRequest("GET", "/", "http", "h", [], iter(())))
    h.close()
    return ex.status, b"".join(ex.chunks)[:30]

def case(label, fn):
    try:
        print(f"[OK]   {label}: {fn()}")
    except Exception as e:
        msg = str(e).strip()
        msg = msg.split("Caused by:")[-1].strip().replace("\n", " ")[:300]
        print(f"[FAIL] {label}: {type(e).__name__}: {msg}")

# 1-2: one definition version serves other 0.2.x imports (semver matching)
for v in ["0.2.0", "0.2.3", "0.2.6", "0.2.99"]:
    def f(v=v):
        host = WasiHttpHost()
        return hello(make_linker(host, comp, engine, version_override=v), host)
    case(f"host instances defined as @{v} for imports of @0.2.9/@0.2.12", f)

# 3: without allow_shadowing
def no_shadow():
    host = WasiHttpHost()
    linker = wc.Linker(engine); linker.add_wasip2()
    host.link(linker, comp, engine)
    return hello(linker, host)
case("no allow_shadowing (add_wasip2 first, then our wasi:io/streams)", no_shadow)

# 3b: our definitions first, then add_wasip2 (no shadowing flag)
def ours_first():
    host = WasiHttpHost()
    linker = wc.Linker(engine)
    host.link(linker, comp, engine)
    linker.add_wasip2()
    return hello(linker, host)
case("our definitions first, then add_wasip2()", ours_first)

# 3c: without add_wasip2 at all
def no_wasip2():
    host = WasiHttpHost()
    linker = wc.Linker(engine)
    host.link(linker, comp, engine)
    return hello(linker, host)
case("no add_wasip2 at all (only our interfaces)", no_wasip2)

# 4: leave tied interfaces to wasmtime
for keep in ["wasi:clocks/monotonic-clock", "wasi:cli/stdout", "wasi:filesystem/types",
             "wasi:sockets/tcp", "wasi:io/error"]:
    def f(keep=keep):
        saved = set(wasihttp.HOST_INTERFACES)
        wasihttp.HOST_INTERFACES.discard(keep)
        try:
            host = WasiHttpHost()
            return hello(make_linker(host, comp, engine), host)
        finally:
            wasihttp.HOST_INTERFACES.clear(); wasihttp.HOST_INTERFACES.update(saved)
    case(f"leave {keep} to add_wasip2", f)

# 5: define only the resources an interface owns (not the `use`d aliases)
OWNED = {"wasi:io/error": {"error"}, "wasi:io/poll": {"pollable"},
         "wasi:io/streams": {"input-stream", "output-stream"}}
def owned_only():
    host = WasiHttpHost()
    orig = wc.LinkerInstance.add_resource
    def add_resource(self, name, ty, dtor, _cur=[None]):
        return orig(self, name, ty, dtor)
    linker = wc.Linker(engine); linker.add_wasip2(); linker.allow_shadowing = True
    # re-implement link() skipping alias resources for the three io interfaces
    for name, item in comp.type.imports(engine).items():
        base = wasihttp.unversioned(name)
        if base not in wasihttp.HOST_INTERFACES:
            continue
        exports = item.ty.exports(engine)
        with linker.root() as root, root.add_instance(name) as inst:
            for en, ex in exports.items():
                if isinstance(ex.ty, wc.ResourceType):
                    if base in OWNED and en not in OWNED[base]:
                        continue
                    if base.startswith("wasi:cli/") or base == "wasi:clocks/monotonic-clock":
                        continue  # these only `use` resources
                    t = host.table(en)
                    inst.add_resource(en, t.type, lambda _s, rep, t=t: t.drop(rep))
            for en, ex in exports.items():
                if isinstance(ex.ty, wc.FuncType):
                    fn = host.impl.get((base, en)) or host._unsupported(name, en)
                    wasihttp.define_func(inst, en, ex.ty, wasihttp._resolving(wasihttp._canonical(ex.ty, fn)))
    return hello(linker, host)
case("aliased (`use`d) resources not redefined in cli/clocks/io", owned_only)

# 6: a resource defined with a different type id under an alias name
def wrong_alias():
    host = WasiHttpHost()
    bogus = wc.ResourceType.host(999999)
    orig = host.table
    def table(name):
        t = orig(name)
        if name == "pollable":
            class T: pass
            x = T(); x.type = bogus; x.drop = t.drop
            return x
        return t
    host.table = table
    return hello(make_linker(host, comp, engine), host)
case("`pollable` given a different host type id in one interface", wrong_alias)
