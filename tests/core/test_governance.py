"""Governance records, events and the hash chain (spec 50 §1-§3, §6.3; DESIGN §1, §6, §9).

Every refusal is checked by its :class:`RejectReason`, not just by exception type.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.governance import (
    CANARY_RESET_DEFAULT_MAX_AGE_SECS,
    DOMAIN_GOVERNANCE_EVENT_V1,
    GENESIS_EVENT_HASH,
    ChainedGovernanceEvent,
    DisjointnessAttestation,
    EpochControl,
    EventHash,
    GovernanceChainError,
    GovernanceEvent,
    GovernanceRejected,
    GovernanceSignatureError,
    JsonValue,
    OperatorKeyId,
    OracleOperatorConfig,
    OracleOperatorRecord,
    RejectReason,
    TrustedKeys,
    canary_reset_payload,
    canonical_json_bytes,
    chain_governance_event,
    compute_event_hash,
    decode_hex,
    is_record_expired,
    load_json_bytes,
    oracle_record_signed_payload,
    oracle_ttl_set_payload,
    parse_canary_reset_document,
    provenance_failures,
    public_key_bytes,
    sign_governance_event,
    signing_key_from_seed,
    verify_canary_reset,
    verify_ed25519_strict,
    verify_epoch_control,
    verify_governance_chain,
    verify_governance_event,
    verify_oracle_config,
    verify_oracle_record,
)
from evidenceos.errors import ConfigError, InvalidArgument, LogIntegrityError, SignatureError

NOW = 1_700_000_000
K7 = signing_key_from_seed(bytes([0x07]) * 32)
K9 = signing_key_from_seed(bytes([0x09]) * 32)
OPS_K1 = OperatorKeyId("ops-k1")
OPS_K2 = OperatorKeyId("ops-k2")
TRUSTED = TrustedKeys({"ops-k1": public_key_bytes(K7)})

IDENTITY_POINT = bytes([1]) + bytes(31)
# Edwards25519 base point B (RFC 8032 §5.1) and the group order L.
BASE_POINT = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
SMALL_ORDER_POINTS = [
    IDENTITY_POINT,
    bytes(32),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]


def full_record(**changes: object) -> OracleOperatorRecord:
    """Spec 50 §10 scenario 1's record: complete provenance, signed by K7 as ops-k1."""
    record = OracleOperatorRecord(
        oracle_id="oracle-a",
        ttl_epochs=12,
        updated_at_epoch=NOW,
        key_id=OPS_K1,
        calibration_manifest_hash_hex="ab" * 32,
        calibration_epoch=10,
        disjointness_attestation=DisjointnessAttestation(
            "oracle_disjointness_v1", "global/settle", "cd" * 32
        ),
    )
    return replace(record, **changes).signed(K7)  # type: ignore[arg-type]


def reason_of(exc: BaseException) -> RejectReason:
    assert isinstance(exc, GovernanceRejected | GovernanceSignatureError)
    assert str(exc).startswith(exc.reason.value)
    return exc.reason


def rejected(record: OracleOperatorRecord, *, now: int = NOW, enforce: bool = True) -> RejectReason:
    with pytest.raises((GovernanceRejected, GovernanceSignatureError)) as info:
        verify_oracle_record(record, TRUSTED, now_unix_secs=now, enforce_provenance=enforce)
    return reason_of(info.value)


# --- trusted_oracle_keys.json -------------------------------------------------------------------


def test_trusted_keys_parse_and_round_trip() -> None:
    data = json.dumps({"keys": {"ops-k1": public_key_bytes(K7).hex().upper()}}).encode()
    keys = TrustedKeys.from_bytes(data)
    assert keys.get("ops-k1") == public_key_bytes(K7)
    assert keys.get("ops-k2") is None
    assert len(keys) == 1
    assert keys.to_json() == {"keys": {"ops-k1": public_key_bytes(K7).hex()}}
    assert TrustedKeys.from_json(keys.to_json()) == keys


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"{}", RejectReason.DECODE_TRUSTED_KEYS, id="empty-object"),
        pytest.param(b'{"keys": []}', RejectReason.DECODE_TRUSTED_KEYS, id="keys-not-object"),
        pytest.param(b"not json", RejectReason.DECODE_TRUSTED_KEYS, id="not-json"),
        pytest.param(b'{"keys": {"a": 7}}', RejectReason.DECODE_TRUSTED_KEYS, id="value-not-str"),
        pytest.param(
            b'{"keys": {"a": "00", "a": "11"}}', RejectReason.DECODE_TRUSTED_KEYS, id="dup-key-id"
        ),
        pytest.param(b'{"keys": {"a": "zz"}}', RejectReason.TRUSTED_KEY_HEX, id="not-hex"),
        pytest.param(b'{"keys": {"a": "ab cd"}}', RejectReason.TRUSTED_KEY_HEX, id="spaced-hex"),
        pytest.param(b'{"keys": {"a": "abcd"}}', RejectReason.TRUSTED_KEY_LENGTH, id="short"),
        pytest.param(
            json.dumps({"keys": {"a": IDENTITY_POINT.hex()}}).encode(),
            RejectReason.TRUSTED_KEY_POINT,
            id="small-order",
        ),
        pytest.param(
            json.dumps({"keys": {"a": "02" + "00" * 31}}).encode(),
            RejectReason.TRUSTED_KEY_POINT,
            id="not-on-curve",
        ),
    ],
)
def test_trusted_keys_refusals(data: bytes, reason: RejectReason) -> None:
    with pytest.raises(GovernanceRejected) as info:
        TrustedKeys.from_bytes(data)
    assert info.value.reason is reason
    assert isinstance(info.value, ConfigError)


