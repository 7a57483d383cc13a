"""Signed tree heads and revocation snapshot digests against spec 40 §11, with real Ed25519."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core.merkle import EMPTY_ROOT, MemoryNodes, compute_root, hash_leaf
from evidenceos.core.sth import (
    STH_DOMAIN,
    SignedTreeHead,
    compute_key_id,
    compute_revocation_snapshot_digest,
    compute_sth_digest,
    private_key_from_seed,
    public_key_bytes,
    sign_tree_head,
    verify_tree_head,
)
from evidenceos.errors import InvalidArgument, SignatureError

H = bytes.fromhex
SEED_7 = b"\x07" * 32
SEED_99 = b"\x63" * 32
KEY_7 = private_key_from_seed(SEED_7)
PUB_7 = public_key_bytes(KEY_7)


def test_seed_7_public_key_and_key_id() -> None:
    assert PUB_7.hex() == "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    assert compute_key_id(PUB_7).hex() == (
        "fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889"
    )


def test_seed_0x63_key_id() -> None:
    """The rotation scenario's second key (spec 40 §10 item 18)."""
    key_id = compute_key_id(public_key_bytes(private_key_from_seed(SEED_99)))
    assert key_id.hex() == "2b61f0ec7a2b23523274ba3f5b0a4a9e66f75a1165e11ced25862d8a1692761d"


@pytest.mark.parametrize(
    ("tree_size", "root", "digest_hex", "signature_hex"),
    [
        pytest.param(
            42,
            b"\x0b" * 32,
            "39cfc2775f58795bf617133683154d44242ea58215ca8200c5ed5aa4397c669a",
            "b51b5101d073be80fb80f9666b8d42896ed997a2071df37bb969a808d26b0717"
            "48f8e6cbd7090a5123f4a7e0ce9c022163315c46666d5f30531de85670e88c02",
            id="size-42-root-0b",
        ),
        pytest.param(
            1,
            b"\x09" * 32,
            "0c6b3d0dd0b66709d0cc332282dd0e08583caaa4dc48938ba943c4645cb7363a",
            "d13f3f28356dc6f157fffbdcd450560cfe0725f49639a0709da8d514ecbb9eca"
            "248e75e896fe5a63f27ddf2f866676e5e26da27f1194c25c4bef4cbfd5466c0b",
            id="size-1-root-09",
        ),
    ],
)
def test_sth_vectors(tree_size: int, root: bytes, digest_hex: str, signature_hex: str) -> None:
    assert compute_sth_digest(tree_size, root).hex() == digest_hex
    head = sign_tree_head(KEY_7, tree_size, root)
    assert head == SignedTreeHead(
        tree_size=tree_size,
        root_hash=root,
        signature=H(signature_hex),
        key_id=compute_key_id(PUB_7),
    )
    verify_tree_head(PUB_7, head)


def test_empty_log_digest() -> None:
    digest = compute_sth_digest(0, EMPTY_ROOT)
    assert digest.hex() == "ffd85315b4635d6b3c20a1272653967732bff5575d919808436d7c6c67440106"
    verify_tree_head(PUB_7, sign_tree_head(KEY_7, 0, EMPTY_ROOT))


def test_sth_digest_layout_has_no_separator() -> None:
    root = b"\x0b" * 32
    expected = hashlib.sha256(STH_DOMAIN + (42).to_bytes(8, "big") + root).digest()
    assert compute_sth_digest(42, root) == expected


def test_signatures_are_deterministic() -> None:
    """Ed25519 is deterministic: the same head signed twice is byte-identical (spec 40 §3.2)."""
    root = compute_root(3, MemoryNodes([hash_leaf(b"a"), hash_leaf(b"b"), hash_leaf(b"c")]))
    assert sign_tree_head(KEY_7, 3, root) == sign_tree_head(KEY_7, 3, root)


def test_flipped_digest_bit_fails() -> None:
    """spec 40 §10 item 24: a signature over the digest does not cover a digest one bit off."""
    root = b"\x0b" * 32
    head = sign_tree_head(KEY_7, 42, root)
    digest = bytearray(compute_sth_digest(42, root))
    verifier = Ed25519PublicKey.from_public_bytes(PUB_7)
    verifier.verify(head.signature, bytes(digest))
    digest[0] ^= 0x01
    with pytest.raises(InvalidSignature):
        verifier.verify(head.signature, bytes(digest))


def _flip_signature(head: SignedTreeHead) -> SignedTreeHead:
    flipped = bytearray(head.signature)
    flipped[10] ^= 0x80
    return dataclasses.replace(head, signature=bytes(flipped))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: dataclasses.replace(h, tree_size=43), id="size"),
        pytest.param(lambda h: dataclasses.replace(h, root_hash=b"\x0a" + b"\x0b" * 31), id="root"),
        pytest.param(_flip_signature, id="signature"),
    ],
)
def test_tampered_head_fails(tamper: Callable[[SignedTreeHead], SignedTreeHead]) -> None:
    head = sign_tree_head(KEY_7, 42, b"\x0b" * 32)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_tree_head(PUB_7, tamper(head))


def test_key_id_mismatch_fails() -> None:
    head = sign_tree_head(KEY_7, 42, b"\x0b" * 32)
    other_id = compute_key_id(public_key_bytes(private_key_from_seed(SEED_99)))
    with pytest.raises(SignatureError, match="key id"):
        verify_tree_head(PUB_7, dataclasses.replace(head, key_id=other_id))


