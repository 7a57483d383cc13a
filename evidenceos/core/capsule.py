"""The claim capsule: what an execution publishes in the log (spec 20 §7.2, DESIGN §4, §9).

The capsule is one RFC 8785 object carrying ``kind: "capsule"``, and its canonical bytes are the
log entry itself, so ``leaf_hash = SHA-256(0x00 || capsule_bytes)`` and
``capsule_hash = SHA-256(capsule_bytes)`` as clients expect. Non-finite floats become ``null``;
integers beyond 2^53 - 1 are written as strings (RFC 8785's range).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evidenceos.core.canonical import MAX_SAFE_INTEGER, encode_entry
from evidenceos.core.ledger import ConservationLedger

CAPSULE_SCHEMA = "evidenceos.v2.claim_capsule"
RUNTIME_VERSION = "evidenceos-python-kernel-0.1.0"
ASPEC_VERSION = "aspec.v1"
PROTOCOL_VERSION = "evidenceos.v2"


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _int(value: int) -> int | str:
    return value if abs(value) <= MAX_SAFE_INTEGER else str(value)


@dataclass(frozen=True, slots=True)
class CapsuleInputs:
    claim_id: bytes
    topic_id: bytes
    output_schema_id: str
    artifacts: Sequence[tuple[str, bytes]]
    dependency_items: Sequence[bytes]
    canonical_output: bytes
    wasm_hash: bytes
    judge_trace_hash: bytes
    holdout_ref: str
    holdout_handle: bytes
    ledger: ConservationLedger
    fuel_total: int
    e_value: float
    certified: bool
    decision: int
    reason_codes: Sequence[int]
    semantic_hash: bytes | None
    phys_hir_signature_hash: bytes | None
    lineage_root_hash: bytes
    signals_disagree: bool
    lane: str
    oracle_id: str
    oracle_resolution_hash: bytes
    nullspec_id: bytes | None
    nullspec_contract_hash: bytes | None
    eprocess_kind: str
    epoch: int
    sealed_preimage_hash: bytes


#: The trial commitment of "no trial": version 2, then zeros (arm, ids, parameters, nonce).
_NO_TRIAL_COMMITMENT_HASH = hashlib.sha256(b"\x02" + bytes(6 + 32 + 16)).hexdigest()


@functools.lru_cache(maxsize=64)
def _schema_hash(output_schema_id: str) -> str:
    return hashlib.sha256(output_schema_id.encode()).hexdigest()


def build_capsule(inputs: CapsuleInputs) -> dict[str, Any]:
    """The capsule object (field list of spec 20 §7.2; trial fields carry "no trial")."""
    ledger = inputs.ledger
    snap = ledger.snapshot()
    output_hash = hashlib.sha256(inputs.canonical_output).hexdigest()
    holdout_hash = hashlib.sha256(inputs.holdout_handle).hexdigest()
    zero32 = "00" * 32
    return {
        "kind": "capsule",
        "schema": CAPSULE_SCHEMA,
        "claim_id_hex": inputs.claim_id.hex(),
        "topic_id_hex": inputs.topic_id.hex(),
        "output_schema_id": inputs.output_schema_id,
        "code_ir_manifests": [
            {"kind": kind, "hash_hex": digest.hex()}
            for kind, digest in sorted(inputs.artifacts, key=lambda a: (a[0], a[1].hex()))
        ],
        "dependency_capsule_hashes": sorted(d.hex() for d in inputs.dependency_items),
        "structured_output_hash_hex": output_hash,
        "canonical_output_hash_hex": output_hash,
        "kout_bits_upper_bound": _int(8 * len(inputs.canonical_output)),
        "wasm_hash_hex": inputs.wasm_hash.hex(),
        "judge_trace_hash_hex": hashlib.sha256(inputs.judge_trace_hash).hexdigest(),
        "holdout_ref": inputs.holdout_ref,
        "holdout_commitment_hex": holdout_hash,
        "ledger": {
            "alpha": _num(snap.alpha),
            "log_alpha_target": _num(snap.log_alpha_target),
            "alpha_prime": _num(snap.alpha_prime),
            "log_alpha_prime": _num(snap.log_alpha_prime),
            "k_bits_total": _num(snap.k_bits_total),
            "barrier_threshold": _num(snap.barrier_threshold),
            "barrier": _num(snap.barrier),
            "wealth": _num(snap.wealth),
            "w_max": _num(snap.w_max),
            "epsilon_total": _num(snap.epsilon_total),
            "delta_total": _num(snap.delta_total),
            "access_credit_spent": _num(snap.access_credit_spent),
            "epsilon_budget": None
            if ledger.epsilon_budget is None
            else _num(ledger.epsilon_budget),
            "delta_budget": None if ledger.delta_budget is None else _num(ledger.delta_budget),
            "compute_fuel_spent": _int(inputs.fuel_total),
        },
        "ledger_receipts": [
            {"lane": "wealth_w", "value": _num(snap.wealth), "unit": "e_value_product"},
            {"lane": "information_k", "value": _num(snap.k_bits_total), "unit": "bits"},
            {
                "lane": "privacy_epsilon_delta",
                "value": _num(snap.epsilon_total + snap.delta_total),
                "unit": "epsilon_plus_delta",
            },
            {"lane": "access_credit", "value": _num(snap.access_credit_spent), "unit": "credits"},
            {"lane": "compute_fuel", "value": _int(inputs.fuel_total), "unit": "fuel"},
        ],
        "e_value": _num(inputs.e_value),
        "certified": inputs.certified,
        "decision": inputs.decision,
        "reason_codes": sorted(set(inputs.reason_codes)),
        "semantic_hash_hex": (inputs.semantic_hash or bytes(32)).hex(),
        "physhir_hash_hex": (inputs.phys_hir_signature_hash or bytes(32)).hex(),
        "lineage_root_hash_hex": inputs.lineage_root_hash.hex(),
        "output_schema_id_hash_hex": _schema_hash(inputs.output_schema_id),
        "holdout_handle_hash_hex": holdout_hash,
        "disagreement_score": 1 if inputs.signals_disagree else 0,
        "semantic_physhir_distance_bits": 0,
        "escalate_to_heavy": inputs.lane == "heavy",
        "lane": inputs.lane,
        "policy_oracle_receipts": [],
        "topic_oracle_receipt": None,
        "oracle_id": inputs.oracle_id,
        "nullspec_id_hex": None if inputs.nullspec_id is None else inputs.nullspec_id.hex(),
        "oracle_resolution_hash_hex": inputs.oracle_resolution_hash.hex(),
        "eprocess_kind": inputs.eprocess_kind,
        "nullspec_contract_hash_hex": (
            None if inputs.nullspec_contract_hash is None else inputs.nullspec_contract_hash.hex()
        ),
        "epoch": _int(inputs.epoch),
        "sealed_preimage_hash_hex": inputs.sealed_preimage_hash.hex(),
        "trial_commitment_schema_version": 2,
        "trial_arm_id": 0,
        "trial_intervention_id": "",
        "trial_intervention_version": "",
        "trial_arm_parameters_hash_hex": zero32,
        "trial_nonce_hex": "00" * 16,
        "trial_commitment_hash_hex": _NO_TRIAL_COMMITMENT_HASH,
        "environment_attestations": {
            "runtime_version": RUNTIME_VERSION,
            "aspec_version": ASPEC_VERSION,
            "protocol_version": PROTOCOL_VERSION,
            "tee_backend_name": None,
            "tee_measurement_hex": None,
            "tee_attestation_blob_b64": None,
        },
        "state": "Certified" if inputs.certified else "Settled",
    }


def encode_capsule(capsule: dict[str, Any]) -> bytes:
    """The capsule's RFC 8785 bytes (the log entry; ``capsule_hash`` is their SHA-256).

    A capsule always holds floats, which keep ``encode_entry`` off its C-encoder path. Floats
    whose RFC 8785 form is Python's ``repr`` (non-integral, no exponent) are left to the C
    encoder, integral ones below 2^53 become ints (RFC 8785 writes them without ``.0``); any
    other value (an exponent form, a non-ASCII key ...) takes ``encode_entry`` unchanged."""
    try:
        prepared = _prepare(capsule)
    except _SlowPath:
        return encode_entry(capsule)
    if not isinstance(capsule.get("kind"), str) or not capsule["kind"]:
        return encode_entry(capsule)  # let encode_entry refuse it
    try:
        return _encode_prepared(prepared).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: encode_entry says why
        return encode_entry(capsule)


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_FLOAT_INT_LIMIT = 2.0**53
_MIN_PLAIN_FLOAT = 1e-4


def _c_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` without building its C encoder (and a circular-reference dict) on
    every call: a prepared capsule is a fresh tree of dicts, lists and scalars."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has the C accelerator
        return _ENCODER.encode
    chunks = make(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    return lambda value: "".join(chunks(value, 0))


_encode_prepared = _c_encoder()


class _SlowPath(Exception):
    """A value whose RFC 8785 form the C encoder does not write."""


def _prepare(value: Any) -> Any:
    """``value`` with every float made C-encoder-safe, or :class:`_SlowPath`. Strings, booleans
    and None inside containers are taken as they are without a call of their own."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is float:
        if value.is_integer():  # False for NaN and infinities
            if -_FLOAT_INT_LIMIT < value < _FLOAT_INT_LIMIT:
                return int(value)
            raise _SlowPath
        # Non-integral and finite, so below 2**52: ``repr`` (the C encoder's form) uses an
        # exponent exactly below 1e-4 (its first digit is then at 10**-5 or lower).
        if not _MIN_PLAIN_FLOAT <= abs(value) < math.inf:  # also refuses NaN
            raise _SlowPath
        return value
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        raise _SlowPath
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _SlowPath
            item_kind = type(item)
            out[key] = (
                item if item_kind is str or item_kind is bool or item is None else _prepare(item)
            )
        return out
    if kind is list or kind is tuple:
        return [
            item if type(item) is str or type(item) is bool or item is None else _prepare(item)
            for item in value
        ]
    raise _SlowPath
