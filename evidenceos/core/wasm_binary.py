"""A small, fail-closed decoder for the WebAssembly binary format.

Why it exists: ASPEC (spec 30 §5.4) is a pure function of the guest's bytes and must see every
operator of every function body, but no maintained pure-Python WASM parser is available and ``core``
may not import wasmtime (STYLE.md module map). This module decodes the module structure (every
standard section, custom sections kept opaque) and the full operator stream of every function body
so that the checks in :mod:`evidenceos.core.aspec` can run over ``(opcode name, immediates)``
pairs.

Scope: the WebAssembly 1.0 binary format plus the proposals whose operators ASPEC must *recognise*
in order to accept or ban them -- sign extension, saturating float-to-int truncation (``0xFC``
0-7), bulk memory and table operations (``0xFC`` 8-17), reference types, tail calls and the legacy
exception-handling operators (``try``/``catch``/``throw``/``rethrow``/``delegate``/``catch_all``
with the tag section). Everything else -- SIMD (``0xFD``), threads (``0xFE``), GC (``0xFB``),
typed function references, the new exception operators, memory64 or multi-memory encodings, GC
type forms, shared or 64-bit limits, component binaries -- is *undecodable* and raises
:class:`WasmDecodeError`, which ASPEC turns into a rejection reason. It is a decoder, not a
validator (wasmtime validates at instantiation, spec 30 §5.4); it only checks what it needs to
decode unambiguously: section order and sizes, LEB128 ranges, UTF-8 names, the
function/code-count and data-count agreements, and that every expression ends with the ``end``
that closes it.

Every failure, however malformed the input, is a :class:`WasmDecodeError`; every vector length is
checked against the bytes that remain before anything is allocated, so decoding is linear in the
input size, and two optional budgets (function-body operators, other items) let a caller stop
early on hostile input. Nothing recurses, so deep nesting cannot exhaust the Python stack.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

from evidenceos.errors import FailedPrecondition

__all__ = [
    "EXTERNREF",
    "F32",
    "F64",
    "FUNCREF",
    "I32",
    "I64",
    "V128",
    "CustomSection",
    "DataSegment",
    "ElementSegment",
    "Export",
    "ExternKind",
    "FuncType",
    "FunctionBody",
    "Global",
    "GlobalType",
    "Immediate",
    "Import",
    "ImportDesc",
    "Instruction",
    "Limits",
    "MemoryType",
    "OperatorLimitExceeded",
    "SegmentMode",
    "TableType",
    "TagType",
    "WasmDecodeError",
    "WasmModule",
    "decode_s32",
    "decode_s33",
    "decode_s64",
    "decode_u32",
    "decode_u64",
]

WASM_MAGIC: Final = b"\x00asm"
WASM_VERSION: Final = b"\x01\x00\x00\x00"

# Value types (binary encodings, WebAssembly spec §5.3.1-5.3.3).
I32: Final = 0x7F
I64: Final = 0x7E
F32: Final = 0x7D
F64: Final = 0x7C
V128: Final = 0x7B
FUNCREF: Final = 0x70
EXTERNREF: Final = 0x6F
_VALUE_TYPES: Final = frozenset({I32, I64, F32, F64, V128, FUNCREF, EXTERNREF})
_REF_TYPES: Final = frozenset({FUNCREF, EXTERNREF})


class WasmDecodeError(FailedPrecondition):
    """The bytes are not a WebAssembly module this decoder can read completely.

    The message names what failed and the byte offset; ASPEC reports it as a rejection reason
    (spec 30 §5.4 check 1). It is the only exception :meth:`WasmModule.from_bytes` raises.
    """


class OperatorLimitExceeded(WasmDecodeError):
    """The function bodies hold more operators than the caller's ``max_body_operators``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"function bodies hold more than {limit} operators")
        self.limit = limit


Immediate = int | tuple[int, ...]
"""An operator immediate: an index, a constant (floats as their raw IEEE bit pattern), a block type
(the s33 value: ``-64`` empty, ``-1`` i32 ... or a type index) or a vector (``br_table`` labels,
``select`` result types)."""


class Instruction(NamedTuple):
    """One decoded operator: its text-format name and its immediates in binary order.

    A ``NamedTuple`` rather than a frozen dataclass (STYLE.md) because a module can hold hundreds
    of thousands of them and tuple construction is several times cheaper; it is just as immutable.
    """

    name: str
    immediates: tuple[Immediate, ...] = ()