def test_trusted_keys_rejects_wrong_length_bytes() -> None:
    with pytest.raises(GovernanceRejected) as info:
        TrustedKeys({"a": b"\x01" * 31})
    assert info.value.reason is RejectReason.TRUSTED_KEY_LENGTH


def test_point_check_on_curve_key_is_rejected() -> None:
    # y = 2 is not the y-coordinate of any curve point (spec 50 §3.1 "valid Ed25519 point").
    assert decode_hex("02" + "00" * 31) is not None
    with pytest.raises(GovernanceRejected):
        TrustedKeys({"a": bytes([2]) + bytes(31)})


# --- oracle operator record: verification (spec 50 §3.2, §6.3, §10 scenarios 1-3, 6, 7) -------


def test_full_record_verifies_in_both_modes() -> None:
    record = full_record()
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=True)
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)
    assert provenance_failures(record, NOW) == ()


@pytest.mark.parametrize("enforce", [True, False])
def test_unsupported_schema_version(enforce: bool) -> None:
    reason = rejected(full_record(schema_version=2), enforce=enforce)
    assert reason is RejectReason.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize("enforce", [True, False])
def test_zero_ttl(enforce: bool) -> None:
    assert rejected(full_record(ttl_epochs=0), enforce=enforce) is RejectReason.TTL_ZERO


@pytest.mark.parametrize("enforce", [True, False])
def test_record_dated_in_future_is_refused_in_all_modes(enforce: bool) -> None:
    record = full_record(updated_at_epoch=NOW + 3600)
    assert rejected(record, enforce=enforce) is RejectReason.RECORD_IN_FUTURE


def test_expired_ttl_only_matters_when_enforcing() -> None:
    record = full_record(updated_at_epoch=NOW - 10, ttl_epochs=5)
    assert rejected(record) is RejectReason.RECORD_EXPIRED
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)
    fresh = full_record(updated_at_epoch=NOW - 10, ttl_epochs=86_400)
    verify_oracle_record(fresh, TRUSTED, now_unix_secs=NOW, enforce_provenance=True)


def test_ttl_expiry_boundary_is_inclusive() -> None:
    record = full_record(updated_at_epoch=NOW, ttl_epochs=5)
    assert not is_record_expired(record, NOW)
    assert not is_record_expired(record, NOW + 5)
    assert is_record_expired(record, NOW + 6)
    assert not is_record_expired(record, NOW - 100)  # future-dated: refused elsewhere
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW + 5, enforce_provenance=True)
    assert rejected(record, now=NOW + 6) is RejectReason.RECORD_EXPIRED


def test_missing_calibration_hash() -> None:
    record = full_record(calibration_manifest_hash_hex=None)
    assert rejected(record) is RejectReason.CALIBRATION_HASH_MISSING
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("value", ["ab" * 31, "zz" * 32, "ab" * 33])
def test_malformed_calibration_hash_refused_in_all_modes(enforce: bool, value: str) -> None:
    record = full_record(calibration_manifest_hash_hex=value)
    assert rejected(record, enforce=enforce) is RejectReason.CALIBRATION_HASH_MALFORMED


def test_uppercase_calibration_hash_is_accepted_and_signed_as_stored() -> None:
    record = full_record(calibration_manifest_hash_hex="AB" * 32)
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=True)
    assert b'"calibration_manifest_hash_hex":"' + b"AB" * 32 in record.signing_payload_bytes()


def test_missing_attestation() -> None:
    record = full_record(disjointness_attestation=None)
    assert rejected(record) is RejectReason.ATTESTATION_MISSING
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)


@pytest.mark.parametrize(
    ("attestation", "reason"),
    [
        pytest.param(
            DisjointnessAttestation("oracle_disjointness_v2", "global/settle", "cd" * 32),
            RejectReason.ATTESTATION_KIND,
            id="wrong-kind",
        ),
        pytest.param(
            DisjointnessAttestation("oracle_disjointness_v1", " \t ", "cd" * 32),
            RejectReason.ATTESTATION_SCOPE,
            id="blank-scope",
        ),
        pytest.param(
            DisjointnessAttestation("oracle_disjointness_v1", "", "cd" * 32),
            RejectReason.ATTESTATION_SCOPE,
            id="empty-scope",
        ),
        pytest.param(
            DisjointnessAttestation("oracle_disjointness_v1", "global/settle", "cd" * 31),
            RejectReason.ATTESTATION_PROOF_HASH,
            id="short-proof-hash",
        ),
        pytest.param(
            DisjointnessAttestation("oracle_disjointness_v1", "global/settle", "xy" * 32),
            RejectReason.ATTESTATION_PROOF_HASH,
            id="non-hex-proof-hash",
        ),
    ],
)
def test_bad_attestation(attestation: DisjointnessAttestation, reason: RejectReason) -> None:
    record = full_record(disjointness_attestation=attestation)
    assert rejected(record) is reason
    # Without enforcement the attestation is signed but not inspected (spec 50 §3.2 step 7).
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)


