"""The claim record: everything the daemon keeps about one claim, as one pure value.

The store keeps the searchable fields in columns and the whole record in ``record_json``;
``to_json``/``from_json`` are the only (de)serialisers. Byte fields are lowercase hex in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from evidenceos.core.claim_state import ClaimState
from evidenceos.core.ledger import (
    LEDGER_BUDGET_FIELDS,
    LEDGER_FLOAT_FIELDS,
    ConservationLedger,
    LedgerEvent,
    unchecked_deriver,
)
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


_NONE = type(None)
_JSON_SCALARS = frozenset({_NONE, bool, int, str})
_JSON_SCALARS_AND_FLOAT = _JSON_SCALARS | {float}
_STR = frozenset({str})


def _json_exact(value: Any, depth: int = 0) -> bool:
    """Whether ``json.loads(json.dumps(value, sort_keys=True))`` gives back ``value`` exactly:
    same types (no tuples, no int or str subclasses, string keys), same dict order (sorted), and
    finite floats."""
    t = type(value)
    if t in _JSON_SCALARS:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dict:
        keys = list(value)
        if not (set(map(type, keys)) <= _STR and keys == sorted(keys)):
            return False
        values = list(value.values())
    elif t is list:
        values = value
    else:
        return False
    types = set(map(type, values))
    if types <= _JSON_SCALARS:
        return True
    if types <= _JSON_SCALARS_AND_FLOAT:
        return all(map(math.isfinite, [v for v in values if type(v) is float]))
    return depth < 32 and all(_json_exact(v, depth + 1) for v in values)


_LEDGER_FLOATS = attrgetter(*LEDGER_FLOAT_FIELDS)
_LEDGER_BUDGETS = attrgetter(*LEDGER_BUDGET_FIELDS)


def _finite_floats(values: tuple[Any, ...], allowed: frozenset[type]) -> bool:
    """Every value's type is in ``allowed`` (float and perhaps None) and every float finite."""
    return set(map(type, values)) <= allowed and all(
        map(math.isfinite, [v for v in values if v is not None])
    )


_FLOAT: frozenset[type] = frozenset({float})
_FLOAT_OR_NONE: frozenset[type] = frozenset({float, _NONE})


def _ledger_json_exact(ledger: ConservationLedger) -> bool:
    """``ConservationLedger.from_json`` of the ledger's JSON gives back ``ledger`` exactly."""
    if type(ledger) is not ConservationLedger or type(ledger.frozen) is not bool:
        return False
    if not (
        _finite_floats(_LEDGER_FLOATS(ledger), _FLOAT)
        and _finite_floats(_LEDGER_BUDGETS(ledger), _FLOAT_OR_NONE)
        and type(ledger.events) is tuple
    ):
        return False
    for event in ledger.events:
        if not (
            type(event) is LedgerEvent
            and type(event.kind) is str
            and type(event.bits) is float
            and math.isfinite(event.bits)
            and _json_exact(event.meta)
        ):
            return False
    return True


_INT = frozenset({int})
_BOOL = frozenset({bool})


def _of(*types: type) -> Callable[[Any], bool]:
    allowed = frozenset(types)
    return lambda value: type(value) in allowed


def _tuple_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: type(value) is tuple and all(map(check, value))


def _finite_float(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)


def _pln_exact(pln: Any) -> bool:
    return pln is None or (
        type(pln) is PlnConfig
        and set(map(type, (pln.target_fuel, pln.max_fuel))) <= _INT
        and set(map(type, (pln.fast, pln.heavy))) <= _BOOL
    )


def _artifact_exact(a: Any) -> bool:
    return type(a) is Artifact and type(a.kind) is str and type(a.artifact_hash) is bytes


def _json_dict_exact(value: Any) -> bool:
    return type(value) is dict and _json_exact(value)


