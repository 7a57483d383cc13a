"""Table module for the transparency log: ``log_leaves``, ``signed_tree_heads`` and
``signing_keys`` (spec 40 §8.3, DESIGN §4).

Every completed perfect-subtree hash is stored in the row of the leaf that completed it
(``subtree_hashes``, migration 0005): node ``(level, index)`` with ``level >= 1`` lives in leaf
``((index + 1) << level) - 1`` at byte offset ``32 * (level - 1)``. An append therefore writes
one table row, and any node is one primary-key lookup. ``merkle_nodes`` is a view of them.

Functions take a connection and never open or commit transactions: the caller's write function
(run by the store's writer thread) decides the transaction. Merkle math lives in ``core.merkle``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import apsw

from evidenceos.core import merkle, sha256
from evidenceos.core.sth import SignedTreeHead
from evidenceos.errors import LogIntegrityError, NotFound, StorageError
from evidenceos.store.db import Connection

_SIZE = "SELECT ifnull(max(leaf_index) + 1, 0) FROM log_leaves"
_INSERT_LEAF = (
    "INSERT INTO log_leaves(leaf_index, kind, payload, leaf_hash, payload_sha256, appended_at_ms, "
    "subtree_hashes, tail_mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
LeafMac = Callable[[int, bytes], bytes]  # (leaf index, leaf hash) -> MAC (core.leafmac)
_LEAF_HASH = "SELECT leaf_hash FROM log_leaves WHERE leaf_index = ?"
_NODE_HASH = "SELECT substr(subtree_hashes, ?, 32) FROM log_leaves WHERE leaf_index = ?"
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


class Leaf(NamedTuple):
    """One log row (a named tuple: built on every append, where a frozen dataclass costs twice
    as much)."""

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
    size = conn.execute(_SIZE).get
    if type(size) is not int:
        raise StorageError(f"expected an integer tree size, got {size!r}")
    return size


def node_getter(conn: Connection) -> merkle.NodeGetter:
    """A NodeGetter reading perfect-subtree hashes from the database, memoised per call site."""
    read = _reader(conn)
    memo: dict[tuple[int, int], bytes] = {}

    def get(level: int, index: int) -> bytes:
        key = (level, index)
        found = memo.get(key)
        if found is None:
            memo[key] = found = read(level, index)
        return found

    return get


def append_leaf(
    conn: Connection,
    kind: str,
    payload: bytes,
    now_ms: int,
    index_hint: int | None = None,
    known: dict[tuple[int, int], bytes] | None = None,
    mac: LeafMac | None = None,
    statements: apsw.Cursor | None = None,
) -> Leaf:
    """Append one entry with the hashes of every perfect subtree it completes (the hot path of
    every write: one read per completed level not in ``known``, and one insert).

    ``index_hint`` is the caller's guess of the tree size, which saves reading it. A wrong guess
    (after a rollback, or another process's append) cannot land: the ``log_leaves_dense``
    trigger refuses any index but the size, and a too-large guess finds missing rows first;
    either way the append is redone from the size read from the table. ``known`` maps
    ``(level, index)`` to node hashes the caller knows to be stored; an append takes the left
    siblings it needs out of it (reading the rest) and puts in the left children it stores, so
    it holds the frontier of the tree: ~log2(n) nodes (cleared on a wrong guess).
    ``mac`` authenticates the row for the time no signed head covers it (``tail_mac``).
    ``statements`` is a cursor on ``conn`` to run the insert with (``Store.statements``)."""
    insert = statements or conn
    if index_hint is not None:
        try:
            return _append_at(conn, insert, index_hint, kind, payload, now_ms, known, mac)
        except (apsw.ConstraintError, LogIntegrityError):
            if known is not None:
                known.clear()
    return _append_at(conn, insert, tree_size(conn), kind, payload, now_ms, known, mac)


def _append_at(
    conn: Connection,
    insert: Connection | apsw.Cursor,
    index: int,
    kind: str,
    payload: bytes,
    now_ms: int,
    known: dict[tuple[int, int], bytes] | None,
    mac: LeafMac | None,
) -> Leaf:
    leaf_hash = merkle.hash_leaf(payload)
    payload_sha256 = sha256.digest(payload)
    completed: list[tuple[int, int, bytes]] = []
    if index & 1:  # an odd index completes at least one subtree
        if known is not None:
            take = known.pop  # each left sibling is read once, by the append completing it

            def read_known(level: int, node: int) -> bytes:
                return take((level, node), None) or _read_node(conn, level, node)

            completed = merkle.completed_subtrees(index, leaf_hash, read_known)
        else:
            completed = merkle.completed_subtrees(index, leaf_hash, _reader(conn))
    insert.execute(
        _INSERT_LEAF,
        (
            index,
            kind,
            payload,
            leaf_hash,
            payload_sha256,
            now_ms,
            b"".join([h for _, _, h in completed]) if completed else b"",
            None if mac is None else mac(index, leaf_hash),
        ),
    )
    if known is not None:  # left children only: a right child is never read again
        if not index & 1:
            known[0, index] = leaf_hash
        for level, node, node_hash in completed:
            if not node & 1:
                known[level, node] = node_hash
    return Leaf(index, kind, payload, leaf_hash, payload_sha256, now_ms)


def node_row(level: int, index: int) -> int:
    """The leaf whose row stores node ``(level, index)``: the last leaf it covers."""
    return ((index + 1) << level) - 1


def _read_node(conn: Connection, level: int, index: int) -> bytes:
    row = (
        conn.execute(_LEAF_HASH, (index,)).get
        if level == 0
        else conn.execute(_NODE_HASH, (32 * (level - 1) + 1, node_row(level, index))).get
    )
    if not isinstance(row, bytes) or len(row) != 32:
        raise LogIntegrityError(
            f"log damaged: merkle node (level {level}, index {index}) is missing"
        )
    return row


def _reader(conn: Connection) -> merkle.NodeGetter:
    return functools.partial(_read_node, conn)


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


def iter_tail_macs(conn: Connection, start: int) -> Iterator[tuple[int, bytes, bytes | None]]:
    """``(leaf_index, leaf_hash, tail_mac)`` of every leaf from ``start`` on."""
    for index, leaf_hash, mac in conn.execute(
        "SELECT leaf_index, leaf_hash, tail_mac FROM log_leaves WHERE leaf_index >= ? "
        "ORDER BY leaf_index",
        (start,),
    ):
        yield int(index), bytes(leaf_hash), None if mac is None else bytes(mac)


def iter_subtree_hashes(conn: Connection) -> Iterator[tuple[int, bytes]]:
    """``(leaf_index, subtree_hashes)`` of every leaf, in index order."""
    for index, hashes in conn.execute(
        "SELECT leaf_index, subtree_hashes FROM log_leaves ORDER BY leaf_index"
    ):
        yield int(index), bytes(hashes)


def node_count(conn: Connection) -> int:
    return scalar_int(conn, "SELECT ifnull(sum(length(subtree_hashes)), 0) / 32 FROM log_leaves")


def latest_head(conn: Connection) -> SignedTreeHead | None:
    row = conn.execute(_LATEST_HEAD).fetchone()
    if row is None:
        return None
    size, root, signature, key_id = row
    return SignedTreeHead(tree_size=size, root_hash=root, signature=signature, key_id=key_id)


def head_at(conn: Connection, tree_size: int, key_id: bytes) -> SignedTreeHead | None:
    """The stored head of ``tree_size`` under ``key_id`` (at most one: UNIQUE)."""
    row = conn.execute(
        "SELECT tree_size, root_hash, signature, key_id FROM signed_tree_heads "
        "WHERE tree_size = ? AND key_id = ?",
        (tree_size, key_id),
    ).fetchone()
    if row is None:
        return None
    size, root, signature, found_key = row
    return SignedTreeHead(tree_size=size, root_hash=root, signature=signature, key_id=found_key)


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


_OPEN_KEY = "log_open"


def set_open(conn: Connection, is_open: bool) -> None:
    """Mark the log open (a daemon runs; a crash may leave an unsigned tail) or closed."""
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (_OPEN_KEY, "1" if is_open else "0"),
    )


def is_open(conn: Connection) -> bool:
    return bool(conn.execute("SELECT value FROM meta WHERE key = ?", (_OPEN_KEY,)).get == "1")
