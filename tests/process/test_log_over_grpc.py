"""The transparency log as a client sees it over gRPC (spec 40 §2, §3.2, §4.3; §10 items 17 to 19,
21 to 23).

Logs are populated through the service layer *before* the daemon starts (the daemon has no append
RPC yet); everything the daemon then hands out is checked the way an outside auditor would: with
the public key from GetPublicKey, ``cryptography`` and the independent verifiers of
``tests/support/verify.py`` and ``tests/support/merkle_naive.py`` — never with
``evidenceos.core.merkle``. Payloads are rebuilt here with ``json.dumps``, so leaf hashes are
checked against bytes the package did not produce.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support import merkle_naive
from tests.support.daemon import DaemonPool, DaemonProcess, rpc_status, run_ctl
from tests.support.datadir import append_entries, entry_payload
from tests.support.verify import (
    consistency_valid,
    inclusion_valid,
    key_id_of,
    leaf_hash,
    sth_signature_valid,
)

pytestmark = pytest.mark.process

T = 10.0  # per-RPC deadline, seconds
N = 13  # a size with an unbalanced right edge: 8 + 4 + 1


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(entry_payload(i)) for i in range(n)]


def fetch_head(daemon: DaemonProcess) -> pb.GetSignedTreeHeadResponse:
    return daemon.v2.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=T)


def fetch_key(daemon: DaemonProcess, key_id: bytes = b"") -> bytes:
    response = daemon.v2.GetPublicKey(pb.GetPublicKeyRequest(key_id=key_id), timeout=T)
    assert response.key_id == key_id_of(response.ed25519_public_key)
    if key_id:
        assert response.key_id == key_id
    return bytes(response.ed25519_public_key)


def assert_head_verifies(daemon: DaemonProcess, head: pb.GetSignedTreeHeadResponse) -> None:
    """The head verifies with the key GetPublicKey returns for the head's own key_id."""
    public = fetch_key(daemon, head.key_id)
    assert sth_signature_valid(public, head.tree_size, head.root_hash, head.signature), (
        f"head of size {head.tree_size} signed by {head.key_id.hex()} does not verify"
    )


# -- the verifiers are not vacuous ----------------------------------------------------------


def test_independent_verifiers_agree_with_naive_tree() -> None:
    for n in range(1, 18):
        d = leaves(n)
        root = merkle_naive.mth(d)
        for m in range(n):
            proof = merkle_naive.path(m, d)
            assert inclusion_valid(m, n, d[m], proof, root)
            assert not inclusion_valid(m, n, d[(m + 1) % n], proof, root) or n == 1
            if proof:
                bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
                assert not inclusion_valid(m, n, d[m], bad, root)
        for m in range(n + 1):
            old = merkle_naive.mth(d[:m])
            proof = merkle_naive.proof(m, d)
            assert consistency_valid(m, n, old, root, proof)
            if proof:
                bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
                assert not consistency_valid(m, n, old, root, bad)
            if 0 < m < n:
                assert not consistency_valid(m, n, root, root, proof)


# -- one populated log ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    data_dir = tmp_path_factory.mktemp("populated") / "data"
    assert append_entries(data_dir, range(N)) == N
    with DaemonProcess(data_dir) as daemon:
        daemon.start()
        yield daemon


def test_head_verifies_with_nothing_but_the_public_key(populated: DaemonProcess) -> None:
    head = fetch_head(populated)
    key = populated.v2.GetPublicKey(pb.GetPublicKeyRequest(), timeout=T)

    assert head.tree_size == N
    assert head.key_id == key.key_id == hashlib.sha256(key.ed25519_public_key).digest()
    digest = hashlib.sha256(
        b"evidenceos:sth:v1" + struct.pack(">Q", head.tree_size) + head.root_hash
    ).digest()
    Ed25519PublicKey.from_public_bytes(key.ed25519_public_key).verify(head.signature, digest)
    # The signed root is the RFC 6962 root of exactly our payloads.
    assert head.root_hash == merkle_naive.mth(leaves(N))
    # A one-bit change in what is signed is caught.
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(key.ed25519_public_key).verify(
            head.signature, bytes([digest[0] ^ 1]) + digest[1:]
        )


@pytest.mark.parametrize("index", [0, 1, 5, 7, 8, 11, N - 1])
def test_inclusion_proofs_verify(populated: DaemonProcess, index: int) -> None:
    head = fetch_head(populated)
    proof = populated.v2.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=index), timeout=T)
    assert proof.leaf_hash == leaf_hash(entry_payload(index))
    assert proof.root_hash == head.root_hash
    path = list(proof.sibling_hashes)
    assert inclusion_valid(index, head.tree_size, proof.leaf_hash, path, head.root_hash)
    assert path == merkle_naive.path(index, leaves(N))  # RFC 6962 order, leaf to root
    # The proof is for this leaf only.
    other = leaf_hash(entry_payload((index + 1) % N))
    assert not inclusion_valid(index, head.tree_size, other, path, head.root_hash)


def test_inclusion_proof_past_the_end_is_not_found(populated: DaemonProcess) -> None:
    request = pb.GetInclusionProofRequest(leaf_index=N)
    code, _ = rpc_status(lambda: populated.v2.GetInclusionProof(request, timeout=T))
    assert code == grpc.StatusCode.NOT_FOUND


def test_consistency_roots_for_every_prefix(populated: DaemonProcess) -> None:
    d = leaves(N)
    for first, second in [(0, N), (1, N), (4, N), (5, 6), (6, N), (8, N), (12, N), (N, N)]:
        response = populated.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
            timeout=T,
        )
        assert response.consistent, (first, second)
        assert response.first_root_hash == merkle_naive.mth(d[:first])
        assert response.second_root_hash == merkle_naive.mth(d[:second])


