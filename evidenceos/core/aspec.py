"""ASPEC: static verification of a guest WASM module before it may run (spec 30 §5.4).

Why: the guest is the only code that touches oracle answers, so what it can compute and emit
must be bounded *before* execution -- no channels besides the ABI imports (spec 30 §5.2), no
unbounded loops in the high-assurance (fast) lane, no indirect control flow, no growth of memory,
no hidden payloads in data segments, and a Kolmogorov-style size proxy that routes complex guests
to the heavy lane (DESIGN §9 "Routes to HEAVY"). The report is a pure function of the bytes and
the policy; the daemon records ``aspec_reject:<reasons joined by "; ">`` and refuses the module
with FAILED_PRECONDITION when ``report.ok`` is false.

Parity: check order, reason strings and numbers follow the reference (``aspec.rs`` at ``ed9891d``)
so that incidents read the same; where the Python port deliberately differs it says so below:

- Decoding is ours (:mod:`evidenceos.core.wasm_binary`) and fails closed: anything it cannot
  decode (SIMD, GC, threads, malformed bytes ...) yields the single reason
  ``invalid wasm payload: <detail>`` and no further checks, because nothing decoded after an
  error can be trusted (the reference keeps the reasons of sections read before the error).
- The experimental ``dp_lane`` feature (spec 30 §10) is not built: a ``dp_laplace_i64`` or
  ``dp_gaussian_i64`` import always adds ``dp syscalls require dp_lane feature``.
- ``allowed_imports_prefixes`` (always empty in the reference) is not carried.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from evidenceos.core.decision import Lane
from evidenceos.core.wasm_binary import (
    ExternKind,
    Instruction,
    OperatorLimitExceeded,
    WasmDecodeError,
    WasmModule,
)
from evidenceos.errors import Internal, InvalidArgument

__all__ = [
    "ABI_IMPORTS",
    "CLAIM_V1",
    "COMPRESSION_MAGICS",
    "DECODE_ITEM_LIMIT",
    "DECODE_OPERATOR_SLACK",
    "EMIT_IMPORT",
    "HEAVY_LANE",
    "MAX_REASONS",
    "ORACLE_V1",
    "PROFILE_CLAIM_V1",
    "PROFILE_ORACLE_V1",
    "AspecLane",
    "AspecPolicy",
    "AspecReport",
    "FloatPolicy",
    "compute_lane",
    "policy_for_lane",
    "summary",
    "verify_module",
]

PROFILE_CLAIM_V1: Final = "CLAIM_V1"
PROFILE_ORACLE_V1: Final = "ORACLE_V1"

EMIT_IMPORT: Final = "emit_structured_claim"
_ABI_MODULES: Final = ("env", "kernel")
ABI_IMPORTS: Final = frozenset(
    (module, name)
    for module in _ABI_MODULES
    for name in ("oracle_query", "oracle_bucket", EMIT_IMPORT)
)
"""The six guest ABI v2 import pairs (spec 30 §5.2), allowed for claim guests."""

_DP_IMPORTS: Final = frozenset({"dp_laplace_i64", "dp_gaussian_i64"})

MAX_REASONS: Final = 100
"""Reasons kept in a report; the rest are counted in one final ``<n> more reasons omitted``.

The reasons end up in the incident text and the log (``aspec_reject:<reasons>``); without a cap a
4 MiB module with a million banned exports would write a megabytes-long entry."""

DECODE_OPERATOR_SLACK: Final = 65_536
"""Function-body operators decoded beyond the output-proxy cap (check 10) before ASPEC stops.

