"""Claim lifecycle use cases: create, commit, freeze/seal, read capsules (spec 20 §3-4, DESIGN §3).

Every mutating method validates first (pure checks and reads), then hands one write function to
the store: state, pools, ledger, log leaves and the idempotency record commit together or not at
all. A request refused before the guest runs leaves no trace. Execution lives in
``service.execution``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from evidenceos.core import aspec
from evidenceos.core.auth import CallerIdentity, Role
from evidenceos.core.claim import Artifact, ClaimRecord
from evidenceos.core.claim_ids import (
    ClaimRequestV1,
    ClaimRequestV2,
    compute_claim_id_v1,
    compute_claim_id_v2,
    compute_dependency_merkle_root,
)
from evidenceos.core.claim_state import LOCKED_FOR_EDITS, ClaimState, verify_transition
from evidenceos.core.credit import AdmissionProvider, CreditPricing, StaticAdmissionProvider
from evidenceos.core.ledger import (
    DEFAULT_DEPENDENCE_MULTIPLIER,
    BudgetPool,
    ConservationLedger,
    PoolBudgetExhausted,
    PoolFrozen,
    compute_worst_case_reservation_bits,
)
from evidenceos.core.oracle import (
    OraclePins,
    OracleResolution,
    compute_default_resolution_hash,
    compute_oracle_pins_hash,
)
from evidenceos.core.structured_claims import (
    SchemaId,
    canonicalize_schema_id,
    compute_kout_max_bits,
)
from evidenceos.core.topicid import ClaimMetadata, TopicSignals, compute_topic_id
from evidenceos.core.wasm_binary import WasmModule
from evidenceos.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from evidenceos.sandbox import Sandbox
from evidenceos.service._guards import BoundedCache, InflightSet
from evidenceos.service.governance import GovernanceService
from evidenceos.service.log_service import Clock, LogService, ProofBundle, system_clock_ms
from evidenceos.store import claims as claims_table
from evidenceos.store import epochs as epochs_table
from evidenceos.store import idempotency
from evidenceos.store import log as log_table
from evidenceos.store import pools as pools_table
from evidenceos.store.db import Connection, Store
from evidenceos.store.epoch_configs import load_epoch_config
from evidenceos.store.failpoints import failpoint
from evidenceos.store.holdouts import HoldoutRegistry

MAX_ARTIFACTS = 128
MAX_DEPENDENCIES = 256
CREATE_V2_METHOD = "/evidenceos.v2.EvidenceOS/CreateClaimV2"

_FAST_LANES = {"fast", "highassurance", "high_assurance"}
_HEAVY_LANES = {"heavy", "lowassurance", "low_assurance"}
_CANARY_LANES = {"canary"}
MAX_ORACLE_CALLS = {"fast": 32, "canary": 32, "heavy": 8}
_EMPTY_SHA256 = hashlib.sha256(b"").digest()
_NO_TRIAL_SHA256 = hashlib.sha256(b"\x02" + bytes(54)).digest()  # the sealed "no trial" block


@dataclass(frozen=True, slots=True)
class KernelSettings:
    """Kernel knobs from flags and environment (spec 60 §1.3 D, E)."""

    production_mode: bool = False
    dependence_multiplier: float = DEFAULT_DEPENDENCE_MULTIPLIER
    default_holdout_k_bits_budget: float = 1024.0
    default_holdout_access_credit_budget: float = 1024.0
    holdout_pool_scope: str = "global"
    force_heavy_domains: frozenset[str] = frozenset({"CBRN"})
    deny_free_text_outputs: bool = False
    pricing: CreditPricing = field(default_factory=CreditPricing)
    admission: AdmissionProvider = field(default_factory=StaticAdmissionProvider)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """(principal, method, x-request-id) plus the hash of the request's bytes (spec 20 §9)."""

    principal_id: str
    method: str
    request_id: str
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class CreateClaimV2Input:
    claim_name: str
    lane: str
    alpha_micros: int
    epoch_config_ref: str
    output_schema_id: str
    has_metadata: bool
    semantic_hash: bytes
    phys_hir_signature_hash: bytes
    dependency_merkle_root: bytes
    holdout_ref: str
    epoch_size: int
    oracle_num_symbols: int
    access_credit: int
    oracle_id: str
    nullspec_id: str
    dp_epsilon_budget: float | None
    dp_delta_budget: float | None


