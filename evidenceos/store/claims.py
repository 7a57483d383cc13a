"""Table module for ``claims``, ``claim_artifacts``, ``wasm_modules`` and ``compiled_modules``."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, attrgetter, is_not, or_
from typing import Any, Generic, TypeVar

from evidenceos.core.claim import FIELD_NAMES, ClaimRecord
from evidenceos.errors import NotFound
from evidenceos.store.db import Connection

_UPSERT = """
INSERT INTO claims(claim_id, owner_principal_id, claim_name, topic_id, holdout_ref, holdout_handle,
  oracle_id, lane, output_schema_id, state, wasm_sha256, last_decision, last_capsule_hash,
  etl_index, record_json, created_at_ms, updated_at_ms)
VALUES (:claim_id, :owner, :claim_name, :topic_id, :holdout_ref, :holdout_handle, :oracle_id,
  :lane, :output_schema_id, :state, :wasm_sha256, :last_decision, :last_capsule_hash, :etl_index,
  :record_json, :now, :now)
ON CONFLICT(claim_id) DO UPDATE SET
  lane = excluded.lane, state = excluded.state, wasm_sha256 = excluded.wasm_sha256,
  last_decision = excluded.last_decision, last_capsule_hash = excluded.last_capsule_hash,
  etl_index = excluded.etl_index, record_json = excluded.record_json,
  updated_at_ms = excluded.updated_at_ms
"""


_UPDATE = """
UPDATE claims SET lane = :lane, state = :state, wasm_sha256 = :wasm_sha256,
  last_decision = :last_decision, last_capsule_hash = :last_capsule_hash, etl_index = :etl_index,
  record_json = :record_json, updated_at_ms = :now
