"""RFC 6962 Merkle tree hashing, proof construction and proof verification over bytes.

Sources: RFC 6962 §2.1 (MTH, PATH, PROOF) and RFC 9162 §2.1 (the same tree; §2.1.3.2 and §2.1.4.2
give the verification algorithms). Spec 40 §2 pins the exact shapes the reference emits; its §2.6
explains why consistency verification here is the classic Certificate Transparency algorithm and
not the reference's, which rejects about 8% of valid proofs.

The log keeps the hash of every completed perfect subtree ("node" ``(level, index)`` covers leaves
``[index << level, (index + 1) << level)``; level 0 is the leaf hash). Every function that needs
the tree takes a :data:`NodeGetter`, so a root or a proof costs O(log n) node reads whether the log
holds ten leaves or ten million, and the same code runs over SQLite rows or :class:`MemoryNodes`.
Non-perfect right-edge subtrees are never stored; they are folded from perfect nodes on demand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from evidenceos.core import sha256
from evidenceos.errors import (
    ConsistencyProofError,
    InclusionProofError,
    InvalidArgument,
    LogIntegrityError,
)
from evidenceos.ids import LeafHash, RootHash

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryNodes",
    "NodeGetter",
    "build_consistency_proof",
    "build_inclusion_proof",
    "completed_subtrees",
    "compute_root",
    "hash_children",
    "hash_leaf",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Every leaf hash, node hash, root and proof element is one SHA-256 output."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: RootHash = RootHash(hashlib.sha256(b"").digest())
"""MTH of the empty list (RFC 6962 §2.1): the root of a log with no entries."""

NodeGetter = Callable[[int, int], bytes]
"""``(level, index) -> hash`` of the perfect subtree over ``[index << level, (index+1) << level)``.

Only ever called for subtrees that are complete within the tree size being asked about.
"""


def hash_leaf(entry: bytes) -> LeafHash:
    """Leaf hash ``H(0x00 || entry)``; the prefix keeps leaves and interior nodes apart."""
    return LeafHash(sha256.digest(_LEAF_PREFIX + entry))


def hash_children(left: bytes, right: bytes) -> bytes:
    """Interior node hash ``H(0x01 || left || right)`` (RFC 6962 §2.1)."""
    return sha256.digest(_NODE_PREFIX + left + right)


def _split(n: int) -> int:
    """Largest power of two strictly less than ``n`` (``n >= 2``): RFC 6962's split point ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


class _Tree:
    """One call's view of the tree: checked node reads plus the RFC 6962 recursions on ranges.

    Ranges ``[start, end)`` handed around here always come from the RFC split, so ``start`` is a
    multiple of a power of two at least as large as ``end - start``; that is what makes the left
    half of every split an existing perfect node.
    """

    __slots__ = ("_get_node",)

    def __init__(self, get_node: NodeGetter) -> None:
        self._get_node = get_node

    def node(self, level: int, index: int) -> bytes:
        value = self._get_node(level, index)
        if len(value) != HASH_SIZE:
            raise _damaged_node(level, index, value)
        return value

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a non-empty range: one read per set bit of its width."""
        width = end - start
        if width & (width - 1) == 0:
            level = width.bit_length() - 1
            return self.node(level, start >> level)
        k = _split(width)
        return hash_children(self.mth(start, start + k), self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]), leaf to root (RFC 6962 §2.1.1)."""
        proof: list[bytes] = []
        # Walk root-to-leaf, collecting siblings, then reverse: same output as the recursion.
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                proof.append(self.mth(start + k, end))
                end = start + k
            else:
                proof.append(self.mth(start, start + k))
                start += k
                m -= k
        proof.reverse()
        return proof

    def subproof(self, m: int, start: int, end: int) -> list[bytes]:
        """SUBPROOF(m, D[start:end], true) (RFC 6962 §2.1.2), leaf side first."""
        proof: list[bytes] = []
        complete = True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self.mth(start + k, end))
                end = start + k
            else:
                proof.append(self.mth(start, start + k))
                start += k
                m -= k
                complete = False
        if not complete:
            proof.append(self.mth(start, end))
        proof.reverse()
        return proof


