"""ExecuteClaimV2: run the guest against the holdout, meter, decide, publish (spec 20 §3.9,
spec 30 §7, DESIGN §3, §5).

Everything that can refuse the call without touching the holdout is checked first — state,
pins, NullSpec, credit (against the worst case) — and leaves no trace. Pool budgets were reserved
at creation for the worst case, so once the guest has run nothing can fail for lack of budget.
The outcome commits in one transaction: capsule leaf, claim state, ledger, pool settlements,
canary, credit and the idempotency record. If the guest ran and then failed, that failure is
information: an incident commits instead (claim FROZEN, incident leaf, worst case settled,
fuel charged) before the error reply.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from evidenceos.core.auth import CallerIdentity
from evidenceos.core.canary import CanaryConfig, CanaryState
from evidenceos.core.capsule import CapsuleInputs, build_capsule, encode_capsule
from evidenceos.core.claim import ClaimRecord
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.credit import Account, InsufficientCredit, apply_charge, ensure_account
from evidenceos.core.decision import (
    Decision,
    DecisionInputs,
    DecisionOutcome,
    Lane,
    settle_and_decide,
)
from evidenceos.core.evalue import (
    EPROCESS_FIXED_ALT,
    NullModel,
    compute_e_value,
    compute_eprocess_kind_id,
    fallback_model,
)
from evidenceos.core.ledger import (
    ConservationLedger,
    ExecutionCharge,
    compute_execution_charge,
    compute_kout_charge_bits,
)
from evidenceos.core.nullspec import NullSpecContract
from evidenceos.core.oracle import (
    HysteresisState,
    OraclePins,
    compute_default_resolution_hash,
    compute_oracle_answer,
)
from evidenceos.core.structured_claims import SchemaId, canonicalize_output, compute_kout_max_bits
from evidenceos.errors import (
    Aborted,
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from evidenceos.sandbox import Sandbox
from evidenceos.sandbox.engine import CompiledModule, padded_fuel_total
from evidenceos.sandbox.errors import InvalidModule, InvalidVaultConfig, VaultError
from evidenceos.sandbox.vault import ExecutionResult, VaultLimits
from evidenceos.service._guards import InflightSet
from evidenceos.service.claims import (
    ClaimService,
    IdempotencyKey,
    max_output_bytes,
    parse_claim_id,
    resolution_for,
    verify_claim_access,
)
from evidenceos.service.governance import GovernanceService
from evidenceos.store import accounts as accounts_table
from evidenceos.store import canary as canary_table
from evidenceos.store import capsules as capsules_table
from evidenceos.store import claims as claims_table
from evidenceos.store import nullspecs as nullspecs_table
from evidenceos.store import pools as pools_table
from evidenceos.store.capsules import CapsuleRow
from evidenceos.store.db import Connection
from evidenceos.store.failpoints import failpoint

EXECUTE_V2_METHOD = "/evidenceos.v2.EvidenceOS/ExecuteClaimV2"
_STATE_FOR = {
    Decision.APPROVE: ClaimState.CERTIFIED,
    Decision.DEFER: ClaimState.FROZEN,
    Decision.REJECT: ClaimState.REVOKED,
}
_LANES = {"fast": Lane.FAST, "heavy": Lane.HEAVY, "canary": Lane.CANARY}
_EMPTY_SHA256 = hashlib.sha256(b"").digest()
_END_BUCKETS = 256
T = TypeVar("T")


def resolution_hash(num_symbols: int) -> bytes:
    """``compute_resolution_hash`` of a claim's resolution, which only ``num_symbols`` sets."""
    return compute_default_resolution_hash(num_symbols)