Modules up to ``cap + slack`` operators get the full report with the reference's reasons; larger
ones (already rejected by check 10) get the single reason ``output proxy bound exceeded:
instruction_count > <cap + slack> > <cap>``, which keeps the work on a 4 MiB request bounded."""

DECODE_ITEM_LIMIT: Final = 262_144
"""Vector entries and constant-expression operators decoded before ASPEC gives up (with
``invalid wasm payload: module holds more than 262144 items ...``). A claim guest needs a handful
of types, imports, exports and segments; the limit only bounds the decoding time of hostile
input (a 4 MiB type, global or element section would otherwise take many seconds)."""

COMPRESSION_MAGICS: Final = (
    b"\x1f\x8b",  # gzip
    b"\x78\x9c",  # zlib, default compression
    b"\x78\x01",  # zlib, no compression
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"\xfd\x2f\xb5\x28",  # zstd frame (spec 30 §5.4 check 9 lists exactly these bytes)
)

_TABLE_OPS: Final = frozenset(
    {"table.grow", "table.fill", "table.copy", "table.init", "table.get", "table.set", "table.size"}
)
_EXCEPTION_OPS: Final = frozenset({"try", "catch", "catch_all", "throw", "rethrow", "delegate"})
_FLOAT_UNARY_BINARY: Final = (
    *("abs", "neg", "ceil", "floor", "trunc", "nearest", "sqrt"),
    *("add", "sub", "mul", "div", "min", "max", "copysign"),
    *("eq", "ne", "lt", "gt", "le", "ge", "const"),
)
_FLOAT_OPS: Final = frozenset(
    [f"{t}.{op}" for t in ("f32", "f64") for op in _FLOAT_UNARY_BINARY]
    + [f"{f}.convert_{i}_{s}" for f in ("f32", "f64") for i in ("i32", "i64") for s in "su"]
    + [f"{i}.trunc_{f}_{s}" for i in ("i32", "i64") for f in ("f32", "f64") for s in "su"]
    + ["f32.demote_f64", "f64.promote_f32"]
    + ["f32.reinterpret_i32", "f64.reinterpret_i64", "i32.reinterpret_f32", "i64.reinterpret_f64"]
)
"""Spec 30 §5.4 check 5. QUIRK kept for parity: float loads/stores, float locals and the
saturating ``trunc_sat`` conversions are not in the list."""


class AspecLane(enum.Enum):
    """Assurance level of a policy; the values are the reference's names (used in summaries)."""

    HIGH_ASSURANCE = "HighAssurance"
    LOW_ASSURANCE = "LowAssurance"


class FloatPolicy(enum.Enum):
    """Whether float operators are rejected (only effective in HighAssurance)."""

    REJECT_ALL = "RejectAll"
    ALLOW = "Allow"


@dataclass(frozen=True, slots=True)
class AspecPolicy:
    """The limits ASPEC enforces (spec 30 §5.4 "Policy fields and defaults").

    Use :data:`CLAIM_V1` (fast lane), :data:`HEAVY_LANE` or :data:`ORACLE_V1`, and
    ``dataclasses.replace`` for variations. ``profile_name == "CLAIM_V1"`` additionally requires
    the emit import (check 4).
    """

    profile_name: str
    lane: AspecLane
    allowed_exports: tuple[str, ...]
    required_exports: tuple[str, ...]
    allowed_imports: frozenset[tuple[str, str]]
    max_data_segment_bytes: int
    max_entropy_ratio: float
    max_cyclomatic_complexity: int
    max_output_bytes: int
    max_loop_bound: int
    kolmogorov_proxy_cap: int
    float_policy: FloatPolicy

    def __post_init__(self) -> None:
        for field_name in (
            "max_data_segment_bytes",
            "max_cyclomatic_complexity",
            "max_output_bytes",
            "max_loop_bound",
            "kolmogorov_proxy_cap",
        ):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"ASPEC policy {field_name} must be an integer >= 0")
        # A NaN cap would make "ratio > cap" always false, i.e. fail open.
        if not math.isfinite(self.max_entropy_ratio):
            raise InvalidArgument("ASPEC policy max_entropy_ratio must be finite")


CLAIM_V1: Final = AspecPolicy(
    profile_name=PROFILE_CLAIM_V1,
    lane=AspecLane.HIGH_ASSURANCE,
    allowed_exports=("run", "memory"),
    required_exports=("run",),
    allowed_imports=ABI_IMPORTS,
    max_data_segment_bytes=65_536,
    max_entropy_ratio=0.75,
    max_cyclomatic_complexity=50,
    max_output_bytes=4096,
    max_loop_bound=1_000,
    kolmogorov_proxy_cap=50_000,
    float_policy=FloatPolicy.REJECT_ALL,
)
"""Fast-lane claim guests (reference ``AspecPolicy::claim_v1``)."""

