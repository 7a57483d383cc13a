"""Oracle resolution: spec 30 §2 and §11 scenarios 12-17."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.ledger import ConservationLedger, compute_execution_charge
from evidenceos.core.oracle import (
    CODEC_HASH_V1,
    PINS_CODEC_HASH,
    BucketRadius,
    CustomHashNeighborhood,
    ExactMatchOnly,
    Hamming,
    HysteresisState,
    InvalidCanonicalEncoding,
    LocalityPolicy,
    NaNNotAllowed,
    OraclePins,
    OracleResolution,
    TieBreaker,
    compute_accuracy,
    compute_calibration_manifest_hash,
    compute_default_resolution_hash,
    compute_oracle_answer,
    compute_oracle_pins_hash,
    compute_resolution_hash,
    compute_resolution_json_bytes,
    is_local,
    is_nullspec_expired,
    is_pins_stale,
    verify_calibration_hash,
)
from evidenceos.errors import FailedPrecondition, InvalidArgument

# --- §2.1 and scenario 12 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbols", "width", "length"),
    [
        (2, 1, 1),
        (3, 2, 1),
        (4, 2, 1),
        (7, 3, 1),
        (8, 3, 1),
        (9, 4, 1),
        (255, 8, 1),
        (256, 8, 1),
        (257, 9, 2),
        (1024, 10, 2),
        (65536, 16, 2),
        (65537, 17, 3),
    ],
)
def test_bit_width_and_encoded_length(symbols, width, length):
    resolution = OracleResolution(symbols)
    assert (resolution.bit_width, resolution.encoded_len_bytes) == (width, length)


def test_bits_per_call():
    assert OracleResolution(256).bits_per_call == 8.0
    assert 2 ** OracleResolution(256).bits_per_call == 256
    assert OracleResolution(3).bits_per_call == pytest.approx(1.584962500721156)


def test_codec_hashes():
    assert CODEC_HASH_V1.hex() == "61af812a4f2602874b04b837f765b7a45ecc71098c94dc48ec25b3ac1979a4d8"
    assert PINS_CODEC_HASH.hex().startswith("0661b541") and PINS_CODEC_HASH.hex().endswith("4cb790")


@pytest.mark.parametrize("kwargs", [{"num_symbols": 1}, {"num_symbols": 4, "delta_sigma": -0.1}])
def test_resolution_rejects_invalid_parameters(kwargs):
    with pytest.raises(InvalidArgument):
        OracleResolution(**kwargs)
    with pytest.raises(InvalidArgument):
        OracleResolution(4, delta_sigma=math.nan)


# --- §2.2 quantisation and scenario 14 ----------------------------------------------------


@pytest.mark.parametrize(
    ("symbols", "value", "bucket"),
    [
        (4, 0.0, 0),
        (4, 0.25, 1),
        (4, 0.5, 2),
        (4, 0.75, 2),
        (4, 1.0, 3),
        (2, 0.5, 0),
        (2, 0.75, 1),
        (8, 0.75, 5),
        (8, 1.0, 7),
        (1024, 0.5, 512),
        (8, -10.0, 0),
        (8, 10.0, 7),
        (8, math.inf, 7),
        (8, -math.inf, 0),
    ],
)
def test_quantize_nearest_even(symbols, value, bucket):
    assert OracleResolution(symbols).quantize(value) == bucket


def test_tie_breakers():
    three = OracleResolution(3)
    assert replace(three, tie_breaker=TieBreaker.LOWER).quantize(0.25) == 0
    assert replace(three, tie_breaker=TieBreaker.UPPER).quantize(0.25) == 1
    assert three.quantize(0.25) == 0
    r300 = OracleResolution(300)
    lower = replace(r300, tie_breaker=TieBreaker.LOWER).quantize(0.5)
    upper = replace(r300, tie_breaker=TieBreaker.UPPER).quantize(0.5)
    assert (lower, r300.quantize(0.5), upper) == (149, 150, 150)
    # Lower floors every value, not just ties
    assert replace(OracleResolution(4), tie_breaker=TieBreaker.LOWER).quantize(0.99) == 2


def test_quantize_refuses_nan():
    with pytest.raises(NaNNotAllowed):
        OracleResolution(8).quantize(math.nan)


# --- §2.3 canonical encoding and scenario 13 --------------------------------------------------


def test_encode_examples():
    assert OracleResolution(1024).encode_bucket(700) == bytes([0x02, 0xBC])
    assert OracleResolution(1024).decode_bucket(bytes([0x02, 0xBC])) == 700
    assert OracleResolution(300).decode_bucket(OracleResolution(300).encode_bucket(257)) == 257
    assert OracleResolution(3).decode_bucket(b"\x02") == 2
    with pytest.raises(InvalidArgument):
        OracleResolution(4).encode_bucket(4)


@pytest.mark.parametrize(
    ("symbols", "data", "message"),
    [
        (257, b"", "canonical output length mismatch"),
        (257, b"\x00", "canonical output length mismatch"),
        (257, b"\x00\x01\x02", "canonical output length mismatch"),
        (3, b"\xff", "canonical symbol out of range"),
        (3, b"\x03", "canonical symbol out of range"),
        (8, b"\x00\x03", "canonical output length mismatch"),
        (5, b"\x05", "canonical symbol out of range"),
        (1024, b"\x01", "canonical output length mismatch"),
        (1024, b"\x04\x00", "canonical symbol out of range"),
    ],
)
def test_decode_rejects_non_canonical_bytes(symbols, data, message):
    with pytest.raises(InvalidCanonicalEncoding, match=message) as caught:
        OracleResolution(symbols).decode_bucket(data)
    assert isinstance(caught.value, InvalidArgument)


def test_non_canonical_output_is_refused_before_any_charge():
    # Scenario 24 tail: a 1-byte output under 1024 symbols. Decoding comes first, so the ledger
    # value the caller holds is never charged.
    resolution = OracleResolution(1024)
    ledger = ConservationLedger(0.05)

    def decode_then_charge(output: bytes) -> ConservationLedger:
        resolution.decode_bucket(output)
        return ledger.charge_execution(compute_execution_charge(resolution.bits_per_call, 1, 2))

    assert decode_then_charge(b"\x00\x03").k_bits_total == 20.0
    with pytest.raises(InvalidCanonicalEncoding):
        decode_then_charge(b"\x03")
    assert ledger.k_bits_total == 0.0 and ledger.events == ()


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 70_000), st.data())
def test_encoding_is_a_bijection_onto_canonical_strings(symbols, data):
    resolution = OracleResolution(symbols)
    bucket = data.draw(st.integers(0, symbols - 1))
    assert resolution.decode_bucket(resolution.encode_bucket(bucket)) == bucket
    raw = data.draw(st.binary(min_size=0, max_size=4))
    try:
        value = resolution.decode_bucket(raw)
    except InvalidCanonicalEncoding:
        return
    assert resolution.encode_bucket(value) == raw  # exactly one byte string per symbol


# --- §2.5 TTL and scenario 15 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("calibrated", "ttl", "now", "expired"),
    [
        (10, None, 10, False),
        (10, 0, 10, True),
        (10, 1, 10, False),
        (10, 1, 11, True),
        (10, 1, 12, True),
        (9, 1, 9, False),
        (9, 1, 10, True),
        (10, 5, 15, True),
        (10, 5, 16, True),
        (10, 5, 14, False),
        (10, 5, 3, False),  # clock behind calibration: saturating subtraction
    ],
)
def test_resolution_ttl(calibrated, ttl, now, expired):
    resolution = OracleResolution(4).with_calibration(bytes(32), calibrated, ttl)
    assert resolution.is_ttl_expired(now) is expired


def test_pins_and_nullspec_ttl_are_strict():
    assert not is_pins_stale(pinned_epoch=10, ttl_epochs=1, now_epoch=11)
    assert is_pins_stale(pinned_epoch=10, ttl_epochs=1, now_epoch=12)
    assert not is_pins_stale(pinned_epoch=10, ttl_epochs=1, now_epoch=5)
    assert not is_nullspec_expired(epoch_created=10, ttl_epochs=20, now_epoch=30)
    assert is_nullspec_expired(epoch_created=10, ttl_epochs=20, now_epoch=31)
    assert not is_nullspec_expired(2**64 - 1, 5, 2**64 - 1)  # saturating add


# --- §2.6 hashes and pins -------------------------------------------------------------------


def test_resolution_json_and_hash_vectors():
    resolution = OracleResolution(4)
    text = compute_resolution_json_bytes(resolution).decode()
    assert text.startswith('{"num_symbols":4,"bit_width":2,"codec_hash":[97,175,')
    assert text.endswith(
        '"calibrated_at_epoch":0,"ttl_epochs":null,"delta_sigma":0.0,'
        '"tie_breaker":"NearestEven","locality_policy":{"hamming":{"max_bits":1}}}'
    )
    digest = compute_resolution_hash(resolution).hex()
    assert digest.startswith("f4c1c65c") and digest.endswith("c3bee5")
    digest = compute_resolution_hash(replace(resolution, ttl_epochs=1)).hex()
    assert digest.startswith("6594289c") and digest.endswith("910831")


@pytest.mark.parametrize(
    ("delta_sigma", "text"),
    [(0.25, "0.25"), (1e-7, "1e-7"), (1e-5, "0.00001"), (1e16, "1e16"), (123.0, "123.0")],
)
def test_resolution_json_uses_serde_float_layout(delta_sigma, text):
    data = compute_resolution_json_bytes(OracleResolution(4, delta_sigma=delta_sigma))
    assert f'"delta_sigma":{text},'.encode() in data


def test_locality_variants_serialise_like_serde():
    salt = bytes(range(32))
    cases: list[tuple[LocalityPolicy, bytes]] = [
        (ExactMatchOnly(), b'"locality_policy":"exact_match_only"}'),
        (BucketRadius(3), b'"locality_policy":{"bucket_radius":{"r":3}}}'),
        (
            CustomHashNeighborhood(4, salt),
            b'{"custom_hash_neighborhood":{"prefix_bits":4,"salt":[0,1,',
        ),
    ]
    for policy, text in cases:
        resolution = OracleResolution(4, locality_policy=policy)
        assert text in compute_resolution_json_bytes(resolution)
        assert OracleResolution.from_json(resolution.to_json()) == resolution


def test_resolution_json_round_trip_and_strictness():
    resolution = OracleResolution(300, delta_sigma=0.25, tie_breaker=TieBreaker.UPPER)
    resolution = resolution.with_calibration(b"\x07" * 32, 9, 3)
    data = resolution.to_json()
    assert OracleResolution.from_json(data) == resolution
    without_locality = {k: v for k, v in data.items() if k != "locality_policy"}
    assert OracleResolution.from_json(without_locality).locality_policy == Hamming(1)
    with pytest.raises(InvalidArgument):
        OracleResolution.from_json({**data, "bit_width": 8})
    with pytest.raises(InvalidArgument):
        OracleResolution.from_json({**data, "tie_breaker": "Sideways"})
    with pytest.raises(InvalidArgument):
        OracleResolution.from_json({**data, "surprise": 1})


def test_pins_hash_layout():
    resolution = OracleResolution(3).with_calibration(bytes(32), 5, 1)
    pins = OraclePins.create(resolution, ttl_epochs=1, pinned_epoch=5)
    assert pins.bit_width == 2 and pins.codec_hash == PINS_CODEC_HASH
    assert pins.oracle_resolution_hash == compute_resolution_hash(resolution)
    expected = hashlib.sha256(
        PINS_CODEC_HASH
        + struct.pack(">I", 2)
        + struct.pack(">Q", 1)
        + struct.pack(">Q", 5)
        + pins.oracle_resolution_hash
    ).digest()
    assert compute_oracle_pins_hash(pins) == expected
    assert OraclePins.from_json(pins.to_json()) == pins
    assert pins.is_stale(7) and not pins.is_stale(6)


def test_calibration_hash():
    manifest = b'{"oracle":"builtin.accuracy"}'
    digest = compute_calibration_manifest_hash(manifest)
    assert digest == hashlib.sha256(manifest).digest()
    verify_calibration_hash(None, digest)
    verify_calibration_hash(digest, digest)
    with pytest.raises(FailedPrecondition, match="calibration"):
        verify_calibration_hash(bytes(32), digest)


# --- §2.7 accuracy and scenario 17 ------------------------------------------------------------


def test_accuracy():
    assert compute_accuracy(bytes([1, 0, 1, 1]), bytes([1, 0, 1, 1])) == 1.0
    assert compute_accuracy(bytes([1, 0, 1, 0]), bytes([1, 1, 1, 1])) == 0.5


@pytest.mark.parametrize(
    ("labels", "preds"),
    [
        (bytes([1, 0]), bytes([2, 0])),
        (bytes([1, 0]), bytes([1])),
        (b"", b""),
        (bytes([2, 0]), bytes([1, 0])),
    ],
)
def test_accuracy_rejects_bad_inputs(labels, preds):
    with pytest.raises(InvalidArgument):
        compute_accuracy(labels, preds)


# --- §2.4 hysteresis, locality and scenario 16 ------------------------------------------------


def _two_queries(resolution: OracleResolution):
    labels = bytes([1, 1, 1, 1])
    first = compute_oracle_answer(resolution, labels, bytes([1, 1, 1, 1]), HysteresisState())
    second = compute_oracle_answer(resolution, labels, bytes([1, 1, 1, 0]), first.state)
    return first, second


def test_hysteresis_holds_a_local_small_move():
    first, second = _two_queries(OracleResolution(8, delta_sigma=0.26))
    assert (first.bucket, first.hysteresis_applied) == (7, False)
    assert (second.bucket, second.hysteresis_applied) == (7, True)
    assert second.raw_accuracy == 0.75 and second.state.last_raw == 0.75
    assert second.state.last_bucket == 7


@pytest.mark.parametrize(
    "resolution",
    [OracleResolution(8), OracleResolution(8, delta_sigma=0.26, locality_policy=ExactMatchOnly())],
)
def test_hysteresis_not_applied(resolution):
    _, second = _two_queries(resolution)
    assert (second.bucket, second.hysteresis_applied) == (5, False)


def test_locality_policies():
    assert is_local(Hamming(1), b"\x00\x01", b"\x00\x00")
    assert not is_local(Hamming(1), b"\x01\x01", b"\x00\x00")
    with pytest.raises(InvalidArgument):
        is_local(Hamming(1), b"\x00", b"\x00\x00")
    assert is_local(BucketRadius(0), b"ab", b"ab") and not is_local(BucketRadius(0), b"ab", b"ac")
    assert is_local(ExactMatchOnly(), b"x", b"x") and not is_local(ExactMatchOnly(), b"x", b"y")
    salt = bytes(32)
    assert is_local(CustomHashNeighborhood(256, salt), b"x", b"x")
    assert is_local(CustomHashNeighborhood(0, salt), b"x", b"y")
    with pytest.raises(InvalidArgument):
        is_local(CustomHashNeighborhood(257, salt), b"x", b"x")


# --- memoised default resolution hash and the C-level accuracy count ------------------------


@pytest.mark.parametrize("symbols", [2, 3, 4, 8, 256, 257, 2**32 - 1])
def test_default_resolution_hash_is_the_hash_of_the_default_resolution(symbols):
    want = compute_resolution_hash(OracleResolution(num_symbols=symbols))
    assert compute_default_resolution_hash(symbols) == want
    assert compute_default_resolution_hash(symbols) == want  # the memoised value too
    pins = OraclePins.for_default_resolution(symbols, ttl_epochs=3, pinned_epoch=7)
    assert pins == OraclePins.create(OracleResolution(num_symbols=symbols), 3, 7)


def test_default_resolution_hash_differs_per_symbol_count():
    hashes = {compute_default_resolution_hash(n) for n in range(2, 40)}
    assert len(hashes) == 38
    assert compute_default_resolution_hash(4) != compute_default_resolution_hash(8)


@pytest.mark.parametrize("bad", [0, 1, -4, 2**32, 4.0, True])
def test_default_resolution_hash_refuses_what_the_resolution_refuses_every_time(bad):
    compute_default_resolution_hash(4)  # a valid neighbour in the cache changes nothing
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            compute_default_resolution_hash(bad)
        with pytest.raises(InvalidArgument):
            OraclePins.for_default_resolution(bad, ttl_epochs=1, pinned_epoch=0)


def _accuracy_by_rows(labels: bytes, predictions: bytes) -> float:
    return sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_accuracy_of_bytes_counts_rows_like_the_generic_path(data):
    n = data.draw(st.integers(1, 300))
    labels = bytes(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    predictions = bytes(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    fast = compute_accuracy(labels, predictions)
    assert fast == _accuracy_by_rows(labels, predictions)
    generic = compute_accuracy(bytearray(labels), bytearray(predictions))  # type: ignore[arg-type]
    assert fast == generic


@pytest.mark.parametrize(
    ("labels", "predictions", "message"),
    [
        (b"", b"", "holdout labels must be non-empty and binary"),
        (b"\x00\x02", b"\x00\x01", "holdout labels must be non-empty and binary"),
        (b"\x00\x01", b"\x00", "prediction length does not match the holdout"),
        (b"\x00\x01", b"\x00\xff", "predictions must be binary"),
        (b"\x00\x01\x01", b"\x01\x00\x02", "predictions must be binary"),
    ],
)
def test_accuracy_refusals_are_the_same_on_both_paths(labels, predictions, message):
    for kind in (bytes, bytearray):
        with pytest.raises(InvalidArgument) as refused:
            compute_accuracy(kind(labels), kind(predictions))  # type: ignore[arg-type]
        assert refused.value.message == message
