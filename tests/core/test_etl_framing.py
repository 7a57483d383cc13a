"""The reference ``etl.log`` framing: spec 40 §1.1 vectors, strict and lenient parsing."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core.etl_framing import (
    MAX_PAYLOAD_SIZE,
    EtlFramingError,
    frame_record,
    parse_prefix,
    parse_records,
    record_crc,
)
from evidenceos.core.merkle import hash_leaf
from evidenceos.errors import InvalidArgument

H = bytes.fromhex

ABC_LOG = H("0100000061638ff7c10100000062d9defe5801000000634feef92f")
REVOCATION_PAYLOAD = (
    b'{"capsule_hash_hex":"' + b"ab" * 32 + b'","reason":"root revoked","revoked_at_index":3}'
)


def test_crc_vectors() -> None:
    """spec 40 §10 item 2 and §11."""
    assert record_crc(H("03000000"), b"abc") == 0x66E15D33
    assert record_crc(H("04000000"), b"data") == 0x6DDFFDEC
    assert record_crc(H("04000000"), b"dAta") != 0x6DDFFDEC
    assert frame_record(b"abc")[-4:] == (0x66E15D33).to_bytes(4, "little")
    assert record_crc(b"\x01\x02", b"xyz") == zlib.crc32(b"\x01\x02xyz")


def test_abc_log_bytes() -> None:
    log = b"".join(frame_record(p) for p in (b"a", b"b", b"c"))
    assert log == ABC_LOG
    assert len(log) == 27
    assert hashlib.sha256(log).hexdigest() == (
        "a76cab20431cfb9fa43294fbe5de0c4aaa1e1d35455ddab4e694078324b5bd4a"
    )
    assert parse_records(log) == [b"a", b"b", b"c"]
    assert parse_prefix(log) == ([b"a", b"b", b"c"], 27)


def test_revocation_example_framing() -> None:
    """spec 40 §1.2 worked example: 132-byte payload, crc ffbb0bf5."""
    assert len(REVOCATION_PAYLOAD) == 132
    framed = frame_record(REVOCATION_PAYLOAD)
    assert framed == H("84000000") + REVOCATION_PAYLOAD + H("ffbb0bf5")
    assert hash_leaf(REVOCATION_PAYLOAD).hex() == (
        "4636afce3412b694971c8c17027bf177dace7707690f444656fd0d6ce881dc6b"
    )
    assert parse_records(framed) == [REVOCATION_PAYLOAD]


def test_empty_payload_and_empty_log() -> None:
    framed = frame_record(b"")
    assert len(framed) == 8
    assert framed[:4] == b"\x00\x00\x00\x00"
    assert parse_records(framed) == [b""]
    assert parse_records(b"") == []
    assert parse_prefix(b"") == ([], 0)


class _Sized(bytes):
    """A short buffer that reports a huge length, so the limit is checked without 4 GiB."""

    claimed: int = 0

    def __len__(self) -> int:
        return self.claimed


def _sized(claimed: int) -> bytes:
    value = _Sized(b"x")
    value.claimed = claimed
    return value


def test_length_limit_is_u32() -> None:
    """spec 40 §10 item 16: 0 and 2^32 - 1 accepted, 2^32 rejected."""
    assert MAX_PAYLOAD_SIZE == 2**32 - 1
    assert frame_record(_sized(2**32 - 1))[:4] == b"\xff\xff\xff\xff"
    with pytest.raises(InvalidArgument, match="u32 limit"):
        frame_record(_sized(2**32))


# --- strict parser errors (messages follow analysis/etl_reader.py, spec 40 §1.5) ---------------


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_trailing_partial_length_prefix(extra: int) -> None:
    with pytest.raises(EtlFramingError, match="truncated ETL length prefix at byte 27") as info:
        parse_records(ABC_LOG + b"\x05" * extra)
    assert (info.value.index, info.value.offset) == (3, 27)
    assert parse_prefix(ABC_LOG + b"\x05" * extra) == ([b"a", b"b", b"c"], 27)


def test_truncated_payload() -> None:
    """spec 40 §10 item 10: two records, then a length prefix and half a payload."""
    data = ABC_LOG[:18] + frame_record(b"0123456789")[:9]
    with pytest.raises(
        EtlFramingError, match=r"truncated ETL record payload at index 2 \(length=10"
    ) as info:
        parse_records(data)
    assert (info.value.index, info.value.offset) == (2, 18)
    assert parse_prefix(data) == ([b"a", b"b"], 18)


@pytest.mark.parametrize("missing", [1, 2, 3, 4])
def test_missing_crc_bytes_is_a_truncated_payload(missing: int) -> None:
    with pytest.raises(EtlFramingError, match="truncated ETL record payload at index 2"):
        parse_records(ABC_LOG[:-missing])
    assert parse_prefix(ABC_LOG[:-missing]) == ([b"a", b"b"], 18)


def test_crc_mismatch_names_the_record() -> None:
    """spec 40 §10 item 9: one flipped payload bit in record k; the valid prefix is k records."""
    data = bytearray(ABC_LOG)
    data[9 + 4] ^= 0x20  # payload byte of record 1: "b" -> "B"
    expected = int.from_bytes(ABC_LOG[14:18], "little")
    actual = record_crc(b"\x01\x00\x00\x00", b"B")
    with pytest.raises(
        EtlFramingError, match=f"CRC mismatch at ETL index 1: expected={expected} actual={actual}"
    ) as info:
        parse_records(bytes(data))
    assert (info.value.index, info.value.offset) == (1, 9)
    assert parse_prefix(bytes(data)) == ([b"a"], 9)


def test_framing_error_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        parse_records(b"\x00")


# --- properties -------------------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=64), max_size=12)


@given(payload_lists)
def test_round_trip(payloads: list[bytes]) -> None:
    data = b"".join(frame_record(p) for p in payloads)
    assert len(data) == sum(len(p) + 8 for p in payloads)
    assert parse_records(data) == payloads
    assert parse_prefix(data) == (payloads, len(data))


@given(payload_lists, st.data())
def test_any_truncation_keeps_the_whole_records_before_the_cut(
    payloads: list[bytes], data: st.DataObject
) -> None:
    frames = [frame_record(p) for p in payloads]
    log = b"".join(frames)
    cut = data.draw(st.integers(0, len(log)), label="cut")
    boundaries = [0]
    for frame in frames:
        boundaries.append(boundaries[-1] + len(frame))
    whole = sum(1 for end in boundaries[1:] if end <= cut)
    assert parse_prefix(log[:cut]) == (payloads[:whole], boundaries[whole])
    if cut in boundaries:
        assert parse_records(log[:cut]) == payloads[:whole]
    else:
        with pytest.raises(EtlFramingError) as info:
            parse_records(log[:cut])
        assert (info.value.index, info.value.offset) == (whole, boundaries[whole])


@given(st.lists(st.binary(max_size=32), min_size=1, max_size=6), st.data())
def test_any_single_bit_flip_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    log = bytearray(b"".join(frame_record(p) for p in payloads))
    bit = data.draw(st.integers(0, 8 * len(log) - 1), label="bit")
    log[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(EtlFramingError):
        parse_records(bytes(log))