HEAVY_LANE: Final = AspecPolicy(
    profile_name=PROFILE_CLAIM_V1,
    lane=AspecLane.LOW_ASSURANCE,
    allowed_exports=CLAIM_V1.allowed_exports,
    required_exports=CLAIM_V1.required_exports,
    allowed_imports=CLAIM_V1.allowed_imports,
    max_data_segment_bytes=CLAIM_V1.max_data_segment_bytes,
    max_entropy_ratio=CLAIM_V1.max_entropy_ratio,
    max_cyclomatic_complexity=CLAIM_V1.max_cyclomatic_complexity,
    # The largest canonical structured claim (spec 30 §5.4 table; structured_claims 2048).
    max_output_bytes=2048,
    max_loop_bound=10_000,
    kolmogorov_proxy_cap=CLAIM_V1.kolmogorov_proxy_cap,
    float_policy=FloatPolicy.ALLOW,
)
"""Heavy-lane claim guests (reference ``LaneConfig::for_lane(Heavy)``): bounded loops and floats."""

ORACLE_V1: Final = AspecPolicy(
    profile_name=PROFILE_ORACLE_V1,
    lane=AspecLane.HIGH_ASSURANCE,
    allowed_exports=("oracle_query", "memory"),
    required_exports=("oracle_query", "memory"),
    allowed_imports=frozenset(),
    max_data_segment_bytes=CLAIM_V1.max_data_segment_bytes,
    max_entropy_ratio=CLAIM_V1.max_entropy_ratio,
    max_cyclomatic_complexity=CLAIM_V1.max_cyclomatic_complexity,
    max_output_bytes=CLAIM_V1.max_output_bytes,
    max_loop_bound=CLAIM_V1.max_loop_bound,
    kolmogorov_proxy_cap=CLAIM_V1.kolmogorov_proxy_cap,
    float_policy=FloatPolicy.ALLOW,
)
"""External oracle modules (reference ``AspecPolicy::oracle_v1``); no imports at all."""


@dataclass(frozen=True, slots=True)
class AspecReport:
    """The outcome of :func:`verify_module` (spec 30 §5.4 "Report fields").

    ``ok`` is true exactly when ``reasons`` is empty. ``reasons`` may repeat a reason once per
    offending operator, as the reference does.
    """

    lane: AspecLane
    ok: bool
    reasons: tuple[str, ...]
    imported_funcs: int
    defined_funcs: int
    instruction_count: int
    return_count: int
    estimated_capacity_bits: int
    data_segment_bytes: int
    data_entropy_ratio: float
    max_cyclomatic_complexity: int
    kolmogorov_proxy_bits: float
    heavy_lane_flag: bool
    total_loops: int
    bounds_used: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.ok == bool(self.reasons):
            raise Internal("AspecReport.ok must be true exactly when there are no reasons")


def policy_for_lane(lane: str | Lane) -> AspecPolicy:
    """The ASPEC policy a claim of ``lane`` is verified with at CommitArtifacts.

    ``fast`` → :data:`CLAIM_V1`, ``heavy`` → :data:`HEAVY_LANE` (the reference's two lanes).
    The reference has no CANARY lane; a canary pulse (DESIGN §9) is an ordinary claim guest and
    gets the strictest claim policy, :data:`CLAIM_V1` (recorded in ``docs/decisions.md``).
    """
    value = lane.value if isinstance(lane, Lane) else lane
    if value in (Lane.FAST.value, Lane.CANARY.value):
        return CLAIM_V1
    if value == Lane.HEAVY.value:
        return HEAVY_LANE
    raise InvalidArgument(f"unknown lane {value!r} (expected fast, heavy or canary)")


def compute_lane(report: AspecReport) -> Lane:
    """The claim's lane after an accepted report (spec 30 §5.4 "lane outcome").

    HEAVY when the Kolmogorov proxy flagged the module or the policy was LowAssurance, else FAST;
    this is one of the routes to HEAVY that DESIGN §9 allows (policy, not accident). The caller
    only applies it when ``report.ok``; a CANARY pulse's lane is the caller's to keep.
    """
    if report.heavy_lane_flag or report.lane is AspecLane.LOW_ASSURANCE:
        return Lane.HEAVY
    return Lane.FAST


