"""The reference ``etl.log`` record framing (spec 40 §1.1, byte-exact).

``record = u32le(len) || payload || u32le(crc32(u32le(len) || payload))``, records concatenated with
no header or padding; record *i* is Merkle leaf *i*. In the port ``etl.log`` is an export of the
database kept so the reference's readers (``analysis/etl_reader.py``, ``evidenceos-etl-indexer``)
still work, and an input to the import command (DESIGN §3, §4). The strict parser therefore names
the first damaged record the way ``etl_reader.py`` does (spec 40 §1.5) instead of silently
dropping the tail as the reference daemon's open does (§1.4); the lenient parser exists for callers
that want to report how much of a file is intact.
"""

from __future__ import annotations

import struct
import zlib

from evidenceos.errors import InvalidArgument

__all__ = [
    "MAX_PAYLOAD_SIZE",
    "EtlFramingError",
    "frame_record",
    "parse_prefix",
    "parse_records",
    "record_crc",
]

MAX_PAYLOAD_SIZE = (1 << 32) - 1
"""Largest payload a u32 length prefix can describe; the reference rejects anything longer."""

_U32LE = struct.Struct("<I")
_OVERHEAD = 2 * _U32LE.size


class EtlFramingError(InvalidArgument):
    """An ``etl.log`` byte string is not a clean sequence of framed records.

    ``index`` is the 0-based record (= leaf) index and ``offset`` the byte offset where that record
    starts, so an operator can cut or inspect the file at the right place.
    """

    def __init__(self, message: str, *, index: int, offset: int) -> None:
        super().__init__(message)
        self.index = index
        self.offset = offset


def record_crc(length_prefix: bytes, payload: bytes) -> int:
    """CRC-32 (zlib / IEEE 802.3) over the 4 length bytes followed by the payload."""
    return zlib.crc32(payload, zlib.crc32(length_prefix)) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    """The framed bytes for one payload, built whole so the writer can emit one ``os.write``."""
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise InvalidArgument(
            f"ETL payload of {len(payload)} bytes exceeds the u32 limit of {MAX_PAYLOAD_SIZE}"
        )
    prefix = _U32LE.pack(len(payload))
    return prefix + payload + _U32LE.pack(record_crc(prefix, payload))


def _next_record(data: bytes, offset: int, index: int) -> tuple[bytes, int]:
    """Decode the record starting at ``offset``; return its payload and the next offset."""
    end = len(data)
    if offset + _U32LE.size > end:
        raise EtlFramingError(
            f"truncated ETL length prefix at byte {offset} (index {index})",
            index=index,
            offset=offset,
        )
    (length,) = _U32LE.unpack_from(data, offset)
    if offset + _OVERHEAD + length > end:
        raise EtlFramingError(
            f"truncated ETL record payload at index {index} (length={length}, byte {offset})",
            index=index,
            offset=offset,
        )
    payload_start = offset + _U32LE.size
    payload = bytes(data[payload_start : payload_start + length])
    (expected,) = _U32LE.unpack_from(data, payload_start + length)
    actual = record_crc(bytes(data[offset:payload_start]), payload)
    if expected != actual:
        raise EtlFramingError(
            f"CRC mismatch at ETL index {index}: expected={expected} actual={actual} "
            f"(byte {offset})",
            index=index,
            offset=offset,
        )
    return payload, payload_start + length + _U32LE.size


def parse_records(data: bytes) -> list[bytes]:
    """All payloads of a complete ``etl.log``; :class:`EtlFramingError` at the first bad record.

    Strict like ``analysis/etl_reader.py``: trailing bytes that do not form a whole record are an
    error, not end-of-file.
    """
    payloads: list[bytes] = []
    offset = 0
    while offset < len(data):
        payload, offset = _next_record(data, offset, len(payloads))
        payloads.append(payload)
    return payloads


def parse_prefix(data: bytes) -> tuple[list[bytes], int]:
    """The payloads of the longest valid prefix and the byte offset where that prefix ends.

    ``offset == len(data)`` means the whole input is valid; anything less is where the first
    truncated or corrupt record starts (the reference daemon's recovery point, spec 40 §1.4).
    """
    payloads: list[bytes] = []
    offset = 0
    while offset < len(data):
        try:
            payload, next_offset = _next_record(data, offset, len(payloads))
        except EtlFramingError:
            break
        payloads.append(payload)
        offset = next_offset
    return payloads, offset