class ExternKind(enum.IntEnum):
    """Import/export descriptor kinds (binary tags 0-4; 4 = exception tag)."""

    FUNC = 0
    TABLE = 1
    MEMORY = 2
    GLOBAL = 3
    TAG = 4


class SegmentMode(enum.Enum):
    """How an element or data segment is applied."""

    ACTIVE = "active"
    PASSIVE = "passive"
    DECLARATIVE = "declarative"


@dataclass(frozen=True, slots=True)
class FuncType:
    """A function signature (value-type bytes)."""

    params: tuple[int, ...]
    results: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Limits:
    """Table or memory limits (32-bit, unshared)."""

    minimum: int
    maximum: int | None


@dataclass(frozen=True, slots=True)
class TableType:
    """A table's element reference type and limits."""

    element_type: int
    limits: Limits


@dataclass(frozen=True, slots=True)
class MemoryType:
    """A linear memory's limits in 64 KiB pages."""

    limits: Limits


@dataclass(frozen=True, slots=True)
class GlobalType:
    """A global's value type and mutability."""

    value_type: int
    mutable: bool


@dataclass(frozen=True, slots=True)
class TagType:
    """An exception tag (attribute 0 = exception) and its function type index."""

    type_index: int


ImportDesc = int | TableType | MemoryType | GlobalType | TagType
"""What an import provides; a bare ``int`` is a function's type index."""


@dataclass(frozen=True, slots=True)
class Import:
    """One import: ``module``/``name`` and what it provides."""

    module: str
    name: str
    kind: ExternKind
    desc: ImportDesc


@dataclass(frozen=True, slots=True)
class Export:
    """One export: its name, kind and index in that kind's index space."""

    name: str
    kind: ExternKind
    index: int


@dataclass(frozen=True, slots=True)
class Global:
    """A module-defined global and its constant initialiser (ending with ``end``)."""

    type: GlobalType
    init: tuple[Instruction, ...]


@dataclass(frozen=True, slots=True)
class ElementSegment:
    """An element segment; function-index vectors are normalised to ``ref.func`` expressions."""

    mode: SegmentMode
    table_index: int
    offset: tuple[Instruction, ...] | None
    element_type: int
    items: tuple[tuple[Instruction, ...], ...]


@dataclass(frozen=True, slots=True)
class DataSegment:
    """A data segment and its payload bytes."""

    mode: SegmentMode
    memory_index: int
    offset: tuple[Instruction, ...] | None
    data: bytes


