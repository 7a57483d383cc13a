"""One metered guest execution: the host ABI, limits, the host-error slot and the judge trace.

Spec 30 §5.2 (guest ABI v2) and §5.3 (host function semantics, judge trace hash, per-lane limits).
The oracle itself (accuracy, quantisation, hysteresis) and the output schema are the caller's:
this module reads guest memory, enforces the ABI's limits and checks, keeps the trace and calls
the two callbacks it is given.

Host functions are defined once per engine on a shared ``wasmtime.Linker``; the execution they
act for is found through a thread-local, because a guest call runs synchronously on the thread
that made it. A failing host call records its error in the execution's host-error slot and aborts
the guest; after any trap the slot takes precedence over the trap kind, exactly as in the
reference. The slot is also what keeps classification right under concurrency: wasmtime-py hands
an exception raised in a host callback back through one process-wide variable, so with several
threads the exception that surfaces may belong to another execution.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn

import wasmtime

from evidenceos.errors import EvidenceOSError
from evidenceos.sandbox.errors import (
    FuelExhausted,
    GuestTrap,
    HostCallbackFailure,
    InvalidOracleInput,
    InvalidStructuredClaim,
    InvalidVaultConfig,
    MemoryOutOfBounds,
    MissingRunExport,
    OracleCallLimitExceeded,
    OutputAlreadyEmitted,
    OutputMissing,
    OutputTooLarge,
    VaultError,
)
from evidenceos.sandbox.ffi_gil import ShortRun

WASM_PAGE_BYTES: Final = 65_536
U32_MAX: Final = 2**32 - 1
U64_MAX: Final = 2**64 - 1
#: Largest memory limit accepted: all a 32-bit linear memory can address.
MAX_MEMORY_BYTES: Final = 2**32

MEMORY_EXPORT: Final = "memory"
RUN_EXPORT: Final = "run"
IMPORT_ORACLE_QUERY: Final = "oracle_query"
IMPORT_ORACLE_BUCKET: Final = "oracle_bucket"
IMPORT_EMIT_STRUCTURED_CLAIM: Final = "emit_structured_claim"
IMPORT_MODULES: Final = ("env", "kernel")

#: The import lines of the ABI fingerprint, in the reference's order (spec 30 §5.2).
ABI_FINGERPRINT_IMPORTS: Final = (
    ("env", IMPORT_ORACLE_QUERY),
    ("env", IMPORT_EMIT_STRUCTURED_CLAIM),
    ("env", IMPORT_ORACLE_BUCKET),
    ("kernel", IMPORT_ORACLE_QUERY),
    ("kernel", IMPORT_ORACLE_BUCKET),
    ("kernel", IMPORT_EMIT_STRUCTURED_CLAIM),
)

#: What ``emit_structured_claim`` returns (a Val converts faster than an int; never mutated).
_I32_ZERO: Final = wasmtime.Val.i32(0)

TRACE_DOMAIN: Final = b"evidenceos:judge_trace:v2"
TRACE_PREVIEW_BYTES: Final = 64
_ORACLE_RECORD_TAG: Final = b"\x01"
_EMIT_RECORD_TAG: Final = b"\x02"

OracleCallback = Callable[[bytes], int]
"""``oracle(predictions) -> bucket``: accuracy, quantisation and hysteresis (the caller's)."""

OutputValidator = Callable[[bytes], tuple[bytes, int]]
"""``validate_output(raw) -> (canonical, kout_bits)``; raises a domain error if invalid."""


def compute_abi_fingerprint() -> str:
    """SHA-256 (hex) of the ABI v2 description: ``v2`` plus one line per import."""
    text = "v2\n" + "".join(
        f"{module}:{name}:i32,i32,->i32,\n" for module, name in ABI_FINGERPRINT_IMPORTS
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


ABI_FINGERPRINT: Final = compute_abi_fingerprint()


@dataclass(frozen=True, slots=True)
class VaultLimits:
    """Per-execution limits (spec 30 §5.3 ``VaultConfig``); invalid values raise at construction."""

    max_fuel: int
    max_memory_bytes: int
    max_oracle_calls: int
    max_output_bytes: int

    def __post_init__(self) -> None:
        if not 0 < self.max_fuel <= U64_MAX:
            raise InvalidVaultConfig("max_fuel must be > 0 and fit in 64 bits")
        if not WASM_PAGE_BYTES <= self.max_memory_bytes <= MAX_MEMORY_BYTES:
            raise InvalidVaultConfig("max_memory_bytes must be at least one wasm page")
        if not 0 < self.max_oracle_calls <= U32_MAX:
            raise InvalidVaultConfig("max_oracle_calls must be > 0 and fit in 32 bits")
        if not 0 < self.max_output_bytes <= U32_MAX:
            raise InvalidVaultConfig("max_output_bytes must be > 0 and fit in 32 bits")

    @classmethod
    def fast_lane(cls, max_output_bytes: int) -> VaultLimits:
        """FAST lane: 1,000,000 fuel, 4 pages, 32 oracle calls (spec 30 §5.3)."""
        return cls(
            max_fuel=1_000_000,
            max_memory_bytes=4 * WASM_PAGE_BYTES,
            max_oracle_calls=32,
            max_output_bytes=max_output_bytes,
        )

    @classmethod
    def heavy_lane(cls, max_output_bytes: int) -> VaultLimits:
        """HEAVY lane: 250,000 fuel, 2 pages, 8 oracle calls (spec 30 §5.3)."""
        return cls(
            max_fuel=250_000,
            max_memory_bytes=2 * WASM_PAGE_BYTES,
            max_oracle_calls=8,
            max_output_bytes=max_output_bytes,
        )


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a successful execution produced and consumed.

    ``fuel_used`` and ``judge_trace_hash`` are specific to the wasmtime version and engine
    configuration (spec 30 §5.6): compare them only between identical runtimes.
    """

    output: bytes
    kout_bits: int
    fuel_used: int
    oracle_calls: int
    oracle_buckets: tuple[int, ...]
    max_memory_pages: int
    judge_trace_hash: bytes


@dataclass(frozen=True, slots=True)
class _OracleRecord:
    predictions_sha256: bytes
    bucket: int

    def to_bytes(self) -> bytes:
        return _ORACLE_RECORD_TAG + self.predictions_sha256 + struct.pack(">I", self.bucket)


@dataclass(frozen=True, slots=True)
class _EmitRecord:
    canonical_len: int
    preview: bytes

    def to_bytes(self) -> bytes:
        header = struct.pack(">II", self.canonical_len, len(self.preview))
        return _EMIT_RECORD_TAG + header + self.preview


_TraceRecord = _OracleRecord | _EmitRecord


def _compute_judge_trace_hash(
    module_sha256: bytes,
    fuel_used: int,
    oracle_calls: int,
    records: list[_TraceRecord],
    output: bytes,
) -> bytes:
    """Spec 30 §5.3: domain ‖ H(wasm) ‖ fuel u64 ‖ calls u32 ‖ n u32 ‖ records ‖ H(output)."""
    digest = hashlib.sha256()
    digest.update(TRACE_DOMAIN)
    digest.update(module_sha256)
    digest.update(struct.pack(">QII", fuel_used, oracle_calls, len(records)))
    for record in records:
        digest.update(record.to_bytes())
    digest.update(hashlib.sha256(output).digest())
    return digest.digest()


class _HostAbort(Exception):
    """Raised inside a host function to trap the guest; the real error is in the slot."""


@dataclass(slots=True)
class _HostError:
    kind: type[VaultError]
    detail: str
    cause: BaseException | None


class _Execution:
    """Mutable per-execution host state (the reference's ``VaultHostState``)."""

    __slots__ = (
        "holdout_len",
        "host_error",
        "kout_bits",
        "limits",
        "memory",
        "oracle",
        "oracle_calls",
        "output",
        "records",
        "validate_output",
    )

    def __init__(
        self,
        limits: VaultLimits,
        holdout_len: int,
        oracle: OracleCallback,
        validate_output: OutputValidator,
    ) -> None:
        self.limits = limits
        self.holdout_len = holdout_len
        self.oracle = oracle
        self.validate_output = validate_output
        self.oracle_calls = 0
        self.output: bytes | None = None
        self.kout_bits = 0
        self.records: list[_TraceRecord] = []
        self.host_error: _HostError | None = None
        # The instance's exported memory once instantiated (what ``caller.get`` would return).
        self.memory: wasmtime.Memory | None = None

    def fail(
        self, kind: type[VaultError], detail: str, cause: BaseException | None = None
    ) -> NoReturn:
        """Record the host error and trap the guest."""
        self.host_error = _HostError(kind, detail, cause)
        raise _HostAbort(detail)

    def error(
        self, kind: type[VaultError], detail: str, fuel_used: int, cause: BaseException | None
    ) -> VaultError:
        err = kind(detail, fuel_used=fuel_used, oracle_calls=self.oracle_calls)
        err.__cause__ = cause
        return err


class _ActiveExecution(threading.local):
    current: _Execution | None = None


_ACTIVE = _ActiveExecution()


def _active_execution() -> _Execution:
    execution = _ACTIVE.current
    if execution is None:  # a host function outside execute(): cannot happen with our linker
        raise RuntimeError("vault host function called outside an execution")
    return execution


def _read_guest_memory(
    caller: wasmtime.Caller, execution: _Execution, ptr: int, length: int
) -> bytes:
    """Copy ``length`` bytes at ``ptr`` out of the exported memory; anything odd is MemoryOob."""
    if ptr < 0 or length < 0:
        execution.fail(MemoryOutOfBounds, "negative pointer or length")
    memory = execution.memory
    if memory is None:  # a call from a start function, or no memory exported
        found = caller.get(MEMORY_EXPORT)
        if not isinstance(found, wasmtime.Memory):
            execution.fail(MemoryOutOfBounds, "no exported memory")
        memory = found
    end = ptr + length
    if end > memory.data_len(caller):
        execution.fail(MemoryOutOfBounds, "memory read out of bounds")
    if length == 0:
        return b""
    # One copy straight out of linear memory (the base moves when memory grows: ask each time).
    base = ctypes.c_void_p.from_buffer(memory.data_ptr(caller)).value
    assert base is not None  # noqa: S101 - a memory holding end > 0 bytes has a base
    return ctypes.string_at(base + ptr, length)


def _oracle_query(caller: wasmtime.Caller, ptr: int, length: int) -> wasmtime.Val:
    execution = _active_execution()
    predictions = _read_guest_memory(caller, execution, ptr, length)
    execution.oracle_calls += 1  # counted even when the call then fails (reference)
    if execution.oracle_calls > execution.limits.max_oracle_calls:
        execution.fail(OracleCallLimitExceeded, "oracle call limit exceeded")
    if len(predictions) != execution.holdout_len:
        execution.fail(InvalidOracleInput, "prediction length differs from the holdout length")
    if predictions.translate(None, b"\x00\x01"):
        execution.fail(InvalidOracleInput, "prediction byte other than 0 or 1")
    try:
        bucket = execution.oracle(predictions)
    except EvidenceOSError as exc:  # the reference maps oracle failures to InvalidOracleInput
        execution.fail(InvalidOracleInput, f"oracle failed: {exc}", exc)
    except Exception as exc:  # noqa: BLE001 — becomes a HostCallbackFailure with the cause
        execution.fail(HostCallbackFailure, f"oracle callback raised {type(exc).__name__}", exc)
    if not 0 <= bucket <= U32_MAX:
        execution.fail(HostCallbackFailure, f"oracle returned bucket {bucket} outside u32")
    execution.records.append(_OracleRecord(hashlib.sha256(predictions).digest(), bucket))
    # The u32 bucket as an i32, as a Val: wasmtime-py converts a Val with one type check fewer.
    return wasmtime.Val.i32(bucket - 2**32 if bucket > 2**31 - 1 else bucket)


def _emit_structured_claim(caller: wasmtime.Caller, ptr: int, length: int) -> wasmtime.Val:
    execution = _active_execution()
    raw = _read_guest_memory(caller, execution, ptr, length)
    max_output_bytes = execution.limits.max_output_bytes
    if execution.output is not None:
        execution.fail(OutputAlreadyEmitted, "emit_structured_claim may only succeed once")
    if len(raw) > max_output_bytes:
        execution.fail(OutputTooLarge, f"raw output of {len(raw)} bytes")
    try:
        canonical, kout_bits = execution.validate_output(raw)
    except EvidenceOSError as exc:
        execution.fail(InvalidStructuredClaim, f"schema validation failed: {exc}", exc)
    except Exception as exc:  # noqa: BLE001 — becomes a HostCallbackFailure with the cause
        execution.fail(HostCallbackFailure, f"output validator raised {type(exc).__name__}", exc)
    if len(canonical) > max_output_bytes:
        execution.fail(OutputTooLarge, f"canonical output of {len(canonical)} bytes")
    if kout_bits < 0:
        execution.fail(HostCallbackFailure, f"output validator returned kout_bits {kout_bits}")
    canonical = bytes(canonical)
    execution.kout_bits = kout_bits
    execution.records.append(_EmitRecord(len(canonical), canonical[:TRACE_PREVIEW_BYTES]))
    execution.output = canonical
    return _I32_ZERO


def build_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """The ABI v2 imports under both ``env`` and ``kernel``, all ``(i32, i32) -> i32``.

    Any other import, or one of these with another signature, fails instantiation.
    """
    i32 = wasmtime.ValType.i32()
    signature = wasmtime.FuncType([i32, i32], [i32])
    linker = wasmtime.Linker(engine)
    for module in IMPORT_MODULES:
        linker.define_func(module, IMPORT_ORACLE_QUERY, signature, _oracle_query, True)
        linker.define_func(module, IMPORT_ORACLE_BUCKET, signature, _oracle_query, True)
        linker.define_func(
            module, IMPORT_EMIT_STRUCTURED_CLAIM, signature, _emit_structured_claim, True
        )
    return linker


def _is_unit_function(signature: wasmtime.FuncType) -> bool:
    return not signature.params and not signature.results


def has_unit_run_export(module: wasmtime.Module) -> bool:
    """True when ``module`` exports ``run: () -> ()`` (read from its static export types, the
    same answer as checking the instance's ``run`` export)."""
    for export in module.exports:
        if export.name == RUN_EXPORT:
            kind = export.type
            return isinstance(kind, wasmtime.FuncType) and _is_unit_function(kind)
    return False


def _classify_failure(
    exc: Exception, execution: _Execution, fuel_used: int, fuel_left: int
) -> VaultError:
    slot = execution.host_error
    if slot is not None:
        return execution.error(slot.kind, slot.detail, fuel_used, slot.cause)
    if isinstance(exc, wasmtime.Trap):
        if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            return execution.error(FuelExhausted, exc.message, fuel_used, exc)
        return execution.error(GuestTrap, exc.message, fuel_used, exc)
    if isinstance(exc, wasmtime.WasmtimeError):  # link failure, memory limit at instantiation
        return execution.error(GuestTrap, str(exc), fuel_used, exc)
    # Another thread's host-callback exception, handed over by wasmtime-py's process-wide slot in
    # place of our trap: the trap kind is lost, but an empty tank still says which one it was.
    if fuel_left == 0:
        return execution.error(FuelExhausted, "fuel exhausted", fuel_used, None)
    return execution.error(GuestTrap, f"trap ({type(exc).__name__})", fuel_used, None)


def execute_module(
    *,
    engine: wasmtime.Engine,
    linker: wasmtime.Linker,
    module: wasmtime.Module,
    module_sha256: bytes,
    limits: VaultLimits,
    holdout_len: int,
    oracle: OracleCallback,
    validate_output: OutputValidator,
    unit_run: bool | None = None,
) -> ExecutionResult:
    """Instantiate ``module`` in a fresh store under ``limits``, call ``run``, collect the result.

    ``unit_run`` is :func:`has_unit_run_export` of ``module`` when the caller has it cached.
    Every :class:`VaultError` raised once instantiation has started carries the fuel used and the
    oracle calls made so far.
    """
    if unit_run is None:
        unit_run = has_unit_run_export(module)
    if not 0 < holdout_len <= U32_MAX:
        raise InvalidVaultConfig("holdout length must be > 0")
    if _ACTIVE.current is not None:
        raise RuntimeError("vault executions do not nest")
    execution = _Execution(limits, holdout_len, oracle, validate_output)
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=limits.max_memory_bytes)
    store.set_fuel(limits.max_fuel)

    failure: Exception | None = None
    has_run = False
    max_memory_pages = 0
    _ACTIVE.current = execution
    try:
        with ShortRun(limits.max_fuel):  # fuel bounds the run: keep the GIL if short (D-A5)
            instance = linker.instantiate(store, module)  # a start function runs here, metered
            if unit_run:
                exports = instance.exports(store)
                run = exports[RUN_EXPORT]
                assert isinstance(run, wasmtime.Func)  # noqa: S101 - unit_run says so
                memory = exports.get(MEMORY_EXPORT)
                if isinstance(memory, wasmtime.Memory):
                    execution.memory = memory
                has_run = True
                run(store)
                if isinstance(memory, wasmtime.Memory):
                    max_memory_pages = memory.size(store)
    except Exception as exc:  # noqa: BLE001 — classified below, the host-error slot first
        failure = exc
    finally:
        _ACTIVE.current = None

    fuel_left: int = store.get_fuel()
    fuel_used = limits.max_fuel - fuel_left
    if failure is not None:
        raise _classify_failure(failure, execution, fuel_used, fuel_left)
    if not has_run:
        raise execution.error(MissingRunExport, "no run: () -> () export", fuel_used, None)
    if execution.host_error is not None:  # unreachable: a host error always traps
        slot = execution.host_error
        raise execution.error(slot.kind, slot.detail, fuel_used, slot.cause)
    output = execution.output
    if output is None:
        raise execution.error(OutputMissing, "run returned without output", fuel_used, None)
    return ExecutionResult(
        output=output,
        kout_bits=execution.kout_bits,
        fuel_used=fuel_used,
        oracle_calls=execution.oracle_calls,
        oracle_buckets=tuple(r.bucket for r in execution.records if isinstance(r, _OracleRecord)),
        max_memory_pages=max_memory_pages,
        judge_trace_hash=_compute_judge_trace_hash(
            module_sha256, fuel_used, execution.oracle_calls, execution.records, output
        ),
    )
