"""The fail-closed WASM decoder behind ASPEC (spec 30 §5.4: "must fail closed").

Hypothesis drives random and mutated inputs through the decoder: the only exception allowed out is
:class:`WasmDecodeError`, and bounded inputs finish well inside the deadline. Hand-built modules pin
each structural error; the WAT fixtures decode with the right counts.
"""

from __future__ import annotations

import contextlib
import struct
from datetime import timedelta
from functools import cache
from pathlib import Path

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidenceos.core import wasm_binary
from evidenceos.core.aspec import CLAIM_V1, verify_module
from evidenceos.core.wasm_binary import (
    F32,
    FUNCREF,
    I32,
    I64,
    ExternKind,
    FuncType,
    GlobalType,
    Instruction,
    Limits,
    MemoryType,
    OperatorLimitExceeded,
    SegmentMode,
    TableType,
    TagType,
    WasmDecodeError,
    WasmModule,
    decode_s32,
    decode_s33,
    decode_s64,
    decode_u32,
    decode_u64,
)
from evidenceos.errors import FailedPrecondition

WAT_DIR = Path(__file__).parent / "wat"
FIXTURES = sorted(p.stem for p in WAT_DIR.glob("*.wat"))
HEADER = b"\x00asm\x01\x00\x00\x00"


