"""Pure holdout code: refs, key names, labels.enc, manifest, synthetic labels (spec 30 §6)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.holdout import (
    Holdout,
    HoldoutCryptoError,
    HoldoutDescriptor,
    HoldoutManifest,
    decode_labels_enc,
    derive_synthetic_labels,
    encode_labels_enc,
    key_env_var,
    key_from_env,
    parse_key_hex,
    synthetic_holdout,
    validate_holdout_labels,
    validate_holdout_ref,
    verify_holdout_policy,
)
from evidenceos.errors import (
    Code,
    ConfigError,
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NONCE = bytes(range(100, 112))
LABELS = bytes([0, 1, 1, 0, 1, 0, 0, 0, 1, 1])

labels_st = st.binary(min_size=1, max_size=300).map(lambda b: bytes(x & 1 for x in b))


# -- synthetic holdout (spec 30 §6 vector) ---------------------------------------------------


def test_synthetic_holdout_vector() -> None:
    h = synthetic_holdout("synthetic-holdout")
    assert h.handle == hashlib.sha256(b"synthetic-holdout").digest()
    assert h.handle.hex().startswith("af037fb1")
    assert h.length == 128
    assert len(h.labels) == 128
    assert "".join(str(b) for b in h.labels[:32]) == "10100001111111101001101001111010"
    assert sum(h.labels) == 76
    assert h.ref == "synthetic-holdout"
    assert h.k_bits_budget is None
    assert h.access_credit_budget is None
    assert h.pool_scope is None


def test_synthetic_holdouts_are_memoised_per_ref() -> None:
    """Resolved once per ref; another ref gets its own labels, a refusal is never cached."""
    a, b = synthetic_holdout("synthetic-a"), synthetic_holdout("synthetic-b")
    assert synthetic_holdout("synthetic-a") is a
    assert a.handle != b.handle
    assert a.labels == derive_synthetic_labels(a.handle, 128)
    assert b.labels == derive_synthetic_labels(b.handle, 128)
    for _ in range(2):
        with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
            synthetic_holdout("holdout-a")


def test_synthetic_labels_formula_matches_spec_literally() -> None:
    handle = hashlib.sha256(b"synthetic-x").digest()
    expected = bytes((handle[i % 32] ^ ((i * 31) % 256)) & 1 for i in range(300))
    assert derive_synthetic_labels(handle, 300) == expected


@pytest.mark.parametrize("ref", ["holdout", "synth-x", "Synthetic-x", "synthetic"])
def test_synthetic_requires_prefix(ref: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        synthetic_holdout(ref)


def test_synthetic_validates_ref_first() -> None:
    with pytest.raises(InvalidArgument, match=r"must match"):
        synthetic_holdout("synthetic-a/b")


# -- holdout_ref (spec 20 §3.4 step 8) -------------------------------------------------------


@pytest.mark.parametrize("ref", ["a", "A-b_9", "x" * 128, "synthetic-holdout"])
def test_valid_refs(ref: str) -> None:
    assert validate_holdout_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "holdout_ref must be in [1,128]"),
        ("x" * 129, "holdout_ref must be in [1,128]"),
        ("é" * 65, "holdout_ref must be in [1,128]"),  # 130 UTF-8 bytes: length wins
        ("a/b", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("..", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("a b", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("abc\n", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("é", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("٣", "holdout_ref must match [A-Za-z0-9_-]+"),  # a Unicode digit
    ],
)
def test_invalid_refs_exact_messages(ref: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_holdout_ref(ref)
    assert err.value.message == message


def test_ref_must_be_string() -> None:
    with pytest.raises(InvalidArgument):
        validate_holdout_ref(b"abc")


# -- key names and key material --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_id", "var"),
    [
        ("k1", "EVIDENCEOS_HOLDOUT_KEY_K1"),
        ("lab-2024", "EVIDENCEOS_HOLDOUT_KEY_LAB_2024"),
        ("Mixed_Case-x", "EVIDENCEOS_HOLDOUT_KEY_MIXED_CASE_X"),
        ("a" * 128, "EVIDENCEOS_HOLDOUT_KEY_" + "A" * 128),
    ],
)
def test_key_env_var(key_id: str, var: str) -> None:
    assert key_env_var(key_id) == var


@pytest.mark.parametrize("key_id", ["", "a" * 129, "a.b", "a b", "a|b", "é", "a=b"])
def test_key_env_var_refuses_bad_ids(key_id: str) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid holdout encryption_key_id"):
        key_env_var(key_id)


def test_key_from_env() -> None:
    env = {"EVIDENCEOS_HOLDOUT_KEY_LAB_1": KEY.hex()}
    assert key_from_env(env, "lab-1") == KEY
    assert key_from_env({"EVIDENCEOS_HOLDOUT_KEY_LAB_1": KEY.hex().upper()}, "lab-1") == KEY


def test_key_from_env_missing_names_the_variable() -> None:
    with pytest.raises(FailedPrecondition) as err:
        key_from_env({}, "lab-1")
    assert "holdout key for encryption_key_id not found" in err.value.message
    assert "EVIDENCEOS_HOLDOUT_KEY_LAB_1" in err.value.message


@pytest.mark.parametrize(
    "value", ["", KEY.hex()[:-2], KEY.hex() + "00", "zz" * 32, " " + KEY.hex()[1:], "0x" + "a" * 62]
)
def test_key_from_env_bad_material_never_echoes_the_value(value: str) -> None:
    with pytest.raises(FailedPrecondition) as err:
        key_from_env({"EVIDENCEOS_HOLDOUT_KEY_K": value}, "k")
    assert "invalid holdout key material" in err.value.message
    if value:
        assert value not in err.value.message


def test_parse_key_hex() -> None:
    assert parse_key_hex(KEY.hex(), "x") == KEY
    with pytest.raises(FailedPrecondition, match=r"in my-source"):
        parse_key_hex("00", "my-source")


# -- labels.enc --------------------------------------------------------------------------------


def test_labels_enc_layout() -> None:
    payload = encode_labels_enc(LABELS, KEY, NONCE)
    assert payload[:4] == b"EHLD"
    assert payload[4] == 0x01
    assert payload[5] == 0x02
    assert payload[6:18] == NONCE
    assert len(payload) == 18 + len(LABELS) + 16
    # Independent of our decoder: plain AES-256-GCM, no AAD.
    assert AESGCM(KEY).decrypt(NONCE, payload[18:], None) == LABELS
    assert decode_labels_enc(payload, KEY) == LABELS


def test_decode_reads_a_payload_built_with_plain_aesgcm() -> None:
    payload = b"EHLD\x01\x02" + NONCE + AESGCM(KEY).encrypt(NONCE, LABELS, None)
    assert decode_labels_enc(payload, KEY) == LABELS


@settings(max_examples=60, deadline=None)
@given(
    labels=labels_st,
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
)
def test_round_trip(labels: bytes, key: bytes, nonce: bytes) -> None:
    assert decode_labels_enc(encode_labels_enc(labels, key, nonce), key) == labels


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, data=st.data())
def test_any_bit_flip_is_refused(labels: bytes, data: st.DataObject) -> None:
    payload = bytearray(encode_labels_enc(labels, KEY, NONCE))
    bit = data.draw(st.integers(0, len(payload) * 8 - 1), label="bit")
    payload[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(HoldoutCryptoError):
        decode_labels_enc(bytes(payload), KEY)


def test_every_single_bit_flip_is_refused_exhaustively() -> None:
    payload = encode_labels_enc(LABELS, KEY, NONCE)
    for bit in range(len(payload) * 8):
        mutated = bytearray(payload)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(HoldoutCryptoError):
            decode_labels_enc(bytes(mutated), KEY)


def test_every_truncation_and_extension_is_refused() -> None:
    payload = encode_labels_enc(LABELS, KEY, NONCE)
    for n in range(len(payload)):
        with pytest.raises(HoldoutCryptoError):
            decode_labels_enc(payload[:n], KEY)
    with pytest.raises(HoldoutCryptoError):
        decode_labels_enc(payload + b"\x00", KEY)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "holdout payload too short"),
        (b"EHLD\x01\x02" + bytes(27), "holdout payload too short"),
        (b"XHLD\x01\x02" + bytes(28), "unsupported holdout encryption format"),
        (b"EHLD\x02\x02" + bytes(28), "unsupported holdout encryption format"),
        (b"EHLD\x01\x01" + bytes(28), "unsupported holdout encryption format"),
        (b"EHLD\x01\x02" + bytes(28), "holdout decrypt failed"),
    ],
)
def test_decode_errors_are_precise(payload: bytes, message: str) -> None:
    with pytest.raises(HoldoutCryptoError) as err:
        decode_labels_enc(payload, KEY)
    assert err.value.message.startswith(message)
    assert err.value.code is Code.FAILED_PRECONDITION


def test_wrong_key_is_refused() -> None:
    payload = encode_labels_enc(LABELS, KEY, NONCE)
    with pytest.raises(HoldoutCryptoError, match=r"^holdout decrypt failed"):
        decode_labels_enc(payload, OTHER_KEY)


def test_decrypted_empty_or_non_binary_labels_are_refused() -> None:
    empty = b"EHLD\x01\x02" + NONCE + AESGCM(KEY).encrypt(NONCE, b"", None)
    with pytest.raises(HoldoutCryptoError, match=r"non-empty binary"):
        decode_labels_enc(empty, KEY)
    two = b"EHLD\x01\x02" + NONCE + AESGCM(KEY).encrypt(NONCE, b"\x00\x02", None)
    with pytest.raises(HoldoutCryptoError, match=r"non-empty binary"):
        decode_labels_enc(two, KEY)


@pytest.mark.parametrize("labels", [b"", b"\x02", b"\x00\x01\xff", b"01"])
def test_encode_refuses_bad_labels(labels: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"non-empty binary"):
        encode_labels_enc(labels, KEY, NONCE)


def test_encode_decode_refuse_bad_key_and_nonce_lengths() -> None:
    with pytest.raises(InvalidArgument, match=r"invalid holdout key material"):
        encode_labels_enc(LABELS, KEY[:16], NONCE)
    with pytest.raises(InvalidArgument, match=r"nonce"):
        encode_labels_enc(LABELS, KEY, NONCE[:8])
    with pytest.raises(InvalidArgument, match=r"invalid holdout key material"):
        decode_labels_enc(encode_labels_enc(LABELS, KEY, NONCE), KEY + b"\x00")


def test_validate_holdout_labels_bounds() -> None:
    assert validate_holdout_labels(b"\x01" * 4096) == b"\x01" * 4096
    with pytest.raises(InvalidArgument, match=r"\[1,4096\]"):
        validate_holdout_labels(b"\x01" * 4097)
    with pytest.raises(InvalidArgument, match=r"\[1,4096\]"):
        validate_holdout_labels(b"")
    with pytest.raises(InvalidArgument, match=r"binary"):
        validate_holdout_labels(b"\x01\x07")


# -- manifest ---------------------------------------------------------------------------------


_DROP = object()


def manifest_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "holdout_handle_hex": "ab" * 32,
        "len": len(LABELS),
        "labels_sha256_hex": hashlib.sha256(LABELS).hexdigest(),
        "created_at_unix": 1,
        "encryption_key_id": "lab-1",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not _DROP}


def parse(doc: object) -> HoldoutManifest:
    return HoldoutManifest.from_json(json.dumps(doc).encode())


def test_manifest_parses() -> None:
    m = parse(
        manifest_doc(
            holdout_k_bits_budget=12.5,
            holdout_access_credit_budget=3,
            holdout_pool_scope="per_principal",
            unknown_field="ignored",
        )
    )
    assert m.holdout_handle == bytes([0xAB]) * 32
    assert m.length == len(LABELS)
    assert m.labels_sha256 == hashlib.sha256(LABELS).digest()
    assert m.created_at_unix == 1
    assert m.encryption_key_id == "lab-1"
    assert m.k_bits_budget == 12.5
    assert m.access_credit_budget == 3.0
    assert m.pool_scope == "per_principal"


def test_manifest_defaults_and_nulls() -> None:
    m = parse(
        manifest_doc(
            schema_version=_DROP,
            encryption_key_id=None,
            holdout_k_bits_budget=None,
            holdout_pool_scope=None,
        )
    )
    assert m.schema_version == 1
    assert m.encryption_key_id is None
    assert m.k_bits_budget is None
    assert m.pool_scope is None


def test_manifest_round_trips_through_to_json() -> None:
    m = parse(manifest_doc(holdout_k_bits_budget=0, holdout_pool_scope="both"))
    assert HoldoutManifest.from_json(m.to_json()) == m
    m2 = parse(manifest_doc(encryption_key_id=None))
    assert HoldoutManifest.from_json(m2.to_json()) == m2


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"schema_version": 2}, "unsupported holdout manifest schema_version"),
        ({"schema_version": "1"}, "unsupported holdout manifest schema_version"),
        ({"schema_version": True}, "unsupported holdout manifest schema_version"),
        ({"holdout_handle_hex": _DROP}, "holdout_handle_hex: missing"),
        ({"holdout_handle_hex": "ab" * 31}, "holdout_handle_hex: expected 64 hex"),
        ({"holdout_handle_hex": "zz" * 32}, "holdout_handle_hex: expected 64 hex"),
        ({"holdout_handle_hex": 5}, "holdout_handle_hex: expected 64 hex"),
        ({"len": _DROP}, "manifest len: missing"),
        ({"len": 0}, "manifest len: must be an integer in [1,4096]"),
        ({"len": 4097}, "manifest len: must be an integer in [1,4096]"),
        ({"len": -1}, "manifest len: must be an integer in [1,4096]"),
        ({"len": 10.0}, "manifest len: must be an integer in [1,4096]"),
        ({"len": True}, "manifest len: must be an integer in [1,4096]"),
        ({"labels_sha256_hex": _DROP}, "labels_sha256_hex: missing"),
        ({"labels_sha256_hex": "00" * 33}, "labels_sha256_hex: expected 64 hex"),
        ({"created_at_unix": _DROP}, "created_at_unix: missing"),
        ({"created_at_unix": 0}, "created_at_unix: must be a non-zero unsigned integer"),
        ({"created_at_unix": -5}, "created_at_unix: must be a non-zero unsigned integer"),
        ({"created_at_unix": 2**64}, "created_at_unix: must be a non-zero unsigned integer"),
        ({"created_at_unix": 1.5}, "created_at_unix: must be a non-zero unsigned integer"),
        ({"encryption_key_id": ""}, "encryption_key_id: must be a string of 1..128"),
        ({"encryption_key_id": "k" * 129}, "encryption_key_id: must be a string of 1..128"),
        ({"encryption_key_id": 7}, "encryption_key_id: must be a string or null"),
        ({"holdout_k_bits_budget": -1}, "holdout_k_bits_budget: must be finite and >= 0"),
        ({"holdout_k_bits_budget": "1"}, "holdout_k_bits_budget: must be a number"),
        ({"holdout_k_bits_budget": False}, "holdout_k_bits_budget: must be a number"),
        (
            {"holdout_access_credit_budget": -0.5},
            "holdout_access_credit_budget: must be finite and >= 0",
        ),
        ({"holdout_pool_scope": "everyone"}, "holdout_pool_scope: must be global"),
        ({"holdout_pool_scope": 1}, "holdout_pool_scope: must be a string or null"),
    ],
)
def test_manifest_one_precise_error_per_field(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(FailedPrecondition) as err:
        parse(manifest_doc(**overrides))
    assert fragment in err.value.message


def test_manifest_refuses_overflowing_budget() -> None:
    raw = json.dumps(manifest_doc()).encode()[:-1] + b', "holdout_k_bits_budget": 1e309}'
    with pytest.raises(FailedPrecondition, match=r"holdout_k_bits_budget: must be finite"):
        HoldoutManifest.from_json(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1,2]", b'"x"', b"\xff\xfe", b'{"len": NaN}', b'{"len": Infinity}'],
)
def test_manifest_refuses_non_objects_and_bad_json(raw: bytes) -> None:
    with pytest.raises(FailedPrecondition, match=r"^invalid holdout manifest"):
        HoldoutManifest.from_json(raw)


def test_manifest_constructor_validates_too() -> None:
    with pytest.raises(FailedPrecondition, match=r"len"):
        HoldoutManifest(
            holdout_handle=bytes(32), length=0, labels_sha256=bytes(32), created_at_unix=1
        )
    with pytest.raises(FailedPrecondition, match=r"holdout_handle_hex"):
        HoldoutManifest(
            holdout_handle=bytes(31), length=1, labels_sha256=bytes(32), created_at_unix=1
        )


# -- resolved holdouts ------------------------------------------------------------------------


def test_holdout_value_hides_labels_and_checks_them() -> None:
    d = HoldoutDescriptor(ref="h", handle=bytes(32), length=3, k_bits_budget=5.0)
    h = Holdout(d, b"\x00\x01\x01")
    assert "labels" not in repr(h)
    assert h.k_bits_budget == 5.0
    with pytest.raises(FailedPrecondition, match=r"length mismatch"):
        Holdout(d, b"\x00\x01")
    with pytest.raises(FailedPrecondition, match=r"binary"):
        Holdout(d, b"\x00\x01\x02")


def test_descriptor_matches_claim() -> None:
    d = HoldoutDescriptor(ref="h", handle=bytes(32), length=3)
    d.verify_matches_claim(bytes(32), 3)
    with pytest.raises(FailedPrecondition, match=r"^claim holdout handle mismatch"):
        d.verify_matches_claim(b"\x01" * 32, 3)
    with pytest.raises(FailedPrecondition, match=r"^claim holdout length mismatch"):
        d.verify_matches_claim(bytes(32), 4)


def test_descriptor_from_manifest() -> None:
    m = parse(manifest_doc(holdout_access_credit_budget=9, holdout_pool_scope="global"))
    d = HoldoutDescriptor.from_manifest("ref-1", m)
    assert (d.ref, d.handle, d.length) == ("ref-1", m.holdout_handle, m.length)
    assert (d.access_credit_budget, d.pool_scope) == (9.0, "global")


# -- production policy (spec 60 §1.5.1) -------------------------------------------------------


def test_policy_allows_dev_modes_outside_production() -> None:
    verify_holdout_policy(production_mode=False, allow_plaintext=True, synthetic=True)
    verify_holdout_policy(production_mode=True, allow_plaintext=False, synthetic=False)


@pytest.mark.parametrize(
    ("plaintext", "synthetic", "fragment"),
    [
        (True, False, "forbids plaintext holdouts"),
        (False, True, "forbids insecure synthetic holdouts"),
        (True, True, "forbids plaintext holdouts"),
    ],
)
def test_policy_refuses_dev_modes_in_production(
    plaintext: bool, synthetic: bool, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        verify_holdout_policy(production_mode=True, allow_plaintext=plaintext, synthetic=synthetic)
    assert fragment in err.value.message


def test_all_errors_are_domain_errors() -> None:
    assert issubclass(HoldoutCryptoError, EvidenceOSError)
