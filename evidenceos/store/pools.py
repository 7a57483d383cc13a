"""Table module for ``topic_pools`` and ``holdout_pools`` (spec 30 §1.4, spec 60 §5.8).

Write functions that pass their store's ``generation`` read pools their own writes left from
memory (:class:`~evidenceos.store.claims.WriterRows`); every write of these tables goes through
here.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator
from typing import Any

from evidenceos.core.ledger import BudgetPool
from evidenceos.store.claims import WriterRows
from evidenceos.store.db import Connection

#: ``json.dumps(..., sort_keys=True)`` without building an encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True)
#: Pools as the writer's own writes left them (``generation``: see :class:`WriterRows`).
_rows: WriterRows[Hashable, BudgetPool] = WriterRows(1024)
_FLOAT_FIELDS = (
    "k_bits_budget",
    "access_credit_budget",
    "k_bits_spent",
    "access_credit_spent",
    "covariance_charge_total",
)


def _decodes_to_itself(pool: BudgetPool) -> bool:
    """``BudgetPool.from_json`` of the pool's JSON gives it back (from_json makes floats of
    the budgets and amounts and keeps the whole reservations and the flag as they are)."""
    return (
        type(pool) is BudgetPool
        and all(type(getattr(pool, name)) is float for name in _FLOAT_FIELDS)
        and type(pool.reserved_k_bits) is int
        and type(pool.reserved_access_credit) is int
        and type(pool.frozen) is bool
    )


def _find(
    conn: Connection, generation: int | None, key: Hashable, sql: str, params: tuple[Any, ...]
) -> BudgetPool | None:
    pool = _rows.get(conn, generation, key)
    if pool is None:
        row = conn.execute(sql, params).get
        pool = None if row is None else BudgetPool.from_json(json.loads(str(row)))
        _rows.put(conn, generation, key, pool)
    return pool


def _put(
    conn: Connection,
    generation: int | None,
    key: Hashable,
    sql: str,
    params: tuple[Any, ...],
    pool: BudgetPool,
) -> None:
    conn.execute(sql, (*params, _ENCODER.encode(pool.to_json())))
    _rows.put(conn, generation, key, pool if _decodes_to_itself(pool) else None)


def find_topic_pool(
    conn: Connection, topic_id: bytes, generation: int | None = None
) -> BudgetPool | None:
    return _find(
        conn,
        generation,
        ("topic", bytes(topic_id)),
        "SELECT pool_json FROM topic_pools WHERE topic_id = ?",
        (topic_id,),
    )


def put_topic_pool(
    conn: Connection, topic_id: bytes, pool: BudgetPool, generation: int | None = None
) -> None:
    _put(
        conn,
        generation,
        ("topic", bytes(topic_id)),
        "INSERT INTO topic_pools(topic_id, pool_json) VALUES (?, ?) "
        "ON CONFLICT(topic_id) DO UPDATE SET pool_json = excluded.pool_json",
        (topic_id,),
        pool,
    )


def find_holdout_pool(
    conn: Connection, handle: bytes, principal: str, generation: int | None = None
) -> BudgetPool | None:
    return _find(
        conn,
        generation,
        ("holdout", bytes(handle), principal),
        "SELECT pool_json FROM holdout_pools WHERE holdout_handle = ? AND principal_id = ?",
        (handle, principal),
    )


def put_holdout_pool(
    conn: Connection,
    handle: bytes,
    principal: str,
    pool: BudgetPool,
    generation: int | None = None,
) -> None:
    _put(
        conn,
        generation,
        ("holdout", bytes(handle), principal),
        "INSERT INTO holdout_pools(holdout_handle, principal_id, pool_json) VALUES (?, ?, ?) "
        "ON CONFLICT(holdout_handle, principal_id) DO UPDATE SET pool_json = excluded.pool_json",
        (handle, principal),
        pool,
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
