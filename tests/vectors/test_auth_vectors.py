"""HMAC request-signing golden vectors (spec 60 §3.4.5), byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from evidenceos.core.auth import (
    HEADER_KEY_ID,
    HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    CallerIdentity,
    HmacAuth,
    HmacKeyring,
    RequestGuard,
    Role,
    compute_signature_header,
    compute_signing_material,
    hash_principal_id,
)
from evidenceos.errors import Unauthenticated

VECTOR_FILE = "auth/auth_signing_vectors.json"
VECTOR_NAMES = ["no_timestamp_health", "with_timestamp_health", "create_claim_path_bound"]

# The DiscOS copy of the protocol crate carries two more vectors (spec 60 §3.4.5).
DISCOS_SECRET = b"discos-shared-secret"
DISCOS_VECTORS = [
    (
        "req-1",
        "/evidenceos.v2.EvidenceOS/Health",
        None,
        "bcbd74399d155e8abe362c7f3cb83cf1b50fa894f243a8b4f63ecbe92e4b9636",
    ),
    (
        "req-1",
        "/evidenceos.v2.EvidenceOS/CreateClaimV2",
        "1700000000",
        "6eb7d9afc53e140b05ce6fb79933b8c95a8bc4b28790f8ec6ec38e03b5a9978b",
    ),
]


@pytest.fixture
def auth_vectors(vectors: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    entries = vectors(VECTOR_FILE)
    return {e["name"]: e for e in entries}


def _headers(request_id: str, timestamp: str | None, signature: str) -> dict[str, str]:
    headers = {HEADER_REQUEST_ID: request_id, HEADER_SIGNATURE: signature}
    if timestamp is not None:
        headers[HEADER_TIMESTAMP] = timestamp
    return headers


def _guard(secret: bytes, key_id: str = "default") -> RequestGuard:
    return RequestGuard(HmacAuth(HmacKeyring({key_id: secret})))


def test_vector_file_holds_the_three_named_vectors(auth_vectors):
    assert sorted(auth_vectors) == sorted(VECTOR_NAMES)


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_material_is_byte_identical(auth_vectors, name):
    v = auth_vectors[name]
    material = compute_signing_material(v["request_id"], v["path"], v["timestamp"])
    assert material == v["material"].encode("utf-8")


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_signature_header_is_byte_identical(auth_vectors, name):
    v = auth_vectors[name]
    secret = bytes.fromhex(v["secret_hex"])
    header = compute_signature_header(secret, v["material"].encode("utf-8"))
    assert header == v["signature_header"]


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_guard_accepts_vector(auth_vectors, name):
    v = auth_vectors[name]
    now = int(v["timestamp"]) if v["timestamp"] is not None else 1_735_689_600
    guard = _guard(bytes.fromhex(v["secret_hex"]))
    caller = guard.authenticate(
        _headers(v["request_id"], v["timestamp"], v["signature_header"]), v["path"], now=now
    )
    assert caller == CallerIdentity(hash_principal_id("hmac", "default"), Role.AGENT)


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_guard_accepts_vector_under_a_named_key(auth_vectors, name):
    v = auth_vectors[name]
    now = int(v["timestamp"]) if v["timestamp"] is not None else 1_735_689_600
    guard = _guard(bytes.fromhex(v["secret_hex"]), key_id="kid-2026-01")
    headers = _headers(v["request_id"], v["timestamp"], v["signature_header"])
    headers[HEADER_KEY_ID] = "kid-2026-01"
    caller = guard.authenticate(headers, v["path"], now=now)
    assert caller.principal_id == hash_principal_id("hmac", "kid-2026-01")


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_uppercase_signature_hex_is_accepted(auth_vectors, name):
    v = auth_vectors[name]
    now = int(v["timestamp"]) if v["timestamp"] is not None else 0
    header = "sha256=" + v["signature_header"].removeprefix("sha256=").upper()
    guard = _guard(bytes.fromhex(v["secret_hex"]))
    guard.authenticate(_headers(v["request_id"], v["timestamp"], header), v["path"], now=now)


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_refused_on_another_path(auth_vectors, name):
    v = auth_vectors[name]
    now = int(v["timestamp"]) if v["timestamp"] is not None else 0
    guard = _guard(bytes.fromhex(v["secret_hex"]))
    other = "/evidenceos.v2.EvidenceOS/RevokeClaim"
    with pytest.raises(Unauthenticated, match=r"^invalid signature$"):
        guard.authenticate(
            _headers(v["request_id"], v["timestamp"], v["signature_header"]), other, now=now
        )


@pytest.mark.parametrize(("request_id", "path", "timestamp", "hex_mac"), DISCOS_VECTORS)
def test_discos_vectors(request_id, path, timestamp, hex_mac):
    material = compute_signing_material(request_id, path, timestamp)
    assert compute_signature_header(DISCOS_SECRET, material) == "sha256=" + hex_mac
    now = int(timestamp) if timestamp is not None else 0
    _guard(DISCOS_SECRET).authenticate(
        _headers(request_id, timestamp, "sha256=" + hex_mac), path, now=now
    )
