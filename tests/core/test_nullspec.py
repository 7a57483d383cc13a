"""NullSpec contracts: id, canonical bytes, signatures, registry checks (spec 50 §3.4, §3.6)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.governance import (
    GovernanceRejected,
    RejectReason,
    TrustedKeys,
    public_key_bytes,
    signing_key_from_seed,
)
from evidenceos.core.nullspec import (
    NULLSPEC_SCHEMA_V1,
    ZERO_NULLSPEC_ID,
    DirichletMultinomialMixture,
    DiscreteBuckets,
    LikelihoodRatioFixedAlt,
    NullSpecContract,
    NullSpecId,
    NullSpecReason,
    NullSpecRejected,
    NullSpecSignatureError,
    ParametricBernoulli,
    authority_key_id,
    p0_from_counts,
    parse_authority_key,
    sign_detached,
    verify_eprocess_pairing,
    verify_nullspec_signature,
    verify_registry_entry,
)
from evidenceos.errors import InvalidArgument, SignatureError

K9 = signing_key_from_seed(bytes([0x09]) * 32)
K7 = signing_key_from_seed(bytes([0x07]) * 32)
AUTHORITIES = TrustedKeys({"op1": public_key_bytes(K9)})


def draft(**changes: Any) -> NullSpecContract:
    contract = NullSpecContract(
        oracle_id="accuracy.binary.v1",
        oracle_resolution_hash=bytes([1]) * 32,
        holdout_handle="holdout-a",
        epoch_created=1,
        ttl_epochs=10,
        kind=DiscreteBuckets((0.5, 0.5)),
        eprocess=DirichletMultinomialMixture((1.0, 1.0)),
        created_by="op1",
    )
    return replace(contract, **changes)


def signed(**changes: Any) -> NullSpecContract:
    return draft(**changes).signed(K9)


def signature_reason(contract: NullSpecContract) -> NullSpecReason:
    with pytest.raises((NullSpecRejected, NullSpecSignatureError)) as info:
        verify_nullspec_signature(contract, AUTHORITIES)
    exc = info.value
    assert isinstance(exc, NullSpecRejected | NullSpecSignatureError)
    assert str(exc).startswith(exc.reason.value)
    return exc.reason


# --- id and canonical bytes (§3.4, §10 scenarios 22, 28) ----------------------------------------


def test_id_ignores_id_and_signature_fields() -> None:
    contract = signed()
    assert contract.nullspec_id == hashlib.sha256(contract.signing_payload_bytes()).digest()
    assert contract.compute_id() == draft().compute_id()
    assert replace(contract, nullspec_id=NullSpecId(bytes([7]) * 32)).compute_id() == (
        contract.nullspec_id
    )
    assert replace(contract, signature_ed25519=b"").compute_id() == contract.nullspec_id
    assert contract.id_hex == contract.nullspec_id.hex()


def test_canonical_bytes_carry_real_id_and_signature() -> None:
    contract = signed()
    body = json.loads(contract.canonical_bytes())
    assert bytes(body["nullspec_id"]) == contract.nullspec_id
    assert bytes(body["signature_ed25519"]) == contract.signature_ed25519
    assert contract.canonical_bytes() != contract.signing_payload_bytes()


def test_key_order_permutation_does_not_change_id() -> None:
    """Spec 50 §10 scenario 28."""
    contract = signed()
    items = list(contract.to_json().items())
    random.Random(4).shuffle(items)
    pretty = json.dumps(dict(items), indent=2).encode()
    parsed = NullSpecContract.from_bytes(pretty)
    assert parsed == contract
    assert parsed.compute_id() == contract.nullspec_id
    assert len(parsed.canonical_bytes()) == len(contract.canonical_bytes())


def test_json_round_trip_and_struct_order() -> None:
    contract = signed(calibration_manifest_hash=bytes([0xAA]) * 32)
    body = contract.to_json()
    assert list(body) == [
        "schema",
        "nullspec_id",
        "oracle_id",
        "oracle_resolution_hash",
        "holdout_handle",
        "epoch_created",
        "ttl_epochs",
        "kind",
        "eprocess",
        "calibration_manifest_hash",
        "created_by",
        "signature_ed25519",
    ]
    assert body["calibration_manifest_hash"] == [0xAA] * 32
    assert NullSpecContract.from_json(body) == contract


def test_bernoulli_variant_round_trip() -> None:
    contract = signed(kind=ParametricBernoulli(0.5), eprocess=LikelihoodRatioFixedAlt((0.5, 0.5)))
    assert b'"kind":{"ParametricBernoulli":{"p":0.5}}' in contract.canonical_bytes()
    assert NullSpecContract.from_bytes(contract.canonical_bytes()) == contract


def test_integer_floats_read_as_floats() -> None:
    body: dict[str, Any] = draft().to_json()
    body["kind"] = {"DiscreteBuckets": {"p0": [1, 0]}}
    parsed = NullSpecContract.from_json(body)
    assert isinstance(parsed.kind, DiscreteBuckets)
    assert parsed.kind.p0 == (1.0, 0.0)
    assert b'"p0":[1.0,0.0]' in parsed.canonical_bytes()


def test_missing_calibration_reads_as_null() -> None:
    body = draft().to_json()
    del body["calibration_manifest_hash"]
    assert NullSpecContract.from_json(body) == draft()


@pytest.mark.parametrize(
    "field",
    [
        "schema",
        "nullspec_id",
        "oracle_id",
        "oracle_resolution_hash",
        "holdout_handle",
        "epoch_created",
        "ttl_epochs",
        "kind",
        "eprocess",
        "created_by",
        "signature_ed25519",
    ],
)
def test_required_fields(field: str) -> None:
    body = draft().to_json()
    del body[field]
    with pytest.raises(InvalidArgument, match=field):
        NullSpecContract.from_json(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nullspec_id", [0] * 31),
        ("nullspec_id", "00" * 32),
        ("oracle_resolution_hash", [256] + [0] * 31),
        ("calibration_manifest_hash", [True] * 32),
        ("signature_ed25519", [-1]),
        ("epoch_created", -1),
        ("ttl_epochs", 2**64),
        ("ttl_epochs", 1.5),
        ("oracle_id", 7),
        ("kind", {"DiscreteBuckets": {"p0": [0.5]}, "ParametricBernoulli": {"p": 0.5}}),
        ("kind", {"Unknown": {}}),
        ("kind", {"DiscreteBuckets": {"p0": "x"}}),
        ("kind", {"DiscreteBuckets": {"p0": [True]}}),
        ("kind", {"DiscreteBuckets": {"p0": [10**400]}}),
        ("kind", {"DiscreteBuckets": []}),
        ("kind", {"ParametricBernoulli": {}}),
        ("eprocess", {"LikelihoodRatioFixedAlt": {"alt": None}}),
        ("eprocess", {"Other": {"alt": []}}),
    ],
)
def test_field_types(field: str, value: object) -> None:
    body: dict[str, Any] = draft().to_json()
    body[field] = value
    with pytest.raises(InvalidArgument):
        NullSpecContract.from_json(body)


def test_non_finite_floats_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="finite"):
        DiscreteBuckets((0.5, math.nan))
    with pytest.raises(InvalidArgument, match="finite"):
        ParametricBernoulli(math.inf)
    with pytest.raises(InvalidArgument):
        NullSpecContract.from_bytes(draft().canonical_bytes().replace(b"[0.5,0.5]", b"[0.5,NaN]"))


def test_constructor_checks_byte_lengths() -> None:
    with pytest.raises(InvalidArgument):
        draft(oracle_resolution_hash=b"\x01" * 31)
    with pytest.raises(InvalidArgument):
        draft(calibration_manifest_hash=b"\x01" * 33)
    with pytest.raises(InvalidArgument):
        draft(nullspec_id=NullSpecId(b""))


def test_expiry_boundary() -> None:
    """Spec 50 §10 scenario 25: epoch_created 10, ttl 20."""
    contract = draft(epoch_created=10, ttl_epochs=20)
    assert not contract.is_expired(30)
    assert contract.is_expired(31)
    saturated = draft(epoch_created=2**64 - 1, ttl_epochs=5)
    assert not saturated.is_expired(2**64 - 1)


# --- embedded signature (§3.4, §10 scenarios 23, 24) --------------------------------------------


def test_valid_signature_verifies() -> None:
    verify_nullspec_signature(signed(), AUTHORITIES)


def test_flipping_first_signature_byte_fails() -> None:
    contract = signed()
    flipped = bytes([contract.signature_ed25519[0] ^ 1]) + contract.signature_ed25519[1:]
    assert signature_reason(replace(contract, signature_ed25519=flipped)) is (
        NullSpecReason.BAD_SIGNATURE
    )


def test_empty_authority_set_reports_unknown_key_id() -> None:
    with pytest.raises(SignatureError, match="unknown key id") as info:
        verify_nullspec_signature(signed(), TrustedKeys())
    assert isinstance(info.value, NullSpecSignatureError)
    assert info.value.reason is NullSpecReason.UNKNOWN_KEY


def test_wrong_schema() -> None:
    assert signature_reason(signed(schema="evidenceos.nullspec.v2")) is NullSpecReason.SCHEMA


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_length(length: int) -> None:
    contract = replace(signed(), signature_ed25519=b"\x01" * length)
    assert signature_reason(contract) is NullSpecReason.SIGNATURE_MALFORMED


def test_signed_by_other_key() -> None:
    contract = draft().signed(K7)
    assert signature_reason(contract) is NullSpecReason.BAD_SIGNATURE


def test_wrong_id_with_valid_signature() -> None:
    contract = replace(signed(), nullspec_id=NullSpecId(bytes(32)))
    assert signature_reason(contract) is NullSpecReason.ID_MISMATCH


def test_edited_field_fails() -> None:
    contract = replace(signed(), ttl_epochs=11)
    assert signature_reason(contract) is NullSpecReason.BAD_SIGNATURE


# --- registry entries (§3.6, §10 scenarios 26, 27) -----------------------------------------------


def registry_reason(contract: NullSpecContract, **overrides: Any) -> NullSpecReason:
    arguments: dict[str, Any] = {
        "folder_oracle_id": contract.oracle_id,
        "file_stem": contract.id_hex,
        "detached_signature": sign_detached(contract, K9),
        "authorities": AUTHORITIES,
    }
    arguments.update(overrides)
    with pytest.raises((NullSpecRejected, NullSpecSignatureError)) as info:
        verify_registry_entry(contract, **arguments)
    exc = info.value
    assert isinstance(exc, NullSpecRejected | NullSpecSignatureError)
    return exc.reason


def test_registry_accepts_signed_contract() -> None:
    contract = signed()
    verify_registry_entry(
        contract,
        folder_oracle_id="accuracy.binary.v1",
        file_stem=contract.id_hex,
        detached_signature="  " + sign_detached(contract, K9).upper() + "\n",
        authorities=AUTHORITIES,
    )


def test_registry_detached_signature_may_come_from_any_authority() -> None:
    contract = signed()
    both = TrustedKeys({"op1": public_key_bytes(K9), "op2": public_key_bytes(K7)})
    verify_registry_entry(
        contract,
        folder_oracle_id=contract.oracle_id,
        file_stem=contract.id_hex,
        detached_signature=sign_detached(contract, K7),
        authorities=both,
    )


def test_registry_refusals() -> None:
    contract = signed()
    assert registry_reason(contract, folder_oracle_id="other") is NullSpecReason.FOLDER_MISMATCH
    assert registry_reason(contract, file_stem=contract.id_hex.upper()) is (
        NullSpecReason.STEM_MISMATCH
    )
    assert registry_reason(contract, detached_signature="") is NullSpecReason.DETACHED_MALFORMED
    assert registry_reason(contract, detached_signature="ab " * 64) is (
        NullSpecReason.DETACHED_MALFORMED
    )
    assert registry_reason(contract, detached_signature=sign_detached(contract, K7)) is (
        NullSpecReason.DETACHED_BAD
    )
    # The detached signature covers the canonical bytes, not the signing payload.
    over_payload = K9.sign(contract.signing_payload_bytes()).hex()
    assert registry_reason(contract, detached_signature=over_payload) is (
        NullSpecReason.DETACHED_BAD
    )
    assert registry_reason(signed(schema="x")) is NullSpecReason.SCHEMA
    assert registry_reason(contract, authorities=TrustedKeys()) is NullSpecReason.UNKNOWN_KEY


def test_authority_key_files() -> None:
    assert authority_key_id("op1.pub") == "op1"
    assert authority_key_id("op1") == "op1"
    assert authority_key_id("team.op1.key") == "team.op1"
    key = public_key_bytes(K9)
    assert parse_authority_key(b"  " + key.hex().encode() + b"\n") == key
    for bad in [b"zz", key.hex()[:-2].encode(), b"\xff\xfe", b"ab cd"]:
        with pytest.raises(NullSpecRejected) as info:
            parse_authority_key(bad)
        assert info.value.reason is NullSpecReason.AUTHORITY_KEY_MALFORMED
    with pytest.raises(GovernanceRejected) as point:
        TrustedKeys({"bad": parse_authority_key((bytes([1]) + bytes(31)).hex().encode())})
    assert point.value.reason is RejectReason.TRUSTED_KEY_POINT


# --- create helper and execution pairings (§4.1, §3.4, §10 scenario 31) -------------------------


def test_p0_from_counts() -> None:
    assert p0_from_counts([0, 1, 2]) == (1 / 6, 2 / 6, 3 / 6)
    assert p0_from_counts([5]) == (1.0,)
    with pytest.raises(InvalidArgument, match="counts must be non-empty"):
        p0_from_counts([])
    with pytest.raises(InvalidArgument):
        p0_from_counts([-1])


def test_p0_uses_left_to_right_sum() -> None:
    counts = [2**53, 1, 1]
    denominator = 0.0
    for c in counts:
        denominator += float(c) + 1.0
    assert p0_from_counts(counts) == tuple((float(c) + 1.0) / denominator for c in counts)


@pytest.mark.parametrize(
    ("kind", "eprocess", "ok"),
    [
        (DiscreteBuckets((0.5, 0.5)), DirichletMultinomialMixture((1.0, 1.0)), True),
        (DiscreteBuckets((0.5, 0.5)), DirichletMultinomialMixture((1.0,)), False),
        (DiscreteBuckets((0.5, 0.5)), DirichletMultinomialMixture((1.0, 0.0)), False),
        (ParametricBernoulli(0.5), LikelihoodRatioFixedAlt((0.4, 0.6)), True),
        (ParametricBernoulli(1.0), LikelihoodRatioFixedAlt((0.4, 0.6)), False),
        (ParametricBernoulli(0.5), LikelihoodRatioFixedAlt((0.4,)), False),
        (DiscreteBuckets((0.5, 0.5)), LikelihoodRatioFixedAlt((0.4, 0.6)), False),
        (ParametricBernoulli(0.5), DirichletMultinomialMixture((1.0, 1.0)), False),
    ],
)
def test_eprocess_pairing(kind: Any, eprocess: Any, ok: bool) -> None:
    contract = draft(kind=kind, eprocess=eprocess)
    if ok:
        verify_eprocess_pairing(contract)
    else:
        with pytest.raises(NullSpecRejected) as info:
            verify_eprocess_pairing(contract)
        assert info.value.reason is NullSpecReason.PAIRING


# --- Hypothesis ---------------------------------------------------------------------------------

_floats = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(alphabet='ab",:{}[]\\ é', max_size=5)
_u64 = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))
_bytes32 = st.one_of(st.just(bytes(32)), st.binary(min_size=32, max_size=32))
_kinds = st.one_of(
    st.builds(DiscreteBuckets, st.lists(_floats, max_size=3).map(tuple)),
    st.builds(ParametricBernoulli, _floats),
)
_eprocesses = st.one_of(
    st.builds(DirichletMultinomialMixture, st.lists(_floats, max_size=3).map(tuple)),
    st.builds(LikelihoodRatioFixedAlt, st.lists(_floats, max_size=3).map(tuple)),
)
_contracts = st.builds(
    NullSpecContract,
    oracle_id=_text,
    oracle_resolution_hash=_bytes32,
    holdout_handle=_text,
    epoch_created=_u64,
    ttl_epochs=_u64,
    kind=_kinds,
    eprocess=_eprocesses,
    created_by=_text,
    calibration_manifest_hash=st.one_of(st.none(), _bytes32),
    nullspec_id=st.one_of(st.just(ZERO_NULLSPEC_ID), _bytes32.map(NullSpecId)),
    signature_ed25519=st.binary(max_size=3),
    schema=st.sampled_from([NULLSPEC_SCHEMA_V1, "x"]),
)


@settings(max_examples=200)
@given(st.lists(_contracts, min_size=2, max_size=5))
def test_canonical_bytes_are_deterministic_and_injective(
    contracts: list[NullSpecContract],
) -> None:
    for contract in contracts:
        canonical = contract.canonical_bytes()
        assert canonical == contract.canonical_bytes()
        assert NullSpecContract.from_bytes(canonical).canonical_bytes() == canonical
        assert NullSpecContract.from_bytes(canonical) == contract
    for a in contracts:
        for b in contracts:
            if a != b:
                assert a.canonical_bytes() != b.canonical_bytes()
            unsigned_a = replace(a, nullspec_id=ZERO_NULLSPEC_ID, signature_ed25519=b"")
            unsigned_b = replace(b, nullspec_id=ZERO_NULLSPEC_ID, signature_ed25519=b"")
            if unsigned_a != unsigned_b:
                assert a.compute_id() != b.compute_id()
