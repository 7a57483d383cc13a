"""RFC 6962 tree, proofs and verifiers against spec 40 §11 vectors and a naive reference tree."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core import merkle
from evidenceos.core.merkle import (
    EMPTY_ROOT,
    MemoryNodes,
    build_consistency_proof,
    build_inclusion_proof,
    completed_subtrees,
    compute_root,
    hash_children,
    hash_leaf,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from evidenceos.errors import (
    ConsistencyProofError,
    InclusionProofError,
    InvalidArgument,
    LogIntegrityError,
)
from tests.support import merkle_naive as naive

H = bytes.fromhex


def _leaves(fmt: str, n: int) -> list[bytes]:
    return [naive.leaf(fmt.format(i).encode()) for i in range(n)]


# One shared tree: a MemoryNodes of N leaves answers for every prefix size <= N, because the
# nodes complete within a prefix are the same nodes.
BIG = 2000
BIG_LEAVES = _leaves("leaf-{}", BIG + 1)
BIG_NODES = MemoryNodes(BIG_LEAVES)
SMALL = 64
SMALL_ROOTS = [naive.mth(BIG_LEAVES[:n]) for n in range(SMALL + 2)]


class _Within:
    """Getter over BIG_NODES that fails on any node not lying wholly before leaf ``limit``.

    BIG_NODES holds more leaves than most tests ask about, so it would quietly answer for nodes
    beyond the tree size; this wrapper catches that.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.asked: list[tuple[int, int]] = []

    def __call__(self, level: int, index: int) -> bytes:
        assert (index + 1) << level <= self.limit
        self.asked.append((level, index))
        return BIG_NODES(level, index)


# --- spec 40 §11 vectors, byte for byte -------------------------------------------------------

LH_A = H("022a6979e6dab7aa5ae4c3e5e45f7e977112a7e63593820dbec1ec738a24f93c")
LH_B = H("57eb35615d47f34ec714cacdf5fd74608a5e8e102724e80b24b287c0c27b6a31")
LH_C = H("597fcb31282d34654c200d3418fca5705c648ebf326ec73d8ddef11841f876d8")


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert compute_root(0, _no_reads) == EMPTY_ROOT
    assert root_of([]) == EMPTY_ROOT


def _no_reads(level: int, index: int) -> bytes:
    raise AssertionError(f"unexpected node read ({level}, {index})")


def test_three_leaves_vectors() -> None:
    """REF ``fixed_vectors_for_three_leaves`` plus the author's PROOF vectors (spec 40 §11)."""
    leaves = [hash_leaf(b"a"), hash_leaf(b"b"), hash_leaf(b"c")]
    assert leaves == [LH_A, LH_B, LH_C]
    nodes = MemoryNodes(leaves)
    root = compute_root(3, nodes)
    assert root.hex() == "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
    assert compute_root(2, nodes).hex() == (
        "b137985ff484fb600db93107c77b0365c80d78f5b429ded0fd97361d077999eb"
    )
    assert build_inclusion_proof(1, 3, nodes) == [LH_A, LH_C]
    verify_inclusion(LH_B, 1, 3, [LH_A, LH_C], root)
    assert build_consistency_proof(2, 3, nodes) == [LH_C]
    assert build_consistency_proof(1, 3, nodes) == [LH_B, LH_C]
    verify_consistency(2, 3, compute_root(2, nodes), root, [LH_C])
    verify_consistency(1, 3, LH_A, root, [LH_B, LH_C])
    # spec 40 §10 item 14: proofs for leaves 0 and 2 at size 3.
    for index in (0, 2):
        verify_inclusion(leaves[index], index, 3, build_inclusion_proof(index, 3, nodes), root)


def test_leaf_i_vectors() -> None:
    nodes = MemoryNodes(_leaves("leaf-{}", 7))
    assert compute_root(7, nodes).hex() == (
        "0b007fb915eb9b2a146f54b1c86ec53b664f8e455b7660b0b6ee13edc0d921c0"
    )
    assert [p.hex() for p in build_inclusion_proof(6, 7, nodes)] == [
        "985bb5d36b927800876871da925a7e82abe83a9ddba5882920a007a55ea2b376",
        "bdd1c5ff55b19cb6b0e7c761bf9a6ccaa27fbbfc07b74f1fabb6e911a0bd2ab3",
    ]
    assert [p.hex() for p in build_consistency_proof(4, 7, nodes)] == [
        "8eae6bd3b3a07f1f75ee72a531629e6eb31e42e62f760e47de52a53c3641ef23",
    ]
    assert [p.hex() for p in build_consistency_proof(3, 7, nodes)] == [
        "fca89f57c9f8c8eb4047a7ff9d333acf9e0f3384b20b255bceab0f216dcca267",
        "f76836325aec5699d8d71f8e42e9d47c5c29b08059ba296384f7ca40ad3a40ae",
        "60a53eed0de87a90c8e59427c59c46253c33a76a09502a51801300927b7e6bdc",
        "8eae6bd3b3a07f1f75ee72a531629e6eb31e42e62f760e47de52a53c3641ef23",
    ]