@dataclass(frozen=True, slots=True)
class FunctionBody:
    """A defined function's locals ``(count, value type)`` and its operators.

    ``instructions`` includes the final ``end`` that closes the body (spec 30 §5.4 counts it).
    """

    locals: tuple[tuple[int, int], ...]
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True, slots=True)
class CustomSection:
    """A custom section (id 0): its name and opaque payload."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class WasmModule:
    """A decoded module. Index spaces follow the spec: imported functions come first."""

    types: tuple[FuncType, ...] = ()
    imports: tuple[Import, ...] = ()
    functions: tuple[int, ...] = ()
    tables: tuple[TableType, ...] = ()
    memories: tuple[MemoryType, ...] = ()
    tags: tuple[TagType, ...] = ()
    globals: tuple[Global, ...] = ()
    exports: tuple[Export, ...] = ()
    start: int | None = None
    elements: tuple[ElementSegment, ...] = ()
    data_count: int | None = None
    code: tuple[FunctionBody, ...] = ()
    data: tuple[DataSegment, ...] = ()
    custom_sections: tuple[CustomSection, ...] = ()

    @property
    def imported_function_count(self) -> int:
        """Number of function imports (the first indices of the function index space)."""
        return sum(1 for imp in self.imports if imp.kind is ExternKind.FUNC)

    @classmethod
    def from_bytes(
        cls,
        wasm: bytes,
        *,
        max_body_operators: int | None = None,
        max_items: int | None = None,
    ) -> WasmModule:
        """Decode a complete module; raise :class:`WasmDecodeError` on anything unreadable.

        Decoding is linear in the input, but a few microseconds per byte of Python still add up
        to seconds for a 4 MiB request; the two optional budgets let a caller stop early:
        ``max_body_operators`` counts the operators of all function bodies (exceeding it raises
        :class:`OperatorLimitExceeded`), ``max_items`` counts every other decoded entry -- vector
        elements of every section (not raw bytes) and constant-expression operators.
        """
        return _decode_module(bytes(wasm), _Budget(max_body_operators, max_items))


# --------------------------------------------------------------------------------------------
# LEB128 (WebAssembly spec §5.2.2): at most ceil(N/7) bytes; the unused bits of a maximal-length
# encoding must be zero (unsigned) or copies of the sign bit (signed). Non-minimal encodings
# within that length are valid.


def _decode_unsigned(data: bytes, offset: int, bits: int, end: int) -> tuple[int, int]:
    max_bytes = (bits + 6) // 7
    result = 0
    shift = 0
    pos = offset
    for i in range(max_bytes):
        if pos >= end:
            raise WasmDecodeError(f"unexpected end of input in u{bits} at offset {pos}")
        byte = data[pos]
        pos += 1
        if i == max_bytes - 1:
            if byte & 0x80:
                raise WasmDecodeError(f"u{bits} LEB128 too long at offset {offset}")
            spare = bits - 7 * i  # payload bits still allowed in this byte
            if byte >> spare:
                raise WasmDecodeError(f"u{bits} LEB128 out of range at offset {offset}")
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos
    raise AssertionError("unreachable: the last byte either returns or raises")  # pragma: no cover


def _decode_signed(data: bytes, offset: int, bits: int, end: int) -> tuple[int, int]:
    max_bytes = (bits + 6) // 7
    result = 0
    shift = 0
    pos = offset
    for i in range(max_bytes):
        if pos >= end:
            raise WasmDecodeError(f"unexpected end of input in s{bits} at offset {pos}")
        byte = data[pos]
        pos += 1
        if i == max_bytes - 1:
            if byte & 0x80:
                raise WasmDecodeError(f"s{bits} LEB128 too long at offset {offset}")
            spare = bits - 7 * i  # payload bits incl. the sign bit allowed in this byte
            high = (byte & 0x7F) >> (spare - 1)  # sign bit and every bit above it
            if high not in (0, (1 << (8 - spare)) - 1):
                raise WasmDecodeError(f"s{bits} LEB128 out of range at offset {offset}")
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos
    raise AssertionError("unreachable: the last byte either returns or raises")  # pragma: no cover


def decode_u32(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode an unsigned 32-bit LEB128 at ``offset``; return ``(value, next offset)``."""
    return _decode_unsigned(data, offset, 32, len(data))


