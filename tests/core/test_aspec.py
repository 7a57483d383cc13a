"""ASPEC static verification: spec 30 §5.4 checks, §11 scenarios 28-33, §12 example guest.

Every predicate has an accepted and a rejected WAT fixture under ``tests/core/wat/`` and the
rejection asserts the exact reason list (reason strings follow the reference ``aspec.rs``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core import aspec
from evidenceos.core.aspec import (
    ABI_IMPORTS,
    CLAIM_V1,
    HEAVY_LANE,
    ORACLE_V1,
    AspecLane,
    AspecPolicy,
    AspecReport,
    FloatPolicy,
    compute_lane,
    policy_for_lane,
    summary,
    verify_module,
)
from evidenceos.core.decision import Lane
from evidenceos.errors import Internal, InvalidArgument

WAT_DIR = Path(__file__).parent / "wat"
MISSING_EMIT = "missing required import emit_structured_claim in env:: or kernel::"
EMIT = '(import "kernel" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))'


@cache
def wasm(name: str) -> bytes:
    """Compile ``tests/core/wat/<name>.wat`` (cached: fixtures are immutable)."""
    return bytes(wasmtime.wat2wasm((WAT_DIR / f"{name}.wat").read_text(encoding="utf-8")))


def reasons(name: str, policy: AspecPolicy = CLAIM_V1) -> list[str]:
    return list(verify_module(wasm(name), policy).reasons)


def accepted(name: str, policy: AspecPolicy = CLAIM_V1) -> AspecReport:
    report = verify_module(wasm(name), policy)
    assert report.ok, report.reasons
    assert report.reasons == ()
    return report


def run_body(body: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f'(module {EMIT} (func (export "run") {body}))'))


# ---------------------------------------------------------------------------------------------
# Policies


def test_policy_defaults_match_the_spec_table() -> None:
    assert CLAIM_V1.profile_name == "CLAIM_V1"
    assert CLAIM_V1.lane is AspecLane.HIGH_ASSURANCE
    assert CLAIM_V1.allowed_exports == ("run", "memory")
    assert CLAIM_V1.required_exports == ("run",)
    assert CLAIM_V1.allowed_imports == ABI_IMPORTS
    assert sorted(ABI_IMPORTS) == [
        ("env", "emit_structured_claim"),
        ("env", "oracle_bucket"),
        ("env", "oracle_query"),
        ("kernel", "emit_structured_claim"),
        ("kernel", "oracle_bucket"),
        ("kernel", "oracle_query"),
    ]
    assert (CLAIM_V1.max_data_segment_bytes, CLAIM_V1.max_entropy_ratio) == (65_536, 0.75)
    assert CLAIM_V1.max_cyclomatic_complexity == 50
    assert (CLAIM_V1.max_output_bytes, CLAIM_V1.max_loop_bound) == (4096, 1_000)
    assert CLAIM_V1.kolmogorov_proxy_cap == 50_000
    assert CLAIM_V1.float_policy is FloatPolicy.REJECT_ALL

    assert (
        replace(
            CLAIM_V1,
            lane=AspecLane.LOW_ASSURANCE,
            max_output_bytes=2048,
            max_loop_bound=10_000,
            float_policy=FloatPolicy.ALLOW,
        )
        == HEAVY_LANE
    )
    assert (
        replace(
            CLAIM_V1,
            profile_name="ORACLE_V1",
            allowed_exports=("oracle_query", "memory"),
            required_exports=("oracle_query", "memory"),
            allowed_imports=frozenset(),
            float_policy=FloatPolicy.ALLOW,
        )
        == ORACLE_V1
    )


def test_policy_for_lane() -> None:
    assert policy_for_lane("fast") is CLAIM_V1
    assert policy_for_lane(Lane.FAST) is CLAIM_V1
    assert policy_for_lane("heavy") is HEAVY_LANE
    assert policy_for_lane(Lane.HEAVY) is HEAVY_LANE
    assert policy_for_lane("canary") is CLAIM_V1
    with pytest.raises(InvalidArgument, match="unknown lane"):
        policy_for_lane("slow")


@pytest.mark.parametrize(
    "change",
    [
        {"max_data_segment_bytes": -1},
        {"max_output_bytes": 1.5},
        {"max_loop_bound": True},
        {"max_entropy_ratio": math.nan},
        {"max_entropy_ratio": math.inf},
    ],
)
def test_policy_rejects_invalid_limits(change: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        replace(CLAIM_V1, **change)  # type: ignore[arg-type]


def test_report_ok_must_agree_with_reasons() -> None:
    good = verify_module(wasm("nop_emit"), CLAIM_V1)
    with pytest.raises(Internal):
        replace(good, ok=False)
    with pytest.raises(Internal):
        replace(good, reasons=("x",))


# ---------------------------------------------------------------------------------------------
# Scenario 28 and the §12 example guest


def test_example_guest_passes_claim_v1_in_the_fast_lane() -> None:
    report = accepted("example_guest")
    assert report.lane is AspecLane.HIGH_ASSURANCE
    assert (report.imported_funcs, report.defined_funcs) == (2, 1)
    assert report.instruction_count == 10
    assert report.max_cyclomatic_complexity == 1
    assert report.data_segment_bytes == 4
    assert report.data_entropy_ratio == 0.0
    assert report.kolmogorov_proxy_bits == 2.0
    assert report.estimated_capacity_bits == 2
    assert report.heavy_lane_flag is False
    assert (report.total_loops, report.bounds_used, report.return_count) == (0, (), 0)
    assert compute_lane(report) is Lane.FAST
    assert summary(report) == "lane=HighAssurance;ok=true;imports=2;loops=0;kproxy=2.000"


def test_nop_guest_with_emit_import_passes() -> None:
    report = accepted("nop_emit")
    assert (report.instruction_count, report.kolmogorov_proxy_bits) == (2, 2.0)


def test_example_guest_with_evil_module_is_rejected() -> None:
    assert reasons("example_guest_evil") == [
        "banned import: evil::oracle_query",
        "banned import: evil::emit_structured_claim",
        MISSING_EMIT,
    ]


def test_pln_burn_module_is_rejected_in_high_assurance() -> None:
    assert len(wasm("burn")) == 38  # spec 30 §5.5 BURN_WASM_MODULE
    report = verify_module(wasm("burn"), CLAIM_V1)
    assert list(report.reasons) == ["loops are banned in HighAssurance", MISSING_EMIT]
    assert summary(report) == "lane=HighAssurance;ok=false;imports=0;loops=1;kproxy=2.000"


def test_verification_is_deterministic() -> None:
    assert verify_module(wasm("example_guest"), CLAIM_V1) == verify_module(
        wasm("example_guest"), CLAIM_V1
    )


# ---------------------------------------------------------------------------------------------
# Check 1: decoding


def test_invalid_bytes_are_one_reason() -> None:
    report = verify_module(b"\x00\x01\x02", CLAIM_V1)
    assert report.reasons == ("invalid wasm payload: truncated module header (need 8 bytes)",)
    assert not report.ok
    assert summary(report) == "lane=HighAssurance;ok=false;imports=0;loops=0;kproxy=0.000"


def test_simd_is_undecodable_and_rejected() -> None:
    assert reasons("simd") == [
        "invalid wasm payload: unsupported SIMD opcode prefix 0xfd at offset 72"
    ]


def test_valid_module_decodes() -> None:
    accepted("claim_module")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_verify_module_never_raises(data: bytes) -> None:
    for prefix in (b"", b"\x00asm\x01\x00\x00\x00"):
        report = verify_module(prefix + data, CLAIM_V1)
        assert report.ok == (not report.reasons)


# ---------------------------------------------------------------------------------------------
# Checks 2-4: imports, exports, profiles


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("import_evil_sink", ["banned import: evil::sink"]),
        (
            "import_fd_write",
            ["banned import: env::fd_write", "forbidden output channel import: env::fd_write"],
        ),
        (
            "import_output_channels",
            [
                "banned import: host::console_log",
                "forbidden output channel import: host::console_log",
                "banned import: wasi::STDOUT_write",
                "forbidden output channel import: wasi::STDOUT_write",
                "banned import: env::write_output",
                "forbidden output channel import: env::write_output",
            ],
        ),
        ("import_memory", ["memory imports are banned (define memory in-module)"]),
        ("import_table", ["table imports are banned"]),
        ("import_global", ["global imports are banned"]),
        ("import_tag", ["exception tag imports are banned"]),
        (
            "import_dp",
            ["banned import: env::dp_laplace_i64", "dp syscalls require dp_lane feature"],
        ),
    ],
)
def test_import_predicates(name: str, expected: list[str]) -> None:
    assert reasons(name) == expected
    assert reasons(name, HEAVY_LANE) == expected  # imports do not depend on the lane


def test_allowed_imports_pass() -> None:
    accepted("example_guest")  # env::oracle_query + env::emit_structured_claim
    accepted("nop_emit")  # kernel::emit_structured_claim


def test_forbidden_output_channel_spares_only_the_emit_import() -> None:
    # A policy that allows the import still flags it as an output channel.
    policy = replace(CLAIM_V1, allowed_imports=ABI_IMPORTS | {("env", "fd_write")})
    assert reasons("import_fd_write", policy) == ["forbidden output channel import: env::fd_write"]
    assert not aspec._is_forbidden_output_channel("kernel::emit_structured_claim", True)
    assert aspec._is_forbidden_output_channel("env::emit_output", False)


def test_disallowed_export() -> None:
    assert reasons("export_debug") == ["disallowed export: debug"]


def test_missing_required_export() -> None:
    assert reasons("export_missing_run") == [
        "disallowed export: not_run",
        "missing required export: run",
    ]


def test_claim_v1_requires_the_emit_import() -> None:
    assert reasons("no_emit_import") == [MISSING_EMIT]
    assert reasons("no_emit_import", HEAVY_LANE) == [MISSING_EMIT]
    # Only the CLAIM_V1 profile asks for it.
    assert reasons("no_emit_import", replace(CLAIM_V1, profile_name="custom")) == []


def test_claim_and_oracle_profiles() -> None:
    accepted("claim_module", CLAIM_V1)
    assert reasons("claim_module", ORACLE_V1) == [
        "banned import: kernel::emit_structured_claim",
        "disallowed export: run",
        "missing required export: oracle_query",
    ]
    accepted("oracle_module", ORACLE_V1)
    assert reasons("oracle_module", CLAIM_V1) == [
        "disallowed export: oracle_query",
        "floating point is banned in HighAssurance lane",
        "missing required export: run",
        MISSING_EMIT,
    ]


# ---------------------------------------------------------------------------------------------
# Check 5: banned operators


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("op_loop", ["loops are banned in HighAssurance"]),
        ("op_br_table", ["br_table is banned and treated as irreducible"]),
        ("op_call_indirect", ["call_indirect is banned"]),
        ("op_return_call", ["tail calls are banned"]),
        ("op_return_call_indirect", ["tail calls are banned"]),
        ("op_memory_grow", ["memory.grow is banned"]),
        ("op_table_grow", ["table operations are banned"]),
        ("op_table_fill", ["table operations are banned"]),
        ("op_table_copy", ["table operations are banned"]),
        ("op_table_init", ["table operations are banned"]),
        ("op_table_get", ["table operations are banned"]),
        ("op_table_set", ["table operations are banned"]),
        ("op_table_size", ["table operations are banned"]),
        ("op_try_catch", ["exceptions are banned"] * 2),
        ("op_throw", ["exceptions are banned"]),
        ("op_rethrow", ["exceptions are banned"] * 3),
        ("op_delegate", ["exceptions are banned"] * 2),
        ("float_const", ["floating point is banned in HighAssurance lane"]),
        ("float_f64_add", ["floating point is banned in HighAssurance lane"] * 3),
    ],
)
def test_banned_operators(name: str, expected: list[str]) -> None:
    assert reasons(name) == expected


@pytest.mark.parametrize(
    "name",
    ["nop_emit", "op_memory_size", "op_elem_drop", "float_quirks", "return", "calls_acyclic"],
)
def test_operators_outside_the_ban_lists_pass(name: str) -> None:
    accepted(name)


def test_every_listed_float_operator_is_banned_in_claim_v1() -> None:
    assert len(aspec._FLOAT_OPS) == 64
    assert "f32.load" not in aspec._FLOAT_OPS
    assert "i32.trunc_sat_f32_s" not in aspec._FLOAT_OPS


def test_float_policy_applies_only_in_high_assurance_with_reject_all() -> None:
    accepted("float_const", HEAVY_LANE)
    accepted("float_f64_add", replace(CLAIM_V1, float_policy=FloatPolicy.ALLOW))
    low_but_reject = replace(HEAVY_LANE, float_policy=FloatPolicy.REJECT_ALL)
    accepted("float_const", low_but_reject)


def test_return_count() -> None:
    assert accepted("return").return_count == 1


# ---------------------------------------------------------------------------------------------
# Check 6: control-flow graph


def test_br_reaching_the_function_level_fails_cfg_construction() -> None:
    assert reasons("cfg_br_if_top") == ["failed to build CFG for function 1: invalid br_if depth"]
    assert reasons("cfg_br_top") == ["failed to build CFG for function 1: invalid br depth"]
    # The failed function contributes no complexity (reference order: metrics after the CFG).
    assert verify_module(wasm("cfg_br_if_top"), CLAIM_V1).max_cyclomatic_complexity == 1


def test_br_to_an_enclosing_block_builds_a_cfg() -> None:
    assert accepted("cfg_br_in_block").max_cyclomatic_complexity == 2


def _nop_guest_with_body(operators: bytes) -> bytes:
    """The nop guest with its function body (no locals) replaced by raw ``operators``."""
    module = wasm("nop_emit")
    code = b"\x0a\x05\x01\x03\x00\x01\x0b"  # code section: 1 body of 3 bytes: nop, end
    at = module.index(code)
    body = b"\x00" + operators
    section = b"\x01" + bytes([len(body)]) + body
    return module[:at] + b"\x0a" + bytes([len(section)]) + section + module[at + len(code) :]


def test_else_outside_an_if_fails_cfg_construction() -> None:
    report = verify_module(_nop_guest_with_body(b"\x05\x0b"), CLAIM_V1)  # else; end
    assert report.reasons == ("failed to build CFG for function 1: else without control frame",)


def test_else_in_a_block_fails_cfg_construction() -> None:
    module = _nop_guest_with_body(b"\x02\x40\x05\x0b\x0b")  # block; else; end; end
    assert verify_module(module, CLAIM_V1).reasons == (
        "failed to build CFG for function 1: else attached to non-if frame",
    )


def test_irreducible_cfg_from_dead_code_in_a_loop() -> None:
    # QUIRK (parity): the `else` after a returning then-branch has no predecessor but an edge
    # into the loop, so the loop's SCC has two entries.
    assert reasons("cfg_irreducible", HEAVY_LANE) == ["irreducible CFG in function 1"]
    assert reasons("cfg_irreducible") == [
        "loops are banned in HighAssurance",
        "irreducible CFG in function 1",
    ]


def test_nested_loops_are_reducible() -> None:
    report = accepted("cfg_nested", HEAVY_LANE)
    assert report.bounds_used == (2, 2)
    assert report.total_loops == 2


def test_reducibility_on_graphs() -> None:
    # 0 -> 1 <-> 2 with 0 -> 2: the cycle {1, 2} has two entries.
    assert not aspec._is_reducible([[1, 2], [2], [1]])
    # 0 -> 1 <-> 2: one entry.
    assert aspec._is_reducible([[1], [2], [1]])
    # A self-loop entered from two different outside nodes still has one entry node.
    assert aspec._is_reducible([[2], [2], [2, 3], []])
    # A self-loop and another node of the same component entered from outside.
    assert not aspec._is_reducible([[1, 2], [1, 2], [1]])


def test_tarjan_is_iterative_for_long_bodies() -> None:
    n = 20_000
    chain = [[i + 1] for i in range(n)] + [[0]]
    assert aspec._is_reducible(chain)
    report = verify_module(run_body("nop " * n), replace(CLAIM_V1, max_output_bytes=n))
    assert report.ok


# ---------------------------------------------------------------------------------------------
# Check 7: bounded loops (LowAssurance / heavy lane)


def test_canonical_loop_is_accepted_in_the_heavy_lane() -> None:
    report = accepted("loop_canonical", HEAVY_LANE)
    assert report.bounds_used == (1000,)
    assert report.total_loops == 1
    assert report.lane is AspecLane.LOW_ASSURANCE
    assert compute_lane(report) is Lane.HEAVY
    assert summary(report) == "lane=LowAssurance;ok=true;imports=1;loops=1;kproxy=3.000"


def test_tee_and_signed_compare_variant_is_accepted() -> None:
    assert accepted("loop_tee_lt_s", HEAVY_LANE).bounds_used == (7,)


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("loop_over_cap", "loop bound 10001 exceeds cap 10000"),
        ("loop_data_dependent", "loop at instruction 4 missing canonical counter pattern"),
        ("loop_step_two", "loop at instruction 2 missing canonical counter pattern"),
        ("loop_no_init", "loop at instruction 0 missing compile-time counter init"),
        ("op_loop", "loop at instruction 0 missing canonical counter pattern"),
        # QUIRK (parity): the outer loop's scan finds the inner loop's pattern first.
        ("loop_nested_inner_init", "loop at instruction 2 missing compile-time counter init"),
    ],
)
def test_loop_deviations_are_rejected(name: str, detail: str) -> None:
    report = verify_module(wasm(name), HEAVY_LANE)
    assert list(report.reasons) == [f"function 1 violates bounded-loop admissibility: {detail}"]
    assert report.bounds_used == ()


def test_burn_module_is_not_a_bounded_loop() -> None:
    assert reasons("burn", HEAVY_LANE) == [
        "function 0 violates bounded-loop admissibility: "
        "loop at instruction 0 missing canonical counter pattern",
        MISSING_EMIT,
    ]


def _canonical_loop(bound: int) -> bytes:
    return run_body(
        "(local $i i32) i32.const 0 local.set $i loop "
        "local.get $i i32.const 1 i32.add local.set $i "
        f"local.get $i i32.const {bound} i32.lt_u br_if 0 end"
    )


@pytest.mark.parametrize("bound", range(4))
@pytest.mark.parametrize("cap", range(4))
def test_loop_bound_against_cap(bound: int, cap: int) -> None:
    policy = replace(HEAVY_LANE, max_loop_bound=cap, max_output_bytes=1024)
    report = verify_module(_canonical_loop(bound), policy)
    assert report.ok == (bound <= cap)
    if not report.ok:
        assert list(report.reasons) == [
            f"function 1 violates bounded-loop admissibility: loop bound {bound} exceeds cap {cap}"
        ]


def test_float_and_loop_module_needs_the_heavy_lane() -> None:
    assert (
        reasons("float_loop")
        == ["loops are banned in HighAssurance"]
        + ["floating point is banned in HighAssurance lane"] * 3
    )
    accepted("float_loop", HEAVY_LANE)


# ---------------------------------------------------------------------------------------------
# Check 8: cyclomatic complexity


def test_cyclomatic_complexity_cap() -> None:
    policy = replace(CLAIM_V1, max_cyclomatic_complexity=2)
    assert accepted("complexity_one_if", policy).max_cyclomatic_complexity == 2
    assert reasons("complexity_three_ifs", policy) == ["cyclomatic complexity 4 exceeds cap 2"]
    at_four = replace(CLAIM_V1, max_cyclomatic_complexity=4)
    assert accepted("complexity_three_ifs", at_four).max_cyclomatic_complexity == 4
    assert reasons("complexity_four_ifs", at_four) == ["cyclomatic complexity 5 exceeds cap 4"]


def test_complexity_is_the_maximum_over_functions() -> None:
    two_funcs = bytes(
        wasmtime.wat2wasm(
            f'(module {EMIT} (func (export "run") (if (i32.const 1) (then nop)) (call $f))'
            " (func $f (if (i32.const 1) (then nop)) (block (br_if 0 (i32.const 0)))))"
        )
    )
    report = verify_module(two_funcs, CLAIM_V1)
    assert report.ok
    assert report.max_cyclomatic_complexity == 3
    assert report.kolmogorov_proxy_bits == 3 + 2 * 2


# ---------------------------------------------------------------------------------------------
# Check 9: data segments


def test_data_segment_cap() -> None:
    one = replace(CLAIM_V1, max_data_segment_bytes=1)
    assert accepted("data_a", one).data_segment_bytes == 1
    assert reasons("data_ab", one) == ["data segment bytes 2 exceeds cap 1"]
    four = replace(CLAIM_V1, max_data_segment_bytes=4)
    accepted("data_abcd", four)
    assert reasons("data_abcde", four) == ["data segment bytes 5 exceeds cap 4"]
    accepted("nop_emit", replace(CLAIM_V1, max_data_segment_bytes=0))


def test_entropy_cap() -> None:
    policy = replace(CLAIM_V1, max_entropy_ratio=0.25)
    assert accepted("data_aaaaaaaa", policy).data_entropy_ratio == 0.0
    assert verify_module(wasm("data_abcdefgh"), policy).data_entropy_ratio == 0.375
    assert reasons("data_abcdefgh", policy) == ["data entropy ratio 0.3750 exceeds cap 0.25"]
    assert reasons("data_abcdefgh", replace(CLAIM_V1, max_entropy_ratio=0.0)) == [
        "data entropy ratio 0.3750 exceeds cap 0"
    ]


def test_compression_magic_and_high_entropy() -> None:
    assert reasons("data_gzip_all_bytes") == [
        "data entropy ratio 0.9995 exceeds cap 0.75",
        "compression magic detected in data segment",
    ]


def test_compression_magic_across_segments() -> None:
    # Segments (active and passive) are concatenated before the search, as in the reference.
    report = verify_module(wasm("data_split_magic"), CLAIM_V1)
    assert list(report.reasons) == ["compression magic detected in data segment"]
    assert report.data_segment_bytes == 6


@pytest.mark.parametrize("magic", aspec.COMPRESSION_MAGICS)
def test_each_compression_magic_is_detected(magic: bytes) -> None:
    data = "".join(f"\\{b:02x}" for b in magic)
    module = bytes(
        wasmtime.wat2wasm(
            f'(module {EMIT} (memory 1) (data (i32.const 0) "{data}") (func (export "run") nop))'
        )
    )
    assert list(verify_module(module, CLAIM_V1).reasons) == [
        "compression magic detected in data segment"
    ]


# ---------------------------------------------------------------------------------------------
# Check 10: instruction-count output proxy


def test_output_proxy() -> None:
    assert reasons("eleven_nops", replace(CLAIM_V1, max_output_bytes=1)) == [
        "output proxy bound exceeded: instruction_count 12 > 10"
    ]
    assert accepted("eleven_nops", replace(CLAIM_V1, max_output_bytes=2)).instruction_count == 12
    assert reasons("complexity_one_if", replace(CLAIM_V1, max_output_bytes=0)) == [
        "output proxy bound exceeded: instruction_count 5 > 0"
    ]
    accepted("complexity_one_if", replace(CLAIM_V1, max_output_bytes=1))


# ---------------------------------------------------------------------------------------------
# Check 11: recursion


@pytest.mark.parametrize(
    ("name", "indices"),
    [("recursion_self", [2]), ("recursion_mutual", [2, 3]), ("recursion_downstream", [2, 3])],
)
def test_recursion_is_rejected(name: str, indices: list[int]) -> None:
    assert reasons(name) == [f"recursion/cycle detected involving func index {i}" for i in indices]


def test_acyclic_calls_pass() -> None:
    assert accepted("calls_acyclic").defined_funcs == 3


# ---------------------------------------------------------------------------------------------
# Check 12: Kolmogorov proxy and the heavy-lane flag


def test_heavy_flag_threshold_is_strict() -> None:
    flagged = accepted("complexity_one_if", replace(CLAIM_V1, kolmogorov_proxy_cap=2))
    assert flagged.kolmogorov_proxy_bits == 3.0
    assert flagged.heavy_lane_flag is True
    assert compute_lane(flagged) is Lane.HEAVY
    clear = accepted("complexity_one_if", replace(CLAIM_V1, kolmogorov_proxy_cap=3))
    assert clear.heavy_lane_flag is False
    assert compute_lane(clear) is Lane.FAST


def test_high_assurance_rejects_above_one_and_a_half_caps() -> None:
    assert reasons("complexity_one_if", replace(CLAIM_V1, kolmogorov_proxy_cap=1)) == [
        "capacity bits 3.00 exceed HighAssurance cap 1.5"
    ]
    # LowAssurance only flags.
    report = accepted("complexity_one_if", replace(HEAVY_LANE, kolmogorov_proxy_cap=1))
    assert report.heavy_lane_flag is True


def test_kolmogorov_proxy_from_data() -> None:
    report = accepted("data_abcdefghij")
    assert report.kolmogorov_proxy_bits == pytest.approx(10 * math.log2(10) + 2)
    assert report.estimated_capacity_bits == 35
    assert summary(report).endswith(";kproxy=35.219")
    assert not accepted(
        "data_abcdefghij", replace(CLAIM_V1, kolmogorov_proxy_cap=36)
    ).heavy_lane_flag
    assert accepted("data_abcdefghij", replace(CLAIM_V1, kolmogorov_proxy_cap=35)).heavy_lane_flag


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=100))
def test_heavy_flag_matches_the_proxy(cap: int) -> None:
    report = verify_module(wasm("complexity_one_if"), replace(CLAIM_V1, kolmogorov_proxy_cap=cap))
    assert report.heavy_lane_flag == (report.kolmogorov_proxy_bits > cap)


# ---------------------------------------------------------------------------------------------
# Formatting helpers kept for parity with the reference's Rust formatting


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.75, "0.75"),
        (1.0, "1"),
        (75_000.0, "75000"),
        (0.0, "0"),
        (1e-7, "0.0000001"),
        (1e16, "10000000000000000"),
        (4.5, "4.5"),
    ],
)
def test_rust_display(value: float, text: str) -> None:
    assert aspec._rust_display(value) == text


@pytest.mark.parametrize(
    ("value", "rounded"), [(0.0, 0), (0.5, 1), (1.5, 2), (2.5, 3), (2.4999999999999996, 2)]
)
def test_round_half_away_from_zero(value: float, rounded: int) -> None:
    assert aspec._round_half_away(value) == rounded


# ---------------------------------------------------------------------------------------------
# Bounded work and bounded reports for hostile input


def test_huge_bodies_stop_at_the_decode_limit() -> None:
    policy = replace(CLAIM_V1, max_output_bytes=1)
    limit = 10 + aspec.DECODE_OPERATOR_SLACK
    assert reasons("eleven_nops", policy) == [
        "output proxy bound exceeded: instruction_count 12 > 10"
    ]
    report = verify_module(run_body("nop " * limit), policy)  # limit + 1 operators with `end`
    assert report.reasons == (f"output proxy bound exceeded: instruction_count > {limit} > 10",)
    at_limit = verify_module(run_body("nop " * (limit - 1)), policy)
    assert list(at_limit.reasons) == [
        f"output proxy bound exceeded: instruction_count {limit} > 10"
    ]


def test_too_many_items_is_an_invalid_payload() -> None:
    n = aspec.DECODE_ITEM_LIMIT + 1
    count = bytes([0x80 | (n & 0x7F), 0x80 | ((n >> 7) & 0x7F), (n >> 14) & 0x7F])
    payload = count + b"\x60\x00\x00" * n
    size = len(payload)
    size_leb = bytes([0x80 | (size & 0x7F), 0x80 | ((size >> 7) & 0x7F), (size >> 14) & 0x7F])
    module = b"\x00asm\x01\x00\x00\x00\x01" + size_leb + payload
    assert verify_module(module, CLAIM_V1).reasons == (
        f"invalid wasm payload: module holds more than {aspec.DECODE_ITEM_LIMIT} items "
        "(vector entries and constant-expression operators)",
    )


def test_reasons_are_capped() -> None:
    exports = " ".join(f'(func (export "x{i}") nop)' for i in range(150))
    module = bytes(wasmtime.wat2wasm(f'(module {EMIT} (func (export "run") nop) {exports})'))
    report = verify_module(module, CLAIM_V1)
    assert len(report.reasons) == aspec.MAX_REASONS + 1
    assert report.reasons[0] == "disallowed export: x0"
    assert report.reasons[-1] == "50 more reasons omitted"


def test_sequential_loops_each_report_their_bound() -> None:
    body = (
        "(local $i i32) (local $j i32) i32.const 0 local.set $i i32.const 0 local.set $j "
        "loop local.get $i i32.const 1 i32.add local.set $i "
        "local.get $i i32.const 5 i32.lt_u br_if 0 end "
        "loop local.get $j i32.const 1 i32.add local.tee $j "
        "local.get $j i32.const 9 i32.lt_s br_if 0 drop end"
    )
    report = verify_module(run_body(body), HEAVY_LANE)
    assert report.ok, report.reasons
    assert report.bounds_used == (5, 9)