def test_reference_verifier_bug_witness_is_accepted() -> None:
    """PROOF(5, 6) is valid; the reference's verifier rejects it (spec 40 §2.6(2)); we must not."""
    nodes = MemoryNodes(_leaves("leaf-{}", 6))
    old_root = compute_root(5, nodes)
    new_root = compute_root(6, nodes)
    assert old_root.hex() == "00d21829a5503145348abcf712513eacf2a274211ad83e970202bb5b6d80b286"
    assert new_root.hex() == "160cf1a616e8792f9078a9665cb06520d95a33f467d0826f2310219d31383d73"
    proof = build_consistency_proof(5, 6, nodes)
    assert [p.hex() for p in proof] == [
        "ea9fc1a1b6e191b460d0d6306e3e870c173f39330f13cda1b70cfc72bdc398ba",
        "8f1593cb92f429d9340b9bbc1f0bb122adf8026c42a4a42142e2168931727236",
        "bdd1c5ff55b19cb6b0e7c761bf9a6ccaa27fbbfc07b74f1fabb6e911a0bd2ab3",
    ]
    verify_consistency(5, 6, old_root, new_root, proof)


def test_entry_0000_to_0255_vectors() -> None:
    nodes = MemoryNodes(hash_leaf(f"entry-{i:04d}".encode()) for i in range(256))
    assert compute_root(256, nodes).hex() == (
        "2cf5a0aa6ede58464e43c5b6590f37f9fef0b76eb783f97a78f60e12ca335d9d"
    )
    path73 = build_inclusion_proof(73, 256, nodes)
    assert len(path73) == 8
    assert path73[0].hex() == "b141bb5884f6862fe6fadf24dcf45ae5954deeb038d5613541647cc2a88f0d18"
    verify_inclusion(nodes(0, 73), 73, 256, path73, compute_root(256, nodes))
    assert [p.hex() for p in build_consistency_proof(128, 256, nodes)] == [
        "690107512acb616d31a62f5d23cf227fc9a6611f6fd40b22800a614242089ced",
    ]


def test_single_json_leaf_verifies_against_itself() -> None:
    """spec 40 §10 item 22: a one-leaf log's root is the leaf hash and the path is empty.

    REF writes the entry as the Rust raw string ``br#"{\"k\":1}"#``, so the backslashes are part
    of the 9 bytes (spec 40 says 10; the hash in §11 is of these 9).
    """
    leaf = hash_leaf(rb"{\"k\":1}")
    assert leaf.hex() == "92bc64ea11b334b63f62b809d715318d9239a25bfadcb0e7d097a26597e19214"
    nodes = MemoryNodes([leaf])
    assert compute_root(1, nodes) == bytes(leaf)
    assert build_inclusion_proof(0, 1, nodes) == []
    verify_inclusion(leaf, 0, 1, [], leaf)


def test_discos_eight_leaf_vector() -> None:
    nodes = MemoryNodes(hash_leaf(bytes([i])) for i in range(8))
    root = compute_root(8, nodes)
    assert root.hex() == "ef7f49b620f6c7ea9b963a214da34b5021c6ded8ed57734380a311ab726aa907"
    verify_inclusion(nodes(0, 6), 6, 8, build_inclusion_proof(6, 8, nodes), root)


def test_hash_children_layout() -> None:
    assert hash_children(LH_A, LH_B) == hashlib.sha256(b"\x01" + LH_A + LH_B).digest()


# --- agreement with the naive tree -------------------------------------------------------------


