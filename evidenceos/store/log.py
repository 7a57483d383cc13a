"""Table module for the transparency log: ``log_leaves``, ``merkle_nodes``, ``signed_tree_heads``
and ``signing_keys`` (spec 40 §8.3, DESIGN §4).

Functions take a connection and never open or commit transactions: the caller's write function
(run by the store's writer thread) decides the transaction. Merkle math lives in ``core.merkle``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from evidenceos.core import merkle
from evidenceos.core.sth import SignedTreeHead
from evidenceos.errors import LogIntegrityError, NotFound, StorageError
from evidenceos.store.db import Connection

_SIZE = "SELECT ifnull(max(leaf_index) + 1, 0) FROM log_leaves"
_INSERT_LEAF = (
    "INSERT INTO log_leaves(leaf_index, kind, payload, leaf_hash, payload_sha256, appended_at_ms) "
    "VALUES (:leaf_index, :kind, :payload, :leaf_hash, :payload_sha256, :appended_at_ms)"
)
_INSERT_NODE = "INSERT INTO merkle_nodes(level, node_index, hash) VALUES (?, ?, ?)"
_LEAF_HASH = "SELECT leaf_hash FROM log_leaves WHERE leaf_index = ?"
_NODE_HASH = "SELECT hash FROM merkle_nodes WHERE level = ? AND node_index = ?"
_LEAF = (
    "SELECT leaf_index, kind, payload, leaf_hash, payload_sha256, appended_at_ms "
    "FROM log_leaves WHERE leaf_index = ?"
)
_LATEST_HEAD = (
    "SELECT tree_size, root_hash, signature, key_id FROM signed_tree_heads "
    "ORDER BY head_id DESC LIMIT 1"
)
_INSERT_HEAD = (
    "INSERT OR IGNORE INTO signed_tree_heads(tree_size, root_hash, key_id, signature, "
    "signed_at_ms) VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_KEY = (
    "INSERT INTO signing_keys(key_id, public_key, first_seen_at_ms) VALUES (?, ?, ?) "
    "ON CONFLICT(key_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class Leaf:
    leaf_index: int
    kind: str
    payload: bytes
    leaf_hash: bytes
    payload_sha256: bytes
    appended_at_ms: int


def scalar_int(conn: Connection, sql: str) -> int:
    value = conn.execute(sql).get
    if not isinstance(value, int):
        raise StorageError(f"expected an integer from {sql!r}, got {value!r}")
    return value


def tree_size(conn: Connection) -> int:
    return scalar_int(conn, _SIZE)


def node_getter(conn: Connection) -> merkle.NodeGetter:
    """A NodeGetter reading perfect-subtree hashes from the database, memoised per call site."""
    memo: dict[tuple[int, int], bytes] = {}

    def get(level: int, index: int) -> bytes:
        key = (level, index)
        found = memo.get(key)
        if found is None:
            row = (
                conn.execute(_LEAF_HASH, (index,)).get
                if level == 0
                else conn.execute(_NODE_HASH, (level, index)).get
            )
            if not isinstance(row, bytes):
                raise LogIntegrityError(
                    f"log damaged: merkle node (level {level}, index {index}) is missing"
                )
            memo[key] = found = row
        return found

    return get


def append_leaf(conn: Connection, kind: str, payload: bytes, now_ms: int) -> Leaf:
    """Append one entry and every perfect subtree it completes."""
    index = tree_size(conn)
    leaf = Leaf(
        leaf_index=index,
        kind=kind,
        payload=payload,
        leaf_hash=merkle.hash_leaf(payload),
        payload_sha256=hashlib.sha256(payload).digest(),
        appended_at_ms=now_ms,
    )
    conn.execute(
        _INSERT_LEAF,
        {
            "leaf_index": leaf.leaf_index,
            "kind": leaf.kind,
            "payload": leaf.payload,
            "leaf_hash": leaf.leaf_hash,
            "payload_sha256": leaf.payload_sha256,
            "appended_at_ms": now_ms,
        },
    )
    for level, node_index, node_hash in merkle.completed_subtrees(
        index, leaf.leaf_hash, node_getter(conn)
    ):
        conn.execute(_INSERT_NODE, (level, node_index, node_hash))
    return leaf


def get_leaf(conn: Connection, index: int) -> Leaf:
    row = conn.execute(_LEAF, (index,)).fetchone()
    if row is None:
        raise NotFound("leaf index not found")
    return Leaf(*row)


def iter_leaves(conn: Connection, start: int = 0) -> Iterator[Leaf]:
    for row in conn.execute(
        "SELECT leaf_index, kind, payload, leaf_hash, payload_sha256, appended_at_ms "
        "FROM log_leaves WHERE leaf_index >= ? ORDER BY leaf_index",
        (start,),
    ):
        yield Leaf(*row)


def iter_nodes(conn: Connection) -> Iterator[tuple[int, int, bytes]]:
    for level, index, node_hash in conn.execute(
        "SELECT level, node_index, hash FROM merkle_nodes ORDER BY level, node_index"
    ):
        yield int(level), int(index), bytes(node_hash)


def node_count(conn: Connection) -> int:
    return scalar_int(conn, "SELECT count(*) FROM merkle_nodes")


def latest_head(conn: Connection) -> SignedTreeHead | None:
    row = conn.execute(_LATEST_HEAD).fetchone()
    if row is None:
        return None
    size, root, signature, key_id = row
    return SignedTreeHead(tree_size=size, root_hash=root, signature=signature, key_id=key_id)


def insert_head(conn: Connection, head: SignedTreeHead, now_ms: int) -> None:
    conn.execute(
        _INSERT_HEAD, (head.tree_size, head.root_hash, head.key_id, head.signature, now_ms)
    )


def iter_heads(conn: Connection) -> Iterator[SignedTreeHead]:
    for size, root, signature, key_id in conn.execute(
        "SELECT tree_size, root_hash, signature, key_id FROM signed_tree_heads ORDER BY head_id"
    ):
        yield SignedTreeHead(tree_size=size, root_hash=root, signature=signature, key_id=key_id)


def head_count(conn: Connection) -> int:
    return scalar_int(conn, "SELECT count(*) FROM signed_tree_heads")


def upsert_signing_key(conn: Connection, key_id: bytes, public_key: bytes, now_ms: int) -> None:
    conn.execute(_UPSERT_KEY, (key_id, public_key, now_ms))


def known_signing_keys(conn: Connection) -> dict[bytes, bytes]:
    return {
        bytes(k): bytes(p) for k, p in conn.execute("SELECT key_id, public_key FROM signing_keys")
    }


def schema_objects(conn: Connection) -> dict[str, str]:
    """Name → SQL of the log's triggers, so start-up can tell a dropped append-only guard."""
    return {
        str(name): str(sql)
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    }