def test_provenance_failures_lists_every_reason_in_order() -> None:
    record = full_record(
        updated_at_epoch=NOW - 100,
        ttl_epochs=1,
        calibration_manifest_hash_hex=None,
        disjointness_attestation=DisjointnessAttestation("other", " ", "00"),
    )
    assert provenance_failures(record, NOW) == (
        RejectReason.RECORD_EXPIRED,
        RejectReason.CALIBRATION_HASH_MISSING,
        RejectReason.ATTESTATION_KIND,
        RejectReason.ATTESTATION_SCOPE,
        RejectReason.ATTESTATION_PROOF_HASH,
    )
    assert rejected(record) is RejectReason.RECORD_EXPIRED
    no_attestation = full_record(disjointness_attestation=None, calibration_manifest_hash_hex="x")
    assert provenance_failures(no_attestation, NOW) == (
        RejectReason.CALIBRATION_HASH_MALFORMED,
        RejectReason.ATTESTATION_MISSING,
    )


@pytest.mark.parametrize("enforce", [True, False])
def test_untrusted_key_id(enforce: bool) -> None:
    """Spec 50 §10 scenario 3: signed and labelled ops-k2 while only ops-k1 is trusted."""
    record = replace(full_record(key_id=OPS_K2), signature_ed25519="")
    record = record.signed(K9)
    reason = rejected(record, enforce=enforce)
    assert reason is RejectReason.RECORD_UNKNOWN_KEY


def test_untrusted_key_is_a_signature_error() -> None:
    with pytest.raises(SignatureError):
        verify_oracle_record(
            full_record(key_id=OPS_K2), TRUSTED, now_unix_secs=NOW, enforce_provenance=False
        )


def test_signed_ttl_differs_from_stored_ttl() -> None:
    """Spec 50 §10 scenario 2: record signed with ttl 4 but the file says ttl 5."""
    signed_with_4 = full_record(ttl_epochs=4)
    tampered = replace(signed_with_4, ttl_epochs=5)
    assert rejected(tampered) is RejectReason.RECORD_BAD_SIGNATURE


def test_signed_by_wrong_key_under_trusted_label() -> None:
    record = replace(full_record(), signature_ed25519="").signed(K9)
    assert rejected(record) is RejectReason.RECORD_BAD_SIGNATURE


@pytest.mark.parametrize(
    "signature",
    ["", "abc", "zz" * 64, "ab" * 63, "ab" * 65],
    ids=["empty", "odd", "non-hex", "63-bytes", "65-bytes"],
)
def test_malformed_signature(signature: str) -> None:
    record = replace(full_record(), signature_ed25519=signature)
    assert rejected(record) is RejectReason.RECORD_SIGNATURE_MALFORMED


def test_any_signed_field_change_breaks_the_signature() -> None:
    record = full_record(nonoverlap_proof_uri="https://example.invalid/p")
    changes: list[dict[str, object]] = [
        {"oracle_id": "oracle-b"},
        {"updated_at_epoch": NOW - 1},
        {"calibration_manifest_hash_hex": "ac" * 32},
        {"calibration_epoch": 11},
        {"calibration_epoch": None},
        {"nonoverlap_proof_uri": None},
        {
            "disjointness_attestation": DisjointnessAttestation(
                "oracle_disjointness_v1", "g", "cd" * 32
            )
        },
    ]
    for change in changes:
        tampered = replace(record, **change)  # type: ignore[arg-type]
        assert rejected(tampered) is RejectReason.RECORD_BAD_SIGNATURE, change


# --- oracle operator record: model and JSON ------------------------------------------------------


def test_record_json_round_trip() -> None:
    record = full_record(nonoverlap_proof_uri="s3://bucket/proof")
    body = record.to_json()
    assert list(body) == [
        "schema_version",
        "ttl_epochs",
        "calibration_manifest_hash_hex",
        "calibration_epoch",
        "disjointness_attestation",
        "nonoverlap_proof_uri",
        "updated_at_epoch",
        "key_id",
        "signature_ed25519",
    ]
    assert OracleOperatorRecord.from_json("oracle-a", body) == record


def test_record_optional_fields_absent_or_empty() -> None:
    minimal = full_record(
        calibration_manifest_hash_hex=None, calibration_epoch=None, disjointness_attestation=None
    )
    body = {
        "schema_version": 1,
        "ttl_epochs": 12,
        "updated_at_epoch": NOW,
        "key_id": "ops-k1",
        "signature_ed25519": minimal.signature_ed25519,
        "extra_unknown_field": {"ignored": True},
    }
    assert OracleOperatorRecord.from_json("oracle-a", body) == minimal
    # "" and absent sign identically (spec 50 §3.2 asymmetry), so "" reads as None.
    with_empty = dict(body, calibration_manifest_hash_hex="")
    assert OracleOperatorRecord.from_json("oracle-a", with_empty) == minimal


def test_record_refuses_empty_calibration_string_at_construction() -> None:
    with pytest.raises(InvalidArgument):
        OracleOperatorRecord("o", 1, NOW, OPS_K1, calibration_manifest_hash_hex="")


