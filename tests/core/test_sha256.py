"""The append path's SHA-256 picks an implementation by input size; both must be SHA-256."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core import sha256


@given(st.binary(max_size=3 * sha256.SMALL_INPUT))
def test_digest_is_sha256_on_both_sides_of_the_size_switch(data: bytes) -> None:
    assert sha256.digest(data) == hashlib.sha256(data).digest()


def test_digest_at_the_size_boundary() -> None:
    for size in (0, 1, 55, 56, 63, 64, 65, sha256.SMALL_INPUT, sha256.SMALL_INPUT + 1):
        data = bytes(range(256)) * (size // 256 + 1)
        assert sha256.digest(data[:size]) == hashlib.sha256(data[:size]).digest(), size


@given(st.binary(max_size=200), st.lists(st.binary(max_size=100), max_size=4))
def test_small_running_hash_copies_and_updates_like_hashlib(
    seed: bytes, parts: list[bytes]
) -> None:
    ours, theirs = sha256.small(seed), hashlib.sha256(seed)
    for part in parts:
        fork = ours.copy()
        fork.update(part)
        theirs.update(part)
        ours = fork
    assert ours.digest() == theirs.digest()