def summary(report: AspecReport) -> str:
    """``lane=<Lane>;ok=<bool>;imports=<n>;loops=<n>;kproxy=<x.xxx>`` (stored on the claim).

    Formatted like the reference's Rust ``format!``: lane by its reference name, booleans in
    lower case, ``kproxy`` with three decimals rounded half to even on the exact binary value
    (Rust and Python agree on that).
    """
    return (
        f"lane={report.lane.value};ok={'true' if report.ok else 'false'};"
        f"imports={report.imported_funcs};loops={report.total_loops};"
        f"kproxy={report.kolmogorov_proxy_bits:.3f}"
    )


def verify_module(wasm: bytes, policy: AspecPolicy) -> AspecReport:
    """Run every ASPEC check (spec 30 §5.4 checks 1-12) and collect all reasons.

    Never raises for any input bytes: undecodable modules are reported, not thrown.
    """
    instruction_cap = policy.max_output_bytes * 10
    decode_limit = instruction_cap + DECODE_OPERATOR_SLACK
    try:
        module = WasmModule.from_bytes(
            wasm, max_body_operators=decode_limit, max_items=DECODE_ITEM_LIMIT
        )
    except OperatorLimitExceeded:
        # Check 10 fails whatever else is found; stop before spending CPU on a huge body.
        reason = (
            f"output proxy bound exceeded: instruction_count > {decode_limit} > {instruction_cap}"
        )
        return _undecoded_report(policy, reason)
    except WasmDecodeError as exc:
        return _undecoded_report(policy, f"invalid wasm payload: {exc.message}")
    return _verify_decoded(module, policy)


def _undecoded_report(policy: AspecPolicy, reason: str) -> AspecReport:
    """A rejection with one reason and no metrics: nothing after a decode error is trusted."""
    return AspecReport(
        lane=policy.lane,
        ok=False,
        reasons=(reason,),
        imported_funcs=0,
        defined_funcs=0,
        instruction_count=0,
        return_count=0,
        estimated_capacity_bits=0,
        data_segment_bytes=0,
        data_entropy_ratio=0.0,
        max_cyclomatic_complexity=1,
        kolmogorov_proxy_bits=0.0,
        heavy_lane_flag=False,
        total_loops=0,
        bounds_used=(),
    )


# --------------------------------------------------------------------------------------------