def test_legacy_string_attestation_is_refused() -> None:
    body = full_record().to_json()
    body["disjointness_attestation"] = "operator-attested-disjoint"
    with pytest.raises(InvalidArgument, match="legacy string attestation"):
        OracleOperatorRecord.from_json("oracle-a", body)


@pytest.mark.parametrize(
    "change",
    [
        {"ttl_epochs": None},
        {"ttl_epochs": -1},
        {"ttl_epochs": 2**64},
        {"ttl_epochs": 1.0},
        {"ttl_epochs": True},
        {"schema_version": 2**32},
        {"key_id": 7},
        {"calibration_epoch": "10"},
        {"disjointness_attestation": {"statement_type": "oracle_disjointness_v1"}},
    ],
)
def test_record_field_types(change: dict[str, object]) -> None:
    body = full_record().to_json()
    body.update(change)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        OracleOperatorRecord.from_json("oracle-a", body)


@pytest.mark.parametrize("missing", ["schema_version", "ttl_epochs", "updated_at_epoch", "key_id"])
def test_record_required_fields(missing: str) -> None:
    body = full_record().to_json()
    del body[missing]
    with pytest.raises(InvalidArgument, match=missing):
        OracleOperatorRecord.from_json("oracle-a", body)


def test_oracle_config_file() -> None:
    a, b = full_record(oracle_id="b-oracle"), full_record(oracle_id="a-oracle")
    config = OracleOperatorConfig((a, b))
    assert [r.oracle_id for r in config.records] == ["a-oracle", "b-oracle"]
    data = json.dumps(config.to_json(), indent=2).encode()
    assert OracleOperatorConfig.from_bytes(data) == config
    assert config.get("a-oracle") == b
    assert config.get("missing") is None
    with pytest.raises(InvalidArgument, match="decode oracle config failed"):
        OracleOperatorConfig.from_bytes(b"{}")
    with pytest.raises(InvalidArgument, match="duplicate key"):
        OracleOperatorConfig.from_bytes(b'{"oracles": {"x": {}, "x": {}}}')
    with pytest.raises(InvalidArgument, match="duplicate oracle_id"):
        OracleOperatorConfig((a, a))


def test_oracle_config_verification_reports_first_id_in_sorted_order() -> None:
    good = full_record(oracle_id="b-oracle")
    config = OracleOperatorConfig(
        (
            full_record(oracle_id="z-oracle", ttl_epochs=0),
            good,
            full_record(oracle_id="c", key_id=OPS_K2),
        )
    )
    with pytest.raises(GovernanceSignatureError) as info:
        verify_oracle_config(config, TRUSTED, now_unix_secs=NOW, enforce_provenance=True)
    assert info.value.reason is RejectReason.RECORD_UNKNOWN_KEY
    assert "'c'" in str(info.value)
    verify_oracle_config(
        OracleOperatorConfig((good,)), TRUSTED, now_unix_secs=NOW, enforce_provenance=True
    )


def test_attestation_from_proof_hashes_exact_bytes() -> None:
    attestation = DisjointnessAttestation.from_proof("global/settle", b'{"proof": 1}\n')
    assert attestation.statement_type == "oracle_disjointness_v1"
    assert attestation.proof_sha256_hex == hashlib.sha256(b'{"proof": 1}\n').hexdigest()
    with pytest.raises(InvalidArgument, match="disjointness proof must be non-empty"):
        DisjointnessAttestation.from_proof("global/settle", b"")
    with pytest.raises(InvalidArgument, match="disjointness_scope must be non-empty"):
        DisjointnessAttestation.from_proof("  ", b"x")


def test_signing_key_seed_length() -> None:
    with pytest.raises(InvalidArgument, match="32-byte seed"):
        signing_key_from_seed(bytes(64))


# --- epoch control (spec 50 §3.3, §10 scenarios 4, 5) --------------------------------------------


def test_epoch_control_without_forced_epoch_needs_nothing() -> None:
    verify_epoch_control(EpochControl.from_bytes(b"{}"), TrustedKeys())
    verify_epoch_control(EpochControl.from_bytes(b'{"forced_epoch": null}'), TrustedKeys())


def test_epoch_control_round_trip() -> None:
    control = EpochControl.sign(
        K7, forced_epoch=7, updated_at_epoch=NOW, key_id=OPS_K1, event_id="aa" * 32
    )
    body = control.to_json()
    assert list(body) == sorted(body)
    assert EpochControl.from_json(body) == control
    verify_epoch_control(control, TRUSTED)
    no_event = replace(control, event_id=None)
    assert "event_id" not in no_event.to_json()


