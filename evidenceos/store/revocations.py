"""Table module for ``revocations`` and ``revocation_feed_entries`` (spec 40 §5, spec 20 §3.16).

Functions take a connection and never open or commit transactions: RevokeClaim's write function
decides the transaction. The taint walk reads ``capsule_edges`` (parent capsule hash → child
capsule leaf), which ExecuteClaimV2 fills in the capsule's own transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evidenceos.errors import StorageError
from evidenceos.store.db import Connection

REVOKED = "revoked"
TAINTED = "tainted"

_DESCENDANTS = (
    "SELECT c.capsule_hash FROM capsule_edges e "
    "JOIN capsules c ON c.leaf_index = e.child_leaf_index "
    "WHERE e.parent_capsule_hash = ? ORDER BY e.child_leaf_index"
)
_INSERT_ENTRY = (
    "INSERT INTO revocation_feed_entries(feed_seq, revocation_leaf_index, entry_kind, claim_id, "
    "capsule_hash, timestamp_unix, reason) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_ENTRIES = (
    "SELECT feed_seq, revocation_leaf_index, entry_kind, claim_id, capsule_hash, timestamp_unix, "
    "reason FROM revocation_feed_entries WHERE feed_seq > ? ORDER BY feed_seq"
)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of the revocation feed; ``capsule_hash`` fills the wire's ``claim_id`` slot."""

    feed_seq: int
    revocation_leaf_index: int
    entry_kind: str  # REVOKED | TAINTED
    claim_id: bytes
    capsule_hash: bytes
    timestamp_unix: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "feed_seq": self.feed_seq,
            "kind": self.entry_kind,
            "claim_id": self.claim_id.hex(),
            "capsule_hash": self.capsule_hash.hex(),
            "timestamp_unix": self.timestamp_unix,
            "reason": self.reason,
            "revocation_leaf_index": self.revocation_leaf_index,
        }


def _entry(row: tuple[Any, ...]) -> FeedEntry:
    seq, leaf, kind, claim_id, capsule_hash, ts, reason = row
    return FeedEntry(
        int(seq), int(leaf), str(kind), bytes(claim_id), bytes(capsule_hash), int(ts), str(reason)
    )


def descendant_capsules(conn: Connection, root: bytes) -> list[bytes]:
    """Every capsule reachable from ``root`` over dependency edges, breadth-first, each once,
    ``root`` itself excluded; edges are followed in the order their capsules were appended
    (spec 40 §5.1 ``taint_descendants``)."""
    seen = {root}
    order: list[bytes] = []
    frontier: deque[bytes] = deque([root])
    while frontier:
        parent = frontier.popleft()
        for (child,) in conn.execute(_DESCENDANTS, (parent,)).fetchall():
            if not isinstance(child, bytes):
                raise StorageError(f"capsule hash of type {type(child).__name__} in capsules")
            child_hash = child
            if child_hash not in seen:
                seen.add(child_hash)
                order.append(child_hash)
                frontier.append(child_hash)
    return order


def put_revocation(
    conn: Connection,
    *,
    leaf_index: int,
    claim_id: bytes,
    capsule_hash: bytes,
    reason: str,
    timestamp_unix: int,
    principal_id: str,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO revocations(leaf_index, claim_id, capsule_hash, reason, timestamp_unix, "
        "principal_id, recorded_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (leaf_index, claim_id, capsule_hash, reason, timestamp_unix, principal_id, now_ms),
    )


def append_feed_entry(
    conn: Connection,
    *,
    revocation_leaf_index: int,
    entry_kind: str,
    claim_id: bytes,
    capsule_hash: bytes,
    timestamp_unix: int,
    reason: str,
) -> FeedEntry:
    seq = last_feed_seq(conn) + 1
    conn.execute(
        _INSERT_ENTRY,
        (seq, revocation_leaf_index, entry_kind, claim_id, capsule_hash, timestamp_unix, reason),
    )
    return FeedEntry(
        seq, revocation_leaf_index, entry_kind, claim_id, capsule_hash, timestamp_unix, reason
    )


def last_feed_seq(conn: Connection) -> int:
    value = conn.execute("SELECT ifnull(max(feed_seq), 0) FROM revocation_feed_entries").get
    return int(value) if isinstance(value, int) else 0


def feed_entries(conn: Connection, after_seq: int = 0) -> list[FeedEntry]:
    """Feed entries with ``feed_seq > after_seq``, in feed order."""
    return [_entry(row) for row in conn.execute(_SELECT_ENTRIES, (after_seq,)).fetchall()]


def iter_feed(conn: Connection) -> Iterator[FeedEntry]:
    for row in conn.execute(_SELECT_ENTRIES, (0,)):
        yield _entry(row)


def state_section(conn: Connection) -> list[dict[str, Any]]:
    """The ``revocations`` section of ``state.json``: every feed entry in feed order, hashes as
    lowercase hex (register as ``Exporter.state_sections["revocations"]``)."""
    return [entry.to_json() for entry in iter_feed(conn)]
