"""Typed marshalling between Python values and wasmtime's component C values.

wasmtime-py's generic calls re-read the function type over FFI on every call and
convert `list<u8>` one element at a time. Here a `Codec` is compiled once per
type (when a component is loaded) and then, per call, writes or reads the
32-byte `wasmtime_component_val_t` nodes directly with `struct`:

- kind byte at offset 0, payload at offset 8 (`_PAYLOAD`);
- string/list/tuple/record/flags payload: (size, pointer);
- variant: (name size, name pointer, payload pointer or 0);
- option: payload pointer or 0; result: (is_ok, payload pointer or 0).

Values use wasmtime-py's Python conventions (Record, Variant, tagged or not by
the same rule, tuples, sets for flags), so the two are interchangeable.

Two lowering targets share the codecs (`Lowering`):
- `Arena`: for call parameters. wasmtime only reads parameters, so every node
  lives in Python-owned buffers kept alive until the call returns; nothing is
  allocated in C and nothing needs freeing.
- `Heap`: for results of host functions, which wasmtime takes ownership of and
  frees; nodes are allocated with the C API's own allocators.
Lifting reads C memory without freeing; the caller frees the top-level value
exactly once with `wasmtime_component_val_delete`.

Host functions written by hand return values in one canonical form instead:
results as `Ok`/`Err`, variants always as `wc.Variant` (tagged or not),
records as tuples in field order, options as the value or None.
`host_value_adapter(codec)`, built once per host function, turns that form
into the codec's.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime
import wasmtime.component as wc

from host.errors import MarshalError
from host.runtime.wasmtime_private import ResourceCalls, context_address, error_from_ptr, ffi

VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)  # 32
ENTRY_SIZE = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry_t)  # 48
NAME_SIZE = ctypes.sizeof(ffi.wasm_name_t)  # 16
_PAYLOAD = ffi.wasmtime_component_val_t.of.offset  # 8
_ENTRY_VAL = ffi.wasmtime_component_valrecord_entry_t.val.offset  # 16
assert (VAL_SIZE, ENTRY_SIZE, NAME_SIZE, _PAYLOAD, _ENTRY_VAL) == (32, 48, 16, 8, 16)

K = {name: getattr(ffi, f"WASMTIME_COMPONENT_{name}").value for name in (
    "BOOL", "S8", "U8", "S16", "U16", "S32", "U32", "S64", "U64", "F32", "F64", "CHAR",
    "STRING", "LIST", "RECORD", "TUPLE", "VARIANT", "ENUM", "OPTION", "RESULT", "FLAGS",
    "RESOURCE")}

_SIZE_PTR = struct.Struct("<B7xQQ")  # kind, size, pointer
_VARIANT = struct.Struct("<B7xQQQ")  # kind, name size, name pointer, payload pointer
_KIND_PTR = struct.Struct("<B7xQ")  # kind, one pointer: an option's payload, a resource handle
_RESULT = struct.Struct("<B7x?7xQ")
_NAME = struct.Struct("<QQ")
_PAIR = struct.Struct("<B7xQQ8xB7xQQ")  # two consecutive (kind, size, pointer) vals
_QQ = struct.Struct("<QQ")
_Q = struct.Struct("<Q")
_U8_KIND = bytes((K["U8"],))

_string_at = ctypes.string_at


# ---------------------------------------------------------------------------
# Lowering targets


class Lowering:
    """Where lowered nodes are allocated. `view` is writable; `addr` is final."""

    store: Any = None

    def vals(self, n: int) -> tuple[Any, int]:
        raise NotImplementedError

    def entries(self, n: int) -> tuple[Any, int]:
        raise NotImplementedError

    def names(self, n: int) -> tuple[Any, int]:
        raise NotImplementedError

    def data(self, b: bytes) -> int:
        raise NotImplementedError

    def u8_list(self, b: bytes) -> int:
        raise NotImplementedError

    def keep(self, owned: Any) -> None:
        """A C-owned temporary to free after the call (arena) or to hand over (heap)."""

    def keep_handle(self, address: int) -> None:
        """A C-owned resource handle (`resource_any_t *`): as `keep`."""


class Arena(Lowering):
    """Python-owned nodes for call parameters; alive as long as the arena."""

    __slots__ = ("_alive", "_owned", "_handles", "store")

    def __init__(self, store: Any = None) -> None:
        self._alive: list[Any] = []
        self._owned: list[Any] = []
        self._handles: list[int] = []
        self.store = store

    def _chunk(self, size: int) -> tuple[Any, int]:
        chunk = (ctypes.c_char * size)()
        self._alive.append(chunk)
        return chunk, ctypes.addressof(chunk)

    def vals(self, n: int) -> tuple[Any, int]:
        return self._chunk(n * VAL_SIZE) if n else (None, 0)

    def entries(self, n: int) -> tuple[Any, int]:
        return self._chunk(n * ENTRY_SIZE) if n else (None, 0)

    def names(self, n: int) -> tuple[Any, int]:
        return self._chunk(n * NAME_SIZE) if n else (None, 0)

    def data(self, b: bytes) -> int:
        if not b:
            return 0
        chunk = (ctypes.c_char * len(b)).from_buffer_copy(b)
        self._alive.append(chunk)
        return ctypes.addressof(chunk)

    def u8_list(self, b: bytes) -> int:
        n = len(b)
        if not n:
            return 0
        buf = bytearray(n * VAL_SIZE)
        buf[0::VAL_SIZE] = _U8_KIND * n
        buf[_PAYLOAD::VAL_SIZE] = b
        chunk = (ctypes.c_char * len(buf)).from_buffer(buf)
        self._alive.append(buf)
        self._alive.append(chunk)
        return ctypes.addressof(chunk)

    def keep(self, owned: Any) -> None:
        self._owned.append(owned)

    def keep_handle(self, address: int) -> None:
        self._handles.append(address)

    def release(self) -> None:
        """Free C-owned temporaries (resource handles) once the call is over."""
        for owned in self._owned:
            ffi.wasmtime_component_val_delete(ctypes.byref(owned))
        for address in self._handles:
            _any_delete(address)
        self._owned.clear()
        self._handles.clear()
        self._alive.clear()


class Heap(Lowering):
    """C-owned nodes (wasmtime frees them), for host function results."""

    def __init__(self, store: Any = None) -> None:
        self.store = store

    def vals(self, n: int) -> tuple[Any, int]:
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(ctypes.byref(raw), n)
        return self._view(raw, n * VAL_SIZE)

    def entries(self, n: int) -> tuple[Any, int]:
        raw = ffi.wasmtime_component_valrecord_t()
        ffi.wasmtime_component_valrecord_new_uninit(ctypes.byref(raw), n)
        return self._view(raw, n * ENTRY_SIZE)

    def names(self, n: int) -> tuple[Any, int]:
        raw = ffi.wasmtime_component_valflags_t()
        ffi.wasmtime_component_valflags_new_uninit(ctypes.byref(raw), n)
        return self._view(raw, n * NAME_SIZE)

    def data(self, b: bytes) -> int:
        vec = ffi.wasm_byte_vec_t()
        ffi.wasm_byte_vec_new_uninitialized(ctypes.byref(vec), len(b))
        addr = ctypes.cast(vec.data, ctypes.c_void_p).value or 0
        if b:
            ctypes.memmove(addr, b, len(b))
        return addr

    def u8_list(self, b: bytes) -> int:
        n = len(b)
        view, addr = self.vals(n)
        if n:
            buf = bytearray(n * VAL_SIZE)
            buf[0::VAL_SIZE] = _U8_KIND * n
            buf[_PAYLOAD::VAL_SIZE] = b
            ctypes.memmove(addr, bytes(buf), len(buf))
        return addr

    def box(self) -> tuple[Any, int]:
        tmp = ffi.wasmtime_component_val_t()  # a BOOL: owns nothing, safe to move
        ptr = ffi.wasmtime_component_val_new(ctypes.byref(tmp))
        addr = ctypes.cast(ptr, ctypes.c_void_p).value or 0
        return (ctypes.c_char * VAL_SIZE).from_address(addr), addr

    @staticmethod
    def _view(raw: Any, size: int) -> tuple[Any, int]:
        addr = ctypes.cast(raw.data, ctypes.c_void_p).value or 0
        return ((ctypes.c_char * size).from_address(addr) if size else None), addr


def _box(mem: Lowering) -> tuple[Any, int]:
    if isinstance(mem, Heap):
        return mem.box()
    return mem.vals(1)


# ---------------------------------------------------------------------------
# Codecs


class Codec:
    """Converts one WIT type; built once, used for every call."""

    kind: int
    classes: frozenset[type] = frozenset({object})  # Python classes of values (variant rule)

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        raise NotImplementedError

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        """Read the value at `buf[off:]`, which lives at C address `addr`."""
        raise NotImplementedError

    # helpers for callers holding a single value
    def lift_at(self, addr: int) -> Any:
        return self.lift(_string_at(addr, VAL_SIZE), 0, addr)


class Scalar(Codec):
    """Stateless, so one instance per kind serves every type that uses it."""

    def __init__(self, kind: str, fmt: str, check: tuple[type, ...],
                 to_c: Callable[[Any], Any] | None = None,
                 from_c: Callable[[Any], Any] | None = None) -> None:
        self.kind = K[kind]
        self.st = struct.Struct("<B7x" + fmt)
        self.value_st = struct.Struct("<" + fmt)
        self.check = check  # accepted when lowering (floats also take ints)
        self.classes = frozenset(check[:1])  # what identifies the case (variant rule)
        self.to_c = to_c
        self.from_c = from_c

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, self.check) or (isinstance(value, bool)
                                                 and bool not in self.check):
            raise MarshalError(f"expected {self.check[0].__name__}, got {value!r}")
        try:
            self.st.pack_into(view, off, self.kind,
                              self.to_c(value) if self.to_c else value)
        except struct.error as exc:
            raise MarshalError(f"{value!r}: {exc}") from None

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        (value,) = self.value_st.unpack_from(buf, off + _PAYLOAD)
        return self.from_c(value) if self.from_c else value


def _char_to_c(value: str) -> int:
    if len(value) != 1:
        raise MarshalError(f"expected one character, got {value!r}")
    return ord(value)


class _String(Codec):
    kind = K["STRING"]
    classes = frozenset({str})

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, str):
            raise MarshalError(f"expected str, got {value!r}")
        b = value.encode("utf-8")
        _SIZE_PTR.pack_into(view, off, self.kind, len(b), mem.data(b))

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        return _string_at(ptr, size).decode("utf-8") if size else ""


class _Bytes(Codec):
    """list<u8> <-> bytes: one strided copy each way."""

    kind = K["LIST"]
    classes = frozenset({bytes})

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, bytes):
            raise MarshalError(f"expected bytes, got {type(value).__name__}")
        _SIZE_PTR.pack_into(view, off, self.kind, len(value), mem.u8_list(value))

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        if not size:
            return b""
        # A strided view of the C values, copied once into bytes: no temporary
        # copy of the whole 32-byte-per-element array (3x faster, 32 B/B less).
        values = (ctypes.c_ubyte * (size * VAL_SIZE)).from_address(ptr)
        return bytes(memoryview(values)[_PAYLOAD::VAL_SIZE])


class _List(Codec):
    kind = K["LIST"]
    classes = frozenset({list})

    def __init__(self, element: Codec) -> None:
        self.element = element

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, list):
            raise MarshalError(f"expected list, got {type(value).__name__}")
        n = len(value)
        sub, addr = mem.vals(n)
        lower = self.element.lower
        for i, item in enumerate(value):
            lower(item, sub, i * VAL_SIZE, mem)
        _SIZE_PTR.pack_into(view, off, self.kind, n, addr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        if not size:
            return []
        data = _string_at(ptr, size * VAL_SIZE)
        lift = self.element.lift
        return [lift(data, i * VAL_SIZE, ptr + i * VAL_SIZE) for i in range(size)]


class _FieldList(Codec):
    """list<tuple<string, list<u8>>> (HTTP headers), laid out in bulk.

    All names go into one buffer and all values into one val array built with
    two strided copies, so n headers cost a handful of allocations, not 3n.
    Arena (parameter) lowering only; heap lowering uses the generic path.
    """

    kind = K["LIST"]
    classes = frozenset({list})

    def __init__(self, generic: _List) -> None:
        self.generic = generic

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(mem, Arena) or not isinstance(value, list):
            self.generic.lower(value, view, off, mem)
            return
        n = len(value)
        if not n:
            _SIZE_PTR.pack_into(view, off, self.kind, 0, 0)
            return
        try:
            names = [name.encode("utf-8") for name, _ in value]
            values = [v for _, v in value]
            joined_values = b"".join(values)
        except (TypeError, ValueError, AttributeError):
            raise MarshalError("headers must be a list of (str, bytes) tuples") from None
        names_addr = mem.data(b"".join(names))
        values_addr = mem.u8_list(joined_values)
        tuples, tuples_addr = mem.vals(2 * n)
        outer, outer_addr = mem.vals(n)
        string_k, list_k, tuple_k = K["STRING"], K["LIST"], K["TUPLE"]
        name_pos = value_pos = 0
        for i in range(n):
            name, v = names[i], values[i]
            _PAIR.pack_into(tuples, i * 2 * VAL_SIZE,
                            string_k, len(name), names_addr + name_pos,
                            list_k, len(v), values_addr + value_pos * VAL_SIZE)
            _SIZE_PTR.pack_into(outer, i * VAL_SIZE, tuple_k, 2,
                                tuples_addr + i * 2 * VAL_SIZE)
            name_pos += len(name)
            value_pos += len(v)
        _SIZE_PTR.pack_into(view, off, self.kind, n, outer_addr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        return self.generic.lift(buf, off, addr)


class _Tuple(Codec):
    kind = K["TUPLE"]
    classes = frozenset({tuple})

    def __init__(self, elements: list[Codec]) -> None:
        self.elements = elements

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, tuple) or len(value) != len(self.elements):
            raise MarshalError(f"expected a tuple of {len(self.elements)}, got {value!r}")
        sub, addr = mem.vals(len(value))
        for i, (codec, item) in enumerate(zip(self.elements, value, strict=True)):
            codec.lower(item, sub, i * VAL_SIZE, mem)
        _SIZE_PTR.pack_into(view, off, self.kind, len(value), addr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        data = _string_at(ptr, size * VAL_SIZE) if size else b""
        return tuple(c.lift(data, i * VAL_SIZE, ptr + i * VAL_SIZE)
                     for i, c in enumerate(self.elements))


class RecordCodec(Codec):
    """Records: wc.Record with kebab-case attributes, or a tuple in field order."""

    kind = K["RECORD"]
    classes = frozenset({wc.Record})

    def __init__(self, fields: list[tuple[str, Codec]]) -> None:
        self.fields = fields
        self.names = [name for name, _ in fields]
        self._encoded = [name.encode() for name in self.names]
        # Arena mode: field names point at these constant bytes objects.
        self._name_ptrs = [ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0
                           for b in self._encoded]

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        n = len(self.fields)
        if isinstance(value, tuple):
            items = value
            if len(items) != n:
                raise MarshalError(f"expected {n} record fields, got {len(items)}")
        else:
            try:
                d = value.__dict__
                items = tuple(d[name] for name in self.names)
            except (AttributeError, KeyError) as exc:
                raise MarshalError(f"record is missing field {exc}") from None
        sub, addr = mem.entries(n)
        heap = isinstance(mem, Heap)
        for i, ((_, codec), item) in enumerate(zip(self.fields, items, strict=True)):
            base = i * ENTRY_SIZE
            name = self._encoded[i]
            _NAME.pack_into(sub, base, len(name),
                            mem.data(name) if heap else self._name_ptrs[i])
            codec.lower(item, sub, base + _ENTRY_VAL, mem)
        _SIZE_PTR.pack_into(view, off, self.kind, n, addr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        data = _string_at(ptr, size * ENTRY_SIZE) if size else b""
        record = wc.Record()
        record.__dict__.update({
            name: codec.lift(data, i * ENTRY_SIZE + _ENTRY_VAL, ptr + i * ENTRY_SIZE + _ENTRY_VAL)
            for i, (name, codec) in enumerate(self.fields)
        })
        return record

    def lift_tuple(self, addr: int) -> tuple[Any, ...]:
        """Fast path for callers that know the field order: a plain tuple."""
        buf = _string_at(addr, VAL_SIZE)
        size, ptr = _QQ.unpack_from(buf, _PAYLOAD)
        data = _string_at(ptr, size * ENTRY_SIZE) if size else b""
        return tuple(codec.lift(data, i * ENTRY_SIZE + _ENTRY_VAL,
                                ptr + i * ENTRY_SIZE + _ENTRY_VAL)
                     for i, (_, codec) in enumerate(self.fields))


class _Variant(Codec):
    """variant, option and result share wasmtime-py's tagged/untagged rule."""

    def __init__(self, kind: str, cases: list[tuple[str, Codec | None]], tagged: bool) -> None:
        self.kind = K[kind]
        self.cases = cases
        self.tagged = tagged
        self.by_name = {name: (i, codec) for i, (name, codec) in enumerate(cases)}
        self._encoded = [name.encode() for name, _ in cases]
        self._name_ptrs = [ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0
                           for b in self._encoded]
        self.by_encoded = {b: (name, codec) for b, (name, codec) in zip(self._encoded, cases,
                                                                         strict=True)}
        if tagged:
            self.classes = frozenset({wc.Variant})
        else:
            # A case without payload is the value None. (wasmtime-py's rule for
            # `tagged` counts it as `object`; matching on `object` here would let
            # the `ok` case of result<option<T>, E> take every error value.)
            classes: set[type] = set()
            for _, codec in cases:
                classes |= codec.classes if codec else {type(None)}
            self.classes = frozenset(classes)

    def _choose(self, value: Any) -> tuple[int, Codec | None, Any]:
        if self.tagged:
            if not isinstance(value, wc.Variant):
                raise MarshalError(f"expected Variant, got {value!r}")
            try:
                i, codec = self.by_name[value.tag]
            except KeyError:
                raise MarshalError(f"unknown case {value.tag!r}") from None
            return i, codec, value.payload
        for i, (_, codec) in enumerate(self.cases):
            if codec is None:
                if value is None:
                    return i, None, None
            elif isinstance(value, tuple(codec.classes)):
                return i, codec, value
        raise MarshalError(f"value not valid for this variant: {value!r}")

    def _lower_payload(self, codec: Codec | None, payload: Any, mem: Lowering) -> int:
        if codec is None:
            return 0
        box, addr = _box(mem)
        codec.lower(payload, box, 0, mem)
        return addr

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        i, codec, payload = self._choose(value)
        ptr = self._lower_payload(codec, payload, mem)
        if self.kind == K["OPTION"]:
            _KIND_PTR.pack_into(view, off, self.kind, ptr)
        elif self.kind == K["RESULT"]:
            _RESULT.pack_into(view, off, self.kind, i == 0, ptr)
        else:
            name = self._encoded[i]
            name_ptr = mem.data(name) if isinstance(mem, Heap) else self._name_ptrs[i]
            _VARIANT.pack_into(view, off, self.kind, len(name), name_ptr, ptr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        if self.kind == K["OPTION"]:
            (ptr,) = _Q.unpack_from(buf, off + _PAYLOAD)
            name, codec = self.cases[1 if ptr else 0]
        elif self.kind == K["RESULT"]:
            is_ok, ptr = _RESULT.unpack_from(buf, off)[1:]
            name, codec = self.cases[0 if is_ok else 1]
        else:
            size, name_ptr, ptr = _VARIANT.unpack_from(buf, off)[1:]
            name, codec = self.by_encoded[_string_at(name_ptr, size)]
        payload = codec.lift_at(ptr) if codec is not None and ptr else None
        if self.tagged:
            return wc.Variant(name, payload) if codec is not None else wc.Variant(name)
        return payload


class _Enum(Codec):
    kind = K["ENUM"]
    classes = frozenset({str})

    def __init__(self, names: list[str]) -> None:
        self.encoded = {name: name.encode() for name in names}
        self.ptrs = {name: ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0
                     for name, b in self.encoded.items()}

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        b = self.encoded.get(value)
        if b is None:
            raise MarshalError(f"{value!r} is not a case of this enum")
        ptr = mem.data(b) if isinstance(mem, Heap) else self.ptrs[value]
        _SIZE_PTR.pack_into(view, off, self.kind, len(b), ptr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        return _string_at(ptr, size).decode()


class _Flags(Codec):
    kind = K["FLAGS"]
    classes = frozenset({set})

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.encoded = {name: name.encode() for name in names}
        self.ptrs = {name: ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0
                     for name, b in self.encoded.items()}

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if not isinstance(value, set):
            raise MarshalError(f"expected a set of flag names, got {value!r}")
        unknown = value - self.encoded.keys()
        if unknown:
            raise MarshalError(f"unknown flags {sorted(unknown)!r}")
        ordered = [name for name in self.names if name in value]
        sub, addr = mem.names(len(ordered))
        heap = isinstance(mem, Heap)
        for i, name in enumerate(ordered):
            b = self.encoded[name]
            _NAME.pack_into(sub, i * NAME_SIZE, len(b), mem.data(b) if heap else self.ptrs[name])
        _SIZE_PTR.pack_into(view, off, self.kind, len(ordered), addr)

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        size, ptr = _QQ.unpack_from(buf, off + _PAYLOAD)
        data = _string_at(ptr, size * NAME_SIZE) if size else b""
        out = set()
        for i in range(size):
            n, p = _NAME.unpack_from(data, i * NAME_SIZE)
            out.add(_string_at(p, n).decode())
        return out


class HostHandle:
    """A handle to one of the host's own resources: its table's `rep` and type id.

    What host functions return for `own<T>` results and receive, once resolved,
    for handles the guest passes in; lowered straight to a C handle (no
    wasmtime-py objects, see `ResourceCalls`)."""

    __slots__ = ("rep", "type_id", "owned")

    def __init__(self, rep: int, type_id: int, owned: bool = True) -> None:
        self.rep = rep
        self.type_id = type_id
        self.owned = owned

    def __repr__(self) -> str:
        return f"HostHandle(rep={self.rep}, type_id={self.type_id}, owned={self.owned})"


class GuestHandle:
    """A handle as the guest passed it (a C `resource_any_t *` this object owns).

    `to_host` resolves it, once, to the HostHandle of a host resource; a guest
    resource (or a second `to_host`) raises. Freed when resolved or collected."""

    __slots__ = ("address",)

    def __init__(self, address: int) -> None:
        self.address = address

    def to_host(self, store: Any) -> HostHandle:
        address = self.address
        if not address:
            raise wasmtime.WasmtimeError("resource handle already converted")
        out = ctypes.c_void_p()
        err = _any_to_host(context_address(store), address, ctypes.addressof(out))
        self.address = 0
        _any_delete(address)
        if err:
            raise error_from_ptr(err)
        host = out.value
        try:
            return HostHandle(_host_rep(host), _host_type(host), _host_owned(host))
        finally:
            _host_delete(host)

    def __del__(self) -> None:
        if self.address and _any_delete is not None:  # None at interpreter exit
            _any_delete(self.address)
            self.address = 0


_any_delete = ResourceCalls.any_delete
_any_to_host = ResourceCalls.any_to_host
_host_new = ResourceCalls.host_new
_host_delete = ResourceCalls.host_delete
_host_rep = ResourceCalls.host_rep
_host_type = ResourceCalls.host_type
_host_owned = ResourceCalls.host_owned
_host_to_any = ResourceCalls.host_to_any


class _Resource(Codec):
    """Resource handles: HostHandle/GuestHandle through raw C calls; wasmtime-py's
    own ResourceHost/ResourceAny objects through its conversion (ownership rules)."""

    kind = K["RESOURCE"]
    classes = frozenset({HostHandle, GuestHandle, wc.ResourceAny, wc.ResourceHost})

    def __init__(self, ty: Any) -> None:
        self.ty = ty

    def lower(self, value: Any, view: Any, off: int, mem: Lowering) -> None:
        if type(value) is HostHandle:
            host = _host_new(value.owned, value.rep, value.type_id)
            out = ctypes.c_void_p()
            err = _host_to_any(context_address(mem.store), host, ctypes.addressof(out))
            _host_delete(host)
            if err:
                raise error_from_ptr(err)
            address = out.value or 0
            _KIND_PTR.pack_into(view, off, self.kind, address)
            mem.keep_handle(address)  # wasmtime only reads parameters: free it afterwards
            return
        tmp = ffi.wasmtime_component_val_t()
        self.ty.convert_to_c(mem.store, value, ctypes.pointer(tmp))
        ctypes.memmove(ctypes.addressof(view) + off, ctypes.addressof(tmp), VAL_SIZE)
        if isinstance(mem, Arena):
            mem.keep(tmp)  # wasmtime only reads parameters: free our handle afterwards

    def lift(self, buf: bytes, off: int, addr: int) -> Any:
        (address,) = _Q.unpack_from(buf, off + _PAYLOAD)
        # The handle now belongs to the GuestHandle: make the node own nothing,
        # so freeing the enclosing value does not free the handle twice.
        ctypes.memset(addr, K["BOOL"], 1)
        return GuestHandle(address)


# ---------------------------------------------------------------------------
# Compiling codecs from wasmtime's type objects


_SCALARS: dict[type, Codec] = {
    wc.Bool: Scalar("BOOL", "?", (bool,)),
    wc.S8: Scalar("S8", "b", (int,)),
    wc.U8: Scalar("U8", "B", (int,)),
    wc.S16: Scalar("S16", "h", (int,)),
    wc.U16: Scalar("U16", "H", (int,)),
    wc.S32: Scalar("S32", "i", (int,)),
    wc.U32: Scalar("U32", "I", (int,)),
    wc.S64: Scalar("S64", "q", (int,)),
    wc.U64: Scalar("U64", "Q", (int,)),
    wc.F32: Scalar("F32", "f", (float, int)),
    wc.F64: Scalar("F64", "d", (float, int)),
    wc.Char: Scalar("CHAR", "I", (str,), _char_to_c, chr),
}


def compile_type(ty: Any) -> Codec:
    """Build the codec for a wasmtime.component ValType (recursively, once)."""
    for cls, codec in _SCALARS.items():
        if isinstance(ty, cls):
            return codec
    if isinstance(ty, wc.String):
        return _String()
    if isinstance(ty, wc.ListType):
        element = ty.element
        if isinstance(element, wc.U8):
            return _Bytes()
        codec = _List(compile_type(element))
        if isinstance(codec.element, _Tuple) and [type(c) for c in codec.element.elements] == [
                _String, _Bytes]:
            return _FieldList(codec)
        return codec
    if isinstance(ty, wc.RecordType):
        return RecordCodec([(name, compile_type(t)) for name, t in ty.fields])
    if isinstance(ty, wc.TupleType):
        return _Tuple([compile_type(t) for t in ty.elements])
    if isinstance(ty, wc.VariantType):
        cases = [(name, compile_type(t) if t is not None else None) for name, t in ty.cases]
        return _Variant("VARIANT", cases, ty._tagged())
    if isinstance(ty, wc.OptionType):
        return _Variant("OPTION", [("none", None), ("some", compile_type(ty.payload))],
                        ty._tagged())
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        cases = [("ok", compile_type(ok) if ok is not None else None),
                 ("err", compile_type(err) if err is not None else None)]
        return _Variant("RESULT", cases, ty._tagged())
    if isinstance(ty, wc.EnumType):
        return _Enum(list(ty.names))
    if isinstance(ty, wc.FlagsType):
        return _Flags(list(ty.names))
    if isinstance(ty, (wc.OwnType, wc.BorrowType)):
        return _Resource(ty)
    raise MarshalError(f"unsupported WIT type {type(ty).__name__}")


# ---------------------------------------------------------------------------
# Host values: the canonical form host functions return


@dataclass(frozen=True)
class Ok:
    """`result::ok` as a host function returns it."""

    value: Any = None


@dataclass(frozen=True)
class Err:
    """`result::err` as a host function returns it."""

    value: Any = None


HostValueAdapter = Callable[[Any], Any]


def host_value_adapter(codec: Codec) -> HostValueAdapter | None:
    """A function turning canonical host values into values `codec` lowers.

    Canonical: results are `Ok`/`Err`, variants `wc.Variant` even where the
    codec tells cases apart by Python class (untagged), records tuples in
    field order. None when values of this type need no change. Build it once
    per host function, not per call.
    """
    if isinstance(codec, _FieldList):
        codec = codec.generic
    if isinstance(codec, _Variant):
        payloads = {name: host_value_adapter(c) if c is not None else None
                    for name, c in codec.cases}
        if codec.kind == K["OPTION"]:
            some = payloads["some"]
            if codec.tagged:  # option<option<T>>, option<result<..>>: None is ambiguous
                return lambda v: (wc.Variant("none") if v is None
                                  else wc.Variant("some", some(v) if some else v))
            return None if some is None else (lambda v: None if v is None else some(v))
        tagged = codec.tagged

        def variant(value: Any) -> Any:
            if isinstance(value, (Ok, Err)):
                value = wc.Variant("ok" if isinstance(value, Ok) else "err", value.value)
            inner = payloads.get(value.tag)
            payload = inner(value.payload) if inner is not None else value.payload
            return wc.Variant(value.tag, payload) if tagged else payload

        return variant
    if isinstance(codec, _List):
        element = host_value_adapter(codec.element)
        return None if element is None else (lambda v: [element(x) for x in v])
    if isinstance(codec, _Tuple):
        parts = [host_value_adapter(c) for c in codec.elements]
        if not any(parts):
            return None
        return lambda v: tuple(p(x) if p else x for p, x in zip(parts, v, strict=True))
    if isinstance(codec, RecordCodec):
        # A wc.Record, not the tuple: an untagged variant tells records apart by class.
        fields = [(name, host_value_adapter(c)) for name, c in codec.fields]

        def record(value: Any) -> wc.Record:
            out = wc.Record()
            out.__dict__.update({name: p(x) if p else x
                                 for (name, p), x in zip(fields, value, strict=True)})
            return out

        return record
    return None