@pytest.mark.parametrize(
    ("control", "reason"),
    [
        pytest.param(
            EpochControl(5, None, OPS_K1, "ab" * 64),
            RejectReason.EPOCH_UPDATED_AT_MISSING,
            id="updated-at",
        ),
        pytest.param(
            EpochControl(5, 10, None, "ab" * 64), RejectReason.EPOCH_KEY_ID_MISSING, id="key-id"
        ),
        pytest.param(
            EpochControl(5, 10, OPS_K1, None), RejectReason.EPOCH_SIGNATURE_MISSING, id="signature"
        ),
        pytest.param(
            EpochControl.sign(K9, forced_epoch=5, updated_at_epoch=10, key_id=OPS_K2),
            RejectReason.EPOCH_UNKNOWN_KEY,
            id="unknown-key",
        ),
        pytest.param(
            EpochControl(5, 10, OPS_K1, "ab" * 63),
            RejectReason.EPOCH_SIGNATURE_MALFORMED,
            id="short-signature",
        ),
        pytest.param(
            EpochControl.sign(K9, forced_epoch=5, updated_at_epoch=10, key_id=OPS_K1),
            RejectReason.EPOCH_BAD_SIGNATURE,
            id="wrong-signer",
        ),
    ],
)
def test_epoch_control_refusals(control: EpochControl, reason: RejectReason) -> None:
    with pytest.raises((GovernanceRejected, GovernanceSignatureError)) as info:
        verify_epoch_control(control, TRUSTED)
    assert reason_of(info.value) is reason


def test_epoch_control_decode_errors() -> None:
    with pytest.raises(InvalidArgument, match="decode epoch control failed"):
        EpochControl.from_bytes(b'{"forced_epoch": -1}')
    with pytest.raises(InvalidArgument, match="decode epoch control failed"):
        EpochControl.from_bytes(b"[]")


def test_epoch_control_payload_needs_all_fields() -> None:
    with pytest.raises(InvalidArgument):
        EpochControl(forced_epoch=5).signing_payload_bytes()


# --- governance events (spec 50 §3.7, DESIGN §9) ------------------------------------------------


def make_event(epoch: int = NOW, **payload: object) -> GovernanceEvent:
    return sign_governance_event(
        K7,
        event_type="oracle_ttl_set",
        epoch=epoch,
        key_id=OPS_K1,
        payload=payload or oracle_ttl_set_payload("oracle-a", 12),  # type: ignore[arg-type]
    )


def test_event_json_round_trip_and_id() -> None:
    event = make_event()
    line = event.to_json()
    assert list(line) == [
        "event_id",
        "event_type",
        "epoch",
        "key_id",
        "payload",
        "signature_ed25519",
    ]
    assert line["event_id"] == hashlib.sha256(event.signed_bytes()).hexdigest()
    assert GovernanceEvent.from_json(json.loads(json.dumps(line))) == event


def test_event_payload_is_a_private_immutable_copy() -> None:
    payload: dict[str, Any] = {"oracle_id": "oracle-a", "nested": {"k": [1, 2]}}
    event = GovernanceEvent("x", NOW, OPS_K1, payload)
    before = event.signed_bytes()
    payload["oracle_id"] = "changed"
    payload["nested"]["k"].append(3)
    exported: Any = event.to_json()
    exported["payload"]["nested"]["k"].append(4)
    assert event.signed_bytes() == before
    with pytest.raises(TypeError):
        event.payload["oracle_id"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    "payload",
    [{"x": math.nan}, {"x": math.inf}, {"x": b"bytes"}, {1: "int key"}],
    ids=["nan", "inf", "bytes", "int-key"],
)
def test_event_payload_must_be_plain_json(payload: dict[object, object]) -> None:
    with pytest.raises(InvalidArgument):
        GovernanceEvent("x", NOW, OPS_K1, payload)  # type: ignore[arg-type]


def test_event_id_mismatch_on_read() -> None:
    line = make_event().to_json()
    line["event_id"] = "00" * 32
    with pytest.raises(GovernanceRejected) as info:
        GovernanceEvent.from_json(line)
    assert info.value.reason is RejectReason.EVENT_ID_MISMATCH


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        pytest.param(
            replace(make_event(), signature_ed25519=""), RejectReason.EVENT_UNSIGNED, id="unsigned"
        ),
        pytest.param(
            replace(make_event(), key_id=OPS_K2), RejectReason.EVENT_UNKNOWN_KEY, id="unknown-key"
        ),
        pytest.param(
            replace(make_event(), signature_ed25519="ab"),
            RejectReason.EVENT_SIGNATURE_MALFORMED,
            id="malformed",
        ),
        pytest.param(
            replace(make_event(), epoch=NOW + 1), RejectReason.EVENT_BAD_SIGNATURE, id="edited"
        ),
    ],
)
def test_event_signature_refusals(event: GovernanceEvent, reason: RejectReason) -> None:
    with pytest.raises(GovernanceSignatureError) as info:
        verify_governance_event(event, TRUSTED)
    assert info.value.reason is reason


def test_oracle_record_signed_payload_binds_the_record() -> None:
    record = full_record()
    payload = oracle_record_signed_payload(record)
    assert payload["record_digest"] == record.digest().hex()


# --- canary reset document (spec 50 §3.8, §4.11; DESIGN §5, §6) ---------------------------------


def reset_document(**changes: object) -> dict[str, object]:
    event = sign_governance_event(
        K7,
        event_type="canary_reset",
        epoch=NOW,
        key_id=OPS_K1,
        payload=canary_reset_payload("oracle-a", "holdout-a"),
    )
    doc: dict[str, object] = dict(event.to_json())
    doc.update(changes)
    return doc


def check_reset(doc: object, *, now: int = NOW, stream: str = "oracle-a") -> GovernanceEvent:
    event = parse_canary_reset_document(doc)
    verify_canary_reset(event, TRUSTED, oracle_id=stream, holdout="holdout-a", now_unix_secs=now)
    return event