def test_head_from_another_key_fails() -> None:
    other = private_key_from_seed(SEED_99)
    head = sign_tree_head(other, 42, b"\x0b" * 32)
    verify_tree_head(public_key_bytes(other), head)
    with pytest.raises(SignatureError, match="key id"):
        verify_tree_head(PUB_7, head)
    # Relabelled with key 7's id, the signature itself is what fails.
    with pytest.raises(SignatureError, match="does not verify"):
        verify_tree_head(PUB_7, dataclasses.replace(head, key_id=compute_key_id(PUB_7)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("root_hash", b"\x0b" * 31, "root hash must be 32 bytes"),
        ("key_id", b"\x01" * 33, "key id must be 32 bytes"),
        ("signature", b"\x00" * 63, "signature must be 64 bytes"),
        ("tree_size", -1, "64 bits"),
        ("tree_size", 1 << 64, "64 bits"),
    ],
)
def test_malformed_head_is_rejected(field: str, value: object, message: str) -> None:
    head = sign_tree_head(KEY_7, 42, b"\x0b" * 32)
    with pytest.raises(SignatureError, match=message):
        verify_tree_head(PUB_7, dataclasses.replace(head, **{field: value}))  # type: ignore[arg-type]


def test_malformed_public_key_is_rejected() -> None:
    head = sign_tree_head(KEY_7, 42, b"\x0b" * 32)
    with pytest.raises(SignatureError, match="public key must be 32 bytes"):
        verify_tree_head(PUB_7[:31], head)


@pytest.mark.parametrize("seed", [b"", b"\x07" * 31, b"\x07" * 33])
def test_seed_must_be_32_bytes(seed: bytes) -> None:
    with pytest.raises(InvalidArgument, match="seed must be 32 bytes"):
        private_key_from_seed(seed)


def test_sth_digest_argument_checks() -> None:
    with pytest.raises(InvalidArgument, match="root hash"):
        compute_sth_digest(1, b"\x00" * 31)
    with pytest.raises(InvalidArgument, match="64-bit"):
        compute_sth_digest(1 << 64, b"\x00" * 32)
    with pytest.raises(InvalidArgument, match="public key"):
        compute_key_id(b"\x00" * 31)


@given(st.integers(0, (1 << 64) - 1), st.binary(min_size=32, max_size=32))
def test_any_head_round_trips(tree_size: int, root: bytes) -> None:
    verify_tree_head(PUB_7, sign_tree_head(KEY_7, tree_size, root))


# --- revocation snapshot (spec 40 §3.3) --------------------------------------------------------


def test_golden_revocation_snapshot() -> None:
    """REF ``golden_claims_vs_impl_system`` snapshot, digest and seed-7 signature (spec 40 §11)."""
    digest = compute_revocation_snapshot_digest(
        [(b"\x02" * 32, 42, "golden-revocation")], 1, b"\x09" * 32, b"\x01" * 32
    )
    assert digest.hex() == "a03224f8c5409124368628a0dc03e7410233cfb329add1101f1d9776410e2bc0"
    signature = KEY_7.sign(digest)
    assert signature.hex() == (
        "9d04716face57e615211136b290bc9f7d939599dc90a7aea87481e923decb2f1"
        "7be622480f7bb55fb3161002713240defea4a482ef79b508fc82e95e01c17506"
    )
    Ed25519PublicKey.from_public_bytes(PUB_7).verify(signature, digest)


def test_scenario_25_length_prefixes_keep_snapshots_apart() -> None:
    sth = (2, b"\x09" * 32, b"\x07" * 32)
    two = compute_revocation_snapshot_digest(
        [(b"\x01" * 32, 2, "34"), (b"\x05" * 32, 6, "7")], *sth
    )
    one = compute_revocation_snapshot_digest([(b"\x01" * 32, 2, "345")], *sth)
    assert two.hex() == "661ae30d9326da9f6864ef49ef036396d261cc96967852ccaa4ea437e52a4e39"
    assert one.hex() == "76f13b764e5d93ace1e69359c6e692127ce2bc8c42e8c08cf451c5607857470e"


def test_snapshot_layout() -> None:
    claim, reason = b"\x02" * 32, "é"
    root, key_id = b"\x09" * 32, b"\x01" * 32
    payload = (
        (32).to_bytes(8, "big")
        + claim
        + (42).to_bytes(8, "big")
        + len(reason.encode()).to_bytes(8, "big")
        + reason.encode()
        + (1).to_bytes(8, "big")
        + root
        + (32).to_bytes(8, "big")
        + key_id
    )
    expected = hashlib.sha256(b"evidenceos:revocations:v1" + payload).digest()
    assert compute_revocation_snapshot_digest([(claim, 42, reason)], 1, root, key_id) == expected


def test_empty_snapshot_is_a_digest_of_the_head_alone() -> None:
    digest = compute_revocation_snapshot_digest([], 0, EMPTY_ROOT, b"\x01" * 32)
    tail = (0).to_bytes(8, "big") + EMPTY_ROOT + (32).to_bytes(8, "big") + b"\x01" * 32
    assert digest == hashlib.sha256(b"evidenceos:revocations:v1" + tail).digest()


@pytest.mark.parametrize(
    ("entries", "root", "key_id", "message"),
    [
        ([(b"\x02" * 31, 1, "r")], b"\x09" * 32, b"\x01" * 32, "entry 0 claim id"),
        ([(b"\x02" * 32, -1, "r")], b"\x09" * 32, b"\x01" * 32, "entry 0 timestamp"),
        ([], b"\x09" * 31, b"\x01" * 32, "root hash"),
        ([], b"\x09" * 32, b"\x01" * 31, "key id"),
    ],
)
def test_snapshot_rejects_malformed_input(
    entries: list[tuple[bytes, int, str]], root: bytes, key_id: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        compute_revocation_snapshot_digest(entries, 1, root, key_id)
