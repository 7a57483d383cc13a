"""The transparency log as a use case: append, sign heads, prove, verify (DESIGN §3, §4).

Other services append entries from inside their own write functions, so an entry commits in the
same transaction as the state change it records. Heads are signed when needed, not per commit
(decision D-F2): when a head is handed out and the stored one no longer covers the tree (the
signature commits before the head is returned), when a write asks for one (``want_head``), when
the unsigned tail reaches ``SIGN_EVERY_LEAVES``, at start-up and at shutdown. Every head handed
out is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evidenceos.core import leafmac, merkle
from evidenceos.core.canonical import encode_entry
from evidenceos.core.leafmac import LeafMacer
from evidenceos.core.sth import SignedTreeHead, sign_tree_head, verify_tree_head
from evidenceos.errors import (
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
    LogIntegrityError,
    NotFound,
    SignatureError,
    StorageFull,
    Unavailable,
)
from evidenceos.store import log as log_table
from evidenceos.store.db import Connection, Store
from evidenceos.store.keys import Keyring

log = logging.getLogger("evidenceos.log")

Clock = Callable[[], int]
Progress = Callable[[int], None]

SIGN_EVERY_LEAVES = 256  # at every commit the unsigned tail is shorter than this
_KNOWN_MAX = 4096  # remembered nodes before starting over (the frontier is ~log2(n) nodes)

EXPECTED_TRIGGERS = (
    "log_leaves_dense",
    "log_leaves_no_update",
    "log_leaves_no_delete",
    "signed_tree_heads_no_update",
    "signed_tree_heads_no_delete",
)


def system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    audit_path: list[bytes]
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class ConsistencyResult:
    first_tree_size: int
    second_tree_size: int
    first_root_hash: bytes
    second_root_hash: bytes
    path: list[bytes]
    consistent: bool


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """Head, inclusion and consistency proof for one leaf, from one snapshot (FetchCapsule)."""

    head: SignedTreeHead
    leaf_index: int
    leaf_hash: bytes
    audit_path: list[bytes]
    consistency_path: list[bytes]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    tree_size: int
    nodes_checked: int
    heads_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class LogService:
    def __init__(
        self, store: Store, keyring: Keyring | None, clock: Clock = system_clock_ms
    ) -> None:
        """Without a keyring the service can read and verify but never sign (offline tools)."""
        self._store = store
        self._keyring_or_none = keyring
        self._clock = clock
        # Set by write functions, read and cleared by the pre-commit hook; both run while the
        # store's writer connection is held, so no lock is needed.
        self._grew = False
        self._grew_from = self._grew_to = 0  # leaf indices appended by the current group
        self._next_index: int | None = None  # tree size after our last append (a guess)
        # Nodes this service stored (appends read their left siblings from here instead of the
        # table); valid while the store's generation stays the same (nobody else wrote, nothing
        # was rolled back).
        self._known: dict[tuple[int, int], bytes] = {}
        self._known_generation = -1
        self._head_wanted = False
        self._lazy = False  # until start(): offline tools sign every commit that grows the tree
        self._mac: log_table.LeafMac | None = None
        if keyring is not None:
            store.add_pre_commit_hook(self._sign_if_due)
            self._mac = LeafMacer(keyring.leaf_mac_keys()[keyring.active_key_id])

    @property
    def _keyring(self) -> Keyring:
        if self._keyring_or_none is None:
            raise FailedPrecondition("no signing keyring loaded")
        return self._keyring_or_none

    # -- writes -------------------------------------------------------------------------------

    def start(self) -> SignedTreeHead:
        """Record the keyring's public keys, sign the current tree with the active key (after
        a rotation the same tree gets a head under the new key) and mark the log open until
        :meth:`close`, so the next start-up knows whether an unsigned tail is expected."""

        def register(conn: Connection) -> SignedTreeHead:
            now = self._clock()
            for key_id, public in self._keyring.public_keys.items():
                log_table.upsert_signing_key(conn, key_id, public, now)
            log_table.set_open(conn, True)
            return self._sign_current(conn)

        head = self._store.write(register)
        self._lazy = True
        return head

    def close(self) -> SignedTreeHead:
        """Clean shutdown: sign the whole tree and mark the log closed (no tail may follow)."""

        def seal(conn: Connection) -> SignedTreeHead:
            head = self._sign_current(conn)
            log_table.set_open(conn, False)
            return head

        self._lazy = False
        return self._store.write(seal)

    def append(self, conn: Connection, entry: Mapping[str, Any]) -> log_table.Leaf:
        """Append one canonical entry inside the caller's write transaction."""
        payload = encode_entry(entry)  # refuses an entry without a string kind
        return self.append_encoded(conn, str(entry["kind"]), payload)

    def append_encoded(self, conn: Connection, kind: str, payload: bytes) -> log_table.Leaf:
        """Append bytes the caller already made with ``encode_entry`` (so they can be built,
        and hashed, before the write transaction starts)."""
        if self._known_generation != self._store.generation or len(self._known) > _KNOWN_MAX:
            self._known.clear()  # another writer or a rollback: re-read what is needed
            self._known_generation = self._store.generation
        leaf = log_table.append_leaf(
            conn,
            kind,
            payload,
            self._clock(),
            self._next_index,
            self._known,
            self._mac,
            self._store.statements(conn),
        )
        self._next_index = leaf.leaf_index + 1
        if not self._grew:
            self._grew, self._grew_from = True, leaf.leaf_index
        self._grew_to = leaf.leaf_index + 1
        return leaf

    def want_head(self) -> None:
        """Called inside a write function: this commit will also store a head covering it (for
        records whose readers expect a head that proves them, such as revocations)."""
        self._head_wanted = True

    def append_entry(self, entry: Mapping[str, Any]) -> log_table.Leaf:
        """Append one entry in its own transaction, encoded before the transaction starts."""
        payload = encode_entry(entry)  # refuses an entry without a string kind
        kind = str(entry["kind"])
        return self._store.write(
            lambda conn: self.append_encoded(conn, kind, payload), isolated=False
        )

    def _sign_if_due(self, conn: Connection) -> None:
        """Pre-commit hook. Besides heads asked for, a group whose leaves reach a multiple of
        SIGN_EVERY_LEAVES signs one, so no commit leaves SIGN_EVERY_LEAVES unsigned leaves
        (any run of that many indices holds one ending at a multiple). No reads otherwise."""
        wanted, grew = self._head_wanted, self._grew
        self._head_wanted = self._grew = False
        if wanted or (
            grew
            and (
                not self._lazy
                or self._grew_to // SIGN_EVERY_LEAVES > self._grew_from // SIGN_EVERY_LEAVES
            )
        ):
            self._sign_current(conn)

    def _sign_current(self, conn: Connection) -> SignedTreeHead:
        """The newest head, signing the current tree first unless the stored head already
        covers it under the active key."""
        size = log_table.tree_size(conn)
        active = self._keyring.active_key_id
        current = log_table.head_at(conn, size, active)
        if current is not None:  # also after a rotation back to an earlier key
            return current
        root = merkle.compute_root(size, log_table.node_getter(conn))
        head = sign_tree_head(self._keyring.active_private_key, size, root)
        log_table.upsert_signing_key(conn, active, self._keyring.active_public_key, self._clock())
        log_table.insert_head(conn, head, self._clock())
        return head

    # -- reads --------------------------------------------------------------------------------

    def signed_tree_head(self) -> SignedTreeHead:
        """A stored head covering every committed leaf (signed and committed first if the
        newest stored one does not). Without a keyring: the newest stored head."""
        keyring = self._keyring_or_none
        current: SignedTreeHead | None = None
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
            if keyring is not None and head is not None:
                current = log_table.head_at(conn, log_table.tree_size(conn), keyring.active_key_id)
        if keyring is not None and head is not None and current is not None:
            return current
        if keyring is not None:
            try:
                head = self._store.write(self._sign_current)
            except (StorageFull, Unavailable):
                if head is None:
                    raise
                # Disk full, read-only, or the database busy past the timeout: no new head can
                # be stored now, so none is handed out; the newest stored one still proves
                # every leaf up to its size.
                log.warning("could not store a new tree head; serving the newest stored one")
        if head is None:
            raise LogIntegrityError("no signed tree head stored; the log was not started")
        return head

    def tree_size(self) -> int:
        with self._store.read() as conn:
            return log_table.tree_size(conn)

    def public_key(self, key_id: bytes) -> tuple[bytes, bytes]:
        """(public key, key id); an empty ``key_id`` means the active key."""
        if not key_id:
            return self._keyring.active_public_key, self._keyring.active_key_id
        if len(key_id) != 32:
            raise InvalidArgument("invalid request")
        public = self._keyring.public_keys.get(key_id)  # type: ignore[call-overload]
        if public is None:
            raise NotFound("key not found")
        return public, key_id

    def inclusion_proof(self, leaf_index: int) -> InclusionProof:
        """Audit path for ``leaf_index`` against the current signed head."""
        head = self._head_or_none()
        size = head.tree_size if head is not None else 0
        if leaf_index >= size:
            raise NotFound("leaf index not found")
        with self._store.read() as conn:  # nodes below a head's size never change
            get = log_table.node_getter(conn)
            return InclusionProof(
                leaf_index=leaf_index,
                tree_size=size,
                leaf_hash=get(0, leaf_index),
                audit_path=merkle.build_inclusion_proof(leaf_index, size, get),
                root_hash=head.root_hash if head is not None else merkle.EMPTY_ROOT,
            )

    def _head_or_none(self) -> SignedTreeHead | None:
        """None only when no head was ever stored; damage found while signing still raises."""
        with self._store.read() as conn:
            if log_table.latest_head(conn) is None:
                return None
        return self.signed_tree_head()

    def proof_bundle(self, leaf_index: int) -> ProofBundle:
        """The current head with the leaf's audit path and the consistency path from the tree
        that ended with this leaf (``leaf_index + 1``) to the head."""
        head = self._head_or_none()
        if head is None or leaf_index >= head.tree_size:
            raise NotFound("leaf index not found")
        with self._store.read() as conn:
            get = log_table.node_getter(conn)
            return ProofBundle(
                head=head,
                leaf_index=leaf_index,
                leaf_hash=get(0, leaf_index),
                audit_path=merkle.build_inclusion_proof(leaf_index, head.tree_size, get),
                consistency_path=merkle.build_consistency_proof(
                    leaf_index + 1, head.tree_size, get
                ),
            )

    def consistency(self, first: int, second: int) -> ConsistencyResult:
        head = self._head_or_none()
        size = head.tree_size if head is not None else 0
        with self._store.read() as conn:
            if first > second:
                raise InvalidArgument("first_tree_size must be <= second_tree_size")
            if first > size:
                raise InvalidArgument(f"first_tree_size out of bounds (tree size is {size})")
            if second > size:
                raise InvalidArgument(f"second_tree_size out of bounds (tree size is {size})")
            get = log_table.node_getter(conn)
            first_root = merkle.compute_root(first, get)
            second_root = merkle.compute_root(second, get)
            path = merkle.build_consistency_proof(first, second, get)
        try:
            merkle.verify_consistency(first, second, first_root, second_root, path)
            consistent = True
        except EvidenceOSError:
            consistent = False
        return ConsistencyResult(first, second, first_root, second_root, path, consistent)

    # -- integrity ----------------------------------------------------------------------------

    def verify_on_start(self) -> None:
        """The cheap start-up check (DESIGN §3, decision D-F3): triggers intact, leaves dense,
        the root recomputed from stored subtree hashes at the last signed head's size equals
        that head's root and its signature verifies; leaves after it only after a crash (fewer
        than SIGN_EVERY_LEAVES, every one re-hashed with the subtrees it completes). O(log n)
        reads plus the tail. Raises LogIntegrityError naming the damage."""
        with self._store.read() as conn:
            triggers = log_table.schema_objects(conn)
            missing = [t for t in EXPECTED_TRIGGERS if t not in triggers]
            if missing:
                raise LogIntegrityError(
                    f"log damaged: append-only guard(s) {', '.join(missing)} were removed from "
                    "the database; run `evidenceosctl etl verify` and restore from backup"
                )
            size = log_table.tree_size(conn)
            count = conn.execute("SELECT count(*) FROM log_leaves").get
            if count != size:
                raise LogIntegrityError(
                    f"log damaged: {count} leaves stored but indices run to {size - 1}; "
                    "leaves are missing"
                )
            head = log_table.latest_head(conn)
            if head is None:
                if size:
                    raise LogIntegrityError(
                        f"log damaged: {size} leaves but no signed tree head is stored"
                    )
                return
            tail = size - head.tree_size
            if tail < 0:
                raise LogIntegrityError(
                    f"log truncated outside the daemon: last signed tree head has size "
                    f"{head.tree_size}, {size} leaves present"
                )
            if tail and not log_table.is_open(conn):
                raise LogIntegrityError(
                    f"log extended outside the daemon: {tail} leaves after the last signed tree "
                    f"head (size {head.tree_size}) although the daemon shut down cleanly"
                )
            if tail >= SIGN_EVERY_LEAVES:
                raise LogIntegrityError(
                    f"log extended outside the daemon: {tail} leaves after the last signed tree "
                    f"head (size {head.tree_size}); a crash leaves fewer than {SIGN_EVERY_LEAVES}"
                )
            get = log_table.node_getter(conn)
            root = merkle.compute_root(head.tree_size, get)
            tail_problem = self._unauthentic_tail(conn, head.tree_size) if tail else None
            tail_problem = tail_problem or _check_tail(conn, head.tree_size, size, get)
            keys = log_table.known_signing_keys(conn)
        if tail_problem is not None:
            raise LogIntegrityError(f"log damaged: {tail_problem}")
        if root != head.root_hash:
            raise LogIntegrityError(
                f"log damaged: root recomputed from stored subtree hashes ({root.hex()}) does "
                f"not match the last signed tree head ({head.root_hash.hex()}) at size "
                f"{head.tree_size}"
            )
        public = keys.get(bytes(head.key_id))
        if public is None:
            raise LogIntegrityError(
                f"log damaged: last signed tree head names unknown key {head.key_id.hex()}"
            )
        try:
            verify_tree_head(public, head)
        except SignatureError as exc:
            raise LogIntegrityError(
                f"log damaged: last signed tree head (size {head.tree_size}) has a bad "
                f"signature: {exc}"
            ) from exc

    def _unauthentic_tail(self, conn: Connection, start: int) -> str | None:
        """Leaves after the last head must carry a MAC under one of our signing keys: only
        this daemon could have written them (rows inserted with plain sqlite3 cannot)."""
        if self._keyring_or_none is None:
            return (
                f"leaves from {start} on are not covered by a signed tree head, and without "
                "the signing keys they cannot be authenticated"
            )
        keys = list(self._keyring_or_none.leaf_mac_keys().values())
        for index, leaf_hash, mac in log_table.iter_tail_macs(conn, start):
            if not leafmac.verifies(keys, index, leaf_hash, mac):
                return (
                    f"leaf {index} follows the last signed tree head but was not written by "
                    "evidenceosd with these keys (its leaf MAC does not verify): log extended "
                    "outside the daemon"
                )
        return None

    def verify_full(self, progress: Progress | None = None) -> VerifyReport:
        """Re-hash every leaf and node and check every stored head (``etl verify``).

        Reports the first bad leaf rather than stopping at the first problem of any kind, so an
        operator learns where damage starts."""
        problems: list[str] = []
        with self._store.read() as conn:
            size = log_table.tree_size(conn)
            latest = log_table.latest_head(conn)
            if latest is not None and latest.tree_size > size:
                problems.append(
                    f"log truncated: signed tree head for size {latest.tree_size} recorded, "
                    f"{size} leaves present"
                )
            nodes = merkle.MemoryNodes()
            for expected_index, leaf in enumerate(log_table.iter_leaves(conn)):
                if leaf.leaf_index != expected_index:
                    problems.append(
                        f"leaf {expected_index} missing (next stored index is {leaf.leaf_index})"
                    )
                    break
                recomputed = merkle.hash_leaf(leaf.payload)
                if recomputed != leaf.leaf_hash and not problems:
                    problems.append(
                        f"leaf {leaf.leaf_index} hash mismatch: payload hashes to "
                        f"{recomputed.hex()}, stored leaf hash is {leaf.leaf_hash.hex()}"
                    )
                nodes.append(recomputed)
                if progress is not None:
                    progress(1)
            nodes_checked = 0
            for leaf_index, hashes in log_table.iter_subtree_hashes(conn):
                if leaf_index >= nodes.size:
                    break  # reported above as a missing leaf
                levels = _trailing_ones(leaf_index)
                if len(hashes) != 32 * levels:
                    problems.append(
                        f"leaf {leaf_index} stores {len(hashes) // 32} subtree hashes, "
                        f"expected {levels}"
                    )
                for level in range(1, min(levels, len(hashes) // 32) + 1):
                    nodes_checked += 1
                    index = ((leaf_index + 1) >> level) - 1
                    if nodes(level, index) != hashes[32 * (level - 1) : 32 * level]:
                        problems.append(
                            f"merkle node (level {level}, index {index}) hash mismatch "
                            f"(covers leaves {index << level}..{leaf_index})"
                        )
            keys = log_table.known_signing_keys(conn)
            heads = list(log_table.iter_heads(conn))
        for head in heads:
            if head.tree_size > nodes.size:
                problems.append(f"signed tree head for size {head.tree_size} beyond the log")
                continue
            if merkle.compute_root(head.tree_size, nodes) != head.root_hash:
                problems.append(f"signed tree head for size {head.tree_size}: root mismatch")
            public = keys.get(bytes(head.key_id))
            try:
                if public is None:
                    raise SignatureError("unknown key id")
                verify_tree_head(public, head)
            except SignatureError as exc:
                problems.append(f"signed tree head for size {head.tree_size}: {exc}")
        return VerifyReport(size, nodes_checked, len(heads), problems)


def _trailing_ones(index: int) -> int:
    """How many perfect subtrees leaf ``index`` completes (levels 1..n)."""
    return ((index ^ (index + 1)).bit_length()) - 1


def _check_tail(conn: Connection, start: int, size: int, get: merkle.NodeGetter) -> str | None:
    """Re-hash leaves ``start..size-1`` (not yet covered by a signed head) and every subtree
    hash they completed; the first mismatch, or None."""
    for leaf in log_table.iter_leaves(conn, start):
        if merkle.hash_leaf(leaf.payload) != leaf.leaf_hash:
            return f"leaf {leaf.leaf_index} hash mismatch: its payload does not hash to it"
        index, level = leaf.leaf_index, 1
        while (index + 1) % (1 << level) == 0:
            node = (index + 1 >> level) - 1
            expected = merkle.hash_children(get(level - 1, 2 * node), get(level - 1, 2 * node + 1))
            if get(level, node) != expected:
                return f"merkle node (level {level}, index {node}) hash mismatch"
            level += 1
    return None