def _verify_decoded(module: WasmModule, policy: AspecPolicy) -> AspecReport:
    reasons: list[str] = []
    high = policy.lane is AspecLane.HIGH_ASSURANCE
    reject_floats = high and policy.float_policy is FloatPolicy.REJECT_ALL

    # Checks 2 and 4: imports.
    imported_funcs = 0
    has_emit_import = False
    for imp in module.imports:
        path = f"{imp.module}::{imp.name}"
        if imp.kind is ExternKind.FUNC:
            imported_funcs += 1
            is_emit = imp.module in _ABI_MODULES and imp.name == EMIT_IMPORT
            if (imp.module, imp.name) not in policy.allowed_imports:
                reasons.append(f"banned import: {path}")
            has_emit_import = has_emit_import or is_emit
            if _is_forbidden_output_channel(path, is_emit):
                reasons.append(f"forbidden output channel import: {path}")
            if imp.name in _DP_IMPORTS:
                reasons.append("dp syscalls require dp_lane feature")
        elif imp.kind is ExternKind.MEMORY:
            reasons.append("memory imports are banned (define memory in-module)")
        elif imp.kind is ExternKind.TABLE:
            reasons.append("table imports are banned")
        elif imp.kind is ExternKind.GLOBAL:
            reasons.append("global imports are banned")
        else:
            reasons.append("exception tag imports are banned")

    # Check 3: export names.
    exported = [export.name for export in module.exports]
    reasons.extend(
        f"disallowed export: {name}" for name in exported if name not in policy.allowed_exports
    )

    # Checks 5-8 and 11 (call edges) per function body.
    defined_funcs = len(module.functions)
    instruction_count = 0
    return_count = 0
    total_loops = 0
    total_conditional_branches = 0
    max_complexity = 1
    bounds_used: list[int] = []
    call_edges: dict[int, list[int]] = {}
    for position, body in enumerate(module.code):
        func_index = imported_funcs + position
        ops = body.instructions
        instruction_count += len(ops)
        for inst in ops:
            name = inst.name
            if name == "loop":
                total_loops += 1
                if high:
                    reasons.append("loops are banned in HighAssurance")
            elif name == "br_table":
                reasons.append("br_table is banned and treated as irreducible")
            elif name == "call_indirect":
                reasons.append("call_indirect is banned")
            elif name in ("return_call", "return_call_indirect"):
                reasons.append("tail calls are banned")
            elif name == "memory.grow":
                reasons.append("memory.grow is banned")
            elif name in _TABLE_OPS:
                reasons.append("table operations are banned")
            elif name in _FLOAT_OPS:
                if reject_floats:
                    reasons.append("floating point is banned in HighAssurance lane")
            elif name == "call":
                callee = _int_immediate(inst)
                if callee >= imported_funcs:
                    call_edges.setdefault(func_index, []).append(callee)
            elif name == "return":
                return_count += 1
            elif name in _EXCEPTION_OPS:
                reasons.append("exceptions are banned")

        try:
            edges = _build_cfg(ops)
        except _CfgError as exc:
            reasons.append(f"failed to build CFG for function {func_index}: {exc}")
            continue
        if not high:
            try:
                bounds_used.extend(_verify_bounded_loops(ops, policy.max_loop_bound))
            except _CfgError as exc:
                reasons.append(f"function {func_index} violates bounded-loop admissibility: {exc}")
        if not _is_reducible(edges):
            reasons.append(f"irreducible CFG in function {func_index}")
        branches = sum(1 for inst in ops if inst.name in ("if", "br_if"))
        total_conditional_branches += branches
        max_complexity = max(max_complexity, 1 + branches)

    reasons.extend(
        f"missing required export: {name}"
        for name in policy.required_exports
        if name not in exported
    )
    if policy.profile_name == PROFILE_CLAIM_V1 and not has_emit_import:
        reasons.append("missing required import emit_structured_claim in env:: or kernel::")

    # Check 9: data segments.
    data = b"".join(segment.data for segment in module.data)
    data_segment_bytes = len(data)
    if data_segment_bytes > policy.max_data_segment_bytes:
        reasons.append(
            f"data segment bytes {data_segment_bytes} exceeds cap {policy.max_data_segment_bytes}"
        )
    entropy_ratio = _entropy_ratio(data)
    if entropy_ratio > policy.max_entropy_ratio:
        reasons.append(
            f"data entropy ratio {entropy_ratio:.4f} exceeds cap "
            f"{_rust_display(policy.max_entropy_ratio)}"
        )
    if any(magic in data for magic in COMPRESSION_MAGICS):
        reasons.append("compression magic detected in data segment")

    # Check 8: cyclomatic complexity.
    if max_complexity > policy.max_cyclomatic_complexity:
        reasons.append(
            f"cyclomatic complexity {max_complexity} exceeds cap {policy.max_cyclomatic_complexity}"
        )

    # Check 10: instruction count as an output-size proxy.
    instruction_cap = policy.max_output_bytes * 10
    if instruction_count > instruction_cap:
        reasons.append(
            f"output proxy bound exceeded: instruction_count {instruction_count} > "
            f"{instruction_cap}"
        )

    # Check 11: recursion over direct calls between defined functions.
    reasons.extend(
        f"recursion/cycle detected involving func index {index}"
        for index in _functions_on_or_after_cycles(call_edges, imported_funcs, defined_funcs)
    )

    # Check 12: Kolmogorov proxy and the heavy-lane flag.
    proxy = (
        data_segment_bytes * entropy_ratio * 8.0
        + float(total_conditional_branches)
        + defined_funcs * 2.0
    )
    cap = float(policy.kolmogorov_proxy_cap)
    heavy_lane_flag = proxy > cap
    if high and proxy > 1.5 * cap:
        reasons.append(
            f"capacity bits {proxy:.2f} exceed HighAssurance cap {_rust_display(1.5 * cap)}"
        )

    if len(reasons) > MAX_REASONS:
        omitted = len(reasons) - MAX_REASONS
        reasons = [*reasons[:MAX_REASONS], f"{omitted} more reasons omitted"]
    return AspecReport(
        lane=policy.lane,
        ok=not reasons,
        reasons=tuple(reasons),
        imported_funcs=imported_funcs,
        defined_funcs=defined_funcs,
        instruction_count=instruction_count,
        return_count=return_count,
        estimated_capacity_bits=_round_half_away(proxy),
        data_segment_bytes=data_segment_bytes,
        data_entropy_ratio=entropy_ratio,
        max_cyclomatic_complexity=max_complexity,
        kolmogorov_proxy_bits=proxy,
        heavy_lane_flag=heavy_lane_flag,
        total_loops=total_loops,
        bounds_used=tuple(bounds_used),
    )


