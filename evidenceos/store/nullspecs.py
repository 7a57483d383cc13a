"""Table module for ``nullspecs`` and ``nullspec_activations`` (spec 50 §3, DESIGN §5)."""

from __future__ import annotations

import json
from typing import Any

from evidenceos.store.db import Connection


def put_nullspec(
    conn: Connection, nullspec_id: bytes, oracle_id: str, contract: dict[str, Any], now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO nullspecs(nullspec_id, oracle_id, contract_json, installed_at_ms) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(nullspec_id) DO NOTHING",
        (nullspec_id, oracle_id, json.dumps(contract, sort_keys=True), now_ms),
    )


def find_nullspec(conn: Connection, nullspec_id: bytes) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT contract_json FROM nullspecs WHERE nullspec_id = ?", (nullspec_id,)
    ).get
    if row is None:
        return None
    value: dict[str, Any] = json.loads(str(row))
    return value


def activate(
    conn: Connection, oracle_id: str, holdout_ref: str, nullspec_id: bytes, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO nullspec_activations(oracle_id, holdout_ref, nullspec_id, activated_at_ms) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(oracle_id, holdout_ref) DO UPDATE SET "
        "nullspec_id = excluded.nullspec_id, activated_at_ms = excluded.activated_at_ms",
        (oracle_id, holdout_ref, nullspec_id, now_ms),
    )


def find_active(conn: Connection, oracle_id: str, holdout_ref: str) -> bytes | None:
    row = conn.execute(
        "SELECT nullspec_id FROM nullspec_activations WHERE oracle_id = ? AND holdout_ref = ?",
        (oracle_id, holdout_ref),
    ).get
    return row if isinstance(row, bytes) else None
