"""host/runtime/marshal.py + calls.py: every WIT type round-trips, and agrees with
wasmtime-py's generic conversion, through exports and through host imports.

The test component is hand-written WAT: for each type T, `echo-T` returns its
argument unchanged and `call-host-T` forwards it to the host import
`host-echo-T`. Wrapping T in a record with 17 u64 fields forces the canonical
ABI to pass it through memory both ways, so the identity is one instruction
whatever T is.
"""

from __future__ import annotations

from typing import Any

import pytest
import wasmtime
import wasmtime.component as wc
from hypothesis import given, settings
from hypothesis import strategies as st

from host.errors import MarshalError
from host.runtime.calls import TypedFunc, define_func
from tests import wat

TYPES = {
    "bool": "bool", "u8": "u8", "s8": "s8", "u16": "u16", "s16": "s16", "u32": "u32",
    "s32": "s32", "u64": "u64", "s64": "s64", "f32": "f32", "f64": "f64", "char": "char",
    "string": "string", "bytes": "list<u8>", "strings": "list<string>",
    "nested": "list<list<u32>>", "point": "point", "tup": "tuple<u8, string, f64>",
    "shape": "shape", "tagged": "tagged", "color": "color", "perms": "perms",
    "opt": "option<string>", "optopt": "option<option<u32>>", "res": "result<string, u32>",
    "resunit": "result", "headers": "list<tuple<string, list<u8>>>",
    "deep": "list<option<tuple<point, list<string>>>>",
}
PAD = [chr(ord("a") + i) for i in range(17)]


def _wit() -> str:
    lines = ["package test:rt;", "world rt {",
             "  record pad { " + ", ".join(f"{f}: u64" for f in PAD) + " }",
             "  record point { x: s32, y: s32 }",
             "  variant shape { circle(f64), square(u32), empty, named(string) }",
             "  variant tagged { a(u32), b(u32), c }",
             "  enum color { red, green, blue }",
             "  flags perms { read, write, exec }"]
    for name, ty in TYPES.items():
        lines += [f"  record wrap-{name} {{ value: {ty}, pad: pad }}",
                  f"  import host-echo-{name}: func(v: wrap-{name}) -> wrap-{name};",
                  f"  export echo-{name}: func(v: wrap-{name}) -> wrap-{name};",
                  f"  export call-host-{name}: func(v: wrap-{name}) -> wrap-{name};"]
    return "\n".join([*lines, "}"]) + "\n"


def _wat_body() -> str:
    imports, funcs = [], []
    for name in TYPES:
        imports.append(f'  (import "cm32p2" "host-echo-{name}" (func $host-{name} '
                       "(param i32 i32)))")
        funcs += [
            f'  (func (export "cm32p2||echo-{name}") (param i32) (result i32) local.get 0)',
            f'  (func (export "cm32p2||echo-{name}_post") (param i32))',
            f'  (func (export "cm32p2||call-host-{name}") (param i32) (result i32)\n'
            f"    (call $host-{name} (local.get 0) (i32.const 1024)) (i32.const 1024))",
            f'  (func (export "cm32p2||call-host-{name}_post") (param i32))',
        ]
    return "\n".join(imports), "\n".join(funcs)


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("rt")
    wit_dir = directory / "wit"
    wit_dir.mkdir()
    (wit_dir / "rt.wit").write_text(_wit())
    imports, funcs = _wat_body()
    # Imports must come first in a module: build the module text ourselves.
    path = directory / "rt.wasm"
    (directory / "rt.wat").write_text(f"(module\n{imports}\n{wat.PRELUDE}\n{funcs})\n")
    wat.assemble(directory / "rt.wat", path, wit_dir, "rt")
    engine = wasmtime.Engine()
    component = wc.Component.from_file(engine, str(path))
    return engine, component