def compute_root(size: int, get_node: NodeGetter) -> RootHash:
    """MTH of the first ``size`` leaves, folded from at most ``popcount(size)`` stored nodes."""
    if size < 0:
        raise InvalidArgument(f"tree size must be >= 0, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return RootHash(_Tree(get_node).mth(0, size))


def build_inclusion_proof(index: int, size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), deepest sibling first (spec 40 §2.3)."""
    if not 0 <= index < size:
        raise InvalidArgument(f"leaf index {index} is outside a tree of size {size}")
    return _Tree(get_node).path(index, 0, size)


def build_consistency_proof(old_size: int, new_size: int, get_node: NodeGetter) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[0:new_size]) (spec 40 §2.5); empty when old is 0 or equal."""
    if old_size < 0:
        raise InvalidArgument(f"old tree size must be >= 0, got {old_size}")
    if old_size > new_size:
        raise InvalidArgument(f"old tree size {old_size} must be <= new tree size {new_size}")
    if old_size in (0, new_size):
        return []
    return _Tree(get_node).subproof(old_size, 0, new_size)


def completed_subtrees(
    leaf_index: int, leaf_hash: bytes, get_node: NodeGetter
) -> list[tuple[int, int, bytes]]:
    """The ``(level, index, hash)`` nodes (level >= 1) that appending leaf ``leaf_index`` completes.

    Bottom-up, so a store can insert them in order. Each completed node's left half already
    exists, which is the only thing ``get_node`` is asked for.
    """
    if leaf_index < 0:
        raise InvalidArgument(f"leaf index must be >= 0, got {leaf_index}")
    _check_width("leaf hash", leaf_hash, InvalidArgument)
    completed: list[tuple[int, int, bytes]] = []
    current = leaf_hash
    level, index = 0, leaf_index
    while index & 1:  # every append runs this: _Tree.node's check, without the object
        left = get_node(level, index - 1)
        if len(left) != HASH_SIZE:
            raise _damaged_node(level, index - 1, left)
        current = sha256.digest(_NODE_PREFIX + left + current)
        level += 1
        index >>= 1
        completed.append((level, index, current))
    return completed


def _damaged_node(level: int, index: int, value: bytes) -> LogIntegrityError:
    # A stored node of the wrong width is damage, not a caller mistake (DESIGN §4).
    return LogIntegrityError(
        f"merkle node (level={level}, index={index}) is {len(value)} bytes, expected {HASH_SIZE}"
    )


def _check_width(what: str, value: bytes, error: type[InvalidArgument]) -> None:
    if len(value) != HASH_SIZE:
        raise error(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], error: type[InvalidArgument]) -> None:
    for position, element in enumerate(proof):
        _check_width(f"proof element {position}", element, error)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` leads from ``leaf_hash`` at ``index`` to ``root`` of a ``size`` tree.

    RFC 9162 §2.1.3.2 (the same walk as spec 40 §2.4). The proof does not bind ``size`` on its
    own; the signed tree head binds ``(size, root)``, so callers must take both from one STH.
    Raises :class:`InclusionProofError`; returns ``None`` when the proof holds.
    """
    if size <= 0:
        raise InclusionProofError(f"tree size must be >= 1 for an inclusion proof, got {size}")
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_width("leaf hash", leaf_hash, InclusionProofError)
    _check_width("root hash", root, InclusionProofError)
    _check_proof(proof, InclusionProofError)

    fn, sn = index, size - 1
    current = leaf_hash
    used = 0
    while sn > 0:
        if fn & 1 or fn < sn:
            if used == len(proof):
                raise InclusionProofError(
                    f"inclusion proof too short: {len(proof)} elements for leaf {index} "
                    f"of a tree of size {size}"
                )
            sibling = proof[used]
            used += 1
            current = hash_children(sibling, current) if fn & 1 else hash_children(current, sibling)
        fn >>= 1
        sn >>= 1
    if used != len(proof):
        raise InclusionProofError(
            f"inclusion proof too long: {len(proof)} elements, leaf {index} of a tree of size "
            f"{size} needs {used}"
        )
    if current != root:
        raise InclusionProofError(
            f"inclusion proof for leaf {index} does not lead to the root of a tree of size {size}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree with ``old_root`` is a prefix of the tree with ``new_root``.

    Classic CT verification as spec 40 §2.6(1) states it (equivalent to RFC 9162 §2.1.4.2), which
    accepts every proof RFC 6962 §2.1.2 produces, including those the reference's verifier
    rejects (e.g. ``(5, 6)``). Raises :class:`ConsistencyProofError`.
    """
    if old_size < 0:
        raise ConsistencyProofError(f"old tree size must be >= 0, got {old_size}")
    if old_size > new_size:
        raise ConsistencyProofError(f"old tree size {old_size} must be <= new tree size {new_size}")
    _check_width("old root hash", old_root, ConsistencyProofError)
    _check_width("new root hash", new_root, ConsistencyProofError)
    _check_proof(proof, ConsistencyProofError)

    if old_size == 0:
        if proof:
            raise ConsistencyProofError(
                f"consistency proof from size 0 must be empty, got {len(proof)} elements"
            )
        if old_root != EMPTY_ROOT:
            raise ConsistencyProofError("old root of an empty tree must be SHA-256 of ''")
        if new_size == 0 and new_root != EMPTY_ROOT:
            raise ConsistencyProofError("new root of an empty tree must be SHA-256 of ''")
        return
    if old_size == new_size:
        if proof:
            raise ConsistencyProofError(
                f"consistency proof between equal sizes must be empty, got {len(proof)} elements"
            )
        if old_root != new_root:
            raise ConsistencyProofError(f"roots differ for the same tree size {old_size}")
        return

    remaining = iter(proof)

    def take() -> bytes:
        element = next(remaining, None)
        if element is None:
            raise ConsistencyProofError(
                f"consistency proof too short: {len(proof)} elements for sizes "
                f"{old_size} -> {new_size}"
            )
        return element

    fn, sn = old_size - 1, new_size - 1
    # Climb past the levels where the old tree's last node is a right child of a stored pair.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # fn == 0 here means old_size is a power of two: its root is a node of the new tree and
    # RFC 6962 leaves it out of the proof, so the verifier seeds with the old root itself.
    first = old_root if fn == 0 else take()
    old_acc = new_acc = first
    while fn > 0:
        if fn & 1:
            sibling = take()
            old_acc = hash_children(sibling, old_acc)
            new_acc = hash_children(sibling, new_acc)
        elif fn < sn:
            new_acc = hash_children(new_acc, take())
        fn >>= 1
        sn >>= 1
    while sn > 0:
        new_acc = hash_children(new_acc, take())
        sn >>= 1

    consumed_all = next(remaining, None) is None
    if not consumed_all:
        raise ConsistencyProofError(
            f"consistency proof too long: {len(proof)} elements for sizes {old_size} -> {new_size}"
        )
    if old_acc != old_root:
        raise ConsistencyProofError(
            f"consistency proof does not reproduce the old root of size {old_size}"
        )
    if new_acc != new_root:
        raise ConsistencyProofError(
            f"consistency proof does not reproduce the new root of size {new_size}"
        )


class MemoryNodes:
    """An in-memory node store that is itself a :data:`NodeGetter`.

    For tests, offline verification of an exported ``etl.log`` and the ``etl verify`` re-hash:
    it keeps exactly what the database keeps (every completed perfect subtree) and fills it with
    :func:`completed_subtrees`, so it exercises the same append path as the store.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> int:
        """Store one leaf hash and the nodes it completes; return its leaf index."""
        index = self.size
        completed = completed_subtrees(index, leaf_hash, self)
        self._levels[0].append(bytes(leaf_hash))
        for level, _node_index, node_hash in completed:
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(node_hash)
        return index

    def __call__(self, level: int, index: int) -> bytes:
        """Hash of the stored perfect subtree ``(level, index)``; ``LookupError`` if incomplete."""
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        raise LookupError(f"no completed merkle node at level {level}, index {index}")


def root_of(leaf_hashes: Sequence[bytes]) -> RootHash:
    """MTH of a list of leaf hashes held in memory (convenience over :class:`MemoryNodes`)."""
    nodes = MemoryNodes(leaf_hashes)
    return compute_root(nodes.size, nodes)
