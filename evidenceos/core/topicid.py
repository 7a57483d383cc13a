"""Topic ids from the client's claim metadata and signals (the DiscOS algorithm).

A topic groups claims that ask the same question, so that they share one leakage budget. The
reference daemon derived its topic from server-side hashes and ignored the client's signals, which
escalated almost every claim to the heavy lane (spec 20 §5.2). We use the algorithm the DiscOS
client implements instead (spec 20 §5.5, DESIGN §5), and ``vectors/topicid/topicid_vectors.json``
pins it byte for byte::

    payload  = u32be(len) || lane || u32be(alpha_micros)
            || u32be(len) || epoch_config_ref || u32be(len) || output_schema_id
            || opt(semantic_hash) || phys_hir_signature_hash (32 raw bytes)
            || opt(dependency_merkle_root)
    topic_id = SHA-256("evidenceos/topicid/v1" || payload)

with ``opt(None) = 0x00`` and ``opt(h) = 0x01 || h``, and no separator after the domain (DiscOS's
``docs/topicid.md`` describes a variant with one; the vectors follow the code, not that page).
Strings are hashed exactly as sent: canonicalising ``cbrn-sc.v1`` first does not reproduce the
vectors, so schema aliases name different topics.

The signals *disagree* when the client supplied both a semantic hash and a PhysHIR signature hash
and they differ in at least 128 bits, the threshold of DiscOS's ``compute_topic_id``. That is the
only signal-based route to the heavy lane (DESIGN §9); a missing signal never counts as
disagreement, so no claim becomes heavy by accident.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from evidenceos.errors import InvalidArgument
from evidenceos.ids import TopicId

__all__ = [
    "DISAGREEMENT_THRESHOLD_BITS",
    "HASH_SIZE",
    "TOPIC_ID_DOMAIN",
    "ClaimMetadata",
    "TopicComputation",
    "TopicSignals",
    "compute_distance_bits",
    "compute_topic_id",
    "compute_topic_payload",
]

TOPIC_ID_DOMAIN = b"evidenceos/topicid/v1"
DISAGREEMENT_THRESHOLD_BITS = 128
"""DiscOS escalates when semantic and PhysHIR hashes differ in this many bits or more."""
HASH_SIZE = 32

_U32_MAX = 2**32 - 1
_ABSENT = b"\x00"
_PRESENT = b"\x01"
_NO_PHYS_HIR = bytes(HASH_SIZE)


@dataclass(frozen=True, slots=True)
class ClaimMetadata:
    """The four ``ClaimMetadataV2`` fields that enter the topic id, exactly as sent."""

    lane: str
    alpha_micros: int
    epoch_config_ref: str
    output_schema_id: str

    def __post_init__(self) -> None:
        if not 0 <= self.alpha_micros <= _U32_MAX:
            raise InvalidArgument("metadata.alpha_micros must fit in a uint32")


@dataclass(frozen=True, slots=True)
class TopicSignals:
    """The client's ``TopicSignalsV2``; ``None`` means the field was empty on the wire."""

    semantic_hash: bytes | None = None
    phys_hir_signature_hash: bytes | None = None
    dependency_merkle_root: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("semantic_hash", "phys_hir_signature_hash", "dependency_merkle_root"):
            value = getattr(self, name)
            if value is not None and len(value) != HASH_SIZE:
                raise InvalidArgument(f"signals.{name} must be 0 or 32 bytes")

    @classmethod
    def from_wire(
        cls, semantic_hash: bytes, phys_hir_signature_hash: bytes, dependency_merkle_root: bytes
    ) -> TopicSignals:
        """Map proto3 bytes fields (empty = not sent) to signals; other lengths are refused."""
        return cls(
            semantic_hash=semantic_hash or None,
            phys_hir_signature_hash=phys_hir_signature_hash or None,
            dependency_merkle_root=dependency_merkle_root or None,
        )


@dataclass(frozen=True, slots=True)
class TopicComputation:
    """A topic id and whether the supplied signals disagree (a route to the heavy lane)."""

    topic_id: TopicId
    signals_disagree: bool
    semantic_phys_distance_bits: int | None
    """Hamming distance of the two hashes; ``None`` when the client omitted either."""


def compute_topic_payload(metadata: ClaimMetadata, signals: TopicSignals) -> bytes:
    """The exact bytes hashed after the domain, per spec 20 §5.5.

    DiscOS always sends a PhysHIR signature hash (its payload has no presence byte for it); a
    client that sends none is hashed as 32 zero bytes, which is what proto3 would have delivered
    had the field been fixed-size.
    """
    phys = signals.phys_hir_signature_hash
    return b"".join(
        (
            encode_length_prefixed(metadata.lane, "metadata.lane"),
            metadata.alpha_micros.to_bytes(4, "big"),
            encode_length_prefixed(metadata.epoch_config_ref, "metadata.epoch_config_ref"),
            encode_length_prefixed(metadata.output_schema_id, "metadata.output_schema_id"),
            encode_optional_hash(signals.semantic_hash),
            _NO_PHYS_HIR if phys is None else phys,
            encode_optional_hash(signals.dependency_merkle_root),
        )
    )


def compute_topic_id(metadata: ClaimMetadata, signals: TopicSignals) -> TopicComputation:
    """Topic id of a CreateClaimV2 request and whether its signals disagree (DESIGN §5)."""
    digest = hashlib.sha256(TOPIC_ID_DOMAIN + compute_topic_payload(metadata, signals)).digest()
    distance: int | None = None
    if signals.semantic_hash is not None and signals.phys_hir_signature_hash is not None:
        distance = compute_distance_bits(signals.semantic_hash, signals.phys_hir_signature_hash)
    return TopicComputation(
        topic_id=TopicId(digest),
        signals_disagree=distance is not None and distance >= DISAGREEMENT_THRESHOLD_BITS,
        semantic_phys_distance_bits=distance,
    )


def compute_distance_bits(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equally long hashes."""
    if len(a) != len(b):
        raise InvalidArgument("hashes of different lengths have no bit distance")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def encode_length_prefixed(text: str, field: str) -> bytes:
    """``u32be(len(utf8)) || utf8``: the string encoding of topic ids and claim ids."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{field} must be valid UTF-8") from exc
    if len(raw) > _U32_MAX:
        raise InvalidArgument(f"{field} is too long")
    return len(raw).to_bytes(4, "big") + raw


def encode_optional_hash(value: bytes | None) -> bytes:
    """``0x00`` for an absent hash, ``0x01 || hash`` for a present one."""
    return _ABSENT if value is None else _PRESENT + value