def test_roots_match_naive_for_every_size_up_to_64() -> None:
    """spec 40 §10 item 3, from 0 through 64 leaves."""
    for n in range(SMALL + 1):
        assert compute_root(n, _Within(n)) == SMALL_ROOTS[n]
        assert root_of(BIG_LEAVES[:n]) == SMALL_ROOTS[n]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_sizes_match_naive_and_verify(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, BIG), label="n")
    index = data.draw(st.integers(0, n - 1), label="index")
    old = data.draw(st.integers(0, n), label="old")
    prefix = BIG_LEAVES[:n]
    root = compute_root(n, _Within(n))
    assert root == naive.mth(prefix)

    path = build_inclusion_proof(index, n, _Within(n))
    assert path == naive.path(index, prefix)
    verify_inclusion(prefix[index], index, n, path, root)

    proof = build_consistency_proof(old, n, _Within(n))
    assert proof == naive.proof(old, prefix)
    verify_consistency(old, n, compute_root(old, BIG_NODES), root, proof)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=48, unique=True))
def test_random_payloads_match_naive(payloads: list[bytes]) -> None:
    """spec 40 §10 item 8: arbitrary entries, appended one at a time."""
    nodes = MemoryNodes()
    for position, payload in enumerate(payloads):
        assert nodes.append(hash_leaf(payload)) == position
    leaves = [naive.leaf(p) for p in payloads]
    assert nodes.size == len(leaves)
    assert compute_root(nodes.size, nodes) == naive.mth(leaves)


def test_completed_subtrees_match_naive_and_read_only_existing_nodes() -> None:
    for leaf_index in range(SMALL + 1):
        getter = _Within(leaf_index)
        completed = completed_subtrees(leaf_index, BIG_LEAVES[leaf_index], getter)
        expected = []
        level, index = 0, leaf_index
        while index & 1:
            level, index = level + 1, index >> 1
            start = index << level
            expected.append((level, index, naive.mth(BIG_LEAVES[start : start + (1 << level)])))
        assert completed == expected
        assert len(getter.asked) == len(completed)


# --- exhaustive verification and mutations (n <= 64) -------------------------------------------


def _flip(value: bytes, bit: int = 0) -> bytes:
    out = bytearray(value)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


_EXTRA = hashlib.sha256(b"not part of any proof").digest()


