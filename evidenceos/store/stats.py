"""Read-only aggregates for the metrics endpoint (docs/metrics.md): one snapshot, a few indexed
queries, nothing that grows with the number of principals."""

from __future__ import annotations

from dataclasses import dataclass

from evidenceos.store import log as log_table
from evidenceos.store.db import Connection, Store


@dataclass(frozen=True, slots=True)
class StoreStats:
    tree_size: int
    signed_heads: int
    claims_by_state: dict[str, int]
    credit_charged: int
    credit_denied: int
    capsules: int
    certified_capsules: int
    incidents: int


def _ints(conn: Connection, sql: str) -> tuple[int, ...]:
    row = conn.execute(sql).fetchone()
    return tuple(int(v) for v in row) if row is not None else ()


def read_stats(conn: Connection) -> StoreStats:
    by_state = {
        str(state): int(count)
        for state, count in conn.execute("SELECT state, count(*) FROM claims GROUP BY state")
    }
    charged, denied = _ints(
        conn, "SELECT ifnull(sum(burned_total), 0), ifnull(sum(denied_total), 0) FROM accounts"
    )
    capsules, certified = _ints(conn, "SELECT count(*), ifnull(sum(certified), 0) FROM capsules")
    return StoreStats(
        tree_size=log_table.tree_size(conn),
        signed_heads=log_table.scalar_int(conn, "SELECT count(*) FROM signed_tree_heads"),
        claims_by_state=by_state,
        credit_charged=charged,
        credit_denied=denied,
        capsules=capsules,
        certified_capsules=certified,
        incidents=log_table.scalar_int(conn, "SELECT count(*) FROM incidents"),
    )


def collect(store: Store) -> StoreStats:
    with store.read() as conn:
        return read_stats(conn)


def database_bytes(store: Store) -> int:
    """Size on disk of the database and its WAL (what backups and disks care about)."""
    total = 0
    for suffix in ("", "-wal"):
        path = store.path.with_name(store.path.name + suffix)
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total