def _attempt(fn: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """``fn()``'s value, or the exception it raised (re-raised later, where the write function
    would have raised it)."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - handed back to the caller, never lost
        return None, exc


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    state: ClaimState
    decision: int
    reason_codes: tuple[int, ...]
    canonical_output: bytes
    e_value: float
    certified: bool
    capsule_hash: bytes
    etl_index: int

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.name,
            "decision": self.decision,
            "reason_codes": list(self.reason_codes),
            "canonical_output": self.canonical_output.hex(),
            "e_value": self.e_value,
            "certified": self.certified,
            "capsule_hash": self.capsule_hash.hex(),
            "etl_index": self.etl_index,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExecutionOutcome:
        return cls(
            ClaimState[d["state"]],
            int(d["decision"]),
            tuple(d["reason_codes"]),
            bytes.fromhex(d["canonical_output"]),
            float(d["e_value"]),
            bool(d["certified"]),
            bytes.fromhex(d["capsule_hash"]),
            int(d["etl_index"]),
        )


@dataclass(frozen=True, slots=True)
class _NullSpec:
    model: NullModel
    nullspec_id: bytes | None
    contract_hash: bytes | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the handler read before the guest ran: the claim (and its row's exact text, which
    the write function compares), the stream's canary state, the epoch and the NullSpec."""

    claim: ClaimRecord
    claim_text: str
    canary: CanaryState | None
    epoch: int
    nullspec: _NullSpec


@dataclass(frozen=True, slots=True)
class _Metered:
    result: ExecutionResult
    envelope_violation: bool
    fuel_total: int
    charge: ExecutionCharge
    e_value: float


@dataclass(frozen=True, slots=True)
class _Decided:
    outcome: DecisionOutcome
    output: bytes
    capsule_bytes: bytes
    canary_update: CanaryState | None


class GuestIncident(Exception):
    """The guest ran and the execution failed afterwards; carries the error to reply with."""

    def __init__(self, error: EvidenceOSError, reason: str, fuel_used: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason
        self.fuel_used = fuel_used


def lane_limits(claim: ClaimRecord) -> VaultLimits:
    """The lane's vault limits, fuel capped by the claim's PLN ``max_fuel``: a run past it could
    never settle, and the credit held beforehand covers exactly this much fuel (D-C8)."""
    out = max_output_bytes(claim)
    limits = VaultLimits.heavy_lane(out) if claim.lane == "heavy" else VaultLimits.fast_lane(out)
    if claim.pln is not None and claim.pln.max_fuel < limits.max_fuel:
        limits = replace(limits, max_fuel=claim.pln.max_fuel)
    return limits


class ExecutionService:
    def __init__(
        self,
        claims: ClaimService,
        canary_config: CanaryConfig | None = None,
        governance: GovernanceService | None = None,
    ) -> None:
        self.claims = claims
        self.governance = governance
        self.canary_config = canary_config or CanaryConfig()
        self._fresh_canary = CanaryState.create(self.canary_config)  # a frozen value
        self._executing = InflightSet()
        self._credit_holds: dict[str, int] = {}
        self._lock = threading.Lock()
        # Executions ended, by claim-id bucket: a claim's snapshot read before its execution
        # hold was taken is used only if no execution of a claim in its bucket ended meanwhile.
        self._ended = [0] * _END_BUCKETS

    # -- guards -------------------------------------------------------------------------------

    @contextmanager
    def _credit_hold(self, principal: str, worst: int, stored: Account | None) -> Iterator[None]:
        """Hold the worst-case charge so concurrent executions never overspend (spec 60 §5).

        ``stored`` is the principal's account as read in the execution's snapshot."""
        settings = self.claims.settings
        if worst > settings.admission.max_credit(principal):
            raise ResourceExhausted("requested credit exceeds admission limit")
        account = ensure_account(
            stored, limit=settings.admission.max_credit(principal), day=self._day()
        )
        with self._lock:
            held = self._credit_holds.get(principal, 0)
            if account.credit_balance - held < worst:
                raise ResourceExhausted("insufficient credit")
            self._credit_holds[principal] = held + worst
        try:
            yield
        finally:
            with self._lock:
                left = self._credit_holds[principal] - worst
                if left:
                    self._credit_holds[principal] = left
                else:
                    del self._credit_holds[principal]

    def _day(self) -> int:
        return self.claims.clock() // 86_400_000

    # -- the pipeline -------------------------------------------------------------------------

    def execute_claim_v2(
        self, caller: CallerIdentity, claim_id: bytes, key: IdempotencyKey | None
    ) -> ExecutionOutcome:
        svc = self.claims
        parse_claim_id(claim_id)
        with svc.inflight(key):
            bucket = hash(claim_id) % _END_BUCKETS
            ended = self._ended[bucket]
            with svc.store.read() as conn:  # the replay and everything read up front: one snapshot
                cached = svc.replayed_in(conn, key)
                if cached is not None:
                    return ExecutionOutcome.from_json(cached)
                read, _ = _attempt(lambda: self._read_up_front(conn, caller, claim_id))
            with self._executing.hold(claim_id, "claim execution already in progress"):
                try:
                    if read is None or self._ended[bucket] != ended:
                        # Read again now that no other execution of the claim can run: one may
                        # have ended since that snapshot (or the snapshot refused the call, and
                        # this read says why).
                        with svc.store.read() as conn:
                            read = self._read_up_front(conn, caller, claim_id)
                    return self._execute(caller, read, key)
                finally:
                    with self._lock:
                        self._ended[bucket] += 1

    def _read_up_front(
        self, conn: Connection, caller: CallerIdentity, claim_id: bytes
    ) -> tuple[_Snapshot, Account | None]:
        """What an execution reads before the guest runs (one snapshot) and the caller's
        account; refuses a claim that is not executable."""
        svc = self.claims
        claim, claim_text = claims_table.get_claim_and_text(conn, claim_id)
        verify_claim_access(caller, claim)
        epoch = svc.current_epoch(conn)
        self._verify_executable(claim, epoch)
        nullspec = self._nullspec(conn, claim, epoch)
        canary = canary_table.find_canary_state(conn, claim.oracle_id, claim.holdout_ref)
        account = accounts_table.find_account(conn, caller.principal_id)
        return _Snapshot(claim, claim_text, canary, epoch, nullspec), account

    def _execute(
        self,
        caller: CallerIdentity,
        read: tuple[_Snapshot, Account | None],
        key: IdempotencyKey | None,
    ) -> ExecutionOutcome:
        """Hold the worst-case credit, run the guest and commit the outcome (or the incident)."""
        svc = self.claims
        snapshot, account = read
        claim = snapshot.claim
        module = self._module(claim)
        limits = lane_limits(claim)
        worst = self._worst_charge(claim, limits)
        with self._credit_hold(caller.principal_id, worst, account):
            holdout = svc.holdouts.resolve(claim.holdout_ref)
            holdout.descriptor.verify_matches_claim(claim.holdout_handle, claim.holdout_len)
            try:
                return self._run_and_commit(caller, snapshot, module, limits, holdout.labels, key)
            except GuestIncident as incident:
                self._commit_incident(caller, claim, incident)
                raise incident.error from None

    def _verify_executable(self, claim: ClaimRecord, epoch: int) -> None:
        if claim.state is not ClaimState.SEALED:
            raise FailedPrecondition("claim must be SEALED before execution")
        if claim.sealed_preimage_hash is None:
            raise FailedPrecondition("freeze gates not completed")
        if claim.oracle_pins is None:
            raise FailedPrecondition("oracle pins missing")
        pins = OraclePins.from_json(claim.oracle_pins)
        if resolution_hash(claim.oracle_num_symbols) != pins.oracle_resolution_hash:
            raise FailedPrecondition("oracle resolution hash mismatch with sealed pins")
        if pins.is_stale(epoch):
            raise FailedPrecondition("claim is stale; re-freeze before execution")

    def _nullspec(self, conn: Connection, claim: ClaimRecord, epoch: int) -> _NullSpec:
        """Explicit id, else the active contract for (oracle_id, holdout), else the fallback."""
        nullspec_id: bytes | None = None
        if claim.nullspec_id:
            try:
                nullspec_id = bytes.fromhex(claim.nullspec_id)
            except ValueError:
                raise InvalidArgument("invalid nullspec_id hex") from None
            if len(nullspec_id) != 32:
                raise InvalidArgument("invalid nullspec_id length")
        else:
            nullspec_id = nullspecs_table.find_active(conn, claim.oracle_id, claim.holdout_ref)
        if self.governance is not None:
            # fails closed while the NullSpec registry cannot be loaded (OPERATIONS.md)
            self.governance.require_executable(nullspec_id)
        if nullspec_id is None:
            if self.claims.settings.production_mode:
                raise FailedPrecondition("missing active nullspec")
            return _NullSpec(fallback_model(), None, None)
        stored = nullspecs_table.find_nullspec(conn, nullspec_id)
        if stored is None:
            raise FailedPrecondition("active nullspec not found")
        contract = NullSpecContract.from_json(stored)
        if contract.is_expired(epoch):
            raise FailedPrecondition("active nullspec expired")
        if contract.oracle_resolution_hash != resolution_hash(claim.oracle_num_symbols):
            raise FailedPrecondition("nullspec resolution hash mismatch")
        return _NullSpec(contract, nullspec_id, hashlib.sha256(contract.canonical_bytes()).digest())

    def _module(self, claim: ClaimRecord) -> CompiledModule:
        """Compiled once per module: the in-process cache, else the stored artefact (modules and
        artefacts are content-addressed and never removed, so any snapshot has the same)."""
        sandbox: Sandbox = self.claims.sandbox
        assert claim.wasm_sha256 is not None  # noqa: S101 - SEALED implies a module
        cached = sandbox.lookup(claim.wasm_sha256)
        if cached is not None:
            return cached
        with self.claims.store.read() as conn:
            artefact = claims_table.get_compiled_module(
                conn, claim.wasm_sha256, sandbox.engine_fingerprint()
            )
            wasm = (
                None
                if artefact is not None
                else claims_table.get_wasm_module(conn, claim.wasm_sha256)
            )
        if artefact is not None:
            return sandbox.load_serialized(claim.wasm_sha256, artefact)
        assert wasm is not None  # noqa: S101 - read when there is no artefact
        return sandbox.compile(wasm)

    def _worst_charge(self, claim: ClaimRecord, limits: VaultLimits) -> int:
        pln = claim.pln
        max_fuel = limits.max_fuel if pln is None else min(limits.max_fuel, pln.max_fuel)
        fuel = padded_fuel_total(
            claim.epoch_size,
            max_fuel,
            None if pln is None else pln.target_fuel,
            None if pln is None else pln.max_fuel,
        )
        pages = limits.max_memory_bytes // 65536
        return self.claims.settings.pricing.compute_charge(
            k_bits=claim.reserved_k_bits, fuel=fuel, max_memory_pages=pages
        )

    def _run_and_commit(
        self,
        caller: CallerIdentity,
        snapshot: _Snapshot,
        module: CompiledModule,
        limits: VaultLimits,
        labels: bytes,
        key: IdempotencyKey | None,
    ) -> ExecutionOutcome:
        svc = self.claims
        claim = snapshot.claim
        schema = SchemaId(claim.schema)
        resolution = resolution_for(claim)
        hysteresis = [HysteresisState()]

        def oracle(predictions: bytes) -> int:
            answer = compute_oracle_answer(resolution, labels, predictions, hysteresis[0])
            hysteresis[0] = answer.state
            return answer.bucket

        envelope = [False]

        def validate_output(raw: bytes) -> tuple[bytes, int]:
            if schema is SchemaId.LEGACY:
                return raw, 0
            out = canonicalize_output(schema, raw)
            envelope[0] = out.envelope_check_failed
            return out.canonical_bytes, out.kout_bits

        try:
            result = svc.sandbox.execute(
                module,
                limits=limits,
                holdout_len=len(labels),
                oracle=oracle,
                validate_output=validate_output,
            )
        except (InvalidVaultConfig, InvalidModule):
            raise  # refused before any guest code ran: nothing to record
        except VaultError as exc:
            # Imports and memory were checked at commit, so any other failure happened after
            # the guest started: an incident, even with no fuel reported (wasmtime settles fuel
            # lazily).
            raise GuestIncident(exc, "execution_failure", exc.fuel_used) from exc
        try:
            return self._settle(caller, snapshot, result, envelope[0], key)
        except GuestIncident:
            raise
        except (FailedPrecondition, InvalidArgument) as exc:
            raise GuestIncident(exc, "execution_failure", result.fuel_used) from exc

    def _settle(
        self,
        caller: CallerIdentity,
        snapshot: _Snapshot,
        result: ExecutionResult,
        envelope_violation: bool,
        key: IdempotencyKey | None,
    ) -> ExecutionOutcome:
        """Meter, burn the PLN padding, decide and publish.

        Everything is computed here, on the caller's thread, from the snapshot read before the
        guest ran; the write function only checks that the claim row (and the canary state it
        decided with) are still exactly what was read, and writes. If either changed meanwhile
        it decides again from the rows it reads, as if nothing had been prepared."""
        svc = self.claims
        claim = snapshot.claim
        schema = SchemaId(claim.schema)
        resolution = resolution_for(claim)
        if schema is SchemaId.LEGACY:
            try:
                resolution.decode_bucket(result.output)
            except InvalidArgument as exc:
                raise GuestIncident(exc, "non_canonical_output", result.fuel_used) from exc
        pln = claim.pln
        fuel_total = padded_fuel_total(
            claim.epoch_size,
            result.fuel_used,
            None if pln is None else pln.target_fuel,
            None if pln is None else pln.max_fuel,
        )
        svc.sandbox.burn(fuel_total - result.fuel_used)
        bits_per_call = resolution.bits_per_call
        kout = compute_kout_charge_bits(
            compute_kout_max_bits(schema), len(result.output), bits_per_call, result.oracle_calls
        )
        charge = compute_execution_charge(
            bits_per_call, result.oracle_calls, svc.settings.dependence_multiplier, kout
        )
        e_value = compute_e_value(snapshot.nullspec.model, result.oracle_buckets)
        credit = svc.settings.pricing.compute_charge(
            k_bits=charge.principal_k_bits,
            fuel=fuel_total or None,
            max_memory_pages=result.max_memory_pages or None,
        )
        meter = _Metered(result, envelope_violation, fuel_total, charge, e_value)
        # Prepared from the snapshot; an error is kept and raised where the write would raise it.
        ledger, ledger_error = _attempt(lambda: claim.ledger.charge_execution(charge))
        decided: _Decided | None = None
        decide_error: Exception | None = None
        if ledger is not None:
            decided, decide_error = _attempt(
                lambda: self._decide(claim, ledger, snapshot.canary, snapshot, meter)
            )

        def write(conn: Connection) -> ExecutionOutcome:
            gen = svc.store.generation
            text = claims_table.find_claim_text(conn, claim.claim_id, gen)
            if text is None:
                raise NotFound("claim not found")
            canary_now = canary_table.find_canary_state(conn, claim.oracle_id, claim.holdout_ref)
            if text == snapshot.claim_text and canary_now == snapshot.canary:
                current = claim
                if ledger_error is not None:
                    raise ledger_error
                self._settle_pools(conn, current, charge.total_k_bits, gen)
                if decide_error is not None:
                    raise decide_error
                assert decided is not None  # noqa: S101 - no error means a decision
                outcome = decided
            else:  # the claim or the canary moved since the snapshot: decide again
                current = claims_table.decode_claim(text)
                if current.state is not ClaimState.SEALED or (
                    current.execution_nonce != claim.execution_nonce
                ):
                    raise Aborted("claim execution superseded")
                fresh_ledger = current.ledger.charge_execution(charge)
                self._settle_pools(conn, current, charge.total_k_bits, gen)
                outcome = self._decide(current, fresh_ledger, canary_now, snapshot, meter)
            if outcome.canary_update is not None:
                canary_table.put_canary_state(
                    conn, current.oracle_id, current.holdout_ref, outcome.canary_update
                )
            return self._publish(conn, caller, current, outcome, snapshot.epoch, credit, key, gen)

        outcome = svc.store.write(write)
        failpoint("after_etl_append_execute_claim_v2")
        return outcome

    def _decide(
        self,
        claim: ClaimRecord,
        ledger: ConservationLedger,
        canary: CanaryState | None,
        snapshot: _Snapshot,
        meter: _Metered,
    ) -> _Decided:
        """The verdict, the kernel's output and the capsule's bytes: pure given the claim and
        the stream's canary state (spec 30 §7 steps 10-13, spec 20 §7.2)."""
        result = meter.result
        nullspec = snapshot.nullspec
        state = canary or self._fresh_canary
        canary_update: CanaryState | None = None
        if claim.lane == "canary":  # CANARY-lane pulses feed the stream's drift e-process
            state = state.update_with_buckets(nullspec.model, result.oracle_buckets, snapshot.epoch)
            canary_update = state
        outcome = settle_and_decide(
            ledger,
            meter.e_value,
            DecisionInputs(
                lane=_LANES[claim.lane],
                canary_frozen=state.drift_frozen,
                envelope_violation=meter.envelope_violation,
            ),
        )
        schema = SchemaId(claim.schema)
        output = self._kernel_output(
            schema, result.output, outcome.decision, outcome.reason_codes, meter.e_value
        )
        capsule = build_capsule(
            CapsuleInputs(
                claim_id=claim.claim_id,
                topic_id=claim.topic_id,
                output_schema_id=claim.output_schema_id,
                artifacts=[(a.kind, a.artifact_hash) for a in claim.artifacts],
                dependency_items=claim.dependency_items,
                canonical_output=output,
                wasm_hash=claim.wasm_sha256 or bytes(32),
                judge_trace_hash=result.judge_trace_hash,
                holdout_ref=claim.holdout_ref,
                holdout_handle=claim.holdout_handle,
                ledger=outcome.ledger,
                fuel_total=meter.fuel_total,
                e_value=outcome.reported_e_value,
                certified=outcome.certified,
                decision=int(outcome.decision),
                reason_codes=outcome.reason_codes,
                semantic_hash=claim.semantic_hash,
                phys_hir_signature_hash=claim.phys_hir_signature_hash,
                lineage_root_hash=claim.dependency_merkle_root or _EMPTY_SHA256,
                signals_disagree=claim.signals_disagree,
                lane=claim.lane,
                oracle_id=claim.oracle_id,
                oracle_resolution_hash=resolution_hash(claim.oracle_num_symbols),
                nullspec_id=nullspec.nullspec_id,
                nullspec_contract_hash=nullspec.contract_hash,
                eprocess_kind=compute_eprocess_kind_id(nullspec.model)
                if nullspec.nullspec_id is not None
                else EPROCESS_FIXED_ALT,
                epoch=snapshot.epoch,
                sealed_preimage_hash=claim.sealed_preimage_hash or bytes(32),
            )
        )
        return _Decided(outcome, output, encode_capsule(capsule), canary_update)

    def _publish(
        self,
        conn: Connection,
        caller: CallerIdentity,
        current: ClaimRecord,
        decided: _Decided,
        epoch: int,
        credit: int,
        key: IdempotencyKey | None,
        gen: int,
    ) -> ExecutionOutcome:
        """Capsule leaf, capsule row, credit, claim state and idempotency record (``gen``: the
        store generation this write function runs under)."""
        svc = self.claims
        outcome = decided.outcome
        # the leaf's payload is the capsule's bytes, so its SHA-256 is the capsule hash
        leaf = svc.log.append_encoded(conn, "capsule", decided.capsule_bytes)
        svc.log.want_head()  # FetchCapsule then proves it without a write of its own (D-F2)
        capsule_hash = leaf.payload_sha256
        state = _STATE_FOR[outcome.decision]
        capsules_table.put_capsule(
            conn,
            CapsuleRow(
                leaf_index=leaf.leaf_index,
                capsule_hash=capsule_hash,
                claim_id=current.claim_id,
                topic_id=current.topic_id,
                holdout_ref=current.holdout_ref,
                oracle_id=current.oracle_id,
                lane=current.lane,
                decision=int(outcome.decision),
                certified=outcome.certified,
                e_value=outcome.reported_e_value,
                k_bits_total=outcome.ledger.k_bits_total,
                epoch=epoch,
                owner_principal_id=current.owner_principal_id,
            ),
            list(current.dependency_items),
        )
        self._charge_credit(conn, caller.principal_id, credit, gen)
        updated = current.evolve(
            state=state,
            ledger=outcome.ledger,
            reserved_k_bits=0,
            reserved_access_credit=0,
            execution_nonce=current.execution_nonce + 1,
            last_decision=int(outcome.decision),
            last_capsule_hash=capsule_hash,
            etl_index=leaf.leaf_index,
        )
        claims_table.put_claim(
            conn, updated, svc.clock(), artifacts_changed=False, stored=True, generation=gen
        )
        response = ExecutionOutcome(
            state=state,
            decision=int(outcome.decision),
            reason_codes=tuple(outcome.reason_codes),
            canonical_output=decided.output,
            e_value=outcome.reported_e_value,
            certified=outcome.certified,
            capsule_hash=capsule_hash,
            etl_index=leaf.leaf_index,
        )
        svc.remember(conn, key, response.to_json())
        failpoint("before_commit_execute_claim_v2")
        return response

    @staticmethod
    def _kernel_output(
        schema: SchemaId, output: bytes, decision: Decision, codes: tuple[int, ...], e: float
    ) -> bytes:
        """Legacy symbols unchanged; structured claims get the kernel's verdict (spec 20 §7.3)."""
        if schema is SchemaId.LEGACY:
            return output
        doc = json.loads(output)
        doc["kernel_decision"] = int(decision)
        doc["kernel_reason_codes"] = list(codes)
        doc["kernel_e_value_total"] = e if math.isfinite(e) else None
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @staticmethod
    def _settle_pools(conn: Connection, claim: ClaimRecord, actual: float, gen: int) -> None:
        reserved = claim.reserved_k_bits
        topic = pools_table.find_topic_pool(conn, claim.topic_id, gen)
        if topic is not None:
            pools_table.put_topic_pool(
                conn, claim.topic_id, topic.settle(reserved, reserved, actual, actual), gen
            )
        for principal in claim.holdout_pool_principals:
            pool = pools_table.find_holdout_pool(conn, claim.holdout_handle, principal, gen)
            if pool is not None:
                pools_table.put_holdout_pool(
                    conn,
                    claim.holdout_handle,
                    principal,
                    pool.settle(reserved, reserved, actual, actual),
                    gen,
                )

    def _charge_credit(self, conn: Connection, principal: str, amount: int, gen: int) -> Account:
        """Burn the actual charge; the worst-case hold made sure it fits."""
        settings = self.claims.settings
        existing = accounts_table.find_account(conn, principal, gen)
        try:
            account = apply_charge(
                existing,
                principal_id=principal,  # type: ignore[arg-type]
                amount=amount,
                admission=settings.admission,
                day=self._day(),
            )
        except InsufficientCredit:
            base = ensure_account(
                existing, limit=settings.admission.max_credit(principal), day=self._day()
            )
            account = base.burn(base.credit_balance)
        accounts_table.put_account(conn, principal, account, gen)
        return account

    # -- incidents ----------------------------------------------------------------------------

    def _commit_incident(
        self, caller: CallerIdentity, claim: ClaimRecord, incident: GuestIncident
    ) -> None:
        """The guest ran and failed: FROZEN, incident leaf, worst case settled, fuel charged."""
        svc = self.claims
        fuel_charge = incident.fuel_used * svc.settings.pricing.lambda_cpu_per_fuel

        def write(conn: Connection) -> None:
            gen = svc.store.generation
            current = claims_table.get_claim(conn, claim.claim_id, gen)
            if current.state is not ClaimState.SEALED:
                return
            worst = float(current.reserved_k_bits)
            self._settle_pools(conn, current, worst, gen)
            svc.log.want_head()
            leaf = svc.log.append(
                conn,
                {
                    "kind": "incident",
                    "claim_id_hex": current.claim_id.hex(),
                    "topic_id_hex": current.topic_id.hex(),
                    "holdout_ref": current.holdout_ref,
                    "reason": incident.reason,
                    "error": incident.error.message,
                    "fuel_used": incident.fuel_used,
                    "k_bits_settled": current.reserved_k_bits,
                },
            )
            capsules_table.put_incident(
                conn,
                current.claim_id,
                leaf.leaf_index,
                incident.reason,
                incident.fuel_used,
                worst,
                svc.clock(),
            )
            self._charge_credit(conn, caller.principal_id, fuel_charge, gen)
            updated = current.evolve(
                state=ClaimState.FROZEN,
                ledger=current.ledger.freeze("incident_freeze", {"reason": incident.reason}),
                reserved_k_bits=0,
                reserved_access_credit=0,
                execution_nonce=current.execution_nonce + 1,
                incident_reason=incident.reason,
            )
            claims_table.put_claim(
                conn, updated, svc.clock(), artifacts_changed=False, stored=True, generation=gen
            )
            failpoint("before_commit_execute_claim_v2_incident")

        svc.store.write(write)