def _list_mutations(proof: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    for i, element in enumerate(proof):
        yield f"flip element {i}", [*proof[:i], _flip(element, 8 * i + 3), *proof[i + 1 :]]
        yield f"drop element {i}", proof[:i] + proof[i + 1 :]
    for i in range(len(proof) + 1):
        yield f"extra element at {i}", [*proof[:i], _EXTRA, *proof[i:]]


def _assert_fails(
    error: type[Exception], desc: str, verify: Callable[..., None], *args: object
) -> None:
    try:
        verify(*args)
    except error:
        return
    pytest.fail(f"mutation accepted: {desc}")


def test_every_inclusion_proof_verifies_and_every_mutation_fails() -> None:
    """spec 40 §10 item 4, widened to every element, drop, insert, index and size change."""
    for n in range(1, SMALL + 1):
        root = SMALL_ROOTS[n]
        for m in range(n):
            leaf = BIG_LEAVES[m]
            proof = build_inclusion_proof(m, n, _Within(n))
            assert proof == naive.path(m, BIG_LEAVES[:n])
            verify_inclusion(leaf, m, n, proof, root)

            cases: list[tuple[str, bytes, int, int, list[bytes], bytes]] = [
                (desc, leaf, m, n, mutated, root) for desc, mutated in _list_mutations(proof)
            ]
            cases.append(("flip leaf", _flip(leaf), m, n, proof, root))
            cases.append(("flip root", leaf, m, n, proof, _flip(root, 255)))
            cases += [
                (f"wrong index {other}", leaf, other, n, proof, root)
                for other in (m - 1, m + 1, n)
                if other >= 0
            ]
            # A proof for size n must not pass as a proof into the tree of size n +- 1.
            cases += [
                (f"wrong size {size}", leaf, m, size, proof, SMALL_ROOTS[size])
                for size in (n - 1, n + 1)
                if size > m
            ]
            for desc, c_leaf, c_index, c_size, c_proof, c_root in cases:
                _assert_fails(
                    InclusionProofError,
                    f"n={n} m={m} {desc}",
                    verify_inclusion,
                    *(c_leaf, c_index, c_size, c_proof, c_root),
                )


def test_every_consistency_proof_verifies_and_every_mutation_fails() -> None:
    """spec 40 §10 item 5 for every 0 <= m <= n <= 64, plus drops, inserts, swaps and resizes."""
    for n in range(SMALL + 1):
        new_root = SMALL_ROOTS[n]
        for m in range(n + 1):
            old_root = SMALL_ROOTS[m]
            proof = build_consistency_proof(m, n, _Within(n))
            assert proof == naive.proof(m, BIG_LEAVES[:n])
            verify_consistency(m, n, old_root, new_root, proof)

            cases: list[tuple[str, int, int, bytes, bytes, list[bytes]]] = [
                (desc, m, n, old_root, new_root, mutated)
                for desc, mutated in _list_mutations(proof)
            ]
            cases.append(("flip old root", m, n, _flip(old_root, 77), new_root, proof))
            if m > 0 or n == 0:
                # From a non-empty tree the proof pins the new root; from size 0 it cannot.
                cases.append(("flip new root", m, n, old_root, _flip(new_root, 200), proof))
            if m != n:
                cases.append(("swapped roots", m, n, new_root, old_root, proof))
            cases += [
                (f"wrong old size {size}", size, n, SMALL_ROOTS[size], new_root, proof)
                for size in (m - 1, m + 1)
                # (0, n) and (n, n) with an empty proof are true statements, not mutations.
                if 0 <= size <= n and (size not in (0, n) or proof)
            ]
            if m > 0:
                # From size 0 any new tree is consistent with an empty proof, so skip m == 0.
                cases += [
                    (f"wrong new size {size}", m, size, old_root, SMALL_ROOTS[size], proof)
                    for size in (n - 1, n + 1)
                    if size >= m
                ]
            for desc, c_old, c_new, c_old_root, c_new_root, c_proof in cases:
                _assert_fails(
                    ConsistencyProofError,
                    f"m={m} n={n} {desc}",
                    verify_consistency,
                    *(c_old, c_new, c_old_root, c_new_root, c_proof),
                )


def test_proof_alone_does_not_bind_tree_size() -> None:
    """RFC 6962 property: PATH(0, 3) also walks like PATH(0, 4), so only the root pins the size.

    This is why a caller must take (size, root) together from one signed tree head.
    """
    proof = build_inclusion_proof(0, 3, BIG_NODES)
    verify_inclusion(BIG_LEAVES[0], 0, 4, proof, SMALL_ROOTS[3])
    with pytest.raises(InclusionProofError, match="root"):
        verify_inclusion(BIG_LEAVES[0], 0, 4, proof, SMALL_ROOTS[4])


# --- argument checks and error messages --------------------------------------------------------


@pytest.mark.parametrize(("index", "size"), [(-1, 3), (3, 3), (0, 0), (5, 2)])
def test_build_inclusion_proof_rejects_out_of_range(index: int, size: int) -> None:
    with pytest.raises(InvalidArgument, match="outside"):
        build_inclusion_proof(index, size, BIG_NODES)


def test_build_consistency_proof_arguments() -> None:
    with pytest.raises(InvalidArgument, match="must be <="):
        build_consistency_proof(3, 2, BIG_NODES)
    with pytest.raises(InvalidArgument, match=">= 0"):
        build_consistency_proof(-1, 2, BIG_NODES)
    assert build_consistency_proof(0, 5, _no_reads) == []
    assert build_consistency_proof(5, 5, _no_reads) == []


def test_compute_root_rejects_negative_size() -> None:
    with pytest.raises(InvalidArgument):
        compute_root(-1, BIG_NODES)


@pytest.mark.parametrize("width", [0, 31, 33])
def test_wrong_width_elements_are_rejected(width: int) -> None:
    root = SMALL_ROOTS[3]
    path = build_inclusion_proof(0, 3, BIG_NODES)
    bad = [path[0], b"\x00" * width]
    with pytest.raises(InclusionProofError, match="proof element 1 is"):
        verify_inclusion(BIG_LEAVES[0], 0, 3, bad, root)
    with pytest.raises(InclusionProofError, match="leaf hash"):
        verify_inclusion(b"\x00" * width, 0, 3, path, root)
    with pytest.raises(InclusionProofError, match="root hash"):
        verify_inclusion(BIG_LEAVES[0], 0, 3, path, b"\x00" * width)
    with pytest.raises(ConsistencyProofError, match="proof element 0 is"):
        verify_consistency(1, 3, SMALL_ROOTS[1], root, [b"\x00" * width, path[1]])
    with pytest.raises(ConsistencyProofError, match="old root"):
        verify_consistency(1, 3, b"\x00" * width, root, [])


def test_verifier_messages_are_specific() -> None:
    root = SMALL_ROOTS[5]
    path = build_inclusion_proof(2, 5, BIG_NODES)
    with pytest.raises(InclusionProofError, match="too short"):
        verify_inclusion(BIG_LEAVES[2], 2, 5, path[:-1], root)
    with pytest.raises(InclusionProofError, match="too long"):
        verify_inclusion(BIG_LEAVES[2], 2, 5, [*path, _EXTRA], root)
    with pytest.raises(InclusionProofError, match="size must be >= 1"):
        verify_inclusion(BIG_LEAVES[0], 0, 0, [], EMPTY_ROOT)
    proof = build_consistency_proof(3, 5, BIG_NODES)
    with pytest.raises(ConsistencyProofError, match="too short"):
        verify_consistency(3, 5, SMALL_ROOTS[3], root, proof[:-1])
    with pytest.raises(ConsistencyProofError, match="too long"):
        verify_consistency(3, 5, SMALL_ROOTS[3], root, [*proof, _EXTRA])
    with pytest.raises(ConsistencyProofError, match="old root"):
        verify_consistency(3, 5, SMALL_ROOTS[2], root, proof)
    with pytest.raises(ConsistencyProofError, match="new root"):
        verify_consistency(3, 5, SMALL_ROOTS[3], SMALL_ROOTS[4], proof)
    with pytest.raises(ConsistencyProofError, match="must be <="):
        verify_consistency(5, 3, root, SMALL_ROOTS[3], [])
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 5, SMALL_ROOTS[1], root, [])
    with pytest.raises(ConsistencyProofError, match="roots differ"):
        verify_consistency(5, 5, SMALL_ROOTS[4], root, [])


