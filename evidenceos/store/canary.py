"""Table module for ``canary_states``: one drift e-process per (oracle_id, holdout_ref)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from evidenceos.core.canary import CanaryState
from evidenceos.store.db import Connection

#: ``json.dumps(..., sort_keys=True)`` without building an encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True)


def find_canary_state(conn: Connection, oracle_id: str, holdout_ref: str) -> CanaryState | None:
    row = conn.execute(
        "SELECT state_json FROM canary_states WHERE oracle_id = ? AND holdout_ref = ?",
        (oracle_id, holdout_ref),
    ).get
    return None if row is None else CanaryState.from_json(json.loads(str(row)))


def put_canary_state(
    conn: Connection, oracle_id: str, holdout_ref: str, state: CanaryState
) -> None:
    conn.execute(
        "INSERT INTO canary_states(oracle_id, holdout_ref, state_json) VALUES (?, ?, ?) "
        "ON CONFLICT(oracle_id, holdout_ref) DO UPDATE SET state_json = excluded.state_json",
        (oracle_id, holdout_ref, _ENCODER.encode(state.to_json())),
    )


def iter_canary_states(conn: Connection) -> Iterator[tuple[str, str, CanaryState]]:
    for oracle_id, holdout_ref, text in conn.execute(
        "SELECT oracle_id, holdout_ref, state_json FROM canary_states ORDER BY 1, 2"
    ):
        yield str(oracle_id), str(holdout_ref), CanaryState.from_json(json.loads(str(text)))
