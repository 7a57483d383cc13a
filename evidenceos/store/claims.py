"""Table module for ``claims``, ``claim_artifacts``, ``wasm_modules`` and ``compiled_modules``."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator

from evidenceos.core.claim import ClaimRecord
from evidenceos.errors import NotFound
from evidenceos.store.db import Connection

_UPSERT = """
INSERT INTO claims(claim_id, owner_principal_id, claim_name, topic_id, holdout_ref, holdout_handle,
  oracle_id, lane, output_schema_id, state, wasm_sha256, last_decision, last_capsule_hash,
  etl_index, record_json, created_at_ms, updated_at_ms)
VALUES (:claim_id, :owner, :claim_name, :topic_id, :holdout_ref, :holdout_handle, :oracle_id,
  :lane, :output_schema_id, :state, :wasm_sha256, :last_decision, :last_capsule_hash, :etl_index,
  :record_json, :now, :now)
ON CONFLICT(claim_id) DO UPDATE SET
  lane = excluded.lane, state = excluded.state, wasm_sha256 = excluded.wasm_sha256,
  last_decision = excluded.last_decision, last_capsule_hash = excluded.last_capsule_hash,
  etl_index = excluded.etl_index, record_json = excluded.record_json,
  updated_at_ms = excluded.updated_at_ms
"""


_UPDATE = """
UPDATE claims SET lane = :lane, state = :state, wasm_sha256 = :wasm_sha256,
  last_decision = :last_decision, last_capsule_hash = :last_capsule_hash, etl_index = :etl_index,
  record_json = :record_json, updated_at_ms = :now
