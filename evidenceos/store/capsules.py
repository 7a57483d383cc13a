"""Table module for ``capsules``, ``capsule_edges`` and ``incidents``."""

from __future__ import annotations

from dataclasses import dataclass

from evidenceos.store.db import Connection


@dataclass(frozen=True, slots=True)
class CapsuleRow:
    leaf_index: int
    capsule_hash: bytes
    claim_id: bytes
    topic_id: bytes
    holdout_ref: str
    oracle_id: str
    lane: str
    decision: int
    certified: bool
    e_value: float
    k_bits_total: float
    epoch: int
    owner_principal_id: str


def put_capsule(conn: Connection, row: CapsuleRow, parents: list[bytes]) -> None:
    conn.execute(
        "INSERT INTO capsules(leaf_index, capsule_hash, claim_id, topic_id, holdout_ref, "
        "oracle_id, lane, decision, certified, e_value, k_bits_total, epoch, owner_principal_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.leaf_index,
            row.capsule_hash,
            row.claim_id,
            row.topic_id,
            row.holdout_ref,
            row.oracle_id,
            row.lane,
            row.decision,
            int(row.certified),
            row.e_value,
            row.k_bits_total,
            row.epoch,
            row.owner_principal_id,
        ),
    )
    for parent in sorted(set(parents)):
        conn.execute(
            "INSERT INTO capsule_edges(parent_capsule_hash, child_leaf_index) VALUES (?, ?)",
            (parent, row.leaf_index),
        )


def put_incident(
    conn: Connection,
    claim_id: bytes,
    leaf_index: int,
    reason: str,
    fuel_used: int,
    k_bits_settled: float,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO incidents(claim_id, leaf_index, reason, fuel_used, k_bits_settled, "
        "created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (claim_id, leaf_index, reason, fuel_used, k_bits_settled, now_ms),
    )
