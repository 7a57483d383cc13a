"""Offline verification of what a daemon hands out: tree heads, capsules, consistency.

Nothing here talks to a daemon; every function checks bytes against a public key the caller
trusts, with the RFC 6962 / RFC 9162 algorithms of :mod:`evidenceos.core.merkle` and the signed
tree head layout of :mod:`evidenceos.core.sth` (spec 40 §2-3). Failures raise
:class:`VerificationError` naming what did not hold.

Consistency between two heads needs a proof path, and ``GetConsistencyProof`` returns only the
two roots and a boolean the server computed (spec 20 §3.14). The audit path of the old tree's last
leaf (``m - 1``) inside the new tree holds every node of the RFC 6962 proof ``PROOF(m, n)``, so a
client that fetched that inclusion proof builds the standard proof itself
(:func:`consistency_proof_from_inclusion`) and checks it with :func:`verify_consistency`, trusting
the server for nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evidenceos.core import merkle
from evidenceos.core.sth import SignedTreeHead, compute_key_id, verify_tree_head
from evidenceos.errors import EvidenceOSError, InvalidArgument

__all__ = [
    "SignedTreeHead",
    "VerificationError",
    "VerifiedCapsule",
    "consistency_proof_from_inclusion",
    "head_from_proto",
    "prefix_root_from_inclusion",
    "verify_capsule",
    "verify_consistency",
    "verify_head",
    "verify_inclusion",
]


class VerificationError(InvalidArgument):
    """Something the daemon handed out does not verify; the message says what."""


def head_from_proto(message: Any) -> SignedTreeHead:
    """A :class:`SignedTreeHead` from ``GetSignedTreeHeadResponse`` or ``SignedTreeHead``."""
    return SignedTreeHead(
        tree_size=int(message.tree_size),
        root_hash=bytes(message.root_hash),
        signature=bytes(message.signature),
        key_id=bytes(message.key_id),
    )


def verify_head(head: SignedTreeHead, public_key: bytes) -> None:
    """The head is signed by ``public_key`` and names it by its key id (spec 40 §3.2)."""
    try:
        verify_tree_head(public_key, head)
    except EvidenceOSError as exc:
        raise VerificationError(str(exc)) from exc


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, head: SignedTreeHead, audit_path: Sequence[bytes]
) -> None:
    """The leaf is at ``leaf_index`` in the tree ``head`` signs (RFC 9162 §2.1.3.2)."""
    try:
        merkle.verify_inclusion(leaf_hash, leaf_index, head.tree_size, audit_path, head.root_hash)
    except EvidenceOSError as exc:
        raise VerificationError(str(exc)) from exc


def verify_consistency(old_head: SignedTreeHead, new_head: SignedTreeHead, proof: Any) -> None:
    """``new_head``'s tree extends ``old_head``'s (RFC 9162 §2.1.4.2).

    ``proof`` is the path (a sequence of 32-byte hashes) or a ``MerkleConsistencyProof`` message,
    whose sizes must then match the heads. Signatures are not checked here: call
    :func:`verify_head` on each head with the key you trust.
    """
    path: Sequence[bytes]
    if hasattr(proof, "path"):
        if (int(proof.old_tree_size), int(proof.new_tree_size)) != (
            old_head.tree_size,
            new_head.tree_size,
        ):
            raise VerificationError(
                f"consistency proof is for sizes {proof.old_tree_size} -> {proof.new_tree_size}, "
                f"the heads are {old_head.tree_size} -> {new_head.tree_size}"
            )
        path = [bytes(p) for p in proof.path]
    else:
        path = [bytes(p) for p in proof]
    try:
        merkle.verify_consistency(
            old_head.tree_size, new_head.tree_size, old_head.root_hash, new_head.root_hash, path
        )
    except EvidenceOSError as exc:
        raise VerificationError(
            f"head of size {new_head.tree_size} does not extend head of size "
            f"{old_head.tree_size}: {exc}"
        ) from exc


def _climb_right_edge(
    leaf_index: int, tree_size: int, leaf_hash: bytes, audit_path: Sequence[bytes]
) -> tuple[int, int, bytes, int]:
    """Fold the left siblings while the leaf's node is a right child: returns the shifted
    indices, the hash of the perfect subtree ending at ``leaf_index + 1`` and the path used."""
    fn, sn, current, used = leaf_index, tree_size - 1, leaf_hash, 0
    while fn & 1:
        if used == len(audit_path):
            raise VerificationError("audit path too short")
        current = merkle.hash_children(audit_path[used], current)
        used += 1
        fn >>= 1
        sn >>= 1
    return fn, sn, current, used


def prefix_root_from_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, audit_path: Sequence[bytes]
) -> bytes:
    """Root of the tree of size ``leaf_index + 1``, from the leaf's audit path in a larger tree.

    The left siblings on the path are exactly the perfect subtrees that make up the first
    ``leaf_index`` leaves; folding them over the leaf gives the smaller tree's root. Verify the
    path against the larger tree's root first.
    """
    fn, sn, current, used = leaf_index, tree_size - 1, leaf_hash, 0
    while sn > 0:
        if fn & 1 or fn < sn:
            if used == len(audit_path):
                raise VerificationError("audit path too short")
            if fn & 1:
                current = merkle.hash_children(audit_path[used], current)
            used += 1
        fn >>= 1
        sn >>= 1
    return current


def consistency_proof_from_inclusion(
    old_size: int, new_size: int, leaf_hash: bytes, audit_path: Sequence[bytes]
) -> list[bytes]:
    """RFC 6962 ``PROOF(old_size, new_size)`` from the audit path of leaf ``old_size - 1`` in the
    tree of size ``new_size`` (see the module docstring). Sizes 0 and equal sizes give ``[]``."""
    if not 0 <= old_size <= new_size:
        raise VerificationError(f"sizes must satisfy 0 <= {old_size} <= {new_size}")
    if old_size in (0, new_size):
        return []
    fn, _sn, first, used = _climb_right_edge(old_size - 1, new_size, leaf_hash, audit_path)
    # old_size a power of two (fn == 0): its root is a node of the new tree and RFC 6962 leaves
    # it out of the proof; otherwise the proof starts with the subtree that ends the old tree.
    return ([first] if fn else []) + [bytes(p) for p in audit_path[used:]]


@dataclass(frozen=True, slots=True)
class VerifiedCapsule:
    """A capsule whose bytes, log position and tree head all verified."""

    capsule: dict[str, Any]
    capsule_bytes: bytes
    capsule_hash: bytes
    etl_index: int
    head: SignedTreeHead

    @property
    def claim_id_hex(self) -> str:
        return str(self.capsule.get("claim_id_hex", ""))


def verify_capsule(
    response: Any, public_key: bytes, *, claim_id: bytes | None = None
) -> VerifiedCapsule:
    """Check a ``FetchCapsuleResponse`` offline against a trusted ETL public key.

    Checks, in order: the tree head's signature and key id; that ``root_hash``/``tree_size``
    repeat the head; ``capsule_hash = SHA-256(capsule_bytes)``; the inclusion proof's leaf hash is
    ``SHA-256(0x00 || capsule_bytes)`` at ``etl_index`` and leads to the signed root; the
    consistency proof from the tree that ended with this capsule (``etl_index + 1``) to the head
    verifies; and the capsule is a capsule (``kind``) for ``claim_id`` when one is given.
    """
    head = head_from_proto(response.signed_tree_head)
    verify_head(head, public_key)
    if int(response.tree_size) != head.tree_size or bytes(response.root_hash) != head.root_hash:
        raise VerificationError("response tree_size/root_hash differ from its signed tree head")
    capsule_bytes = bytes(response.capsule_bytes)
    capsule_hash = hashlib.sha256(capsule_bytes).digest()
    if capsule_hash != bytes(response.capsule_hash):
        raise VerificationError("capsule_hash is not SHA-256 of capsule_bytes")
    etl_index = int(response.etl_index)
    inclusion = response.inclusion_proof
    leaf_hash = merkle.hash_leaf(capsule_bytes)
    if bytes(inclusion.leaf_hash) != leaf_hash:
        raise VerificationError("inclusion proof leaf_hash is not SHA-256(0x00 || capsule_bytes)")
    if int(inclusion.leaf_index) != etl_index or int(inclusion.tree_size) != head.tree_size:
        raise VerificationError("inclusion proof is for another leaf or tree size")
    audit_path = [bytes(p) for p in inclusion.audit_path]
    verify_inclusion(leaf_hash, etl_index, head, audit_path)
    old_size = etl_index + 1
    old_root = prefix_root_from_inclusion(etl_index, head.tree_size, leaf_hash, audit_path)
    old_head = SignedTreeHead(old_size, old_root, b"", head.key_id)
    verify_consistency(old_head, head, response.consistency_proof)
    try:
        capsule = json.loads(capsule_bytes)
    except ValueError as exc:
        raise VerificationError(f"capsule_bytes are not JSON: {exc}") from exc
    if not isinstance(capsule, dict) or capsule.get("kind") != "capsule":
        raise VerificationError('capsule_bytes are not a capsule (no "kind": "capsule")')
    if claim_id is not None and capsule.get("claim_id_hex") != claim_id.hex():
        raise VerificationError(
            f"capsule is for claim {capsule.get('claim_id_hex')}, not {claim_id.hex()}"
        )
    return VerifiedCapsule(capsule, capsule_bytes, capsule_hash, etl_index, head)


def key_id_of(public_key: bytes) -> bytes:
    """``SHA-256(public key)``: the id a head names its key by."""
    try:
        return bytes(compute_key_id(public_key))
    except EvidenceOSError as exc:
        raise VerificationError(str(exc)) from exc
