"""Exported views: etl.log mirrors the database in the reference framing; state.json follows
its schema; exports self-heal a damaged mirror. How etl.log is replaced (never written in place)
is tested in test_etl_mirror_atomic.py."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import jsonschema
import pytest

from evidenceos.service.log_service import LogService
from evidenceos.store.db import Store
from evidenceos.store.export import Exporter
from evidenceos.store.keys import load_keyring
from tests.support.paths import REPO_ROOT


def _frame(payload: bytes) -> bytes:
    head = struct.pack("<I", len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


@pytest.fixture
def populated(data_dir: Path) -> tuple[Store, LogService, Exporter]:
    store = Store(data_dir)
    service = LogService(store, load_keyring(data_dir, allow_generate=True))
    service.start()
    for i in range(5):
        service.append_entry({"kind": "test", "i": i})
    return store, service, Exporter(store, data_dir)


def _expected(store: Store) -> bytes:
    with store.read() as conn:
        rows = conn.execute("SELECT payload FROM log_leaves ORDER BY leaf_index").fetchall()
    payloads = [r[0] for r in rows if isinstance(r[0], bytes)]
    assert len(payloads) == len(rows)
    return b"".join(_frame(p) for p in payloads)


def test_mirror_keeps_its_prefix_and_adds_only_the_tail(
    populated: tuple[Store, LogService, Exporter], data_dir: Path
) -> None:
    store, service, exporter = populated
    with store:
        first = exporter.export_etl_log()
        assert first.rewritten  # no file yet
        assert (data_dir / "etl.log").read_bytes() == _expected(store)
        inode = (data_dir / "etl.log").stat().st_ino
        service.append_entry({"kind": "test", "i": 99})
        second = exporter.export_etl_log()
        assert (second.kept, second.appended, second.rewritten) == (5, 1, False)
        assert (data_dir / "etl.log").read_bytes() == _expected(store)
        assert (data_dir / "etl.log").stat().st_ino != inode  # a new file, renamed into place


@pytest.mark.parametrize(
    ("damage", "first_difference"),
    [
        (lambda b: b + b"\x01\x02\x03", 5),
        (lambda b: b + struct.pack("<I", 50) + b"half", 5),
        (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], 0),
        (lambda b: b[: len(b) // 2], None),
    ],
    ids=["trailing-bytes", "torn-record", "flipped-bit", "truncated"],
)
def test_damaged_mirror_is_rewritten_from_database(
    populated: tuple[Store, LogService, Exporter],
    data_dir: Path,
    damage: object,
    first_difference: int | None,
) -> None:
    store, _, exporter = populated
    with store:
        exporter.export_etl_log()
        path = data_dir / "etl.log"
        path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
        result = exporter.export_etl_log(full_check=True)
        assert result.published and (result.rewritten or result.appended)
        if first_difference is not None:
            assert result.first_difference == first_difference
        assert path.read_bytes() == _expected(store)


def test_state_json_matches_schema(
    populated: tuple[Store, LogService, Exporter], data_dir: Path
) -> None:
    store, service, exporter = populated
    with store:
        head = service.signed_tree_head()  # stored before the export, however heads are signed
        exporter.export_all()
    doc = json.loads((data_dir / "state.json").read_text())
    schema = json.loads((REPO_ROOT / "schema" / "state.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["log"] == {
        "tree_size": 5,
        "root_hash": head.root_hash.hex(),
        "key_id": head.key_id.hex(),
        "signature": head.signature.hex(),
    }
    assert not list(data_dir.glob(".*.tmp")), "temp files left behind"


def test_schema_dir_lists_every_migration() -> None:
    migrations = sorted(p.name for p in (REPO_ROOT / "evidenceos/store/migrations").glob("*.sql"))
    documented = sorted(p.name for p in (REPO_ROOT / "schema").glob("*.sql"))
    assert migrations == documented
    for name in migrations:
        assert (REPO_ROOT / "schema" / name).read_bytes() == (
            REPO_ROOT / "evidenceos/store/migrations" / name
        ).read_bytes()


def test_state_json_head_covers_every_leaf_of_its_snapshot(
    populated: tuple[Store, LogService, Exporter], data_dir: Path
) -> None:
    """A commit landing between signing the head and reading the snapshot must not leave
    state.json with leaves its head does not prove: the exporter signs again."""
    store, service, _ = populated
    raced: list[int] = []

    def sign_then_race() -> None:
        service.signed_tree_head()
        if not raced:  # another request commits a leaf right after the head was signed
            raced.append(service.append_entry({"kind": "test", "i": "raced"}).leaf_index)

    with store:
        Exporter(store, data_dir, sign_head=sign_then_race).export_state()
        doc = json.loads((data_dir / "state.json").read_text())
        assert raced and doc["log"]["tree_size"] == service.tree_size() == raced[0] + 1
