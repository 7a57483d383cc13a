"""Table module for ``idempotency_records``: committed in the mutation's own transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from evidenceos.store.db import Connection


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    request_hash: bytes
    response: dict[str, Any]


def find_record(
    conn: Connection, principal_id: str, method: str, request_id: str
) -> IdempotencyRecord | None:
    row = conn.execute(
        "SELECT request_hash, response_json FROM idempotency_records "
        "WHERE principal_id = ? AND rpc_method = ? AND request_id = ?",
        (principal_id, method, request_id),
    ).fetchone()
    if row is None:
        return None
    return IdempotencyRecord(bytes(row[0]), json.loads(str(row[1])))


def put_record(
    conn: Connection,
    principal_id: str,
    method: str,
    request_id: str,
    request_hash: bytes,
    response: dict[str, Any],
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO idempotency_records(principal_id, rpc_method, request_id, request_hash, "
        "response_json, created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (principal_id, method, request_id, request_hash, json.dumps(response), now_ms),
    )
