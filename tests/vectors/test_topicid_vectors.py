"""Topic ids match the DiscOS vectors byte for byte (spec 20 §5.5, DESIGN §5)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evidenceos.core.topicid import ClaimMetadata, TopicSignals, compute_topic_id
from tests.support.paths import VECTORS_DIR

VECTORS_FILE = VECTORS_DIR / "topicid" / "topicid_vectors.json"
KNOWN_KEYS = {"metadata", "signals", "expected_topic_id_hex"}


def _load() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    return vectors


def _hash(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def test_vector_file_is_not_empty() -> None:
    assert len(_load()) >= 2


@pytest.mark.parametrize("vector", _load(), ids=lambda v: v["expected_topic_id_hex"][:12])
def test_topic_id_matches_vector(vector: dict[str, Any]) -> None:
    # A new expectation (an escalation flag, say) must get an assertion, not be skipped silently.
    assert set(vector) == KNOWN_KEYS
    meta, sig = vector["metadata"], vector["signals"]
    computation = compute_topic_id(
        ClaimMetadata(
            lane=meta["lane"],
            alpha_micros=meta["alpha_micros"],
            epoch_config_ref=meta["epoch_config_ref"],
            output_schema_id=meta["output_schema_id"],
        ),
        TopicSignals(
            semantic_hash=_hash(sig["semantic_hash"]),
            phys_hir_signature_hash=_hash(sig["phys_hir_signature_hash"]),
            dependency_merkle_root=_hash(sig["dependency_merkle_root"]),
        ),
    )
    assert computation.topic_id.hex() == vector["expected_topic_id_hex"]


@pytest.mark.parametrize("vector", _load(), ids=lambda v: v["expected_topic_id_hex"][:12])
def test_vector_signals_do_not_disagree(vector: dict[str, Any]) -> None:
    """Both vectors' hashes are within 128 bits of each other: DiscOS keeps them off HEAVY."""
    sig = vector["signals"]
    computation = compute_topic_id(
        ClaimMetadata("fast", 0, "", ""),
        TopicSignals(
            semantic_hash=_hash(sig["semantic_hash"]),
            phys_hir_signature_hash=_hash(sig["phys_hir_signature_hash"]),
        ),
    )
    assert computation.signals_disagree is False