def test_valid_canary_reset() -> None:
    event = check_reset(reset_document())
    assert event.event_type == "canary_reset"
    no_event_id = reset_document()
    del no_event_id["event_id"]
    assert check_reset(no_event_id) == event


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        pytest.param(
            reset_document(event_type="oracle_ttl_set"), RejectReason.CANARY_EVENT_TYPE, id="type"
        ),
        pytest.param(
            {k: v for k, v in reset_document().items() if k != "event_type"},
            RejectReason.CANARY_EVENT_TYPE,
            id="no-type",
        ),
        pytest.param(reset_document(signature_ed25519=""), RejectReason.EVENT_UNSIGNED, id="empty"),
        pytest.param(
            {k: v for k, v in reset_document().items() if k != "signature_ed25519"},
            RejectReason.EVENT_UNSIGNED,
            id="no-signature",
        ),
        pytest.param(
            {k: v for k, v in reset_document().items() if k != "key_id"},
            RejectReason.CANARY_KEY_ID_MISSING,
            id="no-key-id",
        ),
        pytest.param(reset_document(event_id="ab" * 32), RejectReason.EVENT_ID_MISMATCH, id="id"),
    ],
)
def test_canary_reset_document_refusals(doc: dict[str, object], reason: RejectReason) -> None:
    with pytest.raises((GovernanceRejected, GovernanceSignatureError)) as info:
        parse_canary_reset_document(doc)
    assert reason_of(info.value) is reason


def test_canary_reset_untrusted_key() -> None:
    doc = reset_document(key_id="ops-k2")
    del doc["event_id"]
    with pytest.raises(GovernanceSignatureError) as info:
        check_reset(doc)
    assert info.value.reason is RejectReason.EVENT_UNKNOWN_KEY


def test_canary_reset_bad_signature() -> None:
    doc = reset_document(payload={"oracle_id": "oracle-a", "holdout": "holdout-b"})
    del doc["event_id"]
    event = parse_canary_reset_document(doc)
    with pytest.raises(GovernanceSignatureError) as info:
        verify_canary_reset(
            event, TRUSTED, oracle_id="oracle-a", holdout="holdout-b", now_unix_secs=NOW
        )
    assert info.value.reason is RejectReason.EVENT_BAD_SIGNATURE


def test_canary_reset_for_another_stream() -> None:
    with pytest.raises(GovernanceRejected) as info:
        check_reset(reset_document(), stream="oracle-b")
    assert info.value.reason is RejectReason.CANARY_STREAM_MISMATCH


def test_canary_reset_freshness_window() -> None:
    check_reset(reset_document(), now=NOW + CANARY_RESET_DEFAULT_MAX_AGE_SECS)
    with pytest.raises(GovernanceRejected) as info:
        check_reset(reset_document(), now=NOW + CANARY_RESET_DEFAULT_MAX_AGE_SECS + 1)
    assert info.value.reason is RejectReason.CANARY_TOO_OLD
    with pytest.raises(GovernanceRejected) as info:
        check_reset(reset_document(), now=NOW - 1)
    assert info.value.reason is RejectReason.CANARY_IN_FUTURE


def test_canary_reset_rejects_other_event_types_even_if_signed() -> None:
    with pytest.raises(GovernanceRejected) as info:
        verify_canary_reset(
            make_event(), TRUSTED, oracle_id="oracle-a", holdout="h", now_unix_secs=NOW
        )
    assert info.value.reason is RejectReason.CANARY_EVENT_TYPE


def test_canary_reset_document_not_an_object() -> None:
    with pytest.raises(InvalidArgument):
        parse_canary_reset_document(["canary_reset"])


# --- hash chain (DESIGN §1, §6) -----------------------------------------------------------------


def build_chain(n: int = 5) -> list[ChainedGovernanceEvent]:
    chain: list[ChainedGovernanceEvent] = []
    for i in range(n):
        event = make_event(NOW + i, oracle_id=f"oracle-{i}", ttl_epochs=i + 1)
        chain.append(chain_governance_event(chain[-1] if chain else None, event))
    return chain


def chain_error(
    entries: list[ChainedGovernanceEvent], head: bytes | None = None
) -> tuple[RejectReason, int]:
    with pytest.raises(GovernanceChainError) as info:
        verify_governance_chain(entries, expected_head=head)
    assert isinstance(info.value, LogIntegrityError)
    return info.value.reason, info.value.index


def test_event_hash_preimage_is_exactly_as_documented() -> None:
    event = make_event()
    prev = EventHash(bytes(range(32)))
    body = (
        '{"epoch":1700000000,"event_type":"oracle_ttl_set","key_id":"ops-k1",'
        '"payload":{"oracle_id":"oracle-a","ttl_epochs":12},'
        f'"prev_event_hash":"{prev.hex()}","signature_ed25519":"{event.signature_ed25519}"}}'
    ).encode()
    expected = hashlib.sha256(b"evidenceos:governance_event:v1" + body).digest()
    assert DOMAIN_GOVERNANCE_EVENT_V1 == b"evidenceos:governance_event:v1"
    assert compute_event_hash(event, prev) == expected
    assert ChainedGovernanceEvent(event, prev).event_hash == expected