@dataclass(frozen=True, slots=True)
class CreateClaimResult:
    claim_id: bytes
    topic_id: bytes
    state: ClaimState

    def to_json(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim_id.hex(),
            "topic_id": self.topic_id.hex(),
            "state": self.state.name,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreateClaimResult:
        return cls(
            bytes.fromhex(d["claim_id"]), bytes.fromhex(d["topic_id"]), ClaimState[d["state"]]
        )


@dataclass(frozen=True, slots=True)
class CapsuleView:
    capsule_bytes: bytes
    capsule_hash: bytes
    etl_index: int


@dataclass(frozen=True, slots=True)
class CapsuleFetch:
    capsule: CapsuleView
    proofs: ProofBundle


class _Replay(Exception):
    """A write function found the stored response of a retry; carries it out of the store."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__("replayed request")
        self.response = response


def verify_claim_access(caller: CallerIdentity, claim: ClaimRecord) -> None:
    if caller.role is Role.OPERATOR or caller.principal_id == claim.owner_principal_id:
        return
    raise PermissionDenied("AUTHZ_CLAIM_OWNER_MISMATCH: caller does not own claim")


def verify_auditor(caller: CallerIdentity) -> None:
    if caller.role not in (Role.AUDITOR, Role.OPERATOR):
        raise PermissionDenied("auditor role required")


def parse_claim_id(value: bytes) -> bytes:
    if len(value) != 32:
        raise InvalidArgument("invalid request")
    return value


def _check_len(value: str, low: int, high: int, message: str) -> str:
    if not low <= len(value.encode()) <= high:
        raise InvalidArgument(message)
    return value


def resolve_lane(requested: str) -> str:
    lowered = requested.lower()
    if lowered in _FAST_LANES:
        return "fast"
    if lowered in _HEAVY_LANES:
        return "heavy"
    if lowered in _CANARY_LANES:
        return "canary"
    raise InvalidArgument("metadata.lane must be fast or heavy")


def schema_domain(schema: SchemaId) -> str:
    """The safety domain of a claim comes from its output schema (DESIGN §9)."""
    return "CBRN" if schema is SchemaId.CBRN_SC_V1 else "UNSPECIFIED"


def resolution_for(claim: ClaimRecord) -> OracleResolution:
    return _resolution(claim.oracle_num_symbols)


@functools.lru_cache(maxsize=64, typed=True)
def _resolution(num_symbols: int) -> OracleResolution:
    """A claim's resolution: a frozen value that only ``num_symbols`` sets (memoised)."""
    return OracleResolution(num_symbols=num_symbols)


def max_output_bytes(claim: ClaimRecord) -> int:
    if claim.schema == SchemaId.CBRN_SC_V1.value:
        return 2048
    return resolution_for(claim).encoded_len_bytes


def reservation_bits(lane: str, num_symbols: int, schema: SchemaId, multiplier: float) -> int:
    return compute_worst_case_reservation_bits(
        math.log2(num_symbols), MAX_ORACLE_CALLS[lane], multiplier, compute_kout_max_bits(schema)
    )


def lane_memory_bytes(lane: str) -> int:
    """Memory limit per lane (spec 30 §5.3): 4 pages fast, 2 pages heavy."""
    return (2 if lane == "heavy" else 4) * 65536


def compute_artifacts_hash(artifacts: Sequence[Artifact]) -> bytes:
    """``H(Σ hash || u64be(len(kind)) || kind)`` over artifacts sorted by (kind, hash)."""
    h = hashlib.sha256()
    for a in sorted(artifacts, key=lambda a: (a.kind, a.artifact_hash)):
        kind = a.kind.encode()
        h.update(a.artifact_hash + struct.pack(">Q", len(kind)) + kind)
    return h.digest()


class ClaimService:
    """Claims from creation to capsule; one daemon-wide instance."""

    def __init__(
        self,
        store: Store,
        log_service: LogService,
        sandbox: Sandbox,
        holdouts: HoldoutRegistry,
        settings: KernelSettings,
        clock: Clock = system_clock_ms,
        governance: GovernanceService | None = None,
    ) -> None:
        self.governance = governance
        self.store = store
        self.log = log_service
        self.sandbox = sandbox
        self.holdouts = holdouts
        self.settings = settings
        self.clock = clock
        self._inflight = InflightSet()
        # ASPEC reports of modules that passed every CommitArtifacts check, by (module sha256,
        # claim lane): all of them are pure functions of the module bytes and the lane.
        self._vetted: BoundedCache[tuple[bytes, str], aspec.AspecReport] = BoundedCache(256)

    # -- idempotency --------------------------------------------------------------------------

    @contextmanager
    def inflight(self, key: IdempotencyKey | None) -> Iterator[None]:
        """A duplicate that arrives while the first is still running gets ABORTED (spec 20 §9)."""
        if key is None:
            yield
            return
        token = (key.principal_id, key.method, key.request_id)
        with self._inflight.hold(token, "request with x-request-id already in progress"):
            yield

    def replayed(self, key: IdempotencyKey | None) -> dict[str, Any] | None:
        """The stored response for a retry, or None; a changed payload is ALREADY_EXISTS."""
        if key is None:
            return None
        with self.store.read() as conn:
            return self.replayed_in(conn, key)

    @staticmethod
    def replayed_in(conn: Connection, key: IdempotencyKey | None) -> dict[str, Any] | None:
        """:meth:`replayed`, read in the caller's snapshot."""
        if key is None:
            return None
        record = idempotency.find_record(conn, key.principal_id, key.method, key.request_id)
        if record is None:
            return None
        if record.request_hash != key.request_hash:
            raise AlreadyExists("x-request-id reused with different request payload")
        return record.response

    def remember(
        self, conn: Connection, key: IdempotencyKey | None, response: Mapping[str, Any]
    ) -> None:
        if key is not None:
            idempotency.put_record(
                conn,
                key.principal_id,
                key.method,
                key.request_id,
                key.request_hash,
                dict(response),
                self.clock(),
            )

    # -- create -------------------------------------------------------------------------------

    def create_claim_v2(
        self, caller: CallerIdentity, req: CreateClaimV2Input, key: IdempotencyKey | None
    ) -> CreateClaimResult:
        """CreateClaimV2 (spec 20 §3.4 with DESIGN §5's topic and lane rules).

        A retry gets the stored response, whether or not the request would be refused now: the
        write function looks for it first, and so does a refusal before raising."""
        with self.inflight(key):
            try:
                record = self._new_claim_v2(caller, req)
            except Exception:
                cached = self.replayed(key)
                if cached is not None:
                    return CreateClaimResult.from_json(cached)
                raise
            return self._insert_claim(record, key, "create_claim_v2")

    def _new_claim_v2(self, caller: CallerIdentity, req: CreateClaimV2Input) -> ClaimRecord:
        _check_len(req.claim_name, 1, 128, "claim_name must be in [1,128]")
        oracle_id = req.oracle_id.strip() or "builtin.accuracy"
        _check_len(oracle_id, 1, 128, "oracle_id must be in [1,128]")
        if self.governance is not None:
            self.governance.policy.check_oracle_id(oracle_id)
        nullspec_id = req.nullspec_id.strip()
        _check_len(nullspec_id, 0, 128, "nullspec_id must be in [0,128]")
        if req.epoch_size == 0:
            raise InvalidArgument("epoch_size must be > 0")
        for name, value in (
            ("dp_epsilon_budget", req.dp_epsilon_budget),
            ("dp_delta_budget", req.dp_delta_budget),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"{name} must be finite and >= 0")
        descriptor = self.holdouts.describe(req.holdout_ref)
        if not req.has_metadata:
            raise InvalidArgument("metadata is required")
        _check_len(req.epoch_config_ref, 1, 128, "metadata.epoch_config_ref must be in [1,128]")
        epoch_config = load_epoch_config(self.store.data_dir, req.epoch_config_ref)
        _check_len(req.output_schema_id, 1, 128, "metadata.output_schema_id must be in [1,128]")
        schema = canonicalize_schema_id(req.output_schema_id)
        signals = TopicSignals.from_wire(
            req.semantic_hash, req.phys_hir_signature_hash, req.dependency_merkle_root
        )
        metadata = ClaimMetadata(
            lane=req.lane,
            alpha_micros=req.alpha_micros,
            epoch_config_ref=req.epoch_config_ref,
            output_schema_id=req.output_schema_id,
        )
        topic = compute_topic_id(metadata, signals)
        if req.access_credit > self.settings.admission.max_credit(caller.principal_id):
            raise ResourceExhausted("requested credit exceeds admission limit")
        lane = resolve_lane(req.lane)
        if topic.signals_disagree and lane == "fast":
            lane = "heavy"
        domain = schema_domain(schema)
        if self.settings.deny_free_text_outputs and schema is SchemaId.LEGACY:
            raise FailedPrecondition("domain policy requires CBRN_SC_V1 structured outputs")
        if domain in self.settings.force_heavy_domains and lane == "fast":
            lane = "heavy"
        if req.oracle_num_symbols < 2:
            raise InvalidArgument("oracle_num_symbols must be >= 2")
        pln = epoch_config.pln if epoch_config is not None else None
        if pln is None:
            raise FailedPrecondition("PLN must be configured for claimed lane")
        if not (pln.heavy if lane == "heavy" else pln.fast):
            raise FailedPrecondition("PLN not enabled for requested lane")
        epoch_size = epoch_config.epoch_size if epoch_config is not None else req.epoch_size
        if not 0 < req.alpha_micros < 1_000_000:
            raise InvalidArgument("alpha_micros must encode alpha in (0,1)")
        alpha = req.alpha_micros / 1_000_000
        claim_id = compute_claim_id_v2(
            ClaimRequestV2(
                principal_id=caller.principal_id,
                claim_name=req.claim_name,
                metadata=metadata,
                signals=signals,
                holdout_ref=req.holdout_ref,
                epoch_size=req.epoch_size,
                oracle_num_symbols=req.oracle_num_symbols,
                oracle_id=req.oracle_id,
                nullspec_id=req.nullspec_id,
                dp_epsilon_budget=req.dp_epsilon_budget,
                dp_delta_budget=req.dp_delta_budget,
            )
        )
        ledger = ConservationLedger.create(
            alpha,
            k_bits_budget=float(req.access_credit),
            access_credit_budget=float(req.access_credit),
            epsilon_budget=req.dp_epsilon_budget,
            delta_budget=req.dp_delta_budget,
        )
        scope = descriptor.pool_scope or self.settings.holdout_pool_scope
        principals = {"global": ("",), "per_principal": (caller.principal_id,)}.get(
            scope, ("", caller.principal_id)
        )
        return ClaimRecord(
            claim_id=claim_id,
            owner_principal_id=caller.principal_id,
            claim_name=req.claim_name,
            topic_id=topic.topic_id,
            holdout_ref=req.holdout_ref,
            holdout_handle=descriptor.handle,
            holdout_len=descriptor.length,
            oracle_id=oracle_id,
            nullspec_id=nullspec_id,
            lane=lane,
            requested_lane=req.lane,
            alpha_micros=req.alpha_micros,
            alpha=alpha,
            epoch_config_ref=req.epoch_config_ref,
            output_schema_id=req.output_schema_id,
            schema=schema.value,
            epoch_size=epoch_size,
            oracle_num_symbols=req.oracle_num_symbols,
            access_credit=req.access_credit,
            state=ClaimState.UNCOMMITTED,
            ledger=ledger,
            created_at_ms=self.clock(),
            pln=pln,
            semantic_hash=signals.semantic_hash,
            phys_hir_signature_hash=signals.phys_hir_signature_hash,
            dependency_merkle_root=signals.dependency_merkle_root,
            signals_disagree=topic.signals_disagree,
            dp_epsilon_budget=req.dp_epsilon_budget,
            dp_delta_budget=req.dp_delta_budget,
            holdout_pool_principals=principals,
        )

    def _insert_claim(
        self, record: ClaimRecord, key: IdempotencyKey | None, op: str
    ) -> CreateClaimResult:
        """Insert (or find) the claim and reserve its worst case in every pool, atomically."""
        schema = SchemaId(record.schema)
        worst = reservation_bits(
            record.lane, record.oracle_num_symbols, schema, self.settings.dependence_multiplier
        )

        def write(conn: Connection) -> CreateClaimResult:
            replay = self.replayed_in(conn, key)
            if replay is not None:
                raise _Replay(replay)  # rolled back: the write changed nothing
            gen = self.store.generation
            existing = claims_table.find_claim(conn, record.claim_id, gen)
            if existing is not None:
                result = CreateClaimResult(existing.claim_id, existing.topic_id, existing.state)
                self.remember(conn, key, result.to_json())
                return result
            topic_pool = pools_table.find_topic_pool(conn, record.topic_id, gen) or BudgetPool(
                float(record.access_credit), float(record.access_credit)
            )
            try:
                topic_pool = topic_pool.reserve(worst, worst)
            except (PoolBudgetExhausted, PoolFrozen):
                raise FailedPrecondition("topic budget exhausted") from None
            pools_table.put_topic_pool(conn, record.topic_id, topic_pool, gen)
            for principal in record.holdout_pool_principals:
                pool = pools_table.find_holdout_pool(conn, record.holdout_handle, principal, gen)
                if pool is None:
                    pool = self._new_holdout_pool(record)
                try:
                    pool = pool.reserve(worst, worst)
                except (PoolBudgetExhausted, PoolFrozen):
                    raise FailedPrecondition("holdout budget exhausted") from None
                pools_table.put_holdout_pool(conn, record.holdout_handle, principal, pool, gen)
            stored = record.evolve(reserved_k_bits=worst, reserved_access_credit=worst)
            claims_table.put_claim(conn, stored, self.clock(), generation=gen)
            result = CreateClaimResult(stored.claim_id, stored.topic_id, stored.state)
            self.remember(conn, key, result.to_json())
            failpoint(f"before_commit_{op}")
            return result

        try:
            return self.store.write(write)
        except _Replay as replay:
            return CreateClaimResult.from_json(replay.response)

    def _new_holdout_pool(self, record: ClaimRecord) -> BudgetPool:
        descriptor = self.holdouts.describe(record.holdout_ref)
        k_budget = descriptor.k_bits_budget
        a_budget = descriptor.access_credit_budget
        return BudgetPool(
            self.settings.default_holdout_k_bits_budget if k_budget is None else k_budget,
            self.settings.default_holdout_access_credit_budget if a_budget is None else a_budget,
        )

    def create_claim_v1(
        self,
        caller: CallerIdentity,
        *,
        topic_id: bytes,
        holdout_handle_id: bytes,
        phys_hir_hash: bytes,
        epoch_size: int,
        oracle_num_symbols: int,
        alpha: float,
        access_credit: int,
    ) -> CreateClaimResult:
        """Legacy CreateClaim (spec 20 §3.3): caller-chosen ids, no topic derivation."""
        if epoch_size == 0:
            raise InvalidArgument("epoch_size must be > 0")
        for value in (topic_id, holdout_handle_id, phys_hir_hash):
            parse_claim_id(value)
        if oracle_num_symbols < 2:
            raise InvalidArgument("oracle_num_symbols must be >= 2")
        if access_credit > self.settings.admission.max_credit(caller.principal_id):
            raise ResourceExhausted("requested credit exceeds admission limit")
        if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
            raise InvalidArgument("alpha must be in (0,1)")
        claim_id = compute_claim_id_v1(
            ClaimRequestV1(
                topic_id, holdout_handle_id, phys_hir_hash, epoch_size, oracle_num_symbols
            )
        )
        with self.store.read() as conn:
            existing = claims_table.find_claim(conn, claim_id)
        if existing is not None:
            verify_claim_access(caller, existing)
            return CreateClaimResult(existing.claim_id, existing.topic_id, existing.state)
        record = ClaimRecord(
            claim_id=claim_id,
            owner_principal_id=caller.principal_id,
            claim_name="legacy-v1",
            topic_id=topic_id,
            holdout_ref=holdout_handle_id.hex(),
            holdout_handle=holdout_handle_id,
            holdout_len=epoch_size,
            oracle_id="builtin.accuracy",
            nullspec_id="",
            lane="fast",
            requested_lane="fast",
            alpha_micros=round(alpha * 1_000_000),
            alpha=alpha,
            epoch_config_ref="legacy-v1",
            output_schema_id="legacy/v1",
            schema=SchemaId.LEGACY.value,
            epoch_size=epoch_size,
            oracle_num_symbols=oracle_num_symbols,
            access_credit=access_credit,
            state=ClaimState.UNCOMMITTED,
            ledger=ConservationLedger.create(
                alpha, k_bits_budget=float(access_credit), access_credit_budget=float(access_credit)
            ),
            created_at_ms=self.clock(),
            phys_hir_signature_hash=phys_hir_hash,
            legacy=True,
        )
        return self._insert_claim(record, None, "create_claim")

    # -- commit -------------------------------------------------------------------------------

    def commit_artifacts(
        self,
        caller: CallerIdentity,
        claim_id: bytes,
        artifacts: Sequence[tuple[bytes, str]],
        wasm_module: bytes,
    ) -> ClaimState:
        """CommitArtifacts (spec 20 §3.5). An ASPEC rejection changes nothing (DESIGN §3)."""
        if not 1 <= len(artifacts) <= MAX_ARTIFACTS:
            raise InvalidArgument("artifacts count must be in [1,128]")
        if not wasm_module:
            raise InvalidArgument("wasm_module is required")
        parse_claim_id(claim_id)
        wasm_hash = hashlib.sha256(wasm_module).digest()
        fingerprint = self.sandbox.engine_fingerprint()
        with self.store.read() as conn:  # one snapshot for the claim and the stored artefact
            claim = claims_table.get_claim(conn, claim_id)
            stored = claims_table.has_compiled_module(conn, wasm_hash, fingerprint)
        verify_claim_access(caller, claim)
        if claim.metadata_locked or claim.state in LOCKED_FOR_EDITS:
            raise FailedPrecondition("cannot commit artifacts after freeze")
        parsed: list[Artifact] = []
        wasm_decl: bytes | None = None
        deps: list[bytes] = []
        for artifact_hash, kind in artifacts:
            _check_len(kind, 1, 64, "artifact kind must be in [1,64]")
            parse_claim_id(artifact_hash)
            parsed.append(Artifact(kind, artifact_hash))
            if kind == "wasm":
                wasm_decl = artifact_hash
            elif kind == "dependency":
                deps.append(artifact_hash)
        self._verify_dependencies(claim, deps)
        if wasm_decl != wasm_hash:
            raise FailedPrecondition("wasm artifact hash does not match wasm_module")
        vetted_key = (wasm_hash, claim.lane)
        report = self._vetted.get(vetted_key)
        if report is None:
            report = aspec.verify_module(wasm_module, aspec.policy_for_lane(claim.lane))
            if not report.ok:
                raise FailedPrecondition("ASPEC rejected wasm module: " + "; ".join(report.reasons))
        if claim.state is ClaimState.STALE:
            raise FailedPrecondition("invalid claim state transition")
        lane = "heavy" if (report.heavy_lane_flag and claim.lane == "fast") else claim.lane
        compiled = self.sandbox.compile(wasm_module)
        if vetted_key not in self._vetted:
            self.sandbox.verify_guest_abi(compiled, lane_memory_bytes(lane))
            self._verify_memories(wasm_module, lane)
            self._vetted.put(vetted_key, report)
        # The artefact is made and written once per (module, engine), not on every commit (rows
        # of compiled_modules are never removed, and the insert ignores one written meanwhile).
        artefact = None if stored else self.sandbox.serialize(compiled)

        def write(conn: Connection) -> ClaimState:
            gen = self.store.generation
            current = claims_table.get_claim(conn, claim_id, gen)
            if current.metadata_locked or current.state in LOCKED_FOR_EDITS:
                raise FailedPrecondition("cannot commit artifacts after freeze")
            if current.state is not ClaimState.COMMITTED:
                verify_transition(current.state, ClaimState.COMMITTED)
            now = self.clock()
            digest = claims_table.put_wasm_module(conn, wasm_module, now)
            if artefact is not None:
                claims_table.put_compiled_module(conn, digest, fingerprint, artefact, now)
            updated = current.evolve(
                state=ClaimState.COMMITTED,
                artifacts=tuple(parsed),
                dependency_items=tuple(deps),
                wasm_sha256=digest,
                aspec_summary=aspec.summary(report),
                aspec_heavy=report.heavy_lane_flag,
                lane=lane,
                sealed_preimage_hash=None,
                oracle_pins=None,
            )
            claims_table.put_claim(conn, updated, now, stored=True, generation=gen)
            failpoint("before_commit_commit_artifacts")
            return updated.state

        return self.store.write(write)

    @staticmethod
    def _verify_memories(wasm_module: bytes, lane: str) -> None:
        """Every declared memory, exported or not, must fit the lane (D-C7): a module that could
        only fail at instantiation is refused here, before any guest code can run."""
        limit = lane_memory_bytes(lane) // 65536
        for memory in WasmModule.from_bytes(wasm_module).memories:
            if memory.limits.minimum > limit:
                raise FailedPrecondition(
                    f"invalid wasm module: memory declares {memory.limits.minimum} pages, "
                    f"above the {lane} lane limit of {limit}"
                )

    @staticmethod
    def _verify_dependencies(claim: ClaimRecord, deps: Sequence[bytes]) -> None:
        if len(deps) > MAX_DEPENDENCIES:
            raise FailedPrecondition("dependency list exceeds allowed size")
        if claim.dependency_merkle_root is not None:
            if compute_dependency_merkle_root(deps) != claim.dependency_merkle_root:
                raise FailedPrecondition(
                    "dependency artifacts do not match create-time dependency_merkle_root"
                )
        elif deps:
            raise FailedPrecondition(
                "dependency artifacts require create-time dependency_merkle_root"
            )

    # -- freeze / seal ------------------------------------------------------------------------

    def freeze(self, caller: CallerIdentity, claim_id: bytes, op: str) -> ClaimState:
        """FreezeGates / Freeze / SealClaim / Seal (spec 20 §3.6-3.7); failures change nothing."""
        parse_claim_id(claim_id)
        claim = self._load(claim_id)
        verify_claim_access(caller, claim)
        if claim.state is ClaimState.SEALED and claim.sealed_preimage_hash is not None:
            return ClaimState.SEALED
        if claim.state not in (ClaimState.COMMITTED, ClaimState.STALE):
            raise FailedPrecondition("claim must be COMMITTED or STALE to freeze gates")
        if not claim.artifacts:
            raise FailedPrecondition("artifacts must be committed before freeze")
        if claim.wasm_sha256 is None:
            raise FailedPrecondition("wasm bytes must be committed before freeze")
        self._verify_dependencies(claim, claim.dependency_items)

        def write(conn: Connection) -> ClaimState:
            gen = self.store.generation
            current = claims_table.get_claim(conn, claim_id, gen)
            if current.state is ClaimState.SEALED and current.sealed_preimage_hash is not None:
                return ClaimState.SEALED
            if current.state not in (ClaimState.COMMITTED, ClaimState.STALE):
                raise FailedPrecondition("claim must be COMMITTED or STALE to freeze gates")
            epoch = self.current_epoch(conn)
            compute_default_resolution_hash(current.oracle_num_symbols)  # refuses a bad count first
            ttl = 1
            if self.governance is not None:
                policy = self.governance.policy
                ttl = policy.ttl_for(current.oracle_id)
                if self.settings.production_mode:
                    policy.require_calibration(current.oracle_id)
            pins = OraclePins.for_default_resolution(
                current.oracle_num_symbols, ttl_epochs=ttl, pinned_epoch=epoch
            )
            lineage = (
                current.dependency_merkle_root
                if current.dependency_merkle_root is not None
                else _EMPTY_SHA256
            )
            artifacts_hash = compute_artifacts_hash(current.artifacts)
            assert current.wasm_sha256 is not None  # noqa: S101 - checked above
            preimage = hashlib.sha256(
                artifacts_hash
                + current.wasm_sha256
                + lineage
                + hashlib.sha256(current.holdout_ref.encode()).digest()
                + compute_oracle_pins_hash(pins)
                + _NO_TRIAL_SHA256
            ).digest()
            artifacts = tuple(sorted(current.artifacts, key=lambda a: (a.kind, a.artifact_hash)))
            updated = current.evolve(
                state=ClaimState.SEALED,
                metadata_locked=True,
                artifacts=artifacts,
                artifacts_hash=artifacts_hash,
                sealed_preimage_hash=preimage,
                # keys in the stored (sorted) order, as every reader of the row will see them
                oracle_pins=dict(sorted(pins.to_json().items())),
            )
            claims_table.put_claim(
                conn,
                updated,
                self.clock(),
                artifacts_changed=artifacts != current.artifacts,
                stored=True,
                generation=gen,
            )
            failpoint(f"before_commit_{op}")
            return ClaimState.SEALED

        return self.store.write(write)

    # -- reads --------------------------------------------------------------------------------

    def _load(self, claim_id: bytes) -> ClaimRecord:
        with self.store.read() as conn:
            return claims_table.get_claim(conn, claim_id)

    def current_epoch(self, conn: Connection) -> int:
        """The operator's forced epoch when one is set, else 0 (spec 50 epoch control)."""
        forced = epochs_table.find_forced_epoch(conn)
        return 0 if forced is None else forced

    def get_capsule(self, caller: CallerIdentity, claim_id: bytes) -> CapsuleView:
        verify_auditor(caller)
        parse_claim_id(claim_id)
        with self.store.read() as conn:
            claim = claims_table.get_claim(conn, claim_id)
            verify_claim_access(caller, claim)
            if claim.etl_index is None or claim.last_capsule_hash is None:
                raise FailedPrecondition("capsule not available")
            leaf = log_table.get_leaf(conn, claim.etl_index)
        return CapsuleView(leaf.payload, leaf.payload_sha256, leaf.leaf_index)

    def fetch_capsule(self, caller: CallerIdentity, claim_id: bytes) -> CapsuleFetch:
        """FetchCapsule (spec 20 §3.15): capsule, current head, inclusion and consistency proofs,
        all from one snapshot."""
        view = self.get_capsule(caller, claim_id)
        bundle = self.log.proof_bundle(view.etl_index)
        return CapsuleFetch(view, bundle)