@cache
def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((WAT_DIR / f"{name}.wat").read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------
# Reference LEB128 encoders (test-only) and a tiny module builder


def enc_u(value: int, pad_to: int = 0) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    while len(out) < pad_to:  # non-minimal but valid: continuation bytes carrying zeros
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def enc_s(value: int, pad_to: int = 0) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            break
    fill = 0x7F if out[-1] & 0x40 else 0x00
    while len(out) < pad_to:
        out[-1] |= 0x80
        out.append(fill)
    return bytes(out)


def vec(items: list[bytes]) -> bytes:
    return enc_u(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    raw = text.encode()
    return enc_u(len(raw)) + raw


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + enc_u(len(payload)) + payload


TYPE_VOID = section(1, vec([b"\x60\x00\x00"]))
FUNC_ONE = section(3, vec([b"\x00"]))


def code(*bodies: bytes) -> bytes:
    """A code section of bodies given as raw operator bytes (no locals)."""
    entries = [enc_u(len(b) + 1) + b"\x00" + b for b in bodies]
    return section(10, vec(entries))


def module(*sections: bytes) -> bytes:
    return HEADER + b"".join(sections)


def one_body(operators: bytes) -> bytes:
    return module(TYPE_VOID, FUNC_ONE, code(operators))


def decode_error(data: bytes) -> str:
    with pytest.raises(WasmDecodeError) as info:
        WasmModule.from_bytes(data)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# LEB128


DECODERS = {
    "u32": (decode_u32, enc_u, 0, 2**32 - 1, 5),
    "u64": (decode_u64, enc_u, 0, 2**64 - 1, 10),
    "s32": (decode_s32, enc_s, -(2**31), 2**31 - 1, 5),
    "s33": (decode_s33, enc_s, -(2**32), 2**32 - 1, 5),
    "s64": (decode_s64, enc_s, -(2**63), 2**63 - 1, 10),
}


@pytest.mark.parametrize("kind", DECODERS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_leb128_round_trips(kind: str, data: st.DataObject) -> None:
    decode, encode, lo, hi, max_len = DECODERS[kind]
    value = data.draw(st.integers(min_value=lo, max_value=hi))
    prefix = data.draw(st.binary(max_size=3))
    suffix = data.draw(st.binary(max_size=3))
    minimal = encode(value)
    assert len(minimal) <= max_len
    assert decode(prefix + minimal + suffix, len(prefix)) == (value, len(prefix) + len(minimal))
    padded = encode(value, max_len)
    assert len(padded) == max_len
    assert decode(padded) == (value, max_len)


@pytest.mark.parametrize("kind", DECODERS)
def test_leb128_limits(kind: str) -> None:
    decode, encode, lo, hi, max_len = DECODERS[kind]
    with pytest.raises(WasmDecodeError, match="out of range"):
        decode(encode(hi + 1, max_len))
    if lo < 0:
        with pytest.raises(WasmDecodeError, match="out of range"):
            decode(encode(lo - 1, max_len))
    with pytest.raises(WasmDecodeError, match="too long"):
        decode(b"\x80" * max_len + b"\x00")
    with pytest.raises(WasmDecodeError, match="unexpected end"):
        decode(b"\x80\x80")
    with pytest.raises(WasmDecodeError, match="unexpected end"):
        decode(b"")


def test_leb128_known_encodings() -> None:
    assert decode_u32(b"\xe5\x8e\x26") == (624485, 3)
    assert decode_s32(b"\xc0\xbb\x78") == (-123456, 3)
    assert decode_s32(b"\x7f") == (-1, 1)
    assert decode_s33(b"\x40") == (-64, 1)  # the empty block type
    assert decode_u32(b"\xff\xff\xff\xff\x0f") == (2**32 - 1, 5)
    assert decode_s64(b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f") == (-(2**63), 10)


# ---------------------------------------------------------------------------------------------
# Fixtures decode with the right counts


def test_error_is_a_domain_error() -> None:
    assert issubclass(WasmDecodeError, FailedPrecondition)


def test_example_guest_counts() -> None:
    m = WasmModule.from_bytes(wasm("example_guest"))
    assert m.types == (FuncType((I32, I32), (I32,)), FuncType((), ()))
    assert [(i.module, i.name, i.kind, i.desc) for i in m.imports] == [
        ("env", "oracle_query", ExternKind.FUNC, 0),
        ("env", "emit_structured_claim", ExternKind.FUNC, 0),
    ]
    assert m.imported_function_count == 2
    assert m.functions == (1,)
    assert m.memories == (MemoryType(Limits(1, None)),)
    assert [(e.name, e.kind, e.index) for e in m.exports] == [
        ("memory", ExternKind.MEMORY, 0),
        ("run", ExternKind.FUNC, 2),
    ]
    assert len(m.data) == 1
    assert m.data[0].data == b"\x01\x01\x01\x01"
    assert m.data[0].mode is SegmentMode.ACTIVE
    assert m.data[0].offset == (Instruction("i32.const", (0,)), Instruction("end"))
    assert [i.name for i in m.code[0].instructions] == [
        "i32.const",
        "i32.const",
        "i32.const",
        "call",
        "i32.store8",
        "i32.const",
        "i32.const",
        "call",
        "drop",
        "end",
    ]
    assert m.code[0].instructions[4] == Instruction("i32.store8", (0, 0))
    assert [c.name for c in m.custom_sections] == ["name"]


def test_all_sections_counts() -> None:
    m = WasmModule.from_bytes(wasm("all_sections"))
    assert len(m.types) >= 2
    assert [i.kind for i in m.imports] == [ExternKind.FUNC, ExternKind.GLOBAL]
    assert m.imports[1].desc == GlobalType(I32, False)
    assert m.imported_function_count == 1
    assert m.tables == (TableType(FUNCREF, Limits(2, 4)),)
    assert m.memories == (MemoryType(Limits(1, 2)),)
    assert len(m.tags) == 1
    assert isinstance(m.tags[0], TagType)
    assert [g.type for g in m.globals] == [GlobalType(I64, True), GlobalType(F32, False)]
    assert m.globals[0].init == (Instruction("i64.const", (-5,)), Instruction("end"))
    assert m.globals[1].init[0] == Instruction(
        "f32.const", (struct.unpack("<I", struct.pack("<f", 1.5))[0],)
    )
    assert m.start == 1
    assert [e.mode for e in m.elements] == [
        SegmentMode.ACTIVE,
        SegmentMode.PASSIVE,
        SegmentMode.DECLARATIVE,
    ]
    assert m.elements[0].items == ((Instruction("ref.func", (2,)), Instruction("end")),)
    assert m.data_count == 2
    assert [d.mode for d in m.data] == [SegmentMode.ACTIVE, SegmentMode.PASSIVE]
    assert len(m.functions) == len(m.code) == 2
    run = m.code[1]
    assert run.locals == ((1, I32), (1, I64), (1, F32))
    names = [i.name for i in run.instructions]
    for expected in (
        "select",
        "block",
        "call_indirect",
        "memory.init",
        "data.drop",
        "i64.extend32_s",
        "ref.is_null",
        "ref.func",
        "f64.const",
    ):
        assert expected in names
    select = next(i for i in run.instructions if i.name == "select")
    assert select.immediates == ((I32,),)
    block = next(i for i in run.instructions if i.name == "block")
    assert block.immediates == (-1,)  # block type i32 (0x7f as s33)
    big = next(i for i in run.instructions if i.name == "i64.const")
    assert big.immediates == (2**63 - 1,)
    f64 = next(i for i in run.instructions if i.name == "f64.const")
    assert f64.immediates == (1 << 63,)  # -0.0 keeps its bit pattern


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if f != "simd"])
def test_every_fixture_decodes(fixture: str) -> None:
    m = WasmModule.from_bytes(wasm(fixture))
    assert len(m.code) == len(m.functions)
    for body in m.code:
        assert body.instructions[-1] == Instruction("end")


def test_br_table_and_constants() -> None:
    ops = (
        b"\x02\x40"  # block
        + b"\x41\x00"  # i32.const 0
        + b"\x0e\x02\x00\x00\x00"  # br_table [0 0] 0
        + b"\x0b"  # end
        + b"\x41"
        + enc_s(-(2**31))
        + b"\x1a"  # i32.const min; drop
        + b"\x43\x00\x00\xc0\x7f\x1a"  # f32.const nan; drop
        + b"\x0b"
    )
    m = WasmModule.from_bytes(one_body(ops))
    inst = m.code[0].instructions
    assert inst[2] == Instruction("br_table", ((0, 0), 0))
    assert inst[4] == Instruction("i32.const", (-(2**31),))
    assert inst[6] == Instruction("f32.const", (0x7FC00000,))


# ---------------------------------------------------------------------------------------------
# Structural errors, one mutation each


@pytest.mark.parametrize(
    ("desc", "data", "message"),
    [
        ("empty", b"", "truncated module header"),
        ("bad magic", b"\x00asn\x01\x00\x00\x00", "bad magic number"),
        ("component version", b"\x00asm\x0d\x00\x01\x00", "unsupported binary version"),
        ("unknown section", module(section(14, b"")), "unknown section id 14"),
        ("section past input", HEADER + b"\x01\x05\x00", "section size 5 exceeds input"),
        ("section trailing bytes", module(section(1, b"\x00\x00")), "type section has trailing"),
        (
            "out of order",
            module(FUNC_ONE, TYPE_VOID),
            "type section duplicated or out of order",
        ),
        ("duplicate", module(TYPE_VOID, TYPE_VOID), "type section duplicated or out of order"),
        ("functions without code", module(TYPE_VOID, FUNC_ONE), "declares 1 functions"),
        (
            "datacount mismatch",
            module(section(12, b"\x01")),
            "datacount 1 does not match 0 data segments",
        ),
        ("huge vector", module(section(1, enc_u(2**32 - 1))), "count 4294967295 exceeds"),
        ("gc type form", module(section(1, vec([b"\x5f\x00"]))), "unsupported type form 0x5f"),
        (
            "bad value type",
            module(section(1, vec([b"\x60\x01\x40\x00"]))),
            "unsupported value type 0x40",
        ),
        (
            "invalid utf-8 name",
            module(section(2, vec([name("env")[:1] + b"\xff\xfe\xfd" + name("x") + b"\x00\x00"]))),
            "not valid UTF-8",
        ),
        (
            "shared memory limits",
            module(section(5, vec([b"\x03\x01\x01"]))),
            "unsupported limits flags 0x03",
        ),
        (
            "unknown import kind",
            module(section(2, vec([name("a") + name("b") + b"\x05\x00"]))),
            "unknown import kind 0x05",
        ),
        ("unknown opcode", one_body(b"\x27\x0b"), "unknown opcode 0x27"),
        ("unknown 0xfc opcode", one_body(b"\xfc\x12\x0b"), "unknown opcode 0xfc 18"),
        ("simd", one_body(b"\xfd\x0c" + b"\x00" * 16 + b"\x1a\x0b"), "SIMD opcode prefix 0xfd"),
        ("threads", one_body(b"\xfe\x03\x00\x0b"), "threads opcode prefix 0xfe"),
        ("gc", one_body(b"\xfb\x00\x0b"), "GC opcode prefix 0xfb"),
        ("new exceptions", one_body(b"\x0a\x0b"), "unknown opcode 0x0a"),
        ("body without end", one_body(b"\x01"), "unexpected end of input"),
        ("ops after end", one_body(b"\x0b\x01"), "operators after its final end"),
        ("delegate at top", one_body(b"\x18\x00\x0b"), "delegate outside a try block"),
        ("multi-memory memarg", one_body(b"\x41\x00\x28\x40\x00\x00\x1a\x0b"), "multi-memory"),
        ("bad block type", one_body(b"\x02\x60\x0b\x0b"), "unsupported block type"),
        ("bad heap type", one_body(b"\xd0\x63\x1a\x0b"), "unsupported reference type 0x63"),
        (
            "body larger than section",
            module(TYPE_VOID, FUNC_ONE, section(10, b"\x01\x09\x00")),
            "exceeds section",
        ),
        (
            "bad element flags",
            module(section(9, vec([b"\x08"]))),
            "unsupported element segment flags 8",
        ),
        ("bad data flags", module(section(11, vec([b"\x03"]))), "unsupported data segment flags 3"),
        (
            "bad export kind",
            module(section(7, vec([name("x") + b"\x05\x00"]))),
            "unknown export kind",
        ),
        ("bad global mutability", module(section(6, vec([b"\x7f\x02\x41\x00\x0b"]))), "mutability"),
        ("bad tag attribute", module(section(13, vec([b"\x01\x00"]))), "unsupported tag attribute"),
        (
            "bad element kind",
            module(section(9, vec([b"\x01\x01\x00"]))),
            "unsupported element kind",
        ),
        (
            "leb crossing its section",
            module(section(1, b"\x81"), section(0, name("x"))),
            "unexpected end of input",
        ),
    ],
)
def test_structural_errors(desc: str, data: bytes, message: str) -> None:
    assert message in decode_error(data), desc


def test_minimal_module_decodes() -> None:
    assert WasmModule.from_bytes(HEADER) == WasmModule()
    m = WasmModule.from_bytes(one_body(b"\x0b"))
    assert m.code[0].instructions == (Instruction("end"),)


# ---------------------------------------------------------------------------------------------
# Hypothesis: random and mutated input never escapes as anything but WasmDecodeError


def _decode_or_domain_error(data: bytes) -> None:
    with contextlib.suppress(WasmDecodeError):
        WasmModule.from_bytes(data)


SETTINGS = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _decode_or_domain_error(data)
    _decode_or_domain_error(HEADER + data)


@st.composite
def mutated_module(draw: st.DrawFn) -> bytes:
    original = bytearray(wasm(draw(st.sampled_from(FIXTURES))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(min_value=0, max_value=max(len(original) - 1, 0)))
        if kind == "flip" and original:
            original[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "truncate":
            del original[at:]
        elif kind == "insert":
            original[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del original[at : at + draw(st.integers(min_value=1, max_value=8))]
        else:
            original[at : at + 1] = bytes([draw(st.integers(min_value=0, max_value=255))])
    return bytes(original)


@SETTINGS
@given(mutated_module())
def test_mutated_modules(data: bytes) -> None:
    _decode_or_domain_error(data)
    report = verify_module(data, CLAIM_V1)  # ASPEC itself never raises either
    assert report.ok == (not report.reasons)


@settings(max_examples=100, deadline=timedelta(seconds=2))
@given(
    st.lists(
        st.sampled_from(
            [
                b"\x01",
                b"\x0b",
                b"\x02\x40",
                b"\x03\x40",
                b"\x04\x40",
                b"\x05",
                b"\x0c\x00",
                b"\x0d\x01",
                b"\x41\x7f",
                b"\x1a",
                b"\x0f",
                b"\x06\x40",
                b"\x18\x00",
                b"\x07\x00",
                b"\x0e\x01\x00\x00",
                b"\x10\x00",
            ]
        ),
        max_size=40,
    )
)
def test_random_operator_soup_through_aspec(parts: list[bytes]) -> None:
    data = one_body(b"".join(parts) + b"\x0b")
    _decode_or_domain_error(data)
    report = verify_module(data, CLAIM_V1)
    assert report.ok == (not report.reasons)


# ---------------------------------------------------------------------------------------------
# Names against wasmtime's WAT encoder: decoding what wat2wasm encoded gives back the same names,
# so our opcode table agrees with the standard text format byte for byte.


def _decoded_names(body: str) -> list[str]:
    data = bytes(wasmtime.wat2wasm(f"(module (memory 1) (table 1 funcref) (func {body}))"))
    return [i.name for i in WasmModule.from_bytes(data).code[0].instructions]


_STRUCTURED = frozenset({"else", "end", "catch_all"})


def test_opcode_names_round_trip_through_wat2wasm() -> None:
    plain = [n for n, codes in wasm_binary._OPCODES.values() if not codes and n not in _STRUCTURED]
    memory = [n for n, codes in wasm_binary._OPCODES.values() if codes == "m"]
    prefixed = [n for n, codes in wasm_binary._FC_OPCODES.values() if not codes]
    for names in (plain, memory, prefixed):
        assert _decoded_names(" ".join(names)) == [*names, "end"]
    with_index = ["data.drop 0", "elem.drop 0", "table.grow 0", "table.size 0", "table.fill 0"]
    with_index += ["memory.init 0", "memory.copy", "memory.fill", "table.init 0", "table.copy"]
    assert _decoded_names(" ".join(with_index)) == [
        *(text.split()[0] for text in with_index),
        "end",
    ]


# ---------------------------------------------------------------------------------------------
# Work budgets


def test_body_operator_budget_is_exact_across_bodies() -> None:
    data = module(
        TYPE_VOID, section(3, vec([b"\x00", b"\x00"])), code(b"\x01\x01\x0b", b"\x01\x0b")
    )  # 3 + 2 operators
    assert len(WasmModule.from_bytes(data, max_body_operators=5).code) == 2
    with pytest.raises(OperatorLimitExceeded) as info:
        WasmModule.from_bytes(data, max_body_operators=4)
    assert info.value.limit == 4
    assert isinstance(info.value, WasmDecodeError)


def test_item_budget_counts_vector_entries_and_constant_operators() -> None:
    globals_section = section(6, vec([b"\x7f\x00\x41\x05\x0b"] * 3))  # 3 globals, 2 ops each
    data = module(globals_section)
    assert len(WasmModule.from_bytes(data, max_items=9).globals) == 3
    with pytest.raises(WasmDecodeError, match="more than 8 items"):
        WasmModule.from_bytes(data, max_items=8)
    # Raw byte vectors (names, data payloads, custom sections) are not items.
    payload = module(section(11, vec([b"\x01" + enc_u(1000) + b"x" * 1000])))
    assert WasmModule.from_bytes(payload, max_items=1).data[0].data == b"x" * 1000
    # A huge declared vector fails before anything is decoded.
    with pytest.raises(WasmDecodeError, match="more than 10 items"):
        WasmModule.from_bytes(module(section(1, vec([b"\x60\x00\x00"] * 11))), max_items=10)