def test_valid_chain() -> None:
    chain = build_chain()
    assert chain[0].prev_event_hash == GENESIS_EVENT_HASH
    for earlier, later in itertools.pairwise(chain):
        assert later.prev_event_hash == earlier.event_hash
    verify_governance_chain(chain, expected_head=chain[-1].event_hash)
    verify_governance_chain([], expected_head=GENESIS_EVENT_HASH)
    verify_governance_chain(chain[2:], start_hash=chain[1].event_hash)


def test_chain_detects_edited_event() -> None:
    chain = build_chain()
    edited = replace(chain[2].event, payload={"oracle_id": "oracle-2", "ttl_epochs": 999})
    chain[2] = ChainedGovernanceEvent(edited, chain[2].prev_event_hash)
    assert chain_error(chain) == (RejectReason.CHAIN_BROKEN, 3)


def test_chain_detects_edited_signature() -> None:
    chain = build_chain()
    edited = replace(chain[1].event, signature_ed25519="00" * 64)
    chain[1] = ChainedGovernanceEvent(edited, chain[1].prev_event_hash)
    assert chain_error(chain) == (RejectReason.CHAIN_BROKEN, 2)


def test_chain_detects_edited_last_event_with_expected_head() -> None:
    chain = build_chain()
    head = chain[-1].event_hash
    edited = replace(chain[-1].event, epoch=1)
    chain[-1] = ChainedGovernanceEvent(edited, chain[-1].prev_event_hash)
    assert chain_error(chain, head) == (RejectReason.CHAIN_HEAD_MISMATCH, 5)


def test_chain_detects_deleted_event() -> None:
    chain = build_chain()
    head = chain[-1].event_hash
    assert chain_error(chain[:2] + chain[3:]) == (RejectReason.CHAIN_BROKEN, 2)
    assert chain_error(chain[1:]) == (RejectReason.CHAIN_BROKEN, 0)
    assert chain_error(chain[:-1], head) == (RejectReason.CHAIN_HEAD_MISMATCH, 4)


def test_chain_detects_reordered_events() -> None:
    chain = build_chain()
    swapped = [chain[0], chain[2], chain[1], chain[3], chain[4]]
    assert chain_error(swapped) == (RejectReason.CHAIN_BROKEN, 1)


def test_chain_detects_inserted_event() -> None:
    chain = build_chain()
    intruder = chain_governance_event(chain[1], make_event(NOW + 100))
    assert chain_error([*chain[:2], intruder, *chain[2:]]) == (RejectReason.CHAIN_BROKEN, 3)
    # Even a re-linked insertion shows up against the stored head.
    relinked = [*chain[:2], intruder]
    for old in chain[2:]:
        relinked.append(chain_governance_event(relinked[-1], old.event))
    verify_governance_chain(relinked)
    assert chain_error(relinked, chain[-1].event_hash) == (RejectReason.CHAIN_HEAD_MISMATCH, 6)


def test_chain_check_event_hook_verifies_signatures() -> None:
    chain = build_chain(3)
    verify_governance_chain(chain, check_event=lambda e: verify_governance_event(e, TRUSTED))
    forged = chain_governance_event(chain[-1], replace(make_event(), key_id=OPS_K2))
    with pytest.raises(GovernanceSignatureError):
        verify_governance_chain(
            [*chain, forged], check_event=lambda e: verify_governance_event(e, TRUSTED)
        )


def test_chained_event_json_round_trip() -> None:
    chain = build_chain(3)
    lines = [json.loads(json.dumps(entry.to_json())) for entry in chain]
    assert [ChainedGovernanceEvent.from_json(line) for line in lines] == chain
    assert lines[1]["prev_event_hash"] == lines[0]["event_hash"]
    lines[1]["event_hash"] = "00" * 32
    with pytest.raises(GovernanceRejected) as info:
        ChainedGovernanceEvent.from_json(lines[1])
    assert info.value.reason is RejectReason.CHAIN_HASH_MISMATCH
    lines[2]["prev_event_hash"] = "00"
    with pytest.raises(InvalidArgument):
        ChainedGovernanceEvent.from_json(lines[2])


def test_prev_hash_must_be_32_bytes() -> None:
    with pytest.raises(InvalidArgument):
        ChainedGovernanceEvent(make_event(), EventHash(b"\x00" * 31))
    with pytest.raises(InvalidArgument):
        compute_event_hash(make_event(), b"")


# --- strict Ed25519 (spec 50 §1.3) ---------------------------------------------------------------


def test_strict_verification_refuses_forgery_under_small_order_key() -> None:
    # Under the identity key, (R = encode([1]B), S = 1) satisfies the cofactorless equation
    # for every message; plain verification may accept it, strict verification must not.
    forged = BASE_POINT + (1).to_bytes(32, "little")
    # (OpenSSL 3 accepted this forgery when the test was written.)
    assert not verify_ed25519_strict(IDENTITY_POINT, b"any message", forged)
    assert not verify_ed25519_strict(IDENTITY_POINT, b"another message", forged)


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_small_order_keys_are_unusable(point: bytes) -> None:
    with pytest.raises(GovernanceRejected) as info:
        TrustedKeys({"k": point})
    assert info.value.reason is RejectReason.TRUSTED_KEY_POINT


