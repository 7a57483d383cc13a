"""Table module for ``topic_pools`` and ``holdout_pools`` (spec 30 §1.4, spec 60 §5.8)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from evidenceos.core.ledger import BudgetPool
from evidenceos.store.db import Connection


def find_topic_pool(conn: Connection, topic_id: bytes) -> BudgetPool | None:
    row = conn.execute("SELECT pool_json FROM topic_pools WHERE topic_id = ?", (topic_id,)).get
    return None if row is None else BudgetPool.from_json(json.loads(str(row)))


def put_topic_pool(conn: Connection, topic_id: bytes, pool: BudgetPool) -> None:
    conn.execute(
        "INSERT INTO topic_pools(topic_id, pool_json) VALUES (?, ?) "
        "ON CONFLICT(topic_id) DO UPDATE SET pool_json = excluded.pool_json",
        (topic_id, json.dumps(pool.to_json(), sort_keys=True)),
    )


def find_holdout_pool(conn: Connection, handle: bytes, principal: str) -> BudgetPool | None:
    row = conn.execute(
        "SELECT pool_json FROM holdout_pools WHERE holdout_handle = ? AND principal_id = ?",
        (handle, principal),
    ).get
    return None if row is None else BudgetPool.from_json(json.loads(str(row)))


def put_holdout_pool(conn: Connection, handle: bytes, principal: str, pool: BudgetPool) -> None:
    conn.execute(
        "INSERT INTO holdout_pools(holdout_handle, principal_id, pool_json) VALUES (?, ?, ?) "
        "ON CONFLICT(holdout_handle, principal_id) DO UPDATE SET pool_json = excluded.pool_json",
        (handle, principal, json.dumps(pool.to_json(), sort_keys=True)),
    )


def iter_topic_pools(conn: Connection) -> Iterator[tuple[bytes, BudgetPool]]:
    for topic_id, text in conn.execute("SELECT topic_id, pool_json FROM topic_pools"):
        yield bytes(topic_id), BudgetPool.from_json(json.loads(str(text)))


def iter_holdout_pools(conn: Connection) -> Iterator[tuple[bytes, str, BudgetPool]]:
    for handle, principal, text in conn.execute(
        "SELECT holdout_handle, principal_id, pool_json FROM holdout_pools "
        "ORDER BY holdout_handle, principal_id"
    ):
        yield bytes(handle), str(principal), BudgetPool.from_json(json.loads(str(text)))
