"""Authenticating leaves that no signed tree head covers yet (decision D-F3).

Heads are signed lazily, so after a crash up to 255 leaves can follow the last head. Each leaf
row carries ``HMAC-SHA256(K, u64be(index) ‖ leaf_hash)`` with ``K`` derived from the signing
seed; start-up accepts an unsigned tail only when every MAC verifies, so rows inserted with
plain ``sqlite3`` by someone without the key are refused.
"""

from __future__ import annotations

import hmac
import struct

from evidenceos.core import sha256

_DOMAIN = b"evidenceos:leaf-mac:v1"
_U64 = struct.Struct(">Q").pack


def leaf_mac_key(seed: bytes) -> bytes:
    """The MAC key of one signing key (its 32-byte Ed25519 seed); never stored."""
    return hmac.digest(seed, _DOMAIN, "sha256")


def leaf_mac(key: bytes, index: int, leaf_hash: bytes) -> bytes:
    return hmac.digest(key, struct.pack(">Q", index) + leaf_hash, "sha256")


class LeafMacer:
    """``leaf_mac`` with the key's HMAC pads hashed once (every append computes one MAC; this
    halves its cost). The key is 32 bytes, shorter than SHA-256's block, as HMAC requires."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")
        self._inner = sha256.small(bytes(b ^ 0x36 for b in block))
        self._outer = sha256.small(bytes(b ^ 0x5C for b in block))

    def __call__(self, index: int, leaf_hash: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(_U64(index) + leaf_hash)
        outer = self._outer.copy()
        outer.update(inner.digest())
        mac: bytes = outer.digest()
        return mac


def verifies(keys: list[bytes], index: int, leaf_hash: bytes, mac: bytes | None) -> bool:
    """True when ``mac`` is the leaf's MAC under one of ``keys`` (any key of the keyring may
    have been active when the leaf was appended)."""
    if mac is None:
        return False
    return any(hmac.compare_digest(leaf_mac(key, index, leaf_hash), mac) for key in keys)