def test_v1_and_v2_serve_the_same_log(populated: DaemonProcess) -> None:
    from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb

    v2_head = fetch_head(populated)
    v1_head = populated.v1.GetSignedTreeHead(v1_pb.GetSignedTreeHeadRequest(), timeout=T)
    assert (v1_head.tree_size, v1_head.root_hash, v1_head.signature, v1_head.key_id) == (
        v2_head.tree_size,
        v2_head.root_hash,
        v2_head.signature,
        v2_head.key_id,
    )
    proof = populated.v1.GetInclusionProof(v1_pb.GetInclusionProofRequest(leaf_index=3), timeout=T)
    assert inclusion_valid(3, N, proof.leaf_hash, list(proof.sibling_hashes), v2_head.root_hash)


# -- heads across restarts ------------------------------------------------------------------


def test_consistency_of_two_heads_across_a_restart(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_size, second_size = 6, N
    append_entries(data_dir, range(first_size))
    daemon = daemons.start(data_dir)
    old = fetch_head(daemon)
    assert old.tree_size == first_size
    assert daemon.terminate() == 0

    append_entries(data_dir, range(first_size, second_size))
    daemon = daemons.start(data_dir)
    new = fetch_head(daemon)
    assert new.tree_size == second_size
    for head in (old, new):
        assert_head_verifies(daemon, head)

    # The daemon's own answer agrees with the heads we hold ...
    response = daemon.v2.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_tree_size=first_size, second_tree_size=second_size),
        timeout=T,
    )
    assert response.consistent
    assert response.first_root_hash == old.root_hash
    assert response.second_root_hash == new.root_hash
    # ... and so does an RFC 9162 check of the RFC 6962 proof between the two signed roots.
    d = leaves(second_size)
    proof = merkle_naive.proof(first_size, d)
    assert consistency_valid(first_size, second_size, old.root_hash, new.root_hash, proof)
    # A forked history would not pass: the same proof against a different old root fails.
    forked = merkle_naive.mth([leaf_hash(b"forged"), *d[1:first_size]])
    assert not consistency_valid(first_size, second_size, forked, new.root_hash, proof)
    # Leaves appended before the restart are still provable against the new head.
    for index in (0, first_size - 1, first_size, second_size - 1):
        inc = daemon.v2.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=index), timeout=T)
        assert inclusion_valid(
            index, second_size, inc.leaf_hash, list(inc.sibling_hashes), new.root_hash
        )


def test_key_rotation_keeps_old_heads_verifiable(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    append_entries(data_dir, range(4))
    daemon = daemons.start(data_dir)
    old_head = fetch_head(daemon)
    old_key = fetch_key(daemon)
    assert old_head.key_id == key_id_of(old_key)
    assert daemon.terminate() == 0

    rotated = run_ctl("keys", "rotate", "--data-dir", str(data_dir))
    assert rotated.returncode == 0, rotated.stderr
    new_id_hex = (data_dir / "keys" / "active_key_id").read_text(encoding="ascii").strip()
    assert new_id_hex in rotated.stdout

    daemon = daemons.start(data_dir)
    new_head = fetch_head(daemon)
    assert new_head.key_id != old_head.key_id
    assert new_head.key_id.hex() == new_id_hex == daemon.serving_event["key_id"]
    # Same tree, new signature: size and root are unchanged by a rotation.
    assert (new_head.tree_size, new_head.root_hash) == (old_head.tree_size, old_head.root_hash)
    new_key = fetch_key(daemon)
    assert key_id_of(new_key) == new_head.key_id
    assert sth_signature_valid(new_key, new_head.tree_size, new_head.root_hash, new_head.signature)

    # The old key is still served by id, and the old head still verifies with it.
    assert fetch_key(daemon, old_head.key_id) == old_key
    assert sth_signature_valid(old_key, old_head.tree_size, old_head.root_hash, old_head.signature)
    # Keys are not interchangeable.
    assert not sth_signature_valid(
        new_key, old_head.tree_size, old_head.root_hash, old_head.signature
    )
    assert daemon.terminate() == 0


def test_five_rotations_every_head_verifies_by_its_key_id(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    size = append_entries(data_dir, range(3))
    daemon = daemons.start(data_dir)
    collected = [fetch_head(daemon)]
    assert daemon.terminate() == 0

    for step in range(5):
        size = append_entries(data_dir, range(size, size + 2 + step))
        rotated = run_ctl("keys", "rotate", "--data-dir", str(data_dir), "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_id = json.loads(rotated.stdout)["active_key_id"]
        daemon = daemons.start(data_dir)
        head = fetch_head(daemon)
        assert head.key_id.hex() == new_id
        assert head.tree_size == size
        collected.append(head)
        if step < 4:
            assert daemon.terminate() == 0

    # The last daemon serves every key that ever signed, and every head verifies with its key.
    assert len({h.key_id for h in collected}) == 6
    d = leaves(size)
    for head in collected:
        assert_head_verifies(daemon, head)
        assert head.root_hash == merkle_naive.mth(d[: head.tree_size])
    # Each head is consistent with the next, whichever keys signed them.
    for older, newer in itertools.pairwise(collected):
        proof = merkle_naive.proof(older.tree_size, d[: newer.tree_size])
        assert consistency_valid(
            older.tree_size, newer.tree_size, older.root_hash, newer.root_hash, proof
        )
        response = daemon.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(
                first_tree_size=older.tree_size, second_tree_size=newer.tree_size
            ),
            timeout=T,
        )
        assert response.consistent
        assert response.first_root_hash == older.root_hash
        assert response.second_root_hash == newer.root_hash
    assert daemon.terminate() == 0
