"""Claim ids for CreateClaim (v1) and CreateClaimV2, and the dependency Merkle root.

A claim id is derived from the request, so that repeating a create returns the existing claim
instead of opening a second budget for the same question (spec 20 §3.3 step 6, §3.4 step 17).

* **v1** follows the reference exactly (spec 20 §5.1) so that existing ids stay valid::

      SHA-256("evidenceos:claim_id:v2" || topic_id || holdout_handle_id || phys_hir_hash
              || u64be(epoch_size) || u32be(oracle_num_symbols))

* **v2** is ours (DESIGN §9): identical requests, ``access_credit`` aside, name the same claim and
  requests differing in any other field name different ones. The preimage is the owner's
  principal id followed by every other request field, as received, in a fixed order; strings are
  ``u32be(len) || utf8``, optional 32-byte hashes and optional doubles carry a presence byte, and
  integers have fixed widths, so every preimage parses back into exactly one request::

      SHA-256("evidenceos/claim_id/create_claim_v2/v1" ||
              str(principal_id) || str(claim_name) ||
              str(metadata.lane) || u32be(metadata.alpha_micros) ||
              str(metadata.epoch_config_ref) || str(metadata.output_schema_id) ||
              opt32(signals.semantic_hash) || opt32(signals.phys_hir_signature_hash) ||
              opt32(signals.dependency_merkle_root) ||
              str(holdout_ref) || u64be(epoch_size) || u32be(oracle_num_symbols) ||
              str(oracle_id) || str(nullspec_id) ||
              optf64(dp_epsilon_budget) || optf64(dp_delta_budget))

  with ``opt32(None) = 0x00``, ``opt32(h) = 0x01 || h``, ``optf64(None) = 0x00`` and
  ``optf64(x) = 0x01 || IEEE-754 binary64 big-endian of x`` (``-0.0`` written as ``0.0``).
  The domain differs from the v1 one in its eleventh byte, so no v1 preimage equals a v2 one.
  The principal is included because the reference returns an existing claim without an owner
  check: without it a second tenant sending the same request would be handed (and locked out
  of) the first tenant's claim, and would learn that it exists. Both claims still share one
  topic, so the topic budget is not doubled.

* The **dependency Merkle root** (spec 20 §5.4) is the reference's simple binary tree over the
  sorted dependency hashes, not RFC 6962: leaves ``H(item)``, nodes ``H(left || right)``, an odd
  last node paired with itself, ``H("")`` for none. Clients compute it, so it must match.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from evidenceos.core.topicid import (
    HASH_SIZE,
    ClaimMetadata,
    TopicSignals,
    encode_length_prefixed,
    encode_optional_hash,
)
from evidenceos.errors import InvalidArgument
from evidenceos.ids import ClaimId, PrincipalId

__all__ = [
    "CLAIM_ID_V1_DOMAIN",
    "CLAIM_ID_V2_DOMAIN",
    "ClaimRequestV1",
    "ClaimRequestV2",
    "compute_claim_id_v1",
    "compute_claim_id_v2",
    "compute_claim_id_v2_preimage",
    "compute_dependency_merkle_root",
]

CLAIM_ID_V1_DOMAIN = b"evidenceos:claim_id:v2"
"""The reference's domain for v1 CreateClaim ids (its name says v2; it is the v1 RPC's)."""
CLAIM_ID_V2_DOMAIN = b"evidenceos/claim_id/create_claim_v2/v1"

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_ABSENT = b"\x00"
_PRESENT = b"\x01"


@dataclass(frozen=True, slots=True)
class ClaimRequestV1:
    """The CreateClaim fields that name a v1 claim (``alpha`` and ``access_credit`` do not)."""

    topic_id: bytes
    holdout_handle_id: bytes
    phys_hir_hash: bytes
    epoch_size: int
    oracle_num_symbols: int

    def __post_init__(self) -> None:
        for name in ("topic_id", "holdout_handle_id", "phys_hir_hash"):
            if len(getattr(self, name)) != HASH_SIZE:
                raise InvalidArgument(f"{name} must be 32 bytes")
        _check_range("epoch_size", self.epoch_size, _U64_MAX)
        _check_range("oracle_num_symbols", self.oracle_num_symbols, _U32_MAX)


@dataclass(frozen=True, slots=True)
class ClaimRequestV2:
    """Everything in a CreateClaimV2 request except ``access_credit``, plus the caller.

    Values are taken as received, before defaults are applied (an empty ``oracle_id`` stays
    empty), so two requests that differ on the wire never share a claim.
    """

    principal_id: PrincipalId
    claim_name: str
    metadata: ClaimMetadata
    signals: TopicSignals
    holdout_ref: str
    epoch_size: int
    oracle_num_symbols: int
    oracle_id: str
    nullspec_id: str
    dp_epsilon_budget: float | None = None
    dp_delta_budget: float | None = None

    def __post_init__(self) -> None:
        _check_range("epoch_size", self.epoch_size, _U64_MAX)
        _check_range("oracle_num_symbols", self.oracle_num_symbols, _U32_MAX)
        for name in ("dp_epsilon_budget", "dp_delta_budget"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"{name} must be finite and >= 0")


def compute_claim_id_v1(request: ClaimRequestV1) -> ClaimId:
    """Claim id of a v1 CreateClaim, byte-identical to the reference's (spec 20 §5.1)."""
    preimage = b"".join(
        (
            CLAIM_ID_V1_DOMAIN,
            request.topic_id,
            request.holdout_handle_id,
            request.phys_hir_hash,
            request.epoch_size.to_bytes(8, "big"),
            request.oracle_num_symbols.to_bytes(4, "big"),
        )
    )
    return ClaimId(hashlib.sha256(preimage).digest())