def test_memory_nodes_guards() -> None:
    nodes = MemoryNodes(BIG_LEAVES[:3])
    with pytest.raises(LookupError):
        nodes(1, 1)  # leaves 2..3 are not both present yet
    with pytest.raises(InvalidArgument, match="leaf hash"):
        nodes.append(b"short")


def test_wrong_width_stored_node_is_damage() -> None:
    def getter(level: int, index: int) -> bytes:
        return b"\x00" * 16

    with pytest.raises(LogIntegrityError, match="level=1, index=0"):
        compute_root(2, getter)


# --- cost: O(log n) node reads -----------------------------------------------------------------


class CountingNodes:
    """A getter for a huge fake tree: node (level, index) = H(level || index), computed lazily.

    The hashes are not a real tree, which is fine: this only counts which nodes get read.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads: list[tuple[int, int]] = []

    def __call__(self, level: int, index: int) -> bytes:
        # Never ask for a subtree that is not complete within the tree.
        assert level >= 0
        assert index >= 0
        assert (index + 1) << level <= self.size
        self.reads.append((level, index))
        return hashlib.sha256(level.to_bytes(1, "big") + index.to_bytes(8, "big")).digest()


@pytest.mark.parametrize("n", [10**6, 10**7, 2**20, 2**20 - 1, 2**20 + 1])
def test_reads_are_logarithmic(n: int) -> None:
    bound = 2 * math.log2(n) + 2
    getter = CountingNodes(n)
    compute_root(n, getter)
    assert len(getter.reads) == bin(n).count("1")

    for index in (0, 1, n // 3, n // 2, n - 2, n - 1):
        getter = CountingNodes(n)
        assert len(build_inclusion_proof(index, n, getter)) <= math.ceil(math.log2(n))
        assert len(getter.reads) <= bound, (index, len(getter.reads))
        assert len(set(getter.reads)) == len(getter.reads)

    for old in (1, 2, 3, n // 3, n // 2, n - 1):
        getter = CountingNodes(n)
        build_consistency_proof(old, n, getter)
        assert len(getter.reads) <= bound, (old, len(getter.reads))
        assert len(set(getter.reads)) == len(getter.reads)


def test_public_names() -> None:
    assert set(merkle.__all__) >= {
        "EMPTY_ROOT",
        "NodeGetter",
        "MemoryNodes",
        "build_consistency_proof",
        "build_inclusion_proof",
        "completed_subtrees",
        "compute_root",
        "hash_children",
        "hash_leaf",
        "root_of",
        "verify_consistency",
        "verify_inclusion",
    }


def test_completed_subtrees_refuse_a_damaged_left_sibling() -> None:
    """A stored node of the wrong width is damage: named, never hashed into a new node."""
    calls: list[tuple[int, int]] = []

    def damaged(level: int, index: int) -> bytes:
        calls.append((level, index))
        return b"\x00" * 31

    with pytest.raises(LogIntegrityError, match=r"level=0, index=2\) is 31 bytes"):
        completed_subtrees(3, hashlib.sha256(b"leaf").digest(), damaged)
    assert calls == [(0, 2)]
