"""Spec 50 §9 test vectors, byte for byte.

The vectors exist only in the text of ``spec/50-governance-and-operators.md`` §9 (there is no
file under ``shared/vectors`` for them), so they are transcribed here verbatim. D-0 comes from
the reference test-suite; the others are the spec's PY conformance baseline (§9 preamble).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from evidenceos.core.governance import (
    DisjointnessAttestation,
    EpochControl,
    GovernanceEvent,
    GovernanceSignatureError,
    OperatorKeyId,
    OracleOperatorRecord,
    RejectReason,
    TrustedKeys,
    canonical_json_bytes,
    public_key_bytes,
    sha256_domain,
    sign_governance_event,
    signing_key_from_seed,
    verify_epoch_control,
    verify_governance_event,
    verify_oracle_record,
)
from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    NullSpecContract,
    sign_detached,
    verify_nullspec_signature,
    verify_registry_entry,
)

# --- spec 50 §9, transcribed -------------------------------------------------------------------

D0_DIGEST = "87793298a928d7506f292db3201b2c471623211631bbb31d22ae30bb28ea5ea5"
K7_PUBLIC = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
K9_PUBLIC = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618"

A_CANON = (
    '{"calibration_epoch":10,"calibration_manifest_hash_hex":'
    '"abababababababababababababababababababababababababababababababab",'
    '"disjointness_attestation":{"proof_sha256_hex":'
    '"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",'
    '"scope":"global/settle","statement_type":"oracle_disjointness_v1"},"key_id":"ops-k1",'
    '"nonoverlap_proof_uri":null,"oracle_id":"oracle-a","schema_version":1,"ttl_epochs":12,'
    '"updated_at_epoch":1700000000}'
)
A_DIGEST = "9898718ef0d7a036dc4027f84fe4a16275ef9d7be79aad803d39a4bf1ada1a7a"
A_SIGNATURE = (
    "f64c3ee28ab8ce8391dff996f9b1d6cbff1462ae114a846e33e2b37f90f420de"
    "eb4106681749bec4a05e67695e2329e3889f9e3ecdbc2b7505cbb25923f8e502"
)

A2_CANON = (
    '{"calibration_epoch":null,"calibration_manifest_hash_hex":"","disjointness_attestation":null,'
    '"key_id":"ops-k1","nonoverlap_proof_uri":null,"oracle_id":"oracle-a","schema_version":1,'
    '"ttl_epochs":5,"updated_at_epoch":1700000000}'
)
A2_DIGEST = "cdf1f88f62b77a63cc744fcceb907fdb544d8792ef069a7bb45ef24215a20e9c"
A2_SIGNATURE = (
    "c03d5f64a5af3d35937e274cf457c8b76d09613f1dae8193ea08388f7ec9b9e7"
    "1e3b2ce388cbda4fba4851aade09a02490143abc0fd4b23cc50e0722ae93d50f"
)

B_CANON = '{"forced_epoch":99,"key_id":"ops-k1","updated_at_epoch":1700000000}'
B_DIGEST = "6c751caecd0ae68825022c6e797a8dd27a7541e20aae9cd273aed62db42cf6d0"
B_SIGNATURE = (
    "4838f0c2f83614f6092e963453fd40eb3571a37c52bd2c6be8268538662967490"
    "fa2dff916fbf154002381080b1c57ea7a3740330966736df5715e5a14d7ab0c"
)

E_SIGNED = (
    '{"epoch":1700000000,"event_type":"oracle_ttl_set","key_id":"ops-k1",'
    '"payload":{"oracle_id":"oracle-a","ttl_epochs":12}}'
)
E_EVENT_ID = "f68578a883a30929623c57a40c8ab38be9f3f6df3d7ee5da0005402be30f149c"
E_SIGNATURE = (
    "81d34f33db9463ee6a4a090f9fb27e597f24636069cc47ace5c9e32cfe4814e8"
    "3d0eadd1ca4f0307ebf5215ebb7c1b007fe24524d7dc00fc640f39512b13bb04"
)

C_SIGNING_PAYLOAD = (
    '{"calibration_manifest_hash":null,"created_by":"op1","epoch_created":1,'
    '"eprocess":{"DirichletMultinomialMixture":{"alpha":[1.0,1.0]}},"holdout_handle":"holdout-a",'
    '"kind":{"DiscreteBuckets":{"p0":[0.5,0.5]}},'
    '"nullspec_id":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],'
    '"oracle_id":"accuracy.binary.v1",'
    '"oracle_resolution_hash":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],'
    '"schema":"evidenceos.nullspec.v1","signature_ed25519":[],"ttl_epochs":10}'
)
C_NULLSPEC_ID = "144a80facdfa40194978d07473a70e61474dfd3ff23563dfd9fb84ad9fccbeea"
C_EMBEDDED_SIGNATURE = (
    "ed90f893f3bbc9a3862a3df46f3cdb7e4da08f111eb126cf259d7b32d87b9785"
    "a1fbe9a224391295af02c3e6408005fcc7bb5db3640503bd134e30b59d61dd0f"
)
C_CANONICAL_LEN = 764
C_CANONICAL_SHA256 = "8548cb227b2a788e7a2f7ab52eaa6e34d2ced2f6bb7455986c5ce239b8e001cc"
C_DETACHED_SIGNATURE = (
    "a3a45241d81d1c72cc0f942b7cb1816af36cad1fa571156d03e6000c390690f7"
    "5f433597310170359eead6295fa49168ea344d048263cef32d828221e82c7a0b"
)

F_FLOATS = [
    (1.0, "1.0"),
    (0.25, "0.25"),
    (1e-05, "0.00001"),
    (1e-06, "1e-6"),
    (2.5e-08, "2.5e-8"),
    (1e16, "1e16"),
    (1e15, "1000000000000000.0"),
    (1 / 3, "0.3333333333333333"),
    (1.5e20, "1.5e20"),
]

# -----------------------------------------------------------------------------------------------

NOW = 1_700_000_000
K7 = signing_key_from_seed(bytes([0x07]) * 32)
K9 = signing_key_from_seed(bytes([0x09]) * 32)
OPS_K1 = OperatorKeyId("ops-k1")
TRUSTED = TrustedKeys({"ops-k1": public_key_bytes(K7)})


def record_a() -> OracleOperatorRecord:
    return OracleOperatorRecord(
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


def record_a2() -> OracleOperatorRecord:
    return OracleOperatorRecord(
        oracle_id="oracle-a", ttl_epochs=5, updated_at_epoch=NOW, key_id=OPS_K1
    )


def contract_c() -> NullSpecContract:
    return NullSpecContract(
        oracle_id="accuracy.binary.v1",
        oracle_resolution_hash=bytes([0x01]) * 32,
        holdout_handle="holdout-a",
        epoch_created=1,
        ttl_epochs=10,
        kind=DiscreteBuckets((0.5, 0.5)),
        eprocess=DirichletMultinomialMixture((1.0, 1.0)),
        created_by="op1",
    )


def test_d0_domain_digest() -> None:
    assert sha256_domain(b"evidenceos:test:v1", b"payload").hex() == D0_DIGEST


def test_keys_k7_k9() -> None:
    assert public_key_bytes(K7).hex() == K7_PUBLIC
    assert public_key_bytes(K9).hex() == K9_PUBLIC


@pytest.mark.parametrize(
    ("make", "canon", "digest", "signature"),
    [
        pytest.param(record_a, A_CANON, A_DIGEST, A_SIGNATURE, id="A"),
        pytest.param(record_a2, A2_CANON, A2_DIGEST, A2_SIGNATURE, id="A2"),
    ],
)
def test_oracle_record_vectors(make, canon: str, digest: str, signature: str) -> None:
    record = make().signed(K7)
    assert record.signing_payload_bytes() == canon.encode()
    assert record.digest().hex() == digest
    assert record.signature_ed25519 == signature
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)


def test_vector_a_verifies_in_production_mode() -> None:
    record = record_a().signed(K7)
    verify_oracle_record(record, TRUSTED, now_unix_secs=NOW + 12, enforce_provenance=True)


def test_epoch_control_vector_b() -> None:
    control = EpochControl.sign(K7, forced_epoch=99, updated_at_epoch=NOW, key_id=OPS_K1)
    assert control.signing_payload_bytes() == B_CANON.encode()
    assert control.digest().hex() == B_DIGEST
    assert control.signature_ed25519 == B_SIGNATURE
    verify_epoch_control(control, TRUSTED)


def test_governance_event_vector_e() -> None:
    event = sign_governance_event(
        K7,
        event_type="oracle_ttl_set",
        epoch=NOW,
        key_id=OPS_K1,
        payload={"oracle_id": "oracle-a", "ttl_epochs": 12},
    )
    assert event.signed_bytes() == E_SIGNED.encode()
    assert event.event_id == E_EVENT_ID
    assert event.event_id == hashlib.sha256(E_SIGNED.encode()).hexdigest()
    assert event.signature_ed25519 == E_SIGNATURE
    verify_governance_event(event, TRUSTED)


def test_vector_e_from_transcribed_signature() -> None:
    event = GovernanceEvent(
        "oracle_ttl_set", NOW, OPS_K1, {"ttl_epochs": 12, "oracle_id": "oracle-a"}, E_SIGNATURE
    )
    verify_governance_event(event, TRUSTED)


def test_nullspec_vector_c() -> None:
    unsigned = contract_c()
    assert unsigned.signing_payload_bytes() == C_SIGNING_PAYLOAD.encode()
    # With a zero id and empty signature the canonical bytes are the signing payload (§10 #22).
    assert unsigned.canonical_bytes() == C_SIGNING_PAYLOAD.encode()
    assert unsigned.compute_id().hex() == C_NULLSPEC_ID

    signed = unsigned.signed(K9)
    assert signed.id_hex == C_NULLSPEC_ID
    assert signed.signature_ed25519.hex() == C_EMBEDDED_SIGNATURE
    canonical = signed.canonical_bytes()
    assert len(canonical) == C_CANONICAL_LEN
    assert hashlib.sha256(canonical).hexdigest() == C_CANONICAL_SHA256
    assert sign_detached(signed, K9) == C_DETACHED_SIGNATURE

    authorities = TrustedKeys({"op1": bytes.fromhex(K9_PUBLIC)})
    verify_nullspec_signature(signed, authorities)
    verify_registry_entry(
        signed,
        folder_oracle_id="accuracy.binary.v1",
        file_stem=C_NULLSPEC_ID,
        detached_signature=C_DETACHED_SIGNATURE + "\n",
        authorities=authorities,
    )
    assert NullSpecContract.from_bytes(canonical) == signed


@pytest.mark.parametrize(("value", "text"), F_FLOATS, ids=[t for _, t in F_FLOATS])
def test_float_layout_vector_f(value: float, text: str) -> None:
    assert canonical_json_bytes(value) == text.encode()


@pytest.mark.parametrize("flip", ["payload", "signature"])
@pytest.mark.parametrize("vector", ["A", "A2", "B"])
def test_flipping_a_byte_fails(vector: str, flip: str) -> None:
    """Spec 50 §10 scenario 9: any change to payload or signature fails verification."""
    if vector == "B":
        control = EpochControl(99, NOW, OPS_K1, B_SIGNATURE)
        if flip == "payload":
            control = EpochControl(98, NOW, OPS_K1, B_SIGNATURE)
        else:
            control = EpochControl(99, NOW, OPS_K1, "05" + B_SIGNATURE[2:])
        with pytest.raises(GovernanceSignatureError) as info:
            verify_epoch_control(control, TRUSTED)
        assert info.value.reason is RejectReason.EPOCH_BAD_SIGNATURE
        return
    base = record_a() if vector == "A" else record_a2()
    signature = bytes.fromhex(A_SIGNATURE if vector == "A" else A2_SIGNATURE)
    if flip == "payload":
        record = replace(base, ttl_epochs=base.ttl_epochs + 1, signature_ed25519=signature.hex())
    else:
        flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
        record = replace(base, signature_ed25519=flipped.hex())
    with pytest.raises(GovernanceSignatureError) as info:
        verify_oracle_record(record, TRUSTED, now_unix_secs=NOW, enforce_provenance=False)
    assert info.value.reason is RejectReason.RECORD_BAD_SIGNATURE
