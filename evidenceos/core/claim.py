"""The claim record: everything the daemon keeps about one claim, as one pure value.

The store keeps the searchable fields in columns and the whole record in ``record_json``;
``to_json``/``from_json`` are the only (de)serialisers. Byte fields are lowercase hex in JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from evidenceos.core.claim_state import ClaimState
from evidenceos.core.ledger import ConservationLedger
from evidenceos.errors import StorageError


@dataclass(frozen=True, slots=True)
class Artifact:
    kind: str
    artifact_hash: bytes


@dataclass(frozen=True, slots=True)
class PlnConfig:
    """Path-length normalisation for one claim's epoch config (spec 30 §5.5)."""

    target_fuel: int
    max_fuel: int
    fast: bool = True
    heavy: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "target_fuel": self.target_fuel,
            "max_fuel": self.max_fuel,
            "lanes": {"fast": self.fast, "heavy": self.heavy},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlnConfig:
        lanes = data.get("lanes", {})
        return cls(
            int(data["target_fuel"]),
            int(data["max_fuel"]),
            bool(lanes.get("fast", True)),
            bool(lanes.get("heavy", True)),
        )


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    claim_id: bytes
    owner_principal_id: str
    claim_name: str
    topic_id: bytes
    holdout_ref: str
    holdout_handle: bytes
    holdout_len: int
    oracle_id: str
    nullspec_id: str
    lane: str  # "fast" | "heavy" | "canary"
    requested_lane: str
    alpha_micros: int
    alpha: float
    epoch_config_ref: str
    output_schema_id: str  # as requested
    schema: str  # canonical schema id
    epoch_size: int
    oracle_num_symbols: int
    access_credit: int
    state: ClaimState
    ledger: ConservationLedger
    created_at_ms: int
    pln: PlnConfig | None = None
    semantic_hash: bytes | None = None
    phys_hir_signature_hash: bytes | None = None
    dependency_merkle_root: bytes | None = None
    signals_disagree: bool = False
    dp_epsilon_budget: float | None = None
    dp_delta_budget: float | None = None
    reserved_k_bits: int = 0
    reserved_access_credit: int = 0
    holdout_pool_principals: tuple[str, ...] = ("",)
    artifacts: tuple[Artifact, ...] = ()
    dependency_items: tuple[bytes, ...] = ()
    wasm_sha256: bytes | None = None
    aspec_summary: str | None = None
    aspec_heavy: bool = False
    metadata_locked: bool = False
    sealed_preimage_hash: bytes | None = None
    artifacts_hash: bytes | None = None
    oracle_pins: dict[str, Any] | None = None
    execution_nonce: int = 0
    last_decision: int | None = None
    last_capsule_hash: bytes | None = None
    etl_index: int | None = None
    incident_reason: str | None = None
    legacy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def with_state(self, state: ClaimState) -> ClaimRecord:
        return replace(self, state=state)

    def to_json(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim_id.hex(),
            "owner_principal_id": self.owner_principal_id,
            "claim_name": self.claim_name,
            "topic_id": self.topic_id.hex(),
            "holdout_ref": self.holdout_ref,
            "holdout_handle": self.holdout_handle.hex(),
            "holdout_len": self.holdout_len,
            "oracle_id": self.oracle_id,
            "nullspec_id": self.nullspec_id,
            "lane": self.lane,
            "requested_lane": self.requested_lane,
            "alpha_micros": self.alpha_micros,
            "alpha": self.alpha,
            "epoch_config_ref": self.epoch_config_ref,
            "output_schema_id": self.output_schema_id,
            "schema": self.schema,
            "epoch_size": self.epoch_size,
            "oracle_num_symbols": self.oracle_num_symbols,
            "access_credit": self.access_credit,
            "state": self.state.name,
            "ledger": self.ledger.to_json(),
            "created_at_ms": self.created_at_ms,
            "pln": None if self.pln is None else self.pln.to_json(),
            "semantic_hash": _hex(self.semantic_hash),
            "phys_hir_signature_hash": _hex(self.phys_hir_signature_hash),
            "dependency_merkle_root": _hex(self.dependency_merkle_root),
            "signals_disagree": self.signals_disagree,
            "dp_epsilon_budget": self.dp_epsilon_budget,
            "dp_delta_budget": self.dp_delta_budget,
            "reserved_k_bits": self.reserved_k_bits,
            "reserved_access_credit": self.reserved_access_credit,
            "holdout_pool_principals": list(self.holdout_pool_principals),
            "artifacts": [{"kind": a.kind, "hash": a.artifact_hash.hex()} for a in self.artifacts],
            "dependency_items": [d.hex() for d in self.dependency_items],
            "wasm_sha256": _hex(self.wasm_sha256),
            "aspec_summary": self.aspec_summary,
            "aspec_heavy": self.aspec_heavy,
            "metadata_locked": self.metadata_locked,
            "sealed_preimage_hash": _hex(self.sealed_preimage_hash),
            "artifacts_hash": _hex(self.artifacts_hash),
            "oracle_pins": self.oracle_pins,
            "execution_nonce": self.execution_nonce,
            "last_decision": self.last_decision,
            "last_capsule_hash": _hex(self.last_capsule_hash),
            "etl_index": self.etl_index,
            "incident_reason": self.incident_reason,
            "legacy": self.legacy,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClaimRecord:
        try:
            return cls(
                claim_id=bytes.fromhex(d["claim_id"]),
                owner_principal_id=d["owner_principal_id"],
                claim_name=d["claim_name"],
                topic_id=bytes.fromhex(d["topic_id"]),
                holdout_ref=d["holdout_ref"],
                holdout_handle=bytes.fromhex(d["holdout_handle"]),
                holdout_len=int(d["holdout_len"]),
                oracle_id=d["oracle_id"],
                nullspec_id=d["nullspec_id"],
                lane=d["lane"],
                requested_lane=d["requested_lane"],
                alpha_micros=int(d["alpha_micros"]),
                alpha=float(d["alpha"]),
                epoch_config_ref=d["epoch_config_ref"],
                output_schema_id=d["output_schema_id"],
                schema=d["schema"],
                epoch_size=int(d["epoch_size"]),
                oracle_num_symbols=int(d["oracle_num_symbols"]),
                access_credit=int(d["access_credit"]),
                state=ClaimState[d["state"]],
                ledger=ConservationLedger.from_json(d["ledger"]),
                created_at_ms=int(d["created_at_ms"]),
                pln=None if d["pln"] is None else PlnConfig.from_json(d["pln"]),
                semantic_hash=_unhex(d["semantic_hash"]),
                phys_hir_signature_hash=_unhex(d["phys_hir_signature_hash"]),
                dependency_merkle_root=_unhex(d["dependency_merkle_root"]),
                signals_disagree=bool(d["signals_disagree"]),
                dp_epsilon_budget=d["dp_epsilon_budget"],
                dp_delta_budget=d["dp_delta_budget"],
                reserved_k_bits=int(d["reserved_k_bits"]),
                reserved_access_credit=int(d["reserved_access_credit"]),
                holdout_pool_principals=tuple(d["holdout_pool_principals"]),
                artifacts=tuple(
                    Artifact(a["kind"], bytes.fromhex(a["hash"])) for a in d["artifacts"]
                ),
                dependency_items=tuple(bytes.fromhex(x) for x in d["dependency_items"]),
                wasm_sha256=_unhex(d["wasm_sha256"]),
                aspec_summary=d["aspec_summary"],
                aspec_heavy=bool(d["aspec_heavy"]),
                metadata_locked=bool(d["metadata_locked"]),
                sealed_preimage_hash=_unhex(d["sealed_preimage_hash"]),
                artifacts_hash=_unhex(d["artifacts_hash"]),
                oracle_pins=d["oracle_pins"],
                execution_nonce=int(d["execution_nonce"]),
                last_decision=d["last_decision"],
                last_capsule_hash=_unhex(d["last_capsule_hash"]),
                etl_index=d["etl_index"],
                incident_reason=d["incident_reason"],
                legacy=bool(d["legacy"]),
                extra=dict(d["extra"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise StorageError(f"claim record is malformed: {exc!r}") from exc