WHERE claim_id = :claim_id
"""

#: ``json.dumps(..., sort_keys=True)`` with the encoder built once rather than on every call.
_ENCODER = json.JSONEncoder(sort_keys=True)


def encode_claim(record: ClaimRecord) -> str:
    """The ``record_json`` text of ``record``."""
    return _ENCODER.encode(record.to_json())


def put_claim(
    conn: Connection,
    record: ClaimRecord,
    now_ms: int,
    *,
    artifacts_changed: bool = True,
    stored: bool = False,
) -> None:
    """Insert or update the claim; ``artifacts_changed=False`` (the caller only changed other
    fields of a stored claim) leaves its ``claim_artifacts`` rows as they are.

    ``stored=True`` says the caller read the claim's row in this transaction: the row is then
    updated in place (the same columns as the upsert's update), without the insert attempt.
    The text written is remembered with ``record``: when it is next read, :func:`decode_claim`
    returns ``record`` itself if decoding the text gives back exactly ``record`` (see
    :meth:`ClaimRecord.decodes_to_itself`)."""
    text = encode_claim(record)
    params = {
        "claim_id": record.claim_id,
        "owner": record.owner_principal_id,
        "claim_name": record.claim_name,
        "topic_id": record.topic_id,
        "holdout_ref": record.holdout_ref,
        "holdout_handle": record.holdout_handle,
        "oracle_id": record.oracle_id,
        "lane": record.lane,
        "output_schema_id": record.output_schema_id,
        "state": record.state.name,
        "wasm_sha256": record.wasm_sha256,
        "last_decision": record.last_decision,
        "last_capsule_hash": record.last_capsule_hash,
        "etl_index": record.etl_index,
        "record_json": text,
        "now": now_ms,
    }
    if stored:
        conn.execute(_UPDATE, params)
        if conn.changes() != 1:  # not there after all: insert it, exactly as the upsert would
            conn.execute(_UPSERT, params)
    else:
        conn.execute(_UPSERT, params)
    with _decoded_lock:
        _written[text] = record
        while len(_written) > WRITTEN_CACHE_SIZE:
            _written.popitem(last=False)
    if not artifacts_changed:
        return
    conn.execute("DELETE FROM claim_artifacts WHERE claim_id = ?", (record.claim_id,))
    for position, artifact in enumerate(record.artifacts):
        conn.execute(
            "INSERT INTO claim_artifacts(claim_id, position, kind, artifact_hash) "
            "VALUES (?, ?, ?, ?)",
            (record.claim_id, position, artifact.kind, artifact.artifact_hash),
        )


# Decoded records by the exact ``record_json`` text they were decoded from (or encoded to, when
# decoding that text returns the record exactly). Decoding is a pure function of the text and a
# ClaimRecord is an immutable value, so a hit is exactly what decoding again would return; a
# claim that changed has another text and misses. A write that rolls back leaves a correct entry
# (text -> its decoding) that no row holds. Bounded LRU.
DECODE_CACHE_SIZE = 1024
_decoded: OrderedDict[str, ClaimRecord] = OrderedDict()
_decoded_lock = threading.Lock()
# Records by the text put_claim wrote for them, until that text is first decoded (bounded FIFO).
WRITTEN_CACHE_SIZE = 256
_written: OrderedDict[str, ClaimRecord] = OrderedDict()


def _remember(text: str, record: ClaimRecord) -> None:
    with _decoded_lock:
        _decoded[text] = record
        _decoded.move_to_end(text)
        while len(_decoded) > DECODE_CACHE_SIZE:
            _decoded.popitem(last=False)


def decode_claim(text: str) -> ClaimRecord:
    """``ClaimRecord.from_json(json.loads(text))``, memoised on ``text``.

    The first read of a text :func:`put_claim` wrote returns the record it encoded, when that
    record is exactly what decoding the text returns."""
    with _decoded_lock:
        record = _decoded.get(text)
        if record is not None:
            _decoded.move_to_end(text)
            return record
        written = _written.pop(text, None)
    if written is not None and written.decodes_to_itself():
        record = written
    else:
        record = ClaimRecord.from_json(json.loads(text))
    _remember(text, record)
    return record


def find_claim_text(conn: Connection, claim_id: bytes) -> str | None:
    """The claim's stored ``record_json`` (compare it to tell whether a claim changed)."""
    row = conn.execute("SELECT record_json FROM claims WHERE claim_id = ?", (claim_id,)).get
    return None if row is None else str(row)


def find_claim(conn: Connection, claim_id: bytes) -> ClaimRecord | None:
    text = find_claim_text(conn, claim_id)
    return None if text is None else decode_claim(text)


def get_claim(conn: Connection, claim_id: bytes) -> ClaimRecord:
    return get_claim_and_text(conn, claim_id)[0]


def get_claim_and_text(conn: Connection, claim_id: bytes) -> tuple[ClaimRecord, str]:
    text = find_claim_text(conn, claim_id)
    if text is None:
        raise NotFound("claim not found")
    return decode_claim(text), text


def iter_claims(conn: Connection) -> Iterator[ClaimRecord]:
    for (text,) in conn.execute("SELECT record_json FROM claims ORDER BY created_at_ms, claim_id"):
        yield decode_claim(str(text))


def claims_with_capsule(conn: Connection, capsule_hash: bytes) -> list[ClaimRecord]:
    return [
        decode_claim(str(text))
        for (text,) in conn.execute(
            "SELECT record_json FROM claims WHERE last_capsule_hash = ?", (capsule_hash,)
        )
    ]


def put_wasm_module(conn: Connection, module: bytes, now_ms: int) -> bytes:
    digest = hashlib.sha256(module).digest()
    conn.execute(
        "INSERT INTO wasm_modules(module_sha256, module, first_seen_at_ms) VALUES (?, ?, ?) "
        "ON CONFLICT(module_sha256) DO NOTHING",
        (digest, module, now_ms),
    )
    return digest


def get_wasm_module(conn: Connection, module_sha256: bytes) -> bytes:
    row = conn.execute(
        "SELECT module FROM wasm_modules WHERE module_sha256 = ?", (module_sha256,)
    ).get
    if not isinstance(row, bytes):
        raise NotFound("wasm module not found")
    return row


def get_compiled_module(conn: Connection, module_sha256: bytes, fingerprint: str) -> bytes | None:
    row = conn.execute(
        "SELECT artefact FROM compiled_modules WHERE module_sha256 = ? AND engine_fingerprint = ?",
        (module_sha256, fingerprint),
    ).get
    return row if isinstance(row, bytes) else None


def has_compiled_module(conn: Connection, module_sha256: bytes, fingerprint: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM compiled_modules WHERE module_sha256 = ? AND engine_fingerprint = ?",
            (module_sha256, fingerprint),
        ).get
        is not None
    )


def put_compiled_module(
    conn: Connection, module_sha256: bytes, fingerprint: str, artefact: bytes, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO compiled_modules(module_sha256, engine_fingerprint, artefact, compiled_at_ms) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (module_sha256, fingerprint, artefact, now_ms),
    )


def count_by_state(conn: Connection) -> dict[str, int]:
    return {
        str(state): int(count)
        for state, count in conn.execute("SELECT state, count(*) FROM claims GROUP BY state")
    }