def _is_forbidden_output_channel(path: str, is_emit: bool) -> bool:
    """Check 2: names that look like an output channel other than the ABI's emit."""
    lowered = path.lower()
    return (
        "fd_write" in lowered
        or "console" in lowered
        or "stdout" in lowered
        or ("output" in lowered and not is_emit)
    )


def _int_immediate(inst: Instruction, position: int = 0) -> int:
    value = inst.immediates[position]
    if not isinstance(value, int):  # pragma: no cover - the decoder's table guarantees this
        raise TypeError(f"{inst.name} immediate {position} is not an index")
    return value


def _entropy_ratio(data: bytes) -> float:
    """Shannon entropy in bits per byte over 8, clamped to [0, 1]; 0 for no data (check 9)."""
    if not data:
        return 0.0
    counts = Counter(data)
    n = float(len(data))
    h = 0.0
    for byte in range(256):  # ascending byte value, as the reference sums
        c = counts.get(byte, 0)
        if c:
            p = c / n
            h -= p * math.log2(p)
    return min(max(h / 8.0, 0.0), 1.0)


def _round_half_away(x: float) -> int:
    """Rust ``f64::round`` then ``as u64`` for the finite non-negative proxy."""
    floor = math.floor(x)
    return int(floor + 1 if x - floor >= 0.5 else floor)


def _rust_display(x: float) -> str:
    """Rust's ``{}`` for an f64: shortest round-trip digits, never an exponent, no ``.0``."""
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# --------------------------------------------------------------------------------------------
# Control flow (checks 6 and 7).


class _CfgError(Exception):
    """A function body whose control structure the CFG builder cannot follow."""


@dataclass(slots=True)
class _Frame:
    kind: str  # "block", "loop" or "if" ("try" is treated as a block; it is banned anyway)
    start: int
    end: int | None = None
    else_index: int | None = None


def _control_metadata(ops: Sequence[Instruction]) -> tuple[list[int | None], list[int | None]]:
    """Matching ``end`` and ``else`` index for every frame-opening operator."""
    matching_end: list[int | None] = [None] * len(ops)
    if_else: list[int | None] = [None] * len(ops)
    stack: list[_Frame] = []
    for idx, inst in enumerate(ops):
        name = inst.name
        if name in ("block", "loop", "if", "try"):
            stack.append(_Frame(name, idx))
        elif name == "else":
            if not stack:
                raise _CfgError("else without control frame")
            if stack[-1].kind != "if":
                raise _CfgError("else attached to non-if frame")
            if_else[stack[-1].start] = idx
        elif name in ("end", "delegate") and stack:
            # The body's own final `end` closes no frame (the function is not a frame).
            matching_end[stack.pop().start] = idx
    if stack:
        raise _CfgError("unterminated control frame")
    return matching_end, if_else