WHERE claim_id = :claim_id
"""

#: ``json.dumps(..., sort_keys=True)`` with the encoder built once rather than on every call.
_ENCODER = json.JSONEncoder(sort_keys=True)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriterRows(Generic[K, V]):
    """Rows as the store's own writes left them, so that write functions need not read them
    again (used by the claims, pools and accounts tables).

    An entry holds for the writer connection and the ``Store.generation`` it was made under:
    the generation changes whenever another connection committed or a write was rolled back,
    and every write of the table by this connection goes through its module, which updates the
    entry (or, given no generation, drops it). Only write functions pass a generation."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, tuple[Connection, int, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conn: Connection, generation: int | None, key: K) -> V | None:
        if generation is None:
            return None
        with self._lock:
            hit = self._items.get(key)
        if hit is None or hit[0] is not conn or hit[1] != generation:
            return None
        return hit[2]

    def put(self, conn: Connection, generation: int | None, key: K, value: V | None) -> None:
        """Remember ``value`` for ``key``; ``None`` (or no generation) forgets the key."""
        with self._lock:
            if generation is None or value is None:
                self._items.pop(key, None)
                return
            self._items[key] = (conn, generation, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


#: ``record_json`` texts of claims, by claim id.
_rows: WriterRows[bytes, str] = WriterRows(1024)


def encode_claim(record: ClaimRecord) -> str:
    """The ``record_json`` text of ``record``."""
    return _ENCODER.encode(record.to_json())


def _values_encoder() -> Callable[[Iterable[Any]], Iterator[str]]:
    """``map(_ENCODER.encode, values)``, with the C encoder built once and called from C."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has the C accelerator
        return lambda values: map(_ENCODER.encode, values)
    # _ENCODER's settings: no markers (claim records are never circular), its default, ASCII
    # escapes, no indent, ": " and ", ", sort_keys, no skipkeys, allow_nan.
    encode = make(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        True,
        False,
        True,
    )
    return lambda values: map("".join, map(encode, values, repeat(0)))


_encode_values = _values_encoder()
_KEYS: tuple[str, ...] = tuple(sorted(FIELD_NAMES))  # record_json's key order
_KEY_SET = frozenset(_KEYS)
_PREFIXES = tuple(json.dumps(key) + ": " for key in _KEYS)
_VALUES = attrgetter(*_KEYS)
_INDICES = range(len(_KEYS))
#: Mutable containers: re-encoded every time rather than trusted by identity.
_MUTABLE: frozenset[type] = frozenset({dict, list, bytearray})


@dataclass(frozen=True, slots=True)
class _Encoded:
    """The last record :func:`put_claim` encoded for a claim: its field values (key order), each
    field's ``"key": value`` text, whether the record decodes to itself, and its text."""

    values: tuple[Any, ...]
    parts: tuple[str, ...]
    exact: bool
    text: str


ENCODED_CACHE_SIZE = 256
_encoded: OrderedDict[bytes, _Encoded] = OrderedDict()
_encoded_lock = threading.Lock()


def _encode(record: ClaimRecord) -> tuple[str, bool, str | None]:
    """``(encode_claim(record), record.decodes_to_itself(), previous)``, working only on the
    fields that changed since the last record encoded for the claim, whose text is ``previous``.

    A claim moves by ``evolve``, so most field values are the very objects of the record written
    before; a field's text and its decode check depend on its value alone (claim records are
    immutable values), so those of an unchanged field are reused."""
    values: tuple[Any, ...] = _VALUES(record)
    claim_key = bytes(record.claim_id)
    with _encoded_lock:
        last = _encoded.get(claim_key)
    json_values = record.to_json()
    if json_values.keys() != _KEY_SET:  # pragma: no cover - to_json names every field
        return encode_claim(record), record.decodes_to_itself(), None
    if last is None or type(record) is not ClaimRecord:
        texts = _encode_values(map(json_values.__getitem__, _KEYS))
        parts = list(map(add, _PREFIXES, texts))
        exact = record.decodes_to_itself()
    else:  # C-level: a field changed if its value is another object or a mutable container
        is_new = map(is_not, values, last.values)
        changed = list(
            compress(_INDICES, map(or_, is_new, map(_MUTABLE.__contains__, map(type, values))))
        )
        keys = [_KEYS[i] for i in changed]
        parts = list(last.parts)
        for i, text in zip(
            changed, _encode_values(map(json_values.__getitem__, keys)), strict=True
        ):
            parts[i] = _PREFIXES[i] + text
        exact = (
            record.fields_decode_to_themselves(keys) if last.exact else record.decodes_to_itself()
        )
    text = "{" + ", ".join(parts) + "}"
    with _encoded_lock:
        _encoded[claim_key] = _Encoded(values, tuple(parts), exact, text)
        _encoded.move_to_end(claim_key)
        while len(_encoded) > ENCODED_CACHE_SIZE:
            _encoded.popitem(last=False)
    return text, exact, None if last is None else last.text


def put_claim(
    conn: Connection,
    record: ClaimRecord,
    now_ms: int,
    *,
    artifacts_changed: bool = True,
    stored: bool = False,
    generation: int | None = None,
) -> None:
    """Insert or update the claim; ``artifacts_changed=False`` (the caller only changed other
    fields of a stored claim) leaves its ``claim_artifacts`` rows as they are.

    ``stored=True`` says the caller read the claim's row in this transaction: the row is then
    updated in place (the same columns as the upsert's update), without the insert attempt.
    When decoding the text written gives back exactly ``record`` (see
    :meth:`ClaimRecord.decodes_to_itself`), ``record`` is remembered as its decoding, in place
    of the claim's previous text. A write function passes its store's ``generation``: later
    write functions then read the row back without a query (:class:`WriterRows`)."""
    text, exact, previous = _encode(record)
    params = {
        "claim_id": record.claim_id,
        "owner": record.owner_principal_id,
        "claim_name": record.claim_name,
        "topic_id": record.topic_id,
        "holdout_ref": record.holdout_ref,
        "holdout_handle": record.holdout_handle,
        "oracle_id": record.oracle_id,
        "lane": record.lane,
        "output_schema_id": record.output_schema_id,
        "state": record.state.name,
        "wasm_sha256": record.wasm_sha256,
        "last_decision": record.last_decision,
        "last_capsule_hash": record.last_capsule_hash,
        "etl_index": record.etl_index,
        "record_json": text,
        "now": now_ms,
    }
    if stored:
        conn.execute(_UPDATE, params)
        if conn.changes() != 1:  # not there after all: insert it, exactly as the upsert would
            conn.execute(_UPSERT, params)
    else:
        conn.execute(_UPSERT, params)
    _rows.put(conn, generation, bytes(record.claim_id), text)
    with _decoded_lock:
        if previous is not None and previous != text:  # a text the row no longer holds
            _decoded.pop(previous, None)
    if exact:
        _remember(text, record)
    if not artifacts_changed:
        return
    conn.execute("DELETE FROM claim_artifacts WHERE claim_id = ?", (record.claim_id,))
    for position, artifact in enumerate(record.artifacts):
        conn.execute(
            "INSERT INTO claim_artifacts(claim_id, position, kind, artifact_hash) "
            "VALUES (?, ?, ?, ?)",
            (record.claim_id, position, artifact.kind, artifact.artifact_hash),
        )


# Decoded records by the exact ``record_json`` text they were decoded from (or encoded to, when
# decoding that text returns the record exactly). Decoding is a pure function of the text and a
# ClaimRecord is an immutable value, so a hit is exactly what decoding again would return; a
# claim that changed has another text and misses. A write that rolls back leaves a correct entry
# (text -> its decoding) that no row holds. Bounded LRU; about one entry per claim, as a claim's
# write drops its previous text.
DECODE_CACHE_SIZE = 1024
_decoded: OrderedDict[str, ClaimRecord] = OrderedDict()
_decoded_lock = threading.Lock()


def _remember(text: str, record: ClaimRecord) -> None:
    with _decoded_lock:
        _decoded[text] = record
        _decoded.move_to_end(text)
        while len(_decoded) > DECODE_CACHE_SIZE:
            _decoded.popitem(last=False)


def decode_claim(text: str) -> ClaimRecord:
    """``ClaimRecord.from_json(json.loads(text))``, memoised on ``text``.

    A text :func:`put_claim` wrote reads back as the record it encoded, when that record is
    exactly what decoding the text returns."""
    with _decoded_lock:
        record = _decoded.get(text)
        if record is not None:
            _decoded.move_to_end(text)
            return record
    record = ClaimRecord.from_json(json.loads(text))
    _remember(text, record)
    return record


def find_claim_text(conn: Connection, claim_id: bytes, generation: int | None = None) -> str | None:
    """The claim's stored ``record_json`` (compare it to tell whether a claim changed).

    A write function passes its store's ``generation``: the text is then taken from (and kept
    in) the writer's rows (:class:`WriterRows`)."""
    text = _rows.get(conn, generation, bytes(claim_id))
    if text is not None:
        return text
    row = conn.execute("SELECT record_json FROM claims WHERE claim_id = ?", (claim_id,)).get
    text = None if row is None else str(row)
    _rows.put(conn, generation, bytes(claim_id), text)
    return text


def find_claim(
    conn: Connection, claim_id: bytes, generation: int | None = None
) -> ClaimRecord | None:
    text = find_claim_text(conn, claim_id, generation)
    return None if text is None else decode_claim(text)


def get_claim(conn: Connection, claim_id: bytes, generation: int | None = None) -> ClaimRecord:
    return get_claim_and_text(conn, claim_id, generation)[0]


def get_claim_and_text(
    conn: Connection, claim_id: bytes, generation: int | None = None
) -> tuple[ClaimRecord, str]:
    text = find_claim_text(conn, claim_id, generation)
    if text is None:
        raise NotFound("claim not found")
    return decode_claim(text), text


def iter_claims(conn: Connection) -> Iterator[ClaimRecord]:
    for (text,) in conn.execute("SELECT record_json FROM claims ORDER BY created_at_ms, claim_id"):
        yield decode_claim(str(text))


def claims_with_capsule(conn: Connection, capsule_hash: bytes) -> list[ClaimRecord]:
    return [
        decode_claim(str(text))
        for (text,) in conn.execute(
            "SELECT record_json FROM claims WHERE last_capsule_hash = ?", (capsule_hash,)
        )
    ]


def put_wasm_module(conn: Connection, module: bytes, now_ms: int) -> bytes:
    digest = hashlib.sha256(module).digest()
    conn.execute(
        "INSERT INTO wasm_modules(module_sha256, module, first_seen_at_ms) VALUES (?, ?, ?) "
        "ON CONFLICT(module_sha256) DO NOTHING",
        (digest, module, now_ms),
    )
    return digest


def get_wasm_module(conn: Connection, module_sha256: bytes) -> bytes:
    row = conn.execute(
        "SELECT module FROM wasm_modules WHERE module_sha256 = ?", (module_sha256,)
    ).get
    if not isinstance(row, bytes):
        raise NotFound("wasm module not found")
    return row


def get_compiled_module(conn: Connection, module_sha256: bytes, fingerprint: str) -> bytes | None:
    row = conn.execute(
        "SELECT artefact FROM compiled_modules WHERE module_sha256 = ? AND engine_fingerprint = ?",
        (module_sha256, fingerprint),
    ).get
    return row if isinstance(row, bytes) else None


def has_compiled_module(conn: Connection, module_sha256: bytes, fingerprint: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM compiled_modules WHERE module_sha256 = ? AND engine_fingerprint = ?",
            (module_sha256, fingerprint),
        ).get
        is not None
    )


def put_compiled_module(
    conn: Connection, module_sha256: bytes, fingerprint: str, artefact: bytes, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO compiled_modules(module_sha256, engine_fingerprint, artefact, compiled_at_ms) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (module_sha256, fingerprint, artefact, now_ms),
    )


def count_by_state(conn: Connection) -> dict[str, int]:
    return {
        str(state): int(count)
        for state, count in conn.execute("SELECT state, count(*) FROM claims GROUP BY state")
    }
