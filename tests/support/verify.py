"""A client-side verifier for what the daemon hands out, independent of ``evidenceos``.

Only ``hashlib``, ``struct`` and ``cryptography`` are used: signed tree heads are checked by
rebuilding the digest of spec 40 §3.2 here, inclusion proofs with RFC 9162 §2.1.3.2 and
consistency proofs with RFC 9162 §2.1.4.2 (the "correct" verifier (1) of spec 40 §2.6), each
written from the RFC text rather than from ``evidenceos.core.merkle``. This is what an auditor
holding nothing but the public key would run.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

STH_DOMAIN = b"evidenceos:sth:v1"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + payload).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def sth_digest(tree_size: int, root_hash: bytes) -> bytes:
    """SHA-256("evidenceos:sth:v1" || u64be(tree_size) || root_hash), no separator."""
    return hashlib.sha256(STH_DOMAIN + struct.pack(">Q", tree_size) + root_hash).digest()


def key_id_of(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()


def sth_signature_valid(
    public_key: bytes, tree_size: int, root_hash: bytes, signature: bytes
) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, sth_digest(tree_size, root_hash)
        )
    except InvalidSignature:
        return False
    return True


def _shift_until_odd(fn: int, sn: int) -> tuple[int, int]:
    while fn & 1 == 0 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def inclusion_valid(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_until_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_valid(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, plus the conventions of spec 40 §2.6(1) for the trivial sizes."""
    if first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path and first_root == EMPTY_ROOT
    if not path:
        return False
    proof = list(path)
    if first & (first - 1) == 0:  # a power of two: the old root is the first node
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_until_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
