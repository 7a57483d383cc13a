"""The vault against real wasmtime: ABI, limits, the error table, the cache, the judge trace.

Spec 30 §5.1 to §5.3 and §12. Guests are WAT compiled with ``wasmtime.wat2wasm``. Fuel numbers are
runtime specific (spec 30 §5.6), so only relations are asserted.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable

import pytest
import wasmtime

from evidenceos.errors import Code, FailedPrecondition, InvalidArgument
from evidenceos.sandbox import (
    ABI_FINGERPRINT,
    ArtefactRejected,
    CompiledModule,
    ExecutionResult,
    FuelExhausted,
    GuestTrap,
    HostCallbackFailure,
    InvalidModule,
    InvalidOracleInput,
    InvalidStructuredClaim,
    InvalidVaultConfig,
    MemoryOutOfBounds,
    MissingRunExport,
    OracleCallLimitExceeded,
    OutputAlreadyEmitted,
    OutputMissing,
    OutputTooLarge,
    Sandbox,
    VaultError,
    VaultLimits,
)

LABELS = b"\x01\x00\x01\x01"
LIMITS = VaultLimits(
    max_fuel=100_000, max_memory_bytes=2 * 65_536, max_oracle_calls=4, max_output_bytes=8
)

EXAMPLE_GUEST = r"""
(module
  (import "env" "oracle_query"          (func $oq   (param i32 i32) (result i32)))
  (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\01\01\01\01")
  (func (export "run")
    i32.const 16
    i32.const 0 i32.const 4 call $oq
    i32.store8
    i32.const 16 i32.const 1 call $emit
    drop))
"""


def guest(body: str, *, module: str = "env", memory: str = '(memory (export "memory") 1)') -> str:
    """A guest with both imports, one page holding predictions at 0 and output bytes at 16."""
    return f"""
    (module
      (import "{module}" "oracle_query"          (func $oq   (param i32 i32) (result i32)))
      (import "{module}" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
      {memory}
      (data (i32.const 0) "\\01\\01\\01\\01\\02")
      (data (i32.const 16) "OK")
      (func (export "run") {body}))
    """


EMIT_OK = "(drop (call $emit (i32.const 16) (i32.const 2)))"
ORACLE = "(drop (call $oq (i32.const 0) (i32.const 4)))"


def accuracy_oracle(predictions: bytes) -> int:
    """Bucket = number of correct predictions (stands in for the caller's quantised oracle)."""
    return sum(p == label for p, label in zip(predictions, LABELS, strict=True))


def legacy_output(raw: bytes) -> tuple[bytes, int]:
    return raw, 0


def wasm_of(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
def run(sandbox: Sandbox) -> Callable[..., ExecutionResult]:
    def execute(
        wat: str,
        *,
        limits: VaultLimits = LIMITS,
        oracle: Callable[[bytes], int] = accuracy_oracle,
        validate_output: Callable[[bytes], tuple[bytes, int]] = legacy_output,
    ) -> ExecutionResult:
        return sandbox.execute(
            sandbox.compile(wasm_of(wat)),
            limits=limits,
            holdout_len=len(LABELS),
            oracle=oracle,
            validate_output=validate_output,
        )

    return execute


# --- the ABI and the example guest --------------------------------------------------------------


def test_abi_fingerprint_matches_spec() -> None:
    assert ABI_FINGERPRINT == "db8793ff74221f40caef0efedb443e703c066441a10bc07ec7628f4ccc5a0ff4"


def test_example_guest_returns_its_bucket_as_output(run: Callable[..., ExecutionResult]) -> None:
    seen: list[bytes] = []

    def oracle(predictions: bytes) -> int:
        seen.append(predictions)
        return accuracy_oracle(predictions)

    result = run(EXAMPLE_GUEST, oracle=oracle)
    assert seen == [b"\x01\x01\x01\x01"]
    assert result.output == b"\x03"
    assert result.oracle_buckets == (3,)
    assert result.oracle_calls == 1
    assert result.kout_bits == 0
    assert result.max_memory_pages == 1
    assert result.fuel_used > 0
    assert len(result.judge_trace_hash) == 32


@pytest.mark.parametrize("module", ["env", "kernel"])
@pytest.mark.parametrize("oracle_name", ["oracle_query", "oracle_bucket"])
def test_both_import_modules_and_the_alias_work(
    run: Callable[..., ExecutionResult], module: str, oracle_name: str
) -> None:
    wat = f"""
    (module
      (import "{module}" "{oracle_name}"        (func $oq   (param i32 i32) (result i32)))
      (import "{module}" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "\\01\\00\\00\\01")
      (func (export "run")
        (i32.store8 (i32.const 16) (call $oq (i32.const 0) (i32.const 4)))
        (drop (call $emit (i32.const 16) (i32.const 1)))))
    """
    result = run(wat)
    assert result.output == b"\x03"
    assert result.oracle_buckets == (3,)


def test_more_work_costs_more_fuel(run: Callable[..., ExecutionResult]) -> None:
    emit_only = run(guest(EMIT_OK)).fuel_used
    oracle_and_emit = run(guest(ORACLE + EMIT_OK)).fuel_used
    assert 0 < emit_only < oracle_and_emit


def test_output_is_the_validators_canonical_form(run: Callable[..., ExecutionResult]) -> None:
    result = run(guest(EMIT_OK), validate_output=lambda raw: (raw.lower(), 3301))
    assert result.output == b"ok"
    assert result.kout_bits == 3301


def test_oracle_buckets_are_returned_in_call_order(run: Callable[..., ExecutionResult]) -> None:
    buckets = iter([5, 0, 7])
    body = ORACLE * 3 + EMIT_OK
    result = run(guest(body), oracle=lambda _: next(buckets))
    assert result.oracle_buckets == (5, 0, 7)
    assert result.oracle_calls == 3


def test_large_bucket_reaches_the_guest_as_i32(run: Callable[..., ExecutionResult]) -> None:
    body = "(i32.store (i32.const 16) (call $oq (i32.const 0) (i32.const 4)))" + (
        "(drop (call $emit (i32.const 16) (i32.const 4)))"
    )
    result = run(guest(body), oracle=lambda _: 0xFFFF_FFFE)
    assert result.output == struct.pack("<I", 0xFFFF_FFFE)
    assert result.oracle_buckets == (0xFFFF_FFFE,)


# --- the error table ------------------------------------------------------------------------------

ERROR_TABLE = [
    (InvalidVaultConfig, Code.INVALID_ARGUMENT, "invalid vault configuration"),
    (InvalidModule, Code.FAILED_PRECONDITION, "invalid wasm module"),
    (GuestTrap, Code.FAILED_PRECONDITION, "wasm trap"),
    (FuelExhausted, Code.RESOURCE_EXHAUSTED, "fuel exhausted"),
    (MemoryOutOfBounds, Code.FAILED_PRECONDITION, "guest memory out-of-bounds"),
    (OutputTooLarge, Code.FAILED_PRECONDITION, "structured output too large"),
    (OutputAlreadyEmitted, Code.FAILED_PRECONDITION, "too many structured outputs"),
    (OutputMissing, Code.FAILED_PRECONDITION, "structured output missing"),
    (OracleCallLimitExceeded, Code.RESOURCE_EXHAUSTED, "oracle call limit exceeded"),
    (InvalidOracleInput, Code.INVALID_ARGUMENT, "invalid oracle input"),
    (MissingRunExport, Code.FAILED_PRECONDITION, "missing run export"),
    (InvalidStructuredClaim, Code.FAILED_PRECONDITION, "operation blocked by policy"),
]


@pytest.mark.parametrize(("cls", "code", "message"), ERROR_TABLE)
def test_error_classes_carry_the_spec_code_and_public_message(
    cls: type[VaultError], code: Code, message: str
) -> None:
    err = cls("internal detail", fuel_used=5, oracle_calls=2)
    assert err.code is code
    assert err.message == message
    assert str(err) == message
    assert "internal detail" not in str(err)
    assert (err.fuel_used, err.oracle_calls, err.detail) == (5, 2, "internal detail")


FAILING_GUESTS = [
    pytest.param(guest("(loop (br 0))"), FuelExhausted, 0, id="fuel-exhaustion-by-loop"),
    pytest.param(guest("unreachable"), GuestTrap, 0, id="trap-unreachable"),
    pytest.param(
        guest("(drop (i32.load (i32.const 70000)))" + EMIT_OK),
        GuestTrap,
        0,
        id="guest-load-out-of-bounds-is-a-trap",
    ),
    pytest.param(
        guest("(drop (call $emit (i32.const 65535) (i32.const 2)))"),
        MemoryOutOfBounds,
        0,
        id="host-read-past-memory-end",
    ),
    pytest.param(
        guest("(drop (call $emit (i32.const -1) (i32.const 1)))"),
        MemoryOutOfBounds,
        0,
        id="negative-pointer",
    ),
    pytest.param(
        guest("(drop (call $emit (i32.const 0) (i32.const -1)))"),
        MemoryOutOfBounds,
        0,
        id="negative-length",
    ),
    pytest.param(
        guest("(drop (call $oq (i32.const 0) (i32.const 4)))", memory="(memory 1)"),
        MemoryOutOfBounds,
        0,
        id="memory-not-exported",
    ),
    pytest.param(guest(EMIT_OK + EMIT_OK), OutputAlreadyEmitted, 0, id="output-twice"),
    pytest.param(
        guest("(drop (call $emit (i32.const 16) (i32.const 9)))"),
        OutputTooLarge,
        0,
        id="output-too-large",
    ),
    pytest.param(guest(ORACLE), OutputMissing, 1, id="no-output"),
    pytest.param(guest(""), OutputMissing, 0, id="empty-run"),
    pytest.param(guest(ORACLE * 5 + EMIT_OK), OracleCallLimitExceeded, 5, id="oracle-call-limit"),
    pytest.param(
        guest("(drop (call $oq (i32.const 0) (i32.const 3)))" + EMIT_OK),
        InvalidOracleInput,
        1,
        id="oracle-input-length",
    ),
    pytest.param(
        guest("(drop (call $oq (i32.const 1) (i32.const 4)))" + EMIT_OK),
        InvalidOracleInput,
        1,
        id="oracle-input-byte-above-1",
    ),
]


@pytest.mark.parametrize(("wat", "expected", "oracle_calls"), FAILING_GUESTS)
def test_guest_failures_raise_their_class_and_carry_consumption(
    run: Callable[..., ExecutionResult], wat: str, expected: type[VaultError], oracle_calls: int
) -> None:
    with pytest.raises(VaultError) as info:
        run(wat)
    assert type(info.value) is expected
    assert info.value.oracle_calls == oracle_calls
    assert info.value.fuel_used >= 0
    if expected is not GuestTrap:  # wasmtime settles fuel lazily before some memory faults
        assert info.value.fuel_used > 0


def test_fuel_exhaustion_uses_all_the_fuel(run: Callable[..., ExecutionResult]) -> None:
    limits = VaultLimits(
        max_fuel=5_000, max_memory_bytes=65_536, max_oracle_calls=1, max_output_bytes=1
    )
    with pytest.raises(FuelExhausted) as info:
        run(guest(ORACLE + "(loop (br 0))"), limits=limits)
    assert info.value.fuel_used == 5_000
    assert info.value.oracle_calls == 1


def test_fuel_exhaustion_in_a_start_function(run: Callable[..., ExecutionResult]) -> None:
    wat = '(module (func $s (loop (br 0))) (start $s) (func (export "run")))'
    with pytest.raises(FuelExhausted) as info:
        run(wat)
    assert info.value.fuel_used == LIMITS.max_fuel


def test_host_error_takes_precedence_over_the_trap(run: Callable[..., ExecutionResult]) -> None:
    # wasmtime reports a generic trap ("python exception"); the recorded host error wins
    with pytest.raises(OracleCallLimitExceeded) as info:
        run(guest(ORACLE * 5), limits=LIMITS)
    assert info.value.oracle_calls == LIMITS.max_oracle_calls + 1
    assert info.value.detail == "oracle call limit exceeded"


@pytest.mark.parametrize(
    ("wat", "expected"),
    [
        pytest.param(
            '(module (memory (export "memory") 3) (func (export "run")))',
            GuestTrap,
            id="memory-declared-beyond-limit",
        ),
        pytest.param(
            '(module (import "env" "oracle_query" (func (param i32 i32))) (func (export "run")))',
            GuestTrap,
            id="bad-import-signature",
        ),
        pytest.param(
            '(module (import "env" "get_logical_epoch" (func (result i64))) (func (export "run")))',
            GuestTrap,
            id="unknown-import",
        ),
        pytest.param(
            '(module (import "evil" "oracle_query" (func (param i32 i32) (result i32)))'
            ' (func (export "run")))',
            GuestTrap,
            id="unknown-import-module",
        ),
        pytest.param('(module (memory (export "memory") 1))', MissingRunExport, id="no-run"),
        pytest.param(
            '(module (memory (export "memory") 1) (func (export "run") (param i32)))',
            MissingRunExport,
            id="run-with-parameter",
        ),
        pytest.param(
            '(module (memory (export "run") 1))', MissingRunExport, id="run-is-not-a-function"
        ),
    ],
)
def test_instantiation_failures_before_the_guest_runs(
    run: Callable[..., ExecutionResult], wat: str, expected: type[VaultError]
) -> None:
    with pytest.raises(VaultError) as info:
        run(wat)
    assert type(info.value) is expected
    assert (info.value.fuel_used, info.value.oracle_calls) == (0, 0)


def test_memory_grow_past_the_limit_fails_inside_the_guest(
    run: Callable[..., ExecutionResult],
) -> None:
    body = "(i32.store8 (i32.const 16) (memory.grow (i32.const 8)))" + (
        "(drop (call $emit (i32.const 16) (i32.const 1)))"
    )
    result = run(guest(body))
    assert result.output == b"\xff"  # memory.grow returned -1
    assert result.max_memory_pages == 1


def test_memory_grow_within_the_limit_counts_pages(run: Callable[..., ExecutionResult]) -> None:
    result = run(guest("(drop (memory.grow (i32.const 1)))" + EMIT_OK))
    assert result.max_memory_pages == 2


def test_canonical_output_too_large(run: Callable[..., ExecutionResult]) -> None:
    with pytest.raises(OutputTooLarge):
        run(guest(EMIT_OK), validate_output=lambda raw: (raw * 8, 0))


def test_invalid_structured_claim_keeps_the_domain_error(
    run: Callable[..., ExecutionResult],
) -> None:
    problem = FailedPrecondition("claim.kind: unknown field")

    def reject(raw: bytes) -> tuple[bytes, int]:
        raise problem

    with pytest.raises(InvalidStructuredClaim) as info:
        run(guest(ORACLE + EMIT_OK), validate_output=reject)
    assert info.value.__cause__ is problem
    assert info.value.message == "operation blocked by policy"
    assert info.value.oracle_calls == 1
    assert info.value.fuel_used > 0


def test_oracle_domain_error_is_invalid_oracle_input(run: Callable[..., ExecutionResult]) -> None:
    def failing(predictions: bytes) -> int:
        raise InvalidArgument("NaN accuracy")

    with pytest.raises(InvalidOracleInput) as info:
        run(guest(ORACLE + EMIT_OK), oracle=failing)
    assert isinstance(info.value.__cause__, InvalidArgument)


@pytest.mark.parametrize(
    ("oracle", "validate_output"),
    [
        pytest.param(lambda _: 1 // 0, legacy_output, id="oracle-bug"),
        pytest.param(lambda _: -1, legacy_output, id="negative-bucket"),
        pytest.param(accuracy_oracle, lambda raw: (raw, -1), id="negative-kout"),
        pytest.param(accuracy_oracle, lambda raw: 1 // 0, id="validator-bug"),
    ],
)
def test_callback_bugs_are_internal_and_still_charged(
    run: Callable[..., ExecutionResult],
    oracle: Callable[[bytes], int],
    validate_output: Callable[[bytes], tuple[bytes, int]],
) -> None:
    with pytest.raises(HostCallbackFailure) as info:
        run(guest(ORACLE + EMIT_OK), oracle=oracle, validate_output=validate_output)
    assert info.value.code is Code.INTERNAL
    assert info.value.fuel_used > 0


# --- limits and module validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"max_fuel": 0},
        {"max_fuel": 2**64},
        {"max_memory_bytes": 65_535},
        {"max_memory_bytes": 2**32 + 1},
        {"max_oracle_calls": 0},
        {"max_output_bytes": 0},
        {"max_output_bytes": 2**32},
    ],
)
def test_limits_out_of_range_are_invalid_config(fields: dict[str, int]) -> None:
    values = {
        "max_fuel": 1,
        "max_memory_bytes": 65_536,
        "max_oracle_calls": 1,
        "max_output_bytes": 1,
    } | fields
    with pytest.raises(InvalidVaultConfig):
        VaultLimits(**values)


def test_lane_limits_follow_the_spec() -> None:
    assert VaultLimits.fast_lane(2048) == VaultLimits(1_000_000, 262_144, 32, 2048)
    assert VaultLimits.heavy_lane(1) == VaultLimits(250_000, 131_072, 8, 1)


def test_zero_holdout_length_is_invalid_config(sandbox: Sandbox) -> None:
    module = sandbox.compile(wasm_of(EXAMPLE_GUEST))
    with pytest.raises(InvalidVaultConfig):
        sandbox.execute(
            module,
            limits=LIMITS,
            holdout_len=0,
            oracle=accuracy_oracle,
            validate_output=legacy_output,
        )


@pytest.mark.parametrize(
    "wasm",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00asm\x01\x00\x00\x00\x01", id="truncated"),
        pytest.param(EXAMPLE_GUEST.encode(), id="text-format"),
        pytest.param(b"\x7fELF\x02\x01\x01", id="not-wasm"),
    ],
)
def test_invalid_modules(sandbox: Sandbox, wasm: bytes) -> None:
    with pytest.raises(InvalidModule) as info:
        sandbox.compile(wasm)
    assert info.value.fuel_used == 0


@pytest.mark.parametrize(
    "wat",
    [
        pytest.param('(module (func (export "run") (drop (v128.const i64x2 0 0))))', id="simd"),
        pytest.param('(module (memory i64 1) (func (export "run")))', id="memory64"),
        pytest.param('(module (memory 1) (memory 1) (func (export "run")))', id="multi-memory"),
        pytest.param('(module (memory 1 1 shared) (func (export "run")))', id="threads"),
        pytest.param('(module (tag $e) (func (export "run") (throw $e)))', id="exceptions"),
        pytest.param(
            '(module (type $s (struct)) (func (export "run") (drop (struct.new $s))))', id="gc"
        ),
        pytest.param(
            '(module (func (export "run") (drop (i64.add128 (i64.const 0) (i64.const 0)'
            " (i64.const 0) (i64.const 0))) (drop)))",
            id="wide-arithmetic",
        ),
        pytest.param(
            '(module (memory 1 (pagesize 1)) (func (export "run")))', id="custom-page-sizes"
        ),
    ],
)
def test_engine_refuses_disabled_proposals(sandbox: Sandbox, wat: str) -> None:
    with pytest.raises(InvalidModule):
        sandbox.compile(wasm_of(wat))


# --- compile cache and serialized artefacts -----------------------------------------------------


def test_a_module_is_compiled_once() -> None:
    sandbox = Sandbox()
    wasm = wasm_of(EXAMPLE_GUEST)
    first = sandbox.compile(wasm)
    second = sandbox.compile(wasm)
    assert first is second
    assert first.sha256 == hashlib.sha256(wasm).digest()
    assert sandbox.lookup(first.sha256) is first
    stats = sandbox.stats
    assert (stats.compiles, stats.cache_hits, stats.cached_modules) == (1, 2, 1)


def test_cache_evicts_the_least_recently_used_module() -> None:
    sandbox = Sandbox(max_cached_modules=1)
    a, b = wasm_of(guest(EMIT_OK)), wasm_of(EXAMPLE_GUEST)
    sandbox.compile(a)
    sandbox.compile(b)
    sandbox.compile(a)
    assert sandbox.stats.compiles == 3
    assert sandbox.stats.cached_modules == 1


def test_serialized_module_runs_identically_in_a_new_sandbox(sandbox: Sandbox) -> None:
    wasm = wasm_of(EXAMPLE_GUEST)
    module = sandbox.compile(wasm)
    artefact = sandbox.serialize(module)

    restarted = Sandbox()
    assert restarted.engine_fingerprint() == sandbox.engine_fingerprint()
    loaded = restarted.load_serialized(module.sha256, artefact)
    assert restarted.stats.compiles == 0
    assert restarted.stats.loads == 1
    assert restarted.load_serialized(module.sha256, artefact) is loaded  # cached now

    def execute(box: Sandbox, compiled: CompiledModule) -> ExecutionResult:
        return box.execute(
            compiled,
            limits=LIMITS,
            holdout_len=4,
            oracle=accuracy_oracle,
            validate_output=legacy_output,
        )

    assert execute(restarted, loaded) == execute(sandbox, module)


def test_damaged_or_foreign_artefacts_are_rejected(sandbox: Sandbox) -> None:
    module = sandbox.compile(wasm_of(EXAMPLE_GUEST))
    artefact = sandbox.serialize(module)
    other_sha = hashlib.sha256(b"other").digest()
    flipped = bytearray(artefact)
    flipped[-100] ^= 0x01
    fresh = Sandbox()
    for sha, data in [
        (other_sha, artefact),
        (module.sha256, bytes(flipped)),
        (module.sha256, artefact[:50]),
        (module.sha256, b"garbage" * 20),
        (module.sha256, artefact[:8] + bytes(32) + artefact[40:]),  # another engine
    ]:
        with pytest.raises(ArtefactRejected):
            fresh.load_serialized(sha, data)
    assert fresh.stats.cached_modules == 0


def test_modules_of_another_sandbox_are_refused(sandbox: Sandbox) -> None:
    module = sandbox.compile(wasm_of(EXAMPLE_GUEST))
    foreign = CompiledModule(module.sha256, "0" * 64, module.module)
    with pytest.raises(InvalidModule):
        sandbox.serialize(foreign)


def test_engine_fingerprint_is_a_sha256_hex(sandbox: Sandbox) -> None:
    fingerprint = sandbox.engine_fingerprint()
    assert len(fingerprint) == 64
    int(fingerprint, 16)


# --- judge trace hash ---------------------------------------------------------------------------


def test_judge_trace_hash_follows_the_spec_layout(run: Callable[..., ExecutionResult]) -> None:
    wasm = wasm_of(EXAMPLE_GUEST)
    result = run(EXAMPLE_GUEST)
    output = result.output
    records = (b"\x01" + hashlib.sha256(b"\x01\x01\x01\x01").digest() + struct.pack(">I", 3)) + (
        b"\x02" + struct.pack(">II", len(output), len(output)) + output
    )
    expected = hashlib.sha256(
        b"evidenceos:judge_trace:v2"
        + hashlib.sha256(wasm).digest()
        + struct.pack(">QII", result.fuel_used, 1, 2)
        + records
        + hashlib.sha256(output).digest()
    ).digest()
    assert result.judge_trace_hash == expected


def test_judge_trace_preview_is_capped_at_64_bytes(run: Callable[..., ExecutionResult]) -> None:
    wat = guest("(drop (call $emit (i32.const 0) (i32.const 100)))")
    limits = VaultLimits(
        max_fuel=100_000, max_memory_bytes=65_536, max_oracle_calls=1, max_output_bytes=100
    )
    result = run(wat, limits=limits)
    output = result.output
    assert len(output) == 100
    expected = hashlib.sha256(
        b"evidenceos:judge_trace:v2"
        + hashlib.sha256(wasm_of(wat)).digest()
        + struct.pack(">QII", result.fuel_used, 0, 1)
        + b"\x02"
        + struct.pack(">II", 100, 64)
        + output[:64]
        + hashlib.sha256(output).digest()
    ).digest()
    assert result.judge_trace_hash == expected


def test_judge_trace_hash_is_stable_and_sensitive(run: Callable[..., ExecutionResult]) -> None:
    baseline = run(EXAMPLE_GUEST).judge_trace_hash
    assert run(EXAMPLE_GUEST).judge_trace_hash == baseline
    # same module, another bucket: another record and another output
    assert run(EXAMPLE_GUEST, oracle=lambda _: 2).judge_trace_hash != baseline
    # same module and bucket, another canonical output
    other_output = run(EXAMPLE_GUEST, validate_output=lambda raw: (raw + b"!", 0))
    assert other_output.judge_trace_hash != baseline
    # one prediction byte changed
    changed = EXAMPLE_GUEST.replace(r'"\01\01\01\01"', r'"\01\01\01\00"')
    assert changed != EXAMPLE_GUEST
    assert run(changed, oracle=lambda _: 3).judge_trace_hash != baseline


# --- concurrency --------------------------------------------------------------------------------


def test_concurrent_executions_classify_their_own_failures(sandbox: Sandbox) -> None:
    """wasmtime-py passes callback exceptions through one global; the host-error slot must win."""
    cases: list[tuple[str, type[VaultError] | None]] = [
        (guest(ORACLE + EMIT_OK), None),
        (guest(ORACLE * 5 + EMIT_OK), OracleCallLimitExceeded),
        (guest("(loop (br 0))"), FuelExhausted),
        (guest(EMIT_OK + EMIT_OK), OutputAlreadyEmitted),
        (guest("unreachable"), GuestTrap),
    ]
    modules = [(sandbox.compile(wasm_of(wat)), expected) for wat, expected in cases]
    limits = VaultLimits(
        max_fuel=20_000, max_memory_bytes=65_536, max_oracle_calls=4, max_output_bytes=8
    )
    mistakes: list[str] = []

    def worker(offset: int) -> None:
        for i in range(60):
            module, expected = modules[(i + offset) % len(modules)]
            try:
                sandbox.execute(
                    module,
                    limits=limits,
                    holdout_len=4,
                    oracle=accuracy_oracle,
                    validate_output=legacy_output,
                )
                outcome: type[VaultError] | None = None
            except VaultError as exc:
                outcome = type(exc)
            if outcome is not expected:
                mistakes.append(f"{expected} -> {outcome}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mistakes == []


# --- per-module and per-execution caches --------------------------------------------------------


def test_memory_reads_follow_growth_and_see_the_current_bytes(
    run: Callable[..., ExecutionResult],
) -> None:
    """The exported memory is looked up once per execution; its base can move when it grows,
    so each read must still return the bytes at that moment (written after the growth here)."""
    body = (
        "(drop (memory.grow (i32.const 1)))"
        "(i32.store8 (i32.const 16) (i32.const 88))"  # "XK": written after the growth
        "(i32.store8 (i32.const 65552) (i32.const 7))"  # a byte in the new page
        "(drop (call $emit (i32.const 16) (i32.const 2)))"
    )
    result = run(guest(body))
    assert result.output == b"XK"
    assert result.max_memory_pages == 2


def test_host_calls_from_a_start_function_read_memory(run: Callable[..., ExecutionResult]) -> None:
    """Before instantiation ends the execution has no memory yet: the caller's export is used."""
    wat = """
    (module
      (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "ST")
      (func $s (drop (call $emit (i32.const 16) (i32.const 2))))
      (start $s)
      (func (export "run")))
    """
    assert run(wat).output == b"ST"


def test_reads_past_the_end_and_empty_reads(run: Callable[..., ExecutionResult]) -> None:
    with pytest.raises(MemoryOutOfBounds):
        run(guest("(drop (call $emit (i32.const 65535) (i32.const 2)))"))
    assert run(guest("(drop (call $emit (i32.const 65536) (i32.const 0)))")).output == b""


@pytest.mark.parametrize(
    ("wat", "unit_run"),
    [
        (EXAMPLE_GUEST, True),
        ('(module (func (export "run") (param i32)))', False),
        ('(module (func (export "run") (result i32) i32.const 0))', False),
        ('(module (memory (export "run") 1))', False),
        ('(module (func (export "go")))', False),
    ],
)
def test_the_run_export_check_is_cached_per_module(
    sandbox: Sandbox, wat: str, unit_run: bool
) -> None:
    module = sandbox.compile(wasm_of(wat))
    assert module.unit_run is unit_run
    if not unit_run:
        with pytest.raises(MissingRunExport):
            sandbox.execute(
                module,
                limits=LIMITS,
                holdout_len=4,
                oracle=accuracy_oracle,
                validate_output=legacy_output,
            )
    # a module built without the cached flag is checked the same way
    unchecked = CompiledModule(module.sha256, module.engine_fingerprint, module.module)
    assert unchecked.unit_run is None
    if unit_run:
        ran = sandbox.execute(
            unchecked,
            limits=LIMITS,
            holdout_len=4,
            oracle=accuracy_oracle,
            validate_output=legacy_output,
        )
        assert ran.output == b"\x03"
