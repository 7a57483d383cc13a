"""Signed tree heads and the signed revocation snapshot (spec 40 §3, byte layouts exact).

The kernel never signs a payload directly: it signs a 32-byte SHA-256 digest of a domain string
followed by a fixed binary layout, with Ed25519 (RFC 8032, deterministic) over 32-byte seeds
(spec 40 §3.1). Deterministic signatures mean the same ``(size, root, key)`` always yields the same
bytes, which the tests and the reference's clients rely on. Keys are passed in; loading them from
``keys/`` is the store's job.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from evidenceos.errors import InvalidArgument, SignatureError
from evidenceos.ids import KeyId

__all__ = [
    "REVOCATIONS_DOMAIN",
    "STH_DOMAIN",
    "SignedTreeHead",
    "compute_key_id",
    "compute_revocation_snapshot_digest",
    "compute_sth_digest",
    "private_key_from_seed",
    "public_key_bytes",
    "sign_tree_head",
    "verify_tree_head",
]

STH_DOMAIN = b"evidenceos:sth:v1"
"""Domain for tree-head digests; followed directly by the payload, no separator (spec 40 §3.2)."""

REVOCATIONS_DOMAIN = b"evidenceos:revocations:v1"
"""Domain for revocation snapshot digests (spec 40 §3.3)."""

_HASH_SIZE = 32
_SEED_SIZE = 32
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_U64_MAX = (1 << 64) - 1
_U64BE = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A log size and root signed by the key ``key_id`` names.

    ``key_id`` travels beside the head but is not covered by the signature (spec 40 §3.2); the
    verifier checks it names the key it was given so a head cannot be misattributed.
    """

    tree_size: int
    root_hash: bytes
    signature: bytes
    key_id: bytes


def _u64be(value: int, what: str) -> bytes:
    if not 0 <= value <= _U64_MAX:
        raise InvalidArgument(f"{what} must fit in an unsigned 64-bit integer, got {value}")
    return _U64BE.pack(value)


def _require_width(what: str, value: bytes, width: int, error: type[InvalidArgument]) -> None:
    if len(value) != width:
        raise error(f"{what} must be {width} bytes, got {len(value)}")


def compute_key_id(public_key: bytes) -> KeyId:
    """``key_id = SHA-256(raw 32-byte Ed25519 public key)`` (spec 40 §3.1)."""
    _require_width("public key", public_key, _PUBLIC_KEY_SIZE, InvalidArgument)
    return KeyId(hashlib.sha256(public_key).digest())


def compute_sth_digest(tree_size: int, root_hash: bytes) -> bytes:
    """``H("evidenceos:sth:v1" || u64be(tree_size) || root_hash)``: the bytes the key signs."""
    _require_width("root hash", root_hash, _HASH_SIZE, InvalidArgument)
    return hashlib.sha256(STH_DOMAIN + _u64be(tree_size, "tree size") + root_hash).digest()


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key for a raw 32-byte seed, the format of ``keys/<key_id_hex>.key``."""
    _require_width("Ed25519 seed", seed, _SEED_SIZE, InvalidArgument)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key, the form hashed into ``key_id`` and served by GetPublicKey."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_tree_head(
    private_key: Ed25519PrivateKey, tree_size: int, root_hash: bytes
) -> SignedTreeHead:
    """Sign ``(tree_size, root_hash)`` and name the signing key by its ``key_id``."""
    digest = compute_sth_digest(tree_size, root_hash)
    return SignedTreeHead(
        tree_size=tree_size,
        root_hash=bytes(root_hash),
        signature=private_key.sign(digest),
        key_id=compute_key_id(public_key_bytes(private_key)),
    )


def verify_tree_head(public_key: bytes, head: SignedTreeHead) -> None:
    """Check ``head`` was signed by ``public_key``; raise :class:`SignatureError` if not.

    Lengths follow the reference's verifier (key 32, root 32, key id 32, signature 64); the key id
    must be ``H(public_key)`` so a head claiming another key is refused even if the signature is
    good.
    """
    _require_width("public key", public_key, _PUBLIC_KEY_SIZE, SignatureError)
    _require_width("tree head root hash", head.root_hash, _HASH_SIZE, SignatureError)
    _require_width("tree head key id", head.key_id, _HASH_SIZE, SignatureError)
    _require_width("tree head signature", head.signature, _SIGNATURE_SIZE, SignatureError)
    if not 0 <= head.tree_size <= _U64_MAX:
        raise SignatureError(f"tree head size {head.tree_size} does not fit in 64 bits")
    if head.key_id != compute_key_id(public_key):
        raise SignatureError(
            f"tree head key id {head.key_id.hex()} does not match the verifying key "
            f"{compute_key_id(public_key).hex()}"
        )
    try:
        verifier = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise SignatureError(f"public key is not a valid Ed25519 key: {exc}") from exc
    try:
        verifier.verify(head.signature, compute_sth_digest(head.tree_size, head.root_hash))
    except InvalidSignature:
        raise SignatureError(
            f"tree head signature does not verify (size {head.tree_size}, "
            f"key id {head.key_id.hex()})"
        ) from None


def compute_revocation_snapshot_digest(
    entries: Sequence[tuple[bytes, int, str]], tree_size: int, root_hash: bytes, key_id: bytes
) -> bytes:
    """Digest the key signs for a revocation snapshot (spec 40 §3.3, byte layout exact).

    Each entry is ``(claim_id, timestamp_unix, reason)``; in the reference feed the 32-byte
    ``claim_id`` slot carries the revoked capsule hash. Variable fields are length-prefixed
    (u64be) so ``"34"+"7"`` and ``"345"`` cannot collide (spec 40 §10 item 25). The STH's
    signature is deliberately not part of the payload.
    """
    _require_width("tree head root hash", root_hash, _HASH_SIZE, InvalidArgument)
    _require_width("tree head key id", key_id, _HASH_SIZE, InvalidArgument)
    width_prefix = _u64be(_HASH_SIZE, "width")
    parts = [REVOCATIONS_DOMAIN]
    for position, (claim_id, timestamp_unix, reason) in enumerate(entries):
        _require_width(
            f"revocation entry {position} claim id", claim_id, _HASH_SIZE, InvalidArgument
        )
        reason_bytes = reason.encode("utf-8")
        parts += [
            width_prefix,
            claim_id,
            _u64be(timestamp_unix, f"revocation entry {position} timestamp"),
            _u64be(len(reason_bytes), "reason length"),
            reason_bytes,
        ]
    parts += [_u64be(tree_size, "tree size"), root_hash, width_prefix, key_id]
    return hashlib.sha256(b"".join(parts)).digest()