def _build_cfg(ops: Sequence[Instruction]) -> list[list[int]]:
    """Successor lists over operator indices plus an exit node (spec 30 §5.4 check 6).

    Reference quirks kept: ``if`` jumps to one past its ``else`` (or its ``end``); a branch to a
    block/if lands on the frame's ``end`` operator; the body itself is not a branch target, so
    ``br``/``br_if`` reaching the function level is an error ("invalid br depth").
    """
    matching_end, if_else = _control_metadata(ops)
    exit_node = len(ops)
    edges: list[list[int]] = [[] for _ in range(len(ops) + 1)]
    stack: list[_Frame] = []
    for idx, inst in enumerate(ops):
        name = inst.name
        succ = edges[idx]
        nxt = idx + 1
        if name in ("block", "loop", "try"):
            stack.append(_Frame(name, idx, matching_end[idx]))
            succ.append(nxt)
        elif name == "if":
            else_idx = if_else[idx]
            end_idx = matching_end[idx]
            stack.append(_Frame(name, idx, end_idx, else_idx))
            succ.append(nxt)
            if else_idx is not None:
                succ.append(else_idx + 1)
            elif end_idx is not None:
                succ.append(end_idx + 1)
            else:  # pragma: no cover - metadata guarantees an end
                succ.append(nxt + 1)
        elif name == "else":
            frame = stack[-1]  # metadata checked that this is an if frame
            succ.append((frame.end if frame.end is not None else exit_node) + 1)
        elif name in ("end", "delegate"):
            if stack:
                stack.pop()
            succ.append(nxt)
        elif name in ("br", "br_if"):
            depth = _int_immediate(inst)
            if depth >= len(stack):
                raise _CfgError(f"invalid {name} depth")
            frame = stack[len(stack) - 1 - depth]
            target = frame.start if frame.kind == "loop" else frame.end
            if target is None:  # pragma: no cover - metadata guarantees an end
                raise _CfgError(f"invalid {name} depth")
            succ.append(target)
            if name == "br_if":
                succ.append(nxt)
        elif name == "return":
            succ.append(exit_node)
        else:
            succ.append(nxt)
    # Successors past the exit (an `if`/`else` whose end is the last operator) stay as indices
    # with no node, exactly as in the reference; they cannot create cycles.
    return edges