def decode_u64(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode an unsigned 64-bit LEB128 at ``offset``; return ``(value, next offset)``."""
    return _decode_unsigned(data, offset, 64, len(data))


def decode_s32(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a signed 32-bit LEB128 at ``offset``; return ``(value, next offset)``."""
    return _decode_signed(data, offset, 32, len(data))


def decode_s33(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a signed 33-bit LEB128 (block types) at ``offset``; return ``(value, next)``."""
    return _decode_signed(data, offset, 33, len(data))


def decode_s64(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a signed 64-bit LEB128 at ``offset``; return ``(value, next offset)``."""
    return _decode_signed(data, offset, 64, len(data))


# --------------------------------------------------------------------------------------------
# Operator table. Immediate codes: b block type, u u32, i s32, I s64, f 4 raw bytes, F 8 raw
# bytes, m memarg (align, offset), T br_table, S select result types, h heap type byte.

_OPCODES: Final[dict[int, tuple[str, str]]] = {
    0x00: ("unreachable", ""),
    0x01: ("nop", ""),
    0x02: ("block", "b"),
    0x03: ("loop", "b"),
    0x04: ("if", "b"),
    0x05: ("else", ""),
    0x06: ("try", "b"),
    0x07: ("catch", "u"),
    0x08: ("throw", "u"),
    0x09: ("rethrow", "u"),
    0x0B: ("end", ""),
    0x0C: ("br", "u"),
    0x0D: ("br_if", "u"),
    0x0E: ("br_table", "T"),
    0x0F: ("return", ""),
    0x10: ("call", "u"),
    0x11: ("call_indirect", "uu"),
    0x12: ("return_call", "u"),
    0x13: ("return_call_indirect", "uu"),
    0x18: ("delegate", "u"),
    0x19: ("catch_all", ""),
    0x1A: ("drop", ""),
    0x1B: ("select", ""),
    0x1C: ("select", "S"),
    0x20: ("local.get", "u"),
    0x21: ("local.set", "u"),
    0x22: ("local.tee", "u"),
    0x23: ("global.get", "u"),
    0x24: ("global.set", "u"),
    0x25: ("table.get", "u"),
    0x26: ("table.set", "u"),
    0x3F: ("memory.size", "u"),
    0x40: ("memory.grow", "u"),
    0x41: ("i32.const", "i"),
    0x42: ("i64.const", "I"),
    0x43: ("f32.const", "f"),
    0x44: ("f64.const", "F"),
    0xD0: ("ref.null", "h"),
    0xD1: ("ref.is_null", ""),
    0xD2: ("ref.func", "u"),
}

_MEMORY_OPS: Final = [
    "i32.load",
    "i64.load",
    "f32.load",
    "f64.load",
    "i32.load8_s",
    "i32.load8_u",
    "i32.load16_s",
    "i32.load16_u",
    "i64.load8_s",
    "i64.load8_u",
    "i64.load16_s",
    "i64.load16_u",
    "i64.load32_s",
    "i64.load32_u",
    "i32.store",
    "i64.store",
    "f32.store",
    "f64.store",
    "i32.store8",
    "i32.store16",
    "i64.store8",
    "i64.store16",
    "i64.store32",
]
_NUMERIC_OPS: Final = [
    "i32.eqz",
    "i32.eq",
    "i32.ne",
    "i32.lt_s",
    "i32.lt_u",
    "i32.gt_s",
    "i32.gt_u",
    "i32.le_s",
    "i32.le_u",
    "i32.ge_s",
    "i32.ge_u",
    "i64.eqz",
    "i64.eq",
    "i64.ne",
    "i64.lt_s",
    "i64.lt_u",
    "i64.gt_s",
    "i64.gt_u",
    "i64.le_s",
    "i64.le_u",
    "i64.ge_s",
    "i64.ge_u",
    "f32.eq",
    "f32.ne",
    "f32.lt",
    "f32.gt",
    "f32.le",
    "f32.ge",
    "f64.eq",
    "f64.ne",
    "f64.lt",
    "f64.gt",
    "f64.le",
    "f64.ge",
    "i32.clz",
    "i32.ctz",
    "i32.popcnt",
    "i32.add",
    "i32.sub",
    "i32.mul",
    "i32.div_s",
    "i32.div_u",
    "i32.rem_s",
    "i32.rem_u",
    "i32.and",
    "i32.or",
    "i32.xor",
    "i32.shl",
    "i32.shr_s",
    "i32.shr_u",
    "i32.rotl",
    "i32.rotr",
    "i64.clz",
    "i64.ctz",
    "i64.popcnt",
    "i64.add",
    "i64.sub",
    "i64.mul",
    "i64.div_s",
    "i64.div_u",
    "i64.rem_s",
    "i64.rem_u",
    "i64.and",
    "i64.or",
    "i64.xor",
    "i64.shl",
    "i64.shr_s",
    "i64.shr_u",
    "i64.rotl",
    "i64.rotr",
    "f32.abs",
    "f32.neg",
    "f32.ceil",
    "f32.floor",
    "f32.trunc",
    "f32.nearest",
    "f32.sqrt",
    "f32.add",
    "f32.sub",
    "f32.mul",
    "f32.div",
    "f32.min",
    "f32.max",
    "f32.copysign",
    "f64.abs",
    "f64.neg",
    "f64.ceil",
    "f64.floor",
    "f64.trunc",
    "f64.nearest",
    "f64.sqrt",
    "f64.add",
    "f64.sub",
    "f64.mul",
    "f64.div",
    "f64.min",
    "f64.max",
    "f64.copysign",
    "i32.wrap_i64",
    "i32.trunc_f32_s",
    "i32.trunc_f32_u",
    "i32.trunc_f64_s",
    "i32.trunc_f64_u",
    "i64.extend_i32_s",
    "i64.extend_i32_u",
    "i64.trunc_f32_s",
    "i64.trunc_f32_u",
    "i64.trunc_f64_s",
    "i64.trunc_f64_u",
    "f32.convert_i32_s",
    "f32.convert_i32_u",
    "f32.convert_i64_s",
    "f32.convert_i64_u",
    "f32.demote_f64",
    "f64.convert_i32_s",
    "f64.convert_i32_u",
    "f64.convert_i64_s",
    "f64.convert_i64_u",
    "f64.promote_f32",
    "i32.reinterpret_f32",
    "i64.reinterpret_f64",
    "f32.reinterpret_i32",
    "f64.reinterpret_i64",
    "i32.extend8_s",
    "i32.extend16_s",
    "i64.extend8_s",
    "i64.extend16_s",
    "i64.extend32_s",
]
_OPCODES.update({0x28 + i: (name, "m") for i, name in enumerate(_MEMORY_OPS)})
_OPCODES.update({0x45 + i: (name, "") for i, name in enumerate(_NUMERIC_OPS)})

_FC_OPCODES: Final[dict[int, tuple[str, str]]] = {
    0: ("i32.trunc_sat_f32_s", ""),
    1: ("i32.trunc_sat_f32_u", ""),
    2: ("i32.trunc_sat_f64_s", ""),
    3: ("i32.trunc_sat_f64_u", ""),
    4: ("i64.trunc_sat_f32_s", ""),
    5: ("i64.trunc_sat_f32_u", ""),
    6: ("i64.trunc_sat_f64_s", ""),
    7: ("i64.trunc_sat_f64_u", ""),
    8: ("memory.init", "uu"),
    9: ("data.drop", "u"),
    10: ("memory.copy", "uu"),
    11: ("memory.fill", "u"),
    12: ("table.init", "uu"),
    13: ("elem.drop", "u"),
    14: ("table.copy", "uu"),
    15: ("table.grow", "u"),
    16: ("table.size", "u"),
    17: ("table.fill", "u"),
}

_UNSUPPORTED_PREFIXES: Final = {
    0xFB: "GC",
    0xFD: "SIMD",
    0xFE: "threads",
}

_OPENERS: Final = frozenset({"block", "loop", "if", "try"})
_CLOSERS: Final = frozenset({"end", "delegate"})  # delegate closes its try block

# Section ids and their required order (the tag section, id 13, sits between memory and global).
_SECTION_ORDER: Final = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11}
_SECTION_ORDER.update({10: 12, 11: 13})
_SECTION_NAMES: Final = {
    0: "custom",
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "datacount",
    13: "tag",
}

_NO_IMMEDIATES: Final[dict[str, Instruction]] = {}


def _plain(name: str) -> Instruction:
    # Operators without immediates are shared immutable values (most of a body).
    inst = _NO_IMMEDIATES.get(name)
    if inst is None:
        inst = _NO_IMMEDIATES[name] = Instruction(name)
    return inst


class _Budget:
    """Work left before decoding stops (shared by every reader of one module)."""

    __slots__ = ("body_operators", "items", "max_body_operators", "max_items")

    def __init__(self, max_body_operators: int | None, max_items: int | None) -> None:
        self.max_body_operators = max_body_operators
        self.max_items = max_items
        self.body_operators = max_body_operators
        self.items = max_items

    def take_items(self, n: int) -> None:
        if self.items is not None:
            self.items -= n
            if self.items < 0:
                raise WasmDecodeError(
                    f"module holds more than {self.max_items} items "
                    "(vector entries and constant-expression operators)"
                )

    def take_items_one(self) -> None:
        self.take_items(1)

    def take_body_operator(self) -> None:
        if self.body_operators is not None:
            self.body_operators -= 1
            if self.body_operators < 0:
                raise OperatorLimitExceeded(self.max_body_operators or 0)


class _Reader:
    """A cursor over ``data[pos:end]``; every read is bounds-checked against ``end``."""

    __slots__ = ("budget", "data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int, budget: _Budget) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.budget = budget

    def sub(self, size: int) -> _Reader:
        """A reader over the next ``size`` bytes (a section or body), skipped in this one."""
        if size > self.end - self.pos:
            raise self.fail(f"size {size} exceeds the enclosing input")
        sub = _Reader(self.data, self.pos, self.pos + size, self.budget)
        self.pos += size
        return sub

    def at_end(self) -> bool:
        return self.pos >= self.end

    def fail(self, what: str) -> WasmDecodeError:
        return WasmDecodeError(f"{what} at offset {self.pos}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end of input")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def raw(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.fail(f"unexpected end of input (need {n} bytes)")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    # LEB128 reads are bounded by ``end``: an integer may not run past its section or body.
    def u32(self) -> int:
        value, self.pos = _decode_unsigned(self.data, self.pos, 32, self.end)
        return value

    def s32(self) -> int:
        value, self.pos = _decode_signed(self.data, self.pos, 32, self.end)
        return value

    def s33(self) -> int:
        value, self.pos = _decode_signed(self.data, self.pos, 33, self.end)
        return value

    def s64(self) -> int:
        value, self.pos = _decode_signed(self.data, self.pos, 64, self.end)
        return value

    def count(self, what: str, min_item_bytes: int = 1, *, raw: bool = False) -> int:
        """A vector length, refused if the remaining bytes cannot possibly hold it.

        Entries of non-``raw`` vectors are charged to the item budget up front.
        """
        start = self.pos
        n = self.u32()
        if n * min_item_bytes > self.end - self.pos:
            raise WasmDecodeError(f"{what} count {n} exceeds remaining bytes at offset {start}")
        if not raw:
            self.budget.take_items(n)
        return n

    def name(self) -> str:
        n = self.count("name length", raw=True)
        start = self.pos
        raw = self.raw(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WasmDecodeError(f"name is not valid UTF-8 at offset {start}") from None

    def value_type(self) -> int:
        t = self.byte()
        if t not in _VALUE_TYPES:
            self.pos -= 1
            raise self.fail(f"unsupported value type 0x{t:02x}")
        return t

    def ref_type(self) -> int:
        t = self.byte()
        if t not in _REF_TYPES:
            self.pos -= 1
            raise self.fail(f"unsupported reference type 0x{t:02x}")
        return t

    def limits(self) -> Limits:
        flags = self.byte()
        if flags == 0x00:
            return Limits(self.u32(), None)
        if flags == 0x01:
            minimum = self.u32()
            return Limits(minimum, self.u32())
        self.pos -= 1
        raise self.fail(f"unsupported limits flags 0x{flags:02x} (shared or 64-bit)")

    def global_type(self) -> GlobalType:
        value_type = self.value_type()
        mut = self.byte()
        if mut not in (0, 1):
            self.pos -= 1
            raise self.fail(f"invalid global mutability 0x{mut:02x}")
        return GlobalType(value_type, mut == 1)

    def tag_type(self) -> TagType:
        attribute = self.byte()
        if attribute != 0:
            self.pos -= 1
            raise self.fail(f"unsupported tag attribute 0x{attribute:02x}")
        return TagType(self.u32())

    def instruction(self) -> Instruction:
        at = self.pos
        opcode = self.byte()
        if opcode == 0xFC:
            sub = self.u32()
            entry = _FC_OPCODES.get(sub)
            if entry is None:
                raise WasmDecodeError(f"unknown opcode 0xfc {sub} at offset {at}")
        else:
            found = _OPCODES.get(opcode)
            if found is None:
                prefix = _UNSUPPORTED_PREFIXES.get(opcode)
                if prefix is not None:
                    raise WasmDecodeError(
                        f"unsupported {prefix} opcode prefix 0x{opcode:02x} at offset {at}"
                    )
                raise WasmDecodeError(f"unknown opcode 0x{opcode:02x} at offset {at}")
            entry = found
        name, codes = entry
        if not codes:
            return _plain(name)
        imms: list[Immediate] = []
        for code in codes:
            if code == "u":
                imms.append(self.u32())
            elif code == "i":
                imms.append(self.s32())
            elif code == "I":
                imms.append(self.s64())
            elif code == "b":
                imms.append(self.block_type())
            elif code == "m":
                align = self.u32()
                if align >= 0x40:
                    raise WasmDecodeError(
                        f"unsupported memarg flags {align} (multi-memory) at offset {at}"
                    )
                imms.append(align)
                imms.append(self.u32())
            elif code == "f":
                imms.append(int.from_bytes(self.raw(4), "little"))
            elif code == "F":
                imms.append(int.from_bytes(self.raw(8), "little"))
            elif code == "T":
                n = self.count("br_table label")
                imms.append(tuple(self.u32() for _ in range(n)))
                imms.append(self.u32())
            elif code == "S":
                n = self.count("select type")
                imms.append(tuple(self.value_type() for _ in range(n)))
            else:  # "h": heap type of ref.null
                imms.append(self.ref_type())
        return Instruction(name, tuple(imms))

    def block_type(self) -> int:
        # blocktype ::= 0x40 | valtype (one byte each) | s33 type index >= 0 (spec §5.4.1).
        at = self.pos
        if at < self.end:
            first = self.data[at]
            if first == 0x40 or first in _VALUE_TYPES:
                self.pos += 1
                return first - 0x80  # the byte read as s33: 0x40 -> -64, 0x7f -> -1, ...
        value = self.s33()
        if value < 0:
            raise WasmDecodeError(f"unsupported block type {value} at offset {at}")
        return value

    def expression(self, *, body: bool = False) -> tuple[Instruction, ...]:
        """Operators up to and including the ``end`` that closes the expression.

        Each operator is charged to the body-operator budget (function bodies) or to the item
        budget (constant expressions) before it is decoded.
        """
        out: list[Instruction] = []
        depth = 1
        charge = self.budget.take_body_operator if body else self.budget.take_items_one
        while True:
            charge()
            inst = self.instruction()
            out.append(inst)
            name = inst.name
            if name in _OPENERS:
                depth += 1
            elif name in _CLOSERS:
                depth -= 1
                if depth == 0:
                    if name == "delegate":
                        raise self.fail("delegate outside a try block")
                    return tuple(out)


# --------------------------------------------------------------------------------------------
# Sections.


def _decode_module(data: bytes, budget: _Budget) -> WasmModule:
    if len(data) < 8:
        raise WasmDecodeError("truncated module header (need 8 bytes)")
    if data[:4] != WASM_MAGIC:
        raise WasmDecodeError("bad magic number (not a WebAssembly module)")
    if data[4:8] != WASM_VERSION:
        raise WasmDecodeError(f"unsupported binary version {data[4:8].hex()} (need 01000000)")

    module = WasmModule()
    customs: list[CustomSection] = []
    r = _Reader(data, 8, len(data), budget)
    last_order = 0
    while not r.at_end():
        section_at = r.pos
        section_id = r.byte()
        size = r.u32()
        if size > r.end - r.pos:
            raise WasmDecodeError(f"section size {size} exceeds input at offset {section_at}")
        body = r.sub(size)
        if section_id == 0:
            name = body.name()
            customs.append(CustomSection(name, body.raw(body.end - body.pos)))
            continue
        order = _SECTION_ORDER.get(section_id)
        if order is None:
            raise WasmDecodeError(f"unknown section id {section_id} at offset {section_at}")
        section_name = _SECTION_NAMES[section_id]
        if order <= last_order:
            raise WasmDecodeError(
                f"{section_name} section duplicated or out of order at offset {section_at}"
            )
        last_order = order
        module = _decode_section(section_id, body, module)
        if not body.at_end():
            raise body.fail(f"{section_name} section has trailing bytes")

    if len(module.functions) != len(module.code):
        raise WasmDecodeError(
            f"function section declares {len(module.functions)} functions, "
            f"code section has {len(module.code)}"
        )
    if module.data_count is not None and module.data_count != len(module.data):
        raise WasmDecodeError(
            f"datacount {module.data_count} does not match {len(module.data)} data segments"
        )
    return replace(module, custom_sections=tuple(customs))


def _decode_section(section_id: int, r: _Reader, module: WasmModule) -> WasmModule:
    """Decode one non-custom section into a copy of ``module`` (ids are already ordered)."""
    if section_id == 1:
        return replace(module, types=_type_section(r))
    if section_id == 2:
        return replace(module, imports=_import_section(r))
    if section_id == 3:
        return replace(module, functions=tuple(r.u32() for _ in range(r.count("function"))))
    if section_id == 4:
        return replace(module, tables=_table_section(r))
    if section_id == 5:
        memories = tuple(MemoryType(r.limits()) for _ in range(r.count("memory", 2)))
        return replace(module, memories=memories)
    if section_id == 13:
        return replace(module, tags=tuple(r.tag_type() for _ in range(r.count("tag", 2))))
    if section_id == 6:
        return replace(module, globals=_global_section(r))
    if section_id == 7:
        return replace(module, exports=_export_section(r))
    if section_id == 8:
        return replace(module, start=r.u32())
    if section_id == 9:
        return replace(module, elements=_element_section(r))
    if section_id == 12:
        return replace(module, data_count=r.u32())
    if section_id == 10:
        return replace(module, code=_code_section(r))
    return replace(module, data=_data_section(r))


def _type_section(r: _Reader) -> tuple[FuncType, ...]:
    out = []
    for _ in range(r.count("type")):
        form = r.byte()
        if form != 0x60:
            r.pos -= 1
            raise r.fail(f"unsupported type form 0x{form:02x} (only func types)")
        params = tuple(r.value_type() for _ in range(r.count("param")))
        results = tuple(r.value_type() for _ in range(r.count("result")))
        out.append(FuncType(params, results))
    return tuple(out)


def _import_section(r: _Reader) -> tuple[Import, ...]:
    out = []
    for _ in range(r.count("import", 3)):
        module = r.name()
        name = r.name()
        kind_byte = r.byte()
        desc: ImportDesc
        if kind_byte == ExternKind.FUNC:
            desc = r.u32()
        elif kind_byte == ExternKind.TABLE:
            element_type = r.ref_type()
            desc = TableType(element_type, r.limits())
        elif kind_byte == ExternKind.MEMORY:
            desc = MemoryType(r.limits())
        elif kind_byte == ExternKind.GLOBAL:
            desc = r.global_type()
        elif kind_byte == ExternKind.TAG:
            desc = r.tag_type()
        else:
            r.pos -= 1
            raise r.fail(f"unknown import kind 0x{kind_byte:02x}")
        out.append(Import(module, name, ExternKind(kind_byte), desc))
    return tuple(out)


def _table_section(r: _Reader) -> tuple[TableType, ...]:
    out = []
    for _ in range(r.count("table", 2)):
        element_type = r.ref_type()
        out.append(TableType(element_type, r.limits()))
    return tuple(out)


def _global_section(r: _Reader) -> tuple[Global, ...]:
    out = []
    for _ in range(r.count("global", 3)):
        global_type = r.global_type()
        out.append(Global(global_type, r.expression()))
    return tuple(out)


def _export_section(r: _Reader) -> tuple[Export, ...]:
    out = []
    for _ in range(r.count("export", 3)):
        name = r.name()
        kind_byte = r.byte()
        if kind_byte > ExternKind.TAG:
            r.pos -= 1
            raise r.fail(f"unknown export kind 0x{kind_byte:02x}")
        out.append(Export(name, ExternKind(kind_byte), r.u32()))
    return tuple(out)


def _function_refs(r: _Reader) -> tuple[tuple[Instruction, ...], ...]:
    indices = [r.u32() for _ in range(r.count("element function index"))]
    return tuple((Instruction("ref.func", (i,)), _plain("end")) for i in indices)


def _element_kind(r: _Reader) -> int:
    kind = r.byte()
    if kind != 0x00:
        r.pos -= 1
        raise r.fail(f"unsupported element kind 0x{kind:02x}")
    return FUNCREF


def _element_section(r: _Reader) -> tuple[ElementSegment, ...]:
    out = []
    for _ in range(r.count("element segment")):
        at = r.pos
        flags = r.u32()
        if flags > 7:
            raise WasmDecodeError(f"unsupported element segment flags {flags} at offset {at}")
        passive_or_declarative = bool(flags & 0b001)
        explicit_table = bool(flags & 0b010)
        uses_expressions = bool(flags & 0b100)
        mode = SegmentMode.ACTIVE
        table_index = 0
        offset: tuple[Instruction, ...] | None = None
        if passive_or_declarative:
            mode = SegmentMode.DECLARATIVE if explicit_table else SegmentMode.PASSIVE
        else:
            if explicit_table:
                table_index = r.u32()
            offset = r.expression()
        if flags & 0b011:  # an explicit element kind / reference type is present
            element_type = r.ref_type() if uses_expressions else _element_kind(r)
        else:
            element_type = FUNCREF
        if uses_expressions:
            items = tuple(r.expression() for _ in range(r.count("element expression")))
        else:
            items = _function_refs(r)
        out.append(ElementSegment(mode, table_index, offset, element_type, items))
    return tuple(out)


def _code_section(r: _Reader) -> tuple[FunctionBody, ...]:
    out = []
    for index in range(r.count("code entry")):
        size = r.u32()
        if size > r.end - r.pos:
            raise r.fail(f"function body {index} size {size} exceeds section")
        body = r.sub(size)
        local_groups = []
        for _ in range(body.count("local group", 2)):
            n = body.u32()
            local_groups.append((n, body.value_type()))
        instructions = body.expression(body=True)
        if not body.at_end():
            raise body.fail(f"function body {index} has operators after its final end")
        out.append(FunctionBody(tuple(local_groups), instructions))
    return tuple(out)


def _data_section(r: _Reader) -> tuple[DataSegment, ...]:
    out = []
    for _ in range(r.count("data segment")):
        at = r.pos
        flags = r.u32()
        if flags == 0:
            offset = r.expression()
            out.append(
                DataSegment(SegmentMode.ACTIVE, 0, offset, r.raw(r.count("data byte", raw=True)))
            )
        elif flags == 1:
            out.append(
                DataSegment(SegmentMode.PASSIVE, 0, None, r.raw(r.count("data byte", raw=True)))
            )
        elif flags == 2:
            memory_index = r.u32()
            offset = r.expression()
            data = r.raw(r.count("data byte", raw=True))
            out.append(DataSegment(SegmentMode.ACTIVE, memory_index, offset, data))
        else:
            raise WasmDecodeError(f"unsupported data segment flags {flags} at offset {at}")
    return tuple(out)