#: Fields that decode to themselves when their value has one of these types (the one type, or
#: two with None, ``from_json`` makes of them).
_TYPE_GROUPS: tuple[tuple[frozenset[type], tuple[str, ...]], ...] = (
    (frozenset({bytes}), ("claim_id", "topic_id", "holdout_handle")),
    (
        frozenset({bytes, _NONE}),
        (
            "semantic_hash",
            "phys_hir_signature_hash",
            "dependency_merkle_root",
            "wasm_sha256",
            "sealed_preimage_hash",
            "artifacts_hash",
            "last_capsule_hash",
        ),
    ),
    (
        frozenset({str}),
        (
            "owner_principal_id",
            "claim_name",
            "holdout_ref",
            "oracle_id",
            "nullspec_id",
            "lane",
            "requested_lane",
            "epoch_config_ref",
            "output_schema_id",
            "schema",
        ),
    ),
    (frozenset({str, _NONE}), ("aspec_summary", "incident_reason")),
    (
        _INT,
        (
            "holdout_len",
            "alpha_micros",
            "epoch_size",
            "oracle_num_symbols",
            "access_credit",
            "created_at_ms",
            "reserved_k_bits",
            "reserved_access_credit",
            "execution_nonce",
        ),
    ),
    (_BOOL, ("signals_disagree", "aspec_heavy", "metadata_locked", "legacy")),
)
#: The other fields, each with its own check.
_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    **dict.fromkeys(
        ("dp_epsilon_budget", "dp_delta_budget", "last_decision", "etl_index"), _json_exact
    ),
    "alpha": _finite_float,
    "state": _of(ClaimState),
    "pln": _pln_exact,
    "holdout_pool_principals": _tuple_of(_of(str)),
    "artifacts": _tuple_of(_artifact_exact),
    "dependency_items": _tuple_of(_of(bytes)),
    "oracle_pins": lambda pins: pins is None or _json_dict_exact(pins),
    "extra": _json_dict_exact,
    "ledger": _ledger_json_exact,
}
#: Every field's check, for a few fields at a time; the whole record is checked by group.
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    **{name: _of(*types) for types, names in _TYPE_GROUPS for name in names},
    **_VALUE_CHECKS,
}
_GROUPS = tuple((types, attrgetter(*names)) for types, names in _TYPE_GROUPS)


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
        return self.evolve(state=state)

    def evolve(self, **changes: Any) -> ClaimRecord:
        """``dataclasses.replace(self, **changes)`` without the constructor call: a ClaimRecord
        has no checks of its own (its parts are values that validated themselves), so the copy
        is the same value, made in a third of the time."""
        return _derive_claim(self, changes)

    def decodes_to_itself(self) -> bool:
        """Whether ``from_json(json.loads(json.dumps(self.to_json(), sort_keys=True)))`` is a
        record equal to this one with every field of the same type (and every dict in the same
        order): then the stored text of this record may stand for its decoding. Conservative:
        False means only "not proven", and the text is decoded when read."""
        if type(self) is not ClaimRecord:
            return False
        if not all(set(map(type, values(self))) <= types for types, values in _GROUPS):
            return False
        return all(check(getattr(self, name)) for name, check in _VALUE_CHECKS.items())

    def fields_decode_to_themselves(self, names: Iterable[str]) -> bool:
        """:meth:`decodes_to_itself` of the fields ``names`` only. Each field is checked on its
        own, so for a record whose other fields are those of a record that decodes to itself,
        this is the whole check."""
        checks = _FIELD_CHECKS
        return all(checks[name](getattr(self, name)) for name in names)

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


_derive_claim = unchecked_deriver(ClaimRecord)
FIELD_NAMES: tuple[str, ...] = tuple(ClaimRecord.__dataclass_fields__)
if set(_FIELD_CHECKS) != set(FIELD_NAMES):  # a field without its check would be trusted
    raise RuntimeError(
        f"ClaimRecord fields without a decode check: {set(FIELD_NAMES) ^ set(_FIELD_CHECKS)}"
    )