def compute_claim_id_v2_preimage(request: ClaimRequestV2) -> bytes:
    """The exact bytes hashed for a CreateClaimV2 claim id (module docstring, docs/decisions.md)."""
    metadata, signals = request.metadata, request.signals
    return b"".join(
        (
            CLAIM_ID_V2_DOMAIN,
            encode_length_prefixed(request.principal_id, "principal_id"),
            encode_length_prefixed(request.claim_name, "claim_name"),
            encode_length_prefixed(metadata.lane, "metadata.lane"),
            metadata.alpha_micros.to_bytes(4, "big"),
            encode_length_prefixed(metadata.epoch_config_ref, "metadata.epoch_config_ref"),
            encode_length_prefixed(metadata.output_schema_id, "metadata.output_schema_id"),
            encode_optional_hash(signals.semantic_hash),
            encode_optional_hash(signals.phys_hir_signature_hash),
            encode_optional_hash(signals.dependency_merkle_root),
            encode_length_prefixed(request.holdout_ref, "holdout_ref"),
            request.epoch_size.to_bytes(8, "big"),
            request.oracle_num_symbols.to_bytes(4, "big"),
            encode_length_prefixed(request.oracle_id, "oracle_id"),
            encode_length_prefixed(request.nullspec_id, "nullspec_id"),
            _optional_double(request.dp_epsilon_budget),
            _optional_double(request.dp_delta_budget),
        )
    )


def compute_claim_id_v2(request: ClaimRequestV2) -> ClaimId:
    """Claim id of a CreateClaimV2 request: same request and owner, same claim (DESIGN §9)."""
    return ClaimId(hashlib.sha256(compute_claim_id_v2_preimage(request)).digest())


def compute_dependency_merkle_root(items: Iterable[bytes]) -> bytes:
    """Root over dependency hashes in bytewise order (spec 20 §5.4); order of ``items`` is free.

    Duplicates are kept, as in the reference; because an odd last node pairs with itself, a list
    and the same list with its largest item repeated have the same root.
    """
    ordered = sorted(items)
    for item in ordered:
        if len(item) != HASH_SIZE:
            raise InvalidArgument("dependency items must be 32 bytes")
    if not ordered:
        return hashlib.sha256(b"").digest()
    layer = [hashlib.sha256(item).digest() for item in ordered]
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise InvalidArgument(f"{name} is out of range")


def _optional_double(value: float | None) -> bytes:
    # Adding 0.0 turns -0.0 into 0.0: equal budgets give equal bytes.
    return _ABSENT if value is None else _PRESENT + struct.pack(">d", value + 0.0)