class Harness:
    def __init__(self, engine: wasmtime.Engine, component: wc.Component) -> None:
        self.engine = engine
        self.component = component
        self.host_calls: list[Any] = []
        linker = wc.Linker(engine)
        imports = component.type.imports(engine)
        with linker.root() as root:
            for name in TYPES:
                fty = imports[f"host-echo-{name}"].ty
                define_func(root, f"host-echo-{name}", fty, self._host_echo)
        self.store = wasmtime.Store(engine)
        self.instance = linker.instantiate(self.store, component)
        exports = component.type.exports(engine)
        self.typed = {n: TypedFunc(exports[n].ty) for n in exports}

    def _host_echo(self, store: Any, value: Any) -> Any:
        self.host_calls.append(value)
        return value

    def func(self, name: str) -> wc.Func:
        func = self.instance.get_func(self.store, name)
        assert func is not None
        return func

    def ours(self, name: str, value: Any) -> Any:
        return self.typed[name].call(self.store, self.func(name), (value,))

    def generic(self, name: str, value: Any) -> Any:
        func = self.func(name)
        result = func(self.store, value)
        func.post_return(self.store)
        return result


@pytest.fixture(scope="module")
def harness(rt) -> Harness:
    return Harness(*rt)


def wrap(value: Any) -> wc.Record:
    record = wc.Record()
    pad = wc.Record()
    pad.__dict__.update({f: i * 1_000_003 for i, f in enumerate(PAD)})
    record.__dict__.update({"value": value, "pad": pad})
    return record


def point() -> st.SearchStrategy[wc.Record]:
    def make(x: int, y: int) -> wc.Record:
        r = wc.Record()
        r.__dict__.update({"x": x, "y": y})
        return r
    return st.builds(make, st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1))


text = st.text(max_size=40)
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.booleans(),
    "u8": st.integers(0, 255), "s8": st.integers(-128, 127),
    "u16": st.integers(0, 2**16 - 1), "s16": st.integers(-2**15, 2**15 - 1),
    "u32": st.integers(0, 2**32 - 1), "s32": st.integers(-2**31, 2**31 - 1),
    "u64": st.integers(0, 2**64 - 1), "s64": st.integers(-2**63, 2**63 - 1),
    "f32": st.floats(width=32, allow_nan=False), "f64": st.floats(allow_nan=False),
    "char": st.characters(exclude_categories=["Cs"]),
    "string": text, "bytes": st.binary(max_size=300), "strings": st.lists(text, max_size=6),
    "nested": st.lists(st.lists(st.integers(0, 2**32 - 1), max_size=5), max_size=5),
    "point": point(),
    "tup": st.tuples(st.integers(0, 255), text, st.floats(allow_nan=False)),
    "shape": st.one_of(st.floats(allow_nan=False), st.integers(0, 2**32 - 1), st.none(), text),
    "tagged": st.one_of(st.builds(wc.Variant, st.just("a"), st.integers(0, 9)),
                        st.builds(wc.Variant, st.just("b"), st.integers(0, 9)),
                        st.just(wc.Variant("c"))),
    "color": st.sampled_from(["red", "green", "blue"]),
    "perms": st.sets(st.sampled_from(["read", "write", "exec"])),
    "opt": st.one_of(st.none(), text),
    "optopt": st.one_of(st.just(wc.Variant("none")), st.just(wc.Variant("some", None)),
                        st.builds(wc.Variant, st.just("some"), st.integers(0, 2**32 - 1))),
    # result<string, u32> is untagged (str and int tell the cases apart), as in wasmtime-py.
    "res": st.one_of(text, st.integers(0, 2**32 - 1)),
    "resunit": st.sampled_from([wc.Variant("ok"), wc.Variant("err")]),
    "headers": st.lists(st.tuples(text, st.binary(max_size=30)), max_size=8),
    "deep": st.lists(st.one_of(st.none(), st.tuples(point(), st.lists(text, max_size=3))),
                     max_size=4),
}


def test_every_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(TYPES)


@pytest.mark.parametrize("name", list(TYPES))
def test_round_trip_agrees_with_generic(harness: Harness, name: str) -> None:
    @settings(max_examples=40, deadline=None)
    @given(value=STRATEGIES[name])
    def check(value: Any) -> None:
        expected = _normalize(name, value)
        ours = harness.ours(f"echo-{name}", wrap(value))
        assert ours.value == expected
        assert ours == harness.generic(f"echo-{name}", wrap(value))
        # Through the host import: arguments lifted, result lowered on the C heap.
        harness.host_calls.clear()
        via_host = harness.ours(f"call-host-{name}", wrap(value))
        assert via_host.value == expected
        assert harness.host_calls[0].value == expected
        assert harness.generic(f"call-host-{name}", wrap(value)).value == expected

    check()


