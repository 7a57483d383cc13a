"""Operator-side helpers for governance tests, independent of ``evidenceos``.

Keys, signatures and digests are built with ``hashlib``, ``json`` and ``cryptography`` straight
from spec 50 (§1.2, §1.3, §3.2, §3.3, §3.7): for objects without floats, the spec's canonical
JSON is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

K7_SEED = bytes([7]) * 32
K9_SEED = bytes([9]) * 32
K7_PUBLIC_HEX = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
K9_PUBLIC_HEX = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618"
ORACLE_RECORD_DOMAIN = b"evidenceos:oracle_operator_record:v1"
EPOCH_CONTROL_DOMAIN = b"evidenceos:epoch_control:v1"


def canon(value: Any) -> bytes:
    """Spec 50 §1.1 canon for float-free values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_hex(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def verifies(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
            bytes.fromhex(signature_hex), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def write_seed(path: Path, seed: bytes) -> Path:
    path.write_bytes(seed)
    path.chmod(0o600)
    return path


def write_trusted_keys(data_dir: Path, keys: dict[str, str]) -> Path:
    """``trusted_oracle_keys.json`` exactly as OPERATIONS shows it."""
    path = data_dir / "trusted_oracle_keys.json"
    path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
    return path


def record_digest(oracle_id: str, record: dict[str, Any]) -> bytes:
    """The 32-byte message an oracle record's signature covers (spec 50 §3.2)."""
    payload = {
        "oracle_id": oracle_id,
        "schema_version": record["schema_version"],
        "ttl_epochs": record["ttl_epochs"],
        "calibration_manifest_hash_hex": record.get("calibration_manifest_hash_hex") or "",
        "calibration_epoch": record.get("calibration_epoch"),
        "disjointness_attestation": record.get("disjointness_attestation"),
        "nonoverlap_proof_uri": record.get("nonoverlap_proof_uri"),
        "updated_at_epoch": record["updated_at_epoch"],
        "key_id": record["key_id"],
    }
    return hashlib.sha256(ORACLE_RECORD_DOMAIN + canon(payload)).digest()


def epoch_control_digest(control: dict[str, Any]) -> bytes:
    payload = {k: control[k] for k in ("forced_epoch", "updated_at_epoch", "key_id")}
    return hashlib.sha256(EPOCH_CONTROL_DOMAIN + canon(payload)).digest()


def event_signed_bytes(event: dict[str, Any]) -> bytes:
    """``canon({"epoch","event_type","key_id","payload"})`` (spec 50 §3.7)."""
    return canon({k: event[k] for k in ("epoch", "event_type", "key_id", "payload")})


def signed_event(
    seed: bytes, key_id: str, event_type: str, payload: dict[str, Any], epoch: int | None = None
) -> dict[str, Any]:
    """A governance event document signed like spec 50 §3.7 (the canary reset shape)."""
    event = {
        "event_type": event_type,
        "epoch": int(time.time()) if epoch is None else epoch,
        "key_id": key_id,
        "payload": payload,
    }
    signed = event_signed_bytes(event)
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(signed).hex()
    return {"event_id": hashlib.sha256(signed).hexdigest(), **event, "signature_ed25519": signature}


_SQL_SCRIPT = """
import sqlite3, sys
db, mode, params = sys.argv[1], sys.argv[2], eval(sys.argv[3])
statements = sys.argv[4:]
if mode == "ro":
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    print(repr(conn.execute(statements[0], params).fetchall()))
else:
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
conn.close()
"""


def _sqlite(data_dir: Path, mode: str, params: tuple[Any, ...], *statements: str) -> str:
    """Run ``sqlite3`` in a separate process, as an operator would: two SQLite libraries in one
    process (``sqlite3`` and apsw's) do not share POSIX locks and can corrupt a database."""
    done = subprocess.run(
        [sys.executable, "-c", _SQL_SCRIPT, str(data_dir / "evidenceos.db"), mode, repr(params),
         *statements],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"sqlite3 failed: {done.stderr}")
    return done.stdout


def sql(data_dir: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query, read with plain ``sqlite3``."""
    rows: list[tuple[Any, ...]] = ast.literal_eval(_sqlite(data_dir, "ro", params, query))
    return rows


def sql_write(data_dir: Path, *statements: str) -> None:
    """Run statements as someone editing the database by hand (autocommit)."""
    _sqlite(data_dir, "rw", (), *statements)


def governance_event_lines(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "etl_governance_events.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