def test_strict_verification_refuses_small_order_r_and_non_canonical_s() -> None:
    message = b"m"
    signature = K7.sign(message)
    public = public_key_bytes(K7)
    assert verify_ed25519_strict(public, message, signature)
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + GROUP_ORDER).to_bytes(32, "little")
    assert not verify_ed25519_strict(public, message, malleated)
    for point in SMALL_ORDER_POINTS:
        assert not verify_ed25519_strict(public, message, point + signature[32:])
    assert not verify_ed25519_strict(public, message, signature[:63])
    assert not verify_ed25519_strict(public[:31], message, signature)


# --- canonical JSON (spec 50 §1.1) --------------------------------------------------------------


def test_canon_strings_and_key_order() -> None:
    value: JsonValue = {"é": 1, "z": 2, "a": [True, False, None], "\u007f/": '\n\t\x01"\\é😀'}
    assert canonical_json_bytes(value) == (
        '{"a":[true,false,null],"z":2,"\x7f/":"\\n\\t\\u0001\\"\\\\é😀","é":1}'.encode()
    )
    # Byte-wise UTF-8 order: U+FFFF sorts before U+10000 (UTF-16 order would differ).
    assert canonical_json_bytes({"😀": 1, "\uffff": 2}) == '{"\uffff":2,"😀":1}'.encode()


@pytest.mark.parametrize(
    "value",
    [{1: "x"}, "\ud800", {"k": b"bytes"}, {"k": {1, 2}}],
    ids=["int-key", "lone-surrogate", "bytes", "set"],
)
def test_canon_refuses_non_json(value: object) -> None:
    with pytest.raises(InvalidArgument):
        canonical_json_bytes(value)  # type: ignore[arg-type]


def test_canon_non_finite_float_is_null_like_serde() -> None:
    assert canonical_json_bytes([math.nan, -math.inf, -0.0, 0.0, -1.5e-7]) == (
        b"[null,null,-0.0,0.0,-1.5e-7]"
    )


def test_load_json_bytes_is_strict() -> None:
    for bad in [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1, "a": 2}', b"\xff", b"{"]:
        with pytest.raises(InvalidArgument):
            load_json_bytes(bad, "test")


# --- Hypothesis: determinism and injectivity -----------------------------------------------------

# A small alphabet with JSON syntax characters makes near-collisions likely.
_text = st.text(alphabet='ab",:{}[]\\ \n é😀', max_size=6)
_u64 = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))
_attestations = st.one_of(st.none(), st.builds(DisjointnessAttestation, _text, _text, _text))
_records = st.builds(
    OracleOperatorRecord,
    oracle_id=_text,
    ttl_epochs=_u64,
    updated_at_epoch=_u64,
    key_id=_text.map(OperatorKeyId),
    schema_version=st.integers(0, 2),
    calibration_manifest_hash_hex=st.one_of(st.none(), _text.filter(bool)),
    calibration_epoch=st.one_of(st.none(), _u64),
    disjointness_attestation=_attestations,
    nonoverlap_proof_uri=st.one_of(st.none(), _text),
)


@settings(max_examples=300)
@given(st.lists(_records, min_size=2, max_size=6))
def test_record_payload_is_deterministic_and_injective(records: list[OracleOperatorRecord]) -> None:
    for record in records:
        payload = record.signing_payload_bytes()
        assert payload == record.signing_payload_bytes()
        assert payload == replace(record).signing_payload_bytes()
        assert OracleOperatorRecord.from_json(record.oracle_id, record.to_json()) == record
    for a in records:
        for b in records:
            assert (a == b) == (a.signing_payload_bytes() == b.signing_payload_bytes())
            assert (a == b) == (a.digest() == b.digest())


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    _text,
    st.floats(allow_nan=False, allow_infinity=False),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)
_events = st.builds(
    GovernanceEvent,
    event_type=_text,
    epoch=_u64,
    key_id=_text.map(OperatorKeyId),
    payload=st.dictionaries(_text, _json, max_size=4),
    signature_ed25519=_text,
)


@settings(max_examples=300)
@given(st.lists(_events, min_size=2, max_size=5), st.binary(min_size=32, max_size=32))
def test_event_bytes_are_deterministic_and_injective(
    events: list[GovernanceEvent], prev: bytes
) -> None:
    for event in events:
        assert event.signed_bytes() == event.signed_bytes()
        shuffled = dict(reversed(list(event.payload.items())))
        assert replace(event, payload=shuffled).signed_bytes() == event.signed_bytes()
    for a in events:
        for b in events:
            if a != b:
                assert a.signed_bytes() != b.signed_bytes() or (
                    a.signature_ed25519 != b.signature_ed25519
                )
                assert compute_event_hash(a, prev) != compute_event_hash(b, prev)


@given(_json)
def test_canon_round_trips_through_json(value: object) -> None:
    encoded = canonical_json_bytes(value)  # type: ignore[arg-type]
    assert canonical_json_bytes(json.loads(encoded)) == encoded


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_layout_round_trips_exactly(x: float) -> None:
    text = canonical_json_bytes(x).decode()
    assert float(text) == x
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, x)
    assert "+" not in text
    assert "." in text or "e" in text
