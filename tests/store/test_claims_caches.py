"""Caches of the claim tables and epoch configs, on a real apsw store and real files.

* ``put_claim`` remembers the record it wrote with the text it wrote; the first read of that text
  returns the record itself only when decoding the text would give back exactly that record
  (same values, same types, same dict order), else it decodes.
* ``put_claim(stored=True)`` updates the row in place, and inserts it if it is not there.
* Epoch configs are kept by (device, inode, size, mtime, ctime): any change of the file is read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evidenceos.core.claim import Artifact, ClaimRecord, PlnConfig
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.ledger import ConservationLedger
from evidenceos.errors import FailedPrecondition, InvalidArgument
from evidenceos.store import claims as claims_table
from evidenceos.store import epoch_configs
from evidenceos.store.db import Connection, Store
from evidenceos.store.epoch_configs import EpochConfig, load_epoch_config
from tests.support.claims import same_value, sample_claim_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    try:
        yield s
    finally:
        s.close()


class _Text(str):
    __slots__ = ()


def _record(name: str = "c", **changes: Any) -> ClaimRecord:
    record = sample_claim_record(name).evolve(
        ledger=ConservationLedger.create(0.05, k_bits_budget=1024.0, access_credit_budget=1024.0)
        .charge(4.0, "structured_output", {"a": 1, "b": 2.0})
        .settle_e_value(1.5, "decision"),
        semantic_hash=b"\x01" * 32,
        artifacts=(Artifact("wasm", b"\x02" * 32),),
        oracle_pins={"bit_width": 2, "ttl_epochs": 1},
        extra={"k": [1, 2.5, None, "x", {"a": True}]},
    )
    return record.evolve(**changes)


def _put(store: Store, record: ClaimRecord, **kwargs: Any) -> str:
    def write(conn: Connection) -> str:
        claims_table.put_claim(conn, record, 1, **kwargs)
        text = claims_table.find_claim_text(conn, record.claim_id)
        assert text is not None
        return text

    return store.write(write)


def _read(store: Store, claim_id: bytes) -> ClaimRecord:
    with store.read() as conn:
        return claims_table.get_claim(conn, claim_id)


# -- the written record stands for its text only when decoding would give it back ---------------


def test_a_record_that_decodes_to_itself_is_returned_for_its_text(store: Store) -> None:
    record = _record("exact")
    assert record.decodes_to_itself()
    text = _put(store, record)
    decoded = ClaimRecord.from_json(json.loads(text))
    assert same_value(decoded, record)  # what the guard promises, checked the slow way
    assert _read(store, record.claim_id) is record
    assert _read(store, record.claim_id) is record  # now an ordinary decode-cache hit


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("extra", {"t": (1, 2)}),  # a tuple comes back as a list
        ("extra", {"b": 1, "a": 2}),  # keys come back sorted
        ("extra", {1: "x"}),  # keys come back as strings
        ("oracle_pins", {"z": 1, "a": 2}),
        ("alpha_micros", True),  # int() turns it into 1
        ("holdout_len", 128.0),
        ("holdout_pool_principals", ["", "alice"]),  # comes back a tuple
        ("semantic_hash", bytearray(32)),
        ("dp_epsilon_budget", (1.0,)),
        ("aspec_summary", _Text("a str subclass")),
        ("pln", PlnConfig(100, 500, fast=1)),  # type: ignore[arg-type]
    ],
)
def test_a_record_that_would_not_decode_to_itself_is_decoded(
    store: Store, field: str, value: Any
) -> None:
    record = _record(f"inexact-{field}-{value!r}", **{field: value})
    assert not record.decodes_to_itself()
    text = _put(store, record)
    read = _read(store, record.claim_id)
    assert read is not record
    assert same_value(read, ClaimRecord.from_json(json.loads(text)))


@pytest.mark.parametrize(
    "ledger",
    [
        ConservationLedger(alpha=0.05, k_bits_total=1),  # from_json makes it 1.0
        ConservationLedger.create(0.05).charge(1.0, "k", {"b": 1, "a": 2}),  # meta order
        ConservationLedger.create(0.05).charge(1.0, "k", {"t": (1,)}),
        ConservationLedger(alpha=0.05, k_bits_budget=3),
    ],
)
def test_a_ledger_that_would_not_decode_to_itself_is_decoded(
    store: Store, ledger: ConservationLedger
) -> None:
    record = _record(f"ledger-{ledger!r}", ledger=ledger)
    assert not record.decodes_to_itself()
    text = _put(store, record)
    read = _read(store, record.claim_id)
    assert read is not record
    assert same_value(read, ClaimRecord.from_json(json.loads(text)))


def test_only_the_first_read_of_the_latest_text_can_return_the_written_record(
    store: Store,
) -> None:
    first = _record("two-writes")
    second = first.evolve(state=ClaimState.COMMITTED, execution_nonce=1)
    _put(store, first)
    _put(store, second, stored=True)
    assert _read(store, first.claim_id) is second
    assert _read(store, first.claim_id).state is ClaimState.COMMITTED


def test_a_rolled_back_write_is_never_read(store: Store) -> None:
    record = _record("rollback")
    _put(store, record)
    changed = record.evolve(state=ClaimState.SEALED)

    def write(conn: Connection) -> None:
        claims_table.put_claim(conn, changed, 2, stored=True)
        raise FailedPrecondition("roll back")

    with pytest.raises(FailedPrecondition):
        store.write(write)
    assert _read(store, record.claim_id).state is ClaimState.UNCOMMITTED


# -- update in place ----------------------------------------------------------------------------


def _row(store: Store, claim_id: bytes) -> tuple[Any, ...]:
    with store.read() as conn:
        return tuple(conn.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).get)


def test_update_in_place_writes_the_row_the_upsert_writes(store: Store, tmp_path: Path) -> None:
    other = Store(tmp_path / "other")
    try:
        record = _record("rows")
        changed = record.evolve(
            state=ClaimState.SEALED, lane="heavy", last_decision=2, etl_index=None
        )
        for s, kwargs in ((store, {"stored": True}), (other, {})):
            _put(s, record)
            _put(s, changed, **kwargs)
        assert _row(store, record.claim_id) == _row(other, record.claim_id)
    finally:
        other.close()


def test_update_in_place_of_a_missing_row_inserts_it(store: Store) -> None:
    record = _record("missing")
    text = _put(store, record, stored=True)
    assert text == claims_table.encode_claim(record)
    with store.read() as conn:
        [(kind, digest)] = conn.execute(
            "SELECT kind, artifact_hash FROM claim_artifacts WHERE claim_id = ?",
            (record.claim_id,),
        ).fetchall()
    assert (kind, digest) == ("wasm", b"\x02" * 32)


def test_encode_claim_is_sorted_json() -> None:
    record = _record("encode")
    assert claims_table.encode_claim(record) == json.dumps(record.to_json(), sort_keys=True)


# -- epoch configs --------------------------------------------------------------------------


def _write_config(data_dir: Path, config: dict[str, Any], *, age_s: float = 60.0) -> Path:
    path = data_dir / "epoch_configs" / "epoch" / "cfg.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _config(epoch_size: int, target: int = 100) -> dict[str, Any]:
    return {"epoch_size": epoch_size, "pln": {"target_fuel": target, "max_fuel": 500}}


def test_epoch_config_is_kept_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(epoch_configs, "RACY_WINDOW_NS", 0)  # a settled file, without waiting
    path = _write_config(tmp_path, _config(16))
    first = load_epoch_config(tmp_path, "epoch/cfg")
    assert first == EpochConfig(16, PlnConfig(100, 500))
    assert load_epoch_config(tmp_path, "epoch/cfg") is first  # kept
    # Same size, same (old) mtime: only the ctime and content differ.
    stat = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick
    _write_config(tmp_path, _config(32))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert load_epoch_config(tmp_path, "epoch/cfg") == EpochConfig(32, PlnConfig(100, 500))


def test_epoch_config_replaced_or_removed_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(epoch_configs, "RACY_WINDOW_NS", 0)
    path = _write_config(tmp_path, _config(16))
    assert load_epoch_config(tmp_path, "epoch/cfg") == EpochConfig(16, PlnConfig(100, 500))
    replacement = path.with_name("new.json")
    replacement.write_text(json.dumps(_config(8, target=50)))
    os.replace(replacement, path)
    assert load_epoch_config(tmp_path, "epoch/cfg") == EpochConfig(8, PlnConfig(50, 500))
    path.unlink()
    assert load_epoch_config(tmp_path, "epoch/cfg") is None
    path.write_text("{not json")
    with pytest.raises(FailedPrecondition):
        load_epoch_config(tmp_path, "epoch/cfg")
    path.write_text(json.dumps([1]))
    with pytest.raises(InvalidArgument):
        load_epoch_config(tmp_path, "epoch/cfg")


def test_a_freshly_written_epoch_config_is_read_every_time(tmp_path: Path) -> None:
    """Within the racy window two same-size writes in one clock tick could share a key, so a
    fresh file is never kept: here even an identical stat key shows the new content."""
    path = _write_config(tmp_path, _config(16), age_s=0)
    stat = path.stat()
    assert load_epoch_config(tmp_path, "epoch/cfg") == EpochConfig(16, PlnConfig(100, 500))
    path.write_text(json.dumps(_config(32)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_epoch_config(tmp_path, "epoch/cfg") == EpochConfig(32, PlnConfig(100, 500))


def test_epoch_config_refs_outside_the_directory_are_refused_every_time(tmp_path: Path) -> None:
    for _ in range(2):
        for ref in ("../x", "/abs", "a/../b", "a\\b"):
            with pytest.raises(InvalidArgument):
                load_epoch_config(tmp_path, ref)
    assert epoch_configs.epoch_config_path(tmp_path, "a/b.c") == (
        tmp_path / "epoch_configs" / "a" / "b.json"
    )
