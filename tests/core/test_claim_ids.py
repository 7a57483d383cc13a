"""Claim ids (v1 reference form, v2 decision) and the dependency Merkle root (spec 20 §5)."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core.claim_ids import (
    CLAIM_ID_V1_DOMAIN,
    CLAIM_ID_V2_DOMAIN,
    ClaimRequestV1,
    ClaimRequestV2,
    compute_claim_id_v1,
    compute_claim_id_v2,
    compute_claim_id_v2_preimage,
    compute_dependency_merkle_root,
)
from evidenceos.core.topicid import ClaimMetadata, TopicSignals
from evidenceos.errors import InvalidArgument
from evidenceos.ids import PrincipalId


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


BASE = ClaimRequestV2(
    principal_id=PrincipalId("bearer:alice"),
    claim_name="claim-1",
    metadata=ClaimMetadata("fast", 50_000, "epoch/default", "legacy/v1"),
    signals=TopicSignals(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32),
    holdout_ref="synthetic-holdout",
    epoch_size=10,
    oracle_num_symbols=4,
    oracle_id="builtin.accuracy",
    nullspec_id="",
    dp_epsilon_budget=None,
    dp_delta_budget=None,
)


# --- v1 ----------------------------------------------------------------------------------------


def test_v1_matches_the_reference_vector() -> None:
    request = ClaimRequestV1(b"\x05" * 32, b"\x06" * 32, b"\x07" * 32, 16, 4)
    assert compute_claim_id_v1(request).hex() == (
        "07c006be32c590d424386110d91bbd9c599024be6f49ea01db128ac4e3d098c6"
    )


def test_sha256_domain_reference_vector() -> None:
    """Reference unit test: ``sha256_domain`` is plain concatenation, no separator."""
    assert H(b"evidenceos:test:v1" + b"payload").hex() == (
        "87793298a928d7506f292db3201b2c471623211631bbb31d22ae30bb28ea5ea5"
    )


@pytest.mark.parametrize("field", ["topic_id", "holdout_handle_id", "phys_hir_hash"])
def test_v1_requires_32_byte_hashes(field: str) -> None:
    values: dict[str, Any] = {
        "topic_id": b"\x05" * 32,
        "holdout_handle_id": b"\x06" * 32,
        "phys_hir_hash": b"\x07" * 32,
        "epoch_size": 1,
        "oracle_num_symbols": 2,
    }
    values[field] = b"\x05" * 31
    with pytest.raises(InvalidArgument, match=field):
        ClaimRequestV1(**values)


# --- v2 ----------------------------------------------------------------------------------------

CHANGES: dict[str, Any] = {
    "principal_id": PrincipalId("bearer:bob"),
    "claim_name": "claim-2",
    "metadata.lane": "heavy",
    "metadata.alpha_micros": 50_001,
    "metadata.epoch_config_ref": "epoch/other",
    "metadata.output_schema_id": "cbrn-sc.v1",
    "signals.semantic_hash": None,
    "signals.phys_hir_signature_hash": b"\x09" * 32,
    "signals.dependency_merkle_root": None,
    "holdout_ref": "synthetic-other",
    "epoch_size": 11,
    "oracle_num_symbols": 8,
    "oracle_id": "",
    "nullspec_id": "ab" * 32,
    "dp_epsilon_budget": 0.0,
    "dp_delta_budget": 1e-9,
}


def _change(request: ClaimRequestV2, field: str, value: Any) -> ClaimRequestV2:
    if field.startswith("metadata."):
        meta = dataclasses.replace(request.metadata, **{field.split(".", 1)[1]: value})
        return dataclasses.replace(request, metadata=meta)
    if field.startswith("signals."):
        signals = dataclasses.replace(request.signals, **{field.split(".", 1)[1]: value})
        return dataclasses.replace(request, signals=signals)
    return dataclasses.replace(request, **{field: value})


def test_v2_identical_requests_share_a_claim() -> None:
    twin = dataclasses.replace(BASE, metadata=ClaimMetadata(*dataclasses.astuple(BASE.metadata)))
    assert compute_claim_id_v2(twin) == compute_claim_id_v2(BASE)


def test_every_request_field_is_covered() -> None:
    """A field added to the request types without a claim_id decision fails here."""
    top = {f.name for f in dataclasses.fields(ClaimRequestV2)} - {"metadata", "signals"}
    nested = {f"metadata.{f.name}" for f in dataclasses.fields(ClaimMetadata)}
    nested |= {f"signals.{f.name}" for f in dataclasses.fields(TopicSignals)}
    assert set(CHANGES) == top | nested


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_v2_any_field_change_gives_another_claim(field: str) -> None:
    changed = _change(BASE, field, CHANGES[field])
    assert compute_claim_id_v2(changed) != compute_claim_id_v2(BASE)


def test_v2_has_no_access_credit_field() -> None:
    """DESIGN §9: access_credit never names a claim; the type has no place for it."""
    assert "access_credit" not in {f.name for f in dataclasses.fields(ClaimRequestV2)}


def test_v2_preimage_layout() -> None:
    def s(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(4, "big") + raw

    request = dataclasses.replace(BASE, dp_epsilon_budget=0.5)
    expected = (
        CLAIM_ID_V2_DOMAIN
        + s("bearer:alice")
        + s("claim-1")
        + s("fast")
        + (50_000).to_bytes(4, "big")
        + s("epoch/default")
        + s("legacy/v1")
        + b"\x01"
        + b"\x01" * 32
        + b"\x01"
        + b"\x02" * 32
        + b"\x01"
        + b"\x03" * 32
        + s("synthetic-holdout")
        + (10).to_bytes(8, "big")
        + (4).to_bytes(4, "big")
        + s("builtin.accuracy")
        + s("")
        + b"\x01"
        + struct.pack(">d", 0.5)
        + b"\x00"
    )
    assert compute_claim_id_v2_preimage(request) == expected
    assert compute_claim_id_v2(request) == H(expected)


def test_v2_and_v1_domains_cannot_share_a_prefix() -> None:
    assert not CLAIM_ID_V2_DOMAIN.startswith(CLAIM_ID_V1_DOMAIN)
    assert not CLAIM_ID_V1_DOMAIN.startswith(CLAIM_ID_V2_DOMAIN)
    assert CLAIM_ID_V1_DOMAIN[:10] == CLAIM_ID_V2_DOMAIN[:10]
    assert CLAIM_ID_V1_DOMAIN[10] != CLAIM_ID_V2_DOMAIN[10]


def test_v2_absent_budget_differs_from_zero_budget() -> None:
    zero = dataclasses.replace(BASE, dp_epsilon_budget=0.0)
    assert compute_claim_id_v2(zero) != compute_claim_id_v2(BASE)


def test_v2_negative_zero_budget_equals_zero_budget() -> None:
    zero = dataclasses.replace(BASE, dp_delta_budget=0.0)
    negative = dataclasses.replace(BASE, dp_delta_budget=-0.0)
    assert compute_claim_id_v2(zero) == compute_claim_id_v2(negative)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_v2_refuses_bad_dp_budgets(value: float) -> None:
    with pytest.raises(InvalidArgument, match="dp_epsilon_budget must be finite and >= 0"):
        dataclasses.replace(BASE, dp_epsilon_budget=value)


@pytest.mark.parametrize(("field", "value"), [("epoch_size", 2**64), ("oracle_num_symbols", -1)])
def test_v2_refuses_out_of_range_integers(field: str, value: int) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(InvalidArgument, match=field):
        dataclasses.replace(BASE, **changes)


@given(name=st.text(max_size=6), ref=st.text(max_size=6), cut=st.integers(0, 12))
def test_v2_moving_text_between_fields_changes_the_id(name: str, ref: str, cut: int) -> None:
    joined = name + ref
    if not joined.isascii():
        return
    a = dataclasses.replace(BASE, claim_name=name, holdout_ref=ref)
    b = dataclasses.replace(BASE, claim_name=joined[:cut], holdout_ref=joined[cut:])
    same = (name, ref) == (joined[:cut], joined[cut:])
    assert (compute_claim_id_v2(a) == compute_claim_id_v2(b)) is same


# --- dependency Merkle root ----------------------------------------------------------------------


def test_empty_dependency_root_is_hash_of_nothing() -> None:
    assert compute_dependency_merkle_root([]) == H(b"")


def test_single_dependency_root_is_its_leaf_hash() -> None:
    assert compute_dependency_merkle_root([b"\x09" * 32]) == H(b"\x09" * 32)


def test_three_dependencies_sort_and_duplicate_the_odd_node() -> None:
    """Spec 20 §11 scenario 4: {0x09, 0x02, 0x07} * 32 in any order."""
    a, b, c = (H(bytes([n]) * 32) for n in (0x02, 0x07, 0x09))
    expected = H(H(a + b) + H(c + c))
    items = [b"\x09" * 32, b"\x02" * 32, b"\x07" * 32]
    assert compute_dependency_merkle_root(items) == expected
    assert compute_dependency_merkle_root(reversed(items)) == expected


def test_dependency_items_must_be_32_bytes() -> None:
    with pytest.raises(InvalidArgument):
        compute_dependency_merkle_root([b"\x01" * 31])


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=9))
def test_dependency_root_ignores_order(items: list[bytes]) -> None:
    assert compute_dependency_merkle_root(items) == compute_dependency_merkle_root(items[::-1])
