"""Leaf MACs: bound to the index, the leaf hash and the signing seed."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core.leafmac import LeafMacer, leaf_mac, leaf_mac_key, verifies

SEED_A, SEED_B = bytes(range(32)), bytes(range(1, 33))
LEAF = hashlib.sha256(b"\x00leaf").digest()


def test_mac_is_hmac_sha256_of_index_and_leaf_hash_under_the_derived_key() -> None:
    key = leaf_mac_key(SEED_A)
    assert key == hmac.new(SEED_A, b"evidenceos:leaf-mac:v1", "sha256").digest()
    expected = hmac.new(key, (7).to_bytes(8, "big") + LEAF, "sha256").digest()
    assert leaf_mac(key, 7, LEAF) == expected


def test_verifies_only_the_same_index_hash_and_a_known_key() -> None:
    a, b = leaf_mac_key(SEED_A), leaf_mac_key(SEED_B)
    mac = leaf_mac(a, 7, LEAF)
    assert verifies([b, a], 7, LEAF, mac)  # any key of the keyring
    assert not verifies([b], 7, LEAF, mac)
    assert not verifies([a], 8, LEAF, mac)
    assert not verifies([a], 7, hashlib.sha256(b"other").digest(), mac)
    assert not verifies([a], 7, LEAF, None)
    assert not verifies([], 7, LEAF, mac)


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_precomputed_pads_give_the_same_mac(seed: bytes, index: int, leaf_hash: bytes) -> None:
    key = leaf_mac_key(seed)
    assert LeafMacer(key)(index, leaf_hash) == leaf_mac(key, index, leaf_hash)
