"""The transparency log as a use case: append, sign heads, prove, verify (DESIGN §3, §4).

Other services append entries from inside their own write functions, so an entry commits in the
same transaction as the state change it records. A pre-commit hook signs a new head whenever a
write group changed the tree, so every head ever handed out is already stored: reads never write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evidenceos.core import merkle
from evidenceos.core.canonical import encode_entry
from evidenceos.core.sth import SignedTreeHead, sign_tree_head, verify_tree_head
from evidenceos.errors import (
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
    LogIntegrityError,
    NotFound,
    SignatureError,
)
from evidenceos.store import log as log_table
from evidenceos.store.db import Connection, Store
from evidenceos.store.keys import Keyring

Clock = Callable[[], int]
Progress = Callable[[int], None]

EXPECTED_TRIGGERS = (
    "log_leaves_dense",
    "log_leaves_no_update",
    "log_leaves_no_delete",
    "merkle_nodes_no_update",
    "merkle_nodes_no_delete",
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
        if keyring is not None:
            store.add_pre_commit_hook(self._sign_if_grown)

    @property
    def _keyring(self) -> Keyring:
        if self._keyring_or_none is None:
            raise FailedPrecondition("no signing keyring loaded")
        return self._keyring_or_none

    # -- writes -------------------------------------------------------------------------------

    def start(self) -> SignedTreeHead:
        """Record the keyring's public keys and make sure the current head is signed by the
        active key (after a rotation, the same tree gets a head under the new key)."""

        def register(conn: Connection) -> None:
            now = self._clock()
            for key_id, public in self._keyring.public_keys.items():
                log_table.upsert_signing_key(conn, key_id, public, now)

        self._store.write(register)
        return self.signed_tree_head()

    def append(self, conn: Connection, entry: Mapping[str, Any]) -> log_table.Leaf:
        """Append one canonical entry inside the caller's write transaction."""
        return self.append_encoded(conn, str(entry["kind"]), encode_entry(entry))

    def append_encoded(self, conn: Connection, kind: str, payload: bytes) -> log_table.Leaf:
        """Append bytes the caller already made with ``encode_entry`` (so they can be built,
        and hashed, before the write transaction starts)."""
        return log_table.append_leaf(conn, kind, payload, self._clock())

    def append_entry(self, entry: Mapping[str, Any]) -> log_table.Leaf:
        """Append one entry in its own transaction (tools and tests)."""
        return self._store.write(lambda conn: self.append(conn, entry))

    def _sign_if_grown(self, conn: Connection) -> None:
        size = log_table.tree_size(conn)
        latest = log_table.latest_head(conn)
        active = self._keyring.active_key_id
        if latest is not None and latest.tree_size == size and latest.key_id == active:
            return
        root = merkle.compute_root(size, log_table.node_getter(conn))
        head = sign_tree_head(self._keyring.active_private_key, size, root)
        log_table.upsert_signing_key(conn, active, self._keyring.active_public_key, self._clock())
        log_table.insert_head(conn, head, self._clock())

    # -- reads --------------------------------------------------------------------------------

    def signed_tree_head(self) -> SignedTreeHead:
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
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
        """Audit path for ``leaf_index`` against the latest signed head (one snapshot)."""
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
            size = head.tree_size if head is not None else 0
            if leaf_index >= size:
                raise NotFound("leaf index not found")
            get = log_table.node_getter(conn)
            return InclusionProof(
                leaf_index=leaf_index,
                tree_size=size,
                leaf_hash=get(0, leaf_index),
                audit_path=merkle.build_inclusion_proof(leaf_index, size, get),
                root_hash=head.root_hash if head is not None else merkle.EMPTY_ROOT,
            )

    def proof_bundle(self, leaf_index: int) -> ProofBundle:
        """The current head with the leaf's audit path and the consistency path from the tree
        that ended with this leaf (``leaf_index + 1``) to the head."""
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
            if head is None or leaf_index >= head.tree_size:
                raise NotFound("leaf index not found")
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
        with self._store.read() as conn:
            head = log_table.latest_head(conn)
            size = head.tree_size if head is not None else 0
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
        """The cheap start-up check (DESIGN §3): triggers intact, leaves dense, the root
        recomputed from stored subtree hashes equals the last signed head, whose signature
        verifies. O(log n) reads. Raises LogIntegrityError naming the damage."""
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
            if head.tree_size != size:
                raise LogIntegrityError(
                    f"log truncated or extended outside the daemon: last signed tree head has "
                    f"size {head.tree_size}, {size} leaves present"
                )
            root = merkle.compute_root(size, log_table.node_getter(conn))
            keys = log_table.known_signing_keys(conn)
        if root != head.root_hash:
            raise LogIntegrityError(
                f"log damaged: root recomputed from stored subtree hashes ({root.hex()}) does "
                f"not match the last signed tree head ({head.root_hash.hex()}) at size {size}"
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
                f"log damaged: last signed tree head (size {size}) has a bad signature: {exc}"
            ) from exc

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
            for level, index, stored in log_table.iter_nodes(conn):
                nodes_checked += 1
                if (index + 1) << level > nodes.size:
                    problems.append(f"merkle node (level {level}, index {index}) beyond the log")
                    continue
                if nodes(level, index) != stored:
                    problems.append(
                        f"merkle node (level {level}, index {index}) hash mismatch "
                        f"(covers leaves {index << level}..{((index + 1) << level) - 1})"
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