def _strongly_connected_components(edges: Sequence[Sequence[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative (Python's recursion limit is far below body sizes)."""
    n = len(edges)
    index = [-1] * n
    lowlink = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] != -1:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, child = work.pop()
            if child == 0:
                index[v] = lowlink[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            succs = edges[v]
            recursed = False
            while child < len(succs):
                w = succs[child]
                child += 1
                if w >= n:
                    continue
                if index[w] == -1:
                    work.append((v, child))
                    work.append((w, 0))
                    recursed = True
                    break
                if on_stack[w]:
                    lowlink[v] = min(lowlink[v], index[w])
            if recursed:
                continue
            if lowlink[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    component.append(w)
                    if w == v:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[v])
    return components


def _is_reducible(edges: Sequence[Sequence[int]]) -> bool:
    """False when a cycle (SCC of size > 1 or with a self-loop) has more than one entry node."""
    n = len(edges)
    component_of = [0] * n
    components = _strongly_connected_components(edges)
    for number, component in enumerate(components):
        for v in component:
            component_of[v] = number
    entries: dict[int, set[int]] = {}
    for src, succs in enumerate(edges):
        for dst in succs:
            if dst < n and component_of[src] != component_of[dst]:
                entries.setdefault(component_of[dst], set()).add(dst)
    for number, component in enumerate(components):
        is_cycle = len(component) > 1 or component[0] in edges[component[0]]
        if is_cycle and len(entries.get(number, ())) > 1:
            return False
    return True


def _verify_bounded_loops(ops: Sequence[Instruction], max_loop_bound: int) -> list[int]:
    """Check 7 (LowAssurance): every ``loop`` must be a canonical constant-bounded counter loop.

    The pattern inside the loop is ``local.get X; i32.const 1; i32.add; local.set|tee X;
    local.get X; i32.const B (B >= 0); i32.lt_u|lt_s; br_if 0`` with ``i32.const _; local.set X``
    somewhere earlier in the function. Raises at the first offending loop (its bounds are then
    not reported), as the reference does. QUIRK kept: the scan of an outer loop may find a nested
    loop's pattern first. Pattern and init positions are indexed once, so the work is
    O(n log n) rather than the reference's O(loops x n).
    """
    matching_end, _ = _control_metadata(ops)
    pattern_at: list[int] = []  # positions where the canonical sequence starts, ascending
    pattern: dict[int, tuple[int, int]] = {}
    first_init: dict[int, int] = {}  # local -> first p with `i32.const _; local.set local`
    for pos in range(len(ops)):
        found = _match_counter_pattern(ops, pos)
        if found is not None:
            pattern_at.append(pos)
            pattern[pos] = found
        if ops[pos].name == "i32.const" and pos + 1 < len(ops) and ops[pos + 1].name == "local.set":
            first_init.setdefault(_int_immediate(ops[pos + 1]), pos)
    bounds: list[int] = []
    for loop_idx, inst in enumerate(ops):
        if inst.name != "loop":
            continue
        loop_end = matching_end[loop_idx]
        if loop_end is None:  # pragma: no cover - metadata guarantees an end
            raise _CfgError(f"loop at instruction {loop_idx} has no matching end")
        if loop_end <= loop_idx + 8:
            raise _CfgError(f"loop at instruction {loop_idx} missing canonical counter pattern")
        k = bisect_left(pattern_at, loop_idx + 1)
        if k == len(pattern_at) or pattern_at[k] > loop_end - 7:
            raise _CfgError(f"loop at instruction {loop_idx} missing canonical counter pattern")
        counter, bound = pattern[pattern_at[k]]
        if first_init.get(counter, loop_idx) >= loop_idx:
            raise _CfgError(f"loop at instruction {loop_idx} missing compile-time counter init")
        if bound > max_loop_bound:
            raise _CfgError(f"loop bound {bound} exceeds cap {max_loop_bound}")
        bounds.append(bound)
    return bounds


def _op(ops: Sequence[Instruction], pos: int) -> Instruction | None:
    return ops[pos] if pos < len(ops) else None


def _is(inst: Instruction | None, name: str, *immediates: int) -> bool:
    return (
        inst is not None
        and inst.name == name
        and (not immediates or inst.immediates[: len(immediates)] == immediates)
    )


def _match_counter_pattern(ops: Sequence[Instruction], pos: int) -> tuple[int, int] | None:
    """``(counter local, bound)`` if the canonical increment-and-test sequence starts at pos."""
    first = _op(ops, pos)
    if first is None or first.name != "local.get":
        return None
    counter = _int_immediate(first)
    update = _op(ops, pos + 3)
    bound_op = _op(ops, pos + 5)
    if not (
        _is(_op(ops, pos + 1), "i32.const", 1)
        and _is(_op(ops, pos + 2), "i32.add")
        and (_is(update, "local.set", counter) or _is(update, "local.tee", counter))
        and _is(_op(ops, pos + 4), "local.get", counter)
        and bound_op is not None
        and bound_op.name == "i32.const"
        and _int_immediate(bound_op) >= 0
        and (_is(_op(ops, pos + 6), "i32.lt_u") or _is(_op(ops, pos + 6), "i32.lt_s"))
        and _is(_op(ops, pos + 7), "br_if", 0)
    ):
        return None
    return counter, _int_immediate(bound_op)


def _functions_on_or_after_cycles(
    call_edges: dict[int, list[int]], first: int, count: int
) -> list[int]:
    """Kahn's sort over direct calls: defined functions never freed are on or after a cycle."""
    end = first + count
    indegree = dict.fromkeys(range(first, end), 0)
    for src, dsts in call_edges.items():
        if first <= src < end:
            for dst in dsts:
                if dst in indegree:
                    indegree[dst] += 1
    queue = deque(f for f, d in indegree.items() if d == 0)
    reached: set[int] = set()
    while queue:
        f = queue.popleft()
        reached.add(f)
        for g in call_edges.get(f, ()):
            if g in indegree:
                indegree[g] -= 1
                if indegree[g] == 0:
                    queue.append(g)
    return [f for f in range(first, end) if f not in reached]