def _normalize(name: str, value: Any) -> Any:
    if name == "f32":
        import struct

        return struct.unpack("<f", struct.pack("<f", value))[0]
    return value


@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_large_and_empty_bytes(harness: Harness, size: int) -> None:
    body = bytes(i % 256 for i in range(size))
    assert harness.ours("echo-bytes", wrap(body)).value == body
    assert harness.ours("call-host-bytes", wrap(body)).value == body


def test_non_ascii_strings(harness: Harness) -> None:
    for s in ["", "é", "日本語", "🦀 emoji", "\0nul"]:
        assert harness.ours("echo-string", wrap(s)).value == s
        assert harness.ours("call-host-string", wrap(s)).value == s


@pytest.mark.parametrize("name,value", [
    ("u8", 256), ("u8", -1), ("string", b"bytes"), ("bytes", "text"), ("color", "purple"),
    ("perms", {"fly"}), ("tagged", wc.Variant("z")), ("char", "ab"), ("tup", (1, "x")),
    ("bool", 1),
])
def test_bad_values_raise_before_calling(harness: Harness, name: str, value: Any) -> None:
    with pytest.raises(MarshalError):
        harness.ours(f"echo-{name}", wrap(value))


def test_host_import_exception_becomes_trap_and_reaches_the_caller(rt) -> None:
    engine, component = rt
    linker = wc.Linker(engine)
    imports = component.type.imports(engine)

    def boom(store: Any, value: Any) -> Any:
        raise ValueError("host import failed")

    with linker.root() as root:
        for name in TYPES:
            define_func(root, f"host-echo-{name}", imports[f"host-echo-{name}"].ty, boom)
    store = wasmtime.Store(engine)
    instance = linker.instantiate(store, component)
    func = instance.get_func(store, "call-host-u8")
    assert func is not None
    typed = TypedFunc(component.type.exports(engine)["call-host-u8"].ty)
    with pytest.raises(ValueError, match="host import failed"):
        typed.call(store, func, (wrap(1),))



_SCALAR_WIT = """package test:scalar;
world scalar {
  import small: func() -> u8;
  import big: func() -> u64;
  export call-small: func() -> u8;
  export call-big: func() -> u64;
}
"""
_SCALAR_WAT = """(module
  (import "$root" "small" (func $small (result i32)))
  (import "$root" "big" (func $big (result i64)))
  (func (export "call-small") (result i32) (call $small))
  (func (export "call-big") (result i64) (call $big)))
"""


@pytest.fixture(scope="module")
def scalar_rt(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("scalar")
    (work / "wit").mkdir()
    (work / "wit" / "scalar.wit").write_text(_SCALAR_WIT)
    (work / "scalar.wat").write_text(_SCALAR_WAT)
    wasm = wat.assemble(work / "scalar.wat", work / "scalar.wasm", work / "wit", "scalar")
    engine = wasmtime.Engine()
    return engine, wc.Component.from_file(engine, str(wasm))


def _call_scalar(scalar_rt, export: str, small: Any, big: Any) -> Any:
    engine, component = scalar_rt
    linker = wc.Linker(engine)
    imports = component.type.imports(engine)
    with linker.root() as root:
        define_func(root, "small", imports["small"].ty, lambda store: small)
        define_func(root, "big", imports["big"].ty, lambda store: big)
    store = wasmtime.Store(engine)
    instance = linker.instantiate(store, component)
    func = instance.get_func(store, export)
    assert func is not None
    return TypedFunc(component.type.exports(engine)[export].ty).call(store, func, ())


def test_scalar_results_of_host_imports(scalar_rt) -> None:
    # Scalar results take the trampoline's short path (written in place).
    assert _call_scalar(scalar_rt, "call-small", 255, 0) == 255
    assert _call_scalar(scalar_rt, "call-big", 0, 2**64 - 1) == 2**64 - 1


@pytest.mark.parametrize("bad", [256, -1, "x", 1.5, None, True])
def test_host_import_returning_a_bad_scalar_traps(scalar_rt, bad: Any) -> None:
    # A value that does not fit must trap, not reach the guest truncated.
    with pytest.raises(MarshalError):
        _call_scalar(scalar_rt, "call-small", bad, 0)
