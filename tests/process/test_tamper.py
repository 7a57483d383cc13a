"""Tampering with a stopped data dir: the daemon refuses to start and names the damage; the
``etl.log`` mirror heals itself (spec 40 §4.2, §8.4, §9, §10 item 37; DESIGN §3, §4).

The database is edited with the plain ``sqlite3`` module, as an operator or attacker with shell
access would: drop the append-only trigger, change a row, recreate the trigger with identical SQL.
That leaves every guard in place, so only re-hashing can tell. Key files are edited with ``os``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3  # noqa: TID251 - tests tamper with the database the way an outsider would
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos.cli.ctl import main as ctl
from tests.support import merkle_naive
from tests.support.daemon import DaemonPool, ExitedDaemon, run_to_exit
from tests.support.datadir import append_entries, entry_payload, frame

pytestmark = pytest.mark.process

N = 13
EXIT_VERIFY_FAILED = 3


@pytest.fixture
def stopped_dir(tmp_path: Path) -> Path:
    """A data dir with N leaves whose daemon is not running."""
    data_dir = tmp_path / "data"
    assert append_entries(data_dir, range(N)) == N
    return data_dir


def db_path(data_dir: Path) -> Path:
    return data_dir / "evidenceos.db"


def trigger_sql(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    return {str(name): str(sql) for name, sql in rows}


@contextmanager
def guards_lifted(data_dir: Path, *triggers: str) -> Iterator[sqlite3.Connection]:
    """One transaction that drops ``triggers``, lets the caller edit, and recreates them with
    byte-identical SQL."""
    conn = sqlite3.connect(db_path(data_dir), isolation_level=None)
    try:
        before = trigger_sql(conn)
        conn.execute("BEGIN IMMEDIATE")
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        yield conn
        for name in triggers:
            conn.execute(before[name])
        conn.execute("COMMIT")
        assert trigger_sql(conn) == before
    finally:
        conn.close()


def refuse(data_dir: Path) -> ExitedDaemon:
    result = run_to_exit(data_dir)
    assert result.returncode != 0, result.stderr
    assert "evidenceosd: error:" in result.stderr
    assert any(e.get("event") == "startup_refused" for e in result.events), result.stderr
    return result


def etl_verify(data_dir: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(ctl, ["etl", "verify", "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout.splitlines()


# -- database tampering ---------------------------------------------------------------------


def test_untouched_dir_verifies(stopped_dir: Path) -> None:
    code, lines = etl_verify(stopped_dir)
    assert code == 0, lines
    assert lines[0].startswith(f"ok: {N} leaves")


def test_edited_leaf_payload_refuses_start(stopped_dir: Path) -> None:
    with guards_lifted(stopped_dir, "log_leaves_no_update") as conn:
        conn.execute(
            "UPDATE log_leaves SET payload = ? WHERE leaf_index = 5",
            (b'{"i":5,"kind":"forged"}',),
        )

    result = refuse(stopped_dir)
    assert "leaf 5" in result.stderr

    code, lines = etl_verify(stopped_dir)
    assert code == EXIT_VERIFY_FAILED
    assert lines[0].startswith("DAMAGED: leaf 5 "), lines


def test_etl_verify_names_the_first_of_several_bad_leaves(stopped_dir: Path) -> None:
    with guards_lifted(stopped_dir, "log_leaves_no_update") as conn:
        for index in (9, 5):
            conn.execute(
                "UPDATE log_leaves SET payload = ? WHERE leaf_index = ?",
                (b'{"kind":"forged"}', index),
            )
    code, lines = etl_verify(stopped_dir)
    assert code == EXIT_VERIFY_FAILED
    assert lines[0].startswith("DAMAGED: leaf 5 "), lines


def test_edited_merkle_node_refuses_start(stopped_dir: Path) -> None:
    # node (level 2, index 1) is stored with leaf 7, after the level-1 hash (migration 0005)
    with guards_lifted(stopped_dir, "log_leaves_no_update") as conn:
        changed = conn.execute(
            "UPDATE log_leaves SET subtree_hashes = "
            "CAST(substr(subtree_hashes, 1, 32) || ? || substr(subtree_hashes, 65) AS BLOB) "
            "WHERE leaf_index = 7",
            (b"\x5a" * 32,),
        ).rowcount
        assert changed == 1

    result = refuse(stopped_dir)
    assert "merkle node (level 2, index 1)" in result.stderr

    code, lines = etl_verify(stopped_dir)
    assert code == EXIT_VERIFY_FAILED
    assert any("merkle node (level 2, index 1)" in line for line in lines), lines


def test_deleted_last_leaf_refuses_start(stopped_dir: Path) -> None:
    with guards_lifted(stopped_dir, "log_leaves_no_delete") as conn:
        conn.execute("DELETE FROM log_leaves WHERE leaf_index = ?", (N - 1,))

    # Spec 40 §9 item 2: "log truncated: tree head <m> recorded, <n> leaves present".
    result = refuse(stopped_dir)
    assert "truncated" in result.stderr
    assert f"{N - 1} leaves" in result.stderr

    code, lines = etl_verify(stopped_dir)
    assert code == EXIT_VERIFY_FAILED
    assert any(f"size {N}" in line for line in lines), lines


# -- key files ------------------------------------------------------------------------------


def only_key_file(data_dir: Path) -> Path:
    (path,) = (data_dir / "keys").glob("*.key")
    return path


def test_key_file_readable_by_others_refuses_start(stopped_dir: Path) -> None:
    key_file = only_key_file(stopped_dir)
    key_file.chmod(0o644)

    result = refuse(stopped_dir)
    assert str(key_file) in result.stderr
    assert f"chmod 600 {key_file}" in result.stderr


def test_two_keys_without_active_key_id_refuses_start(stopped_dir: Path) -> None:
    keys_dir = stopped_dir / "keys"
    first = only_key_file(stopped_dir)
    second_key = Ed25519PrivateKey.generate()
    public = second_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    second = keys_dir / f"{hashlib.sha256(public).hexdigest()}.key"
    seed = second_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    fd = os.open(second, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, seed)
    finally:
        os.close(fd)
    (keys_dir / "active_key_id").unlink()

    result = refuse(stopped_dir)
    assert str(keys_dir / "active_key_id") in result.stderr
    assert "write" in result.stderr
    assert first.stem in result.stderr
    assert second.stem in result.stderr


def test_short_key_file_refuses_start(stopped_dir: Path) -> None:
    key_file = only_key_file(stopped_dir)
    key_file.write_bytes(key_file.read_bytes()[:31])
    assert key_file.stat().st_mode & 0o777 == 0o600

    result = refuse(stopped_dir)
    assert str(key_file) in result.stderr
    assert "31" in result.stderr


# -- the etl.log mirror heals -----------------------------------------------------------------


def reference_etl_log(data_dir: Path) -> bytes:
    """The DB's leaves in the reference framing, built here from the spec with struct + zlib."""
    conn = sqlite3.connect(f"file:{db_path(data_dir)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT payload FROM log_leaves ORDER BY leaf_index").fetchall()
    finally:
        conn.close()
    return b"".join(frame(bytes(payload)) for (payload,) in rows)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x01\x02\x03", id="three-bytes"),
        pytest.param(struct.pack("<I", 40) + b'{"kind":"torn",', id="torn-record"),
    ],
)
def test_garbage_after_etl_log_is_repaired(
    stopped_dir: Path, daemons: DaemonPool, garbage: bytes
) -> None:
    exported = CliRunner().invoke(ctl, ["export", "--data-dir", str(stopped_dir)])
    assert exported.exit_code == 0, exported.output
    etl_log = stopped_dir / "etl.log"
    expected = reference_etl_log(stopped_dir)
    assert expected == b"".join(frame(entry_payload(i)) for i in range(N))
    assert etl_log.read_bytes() == expected
    with etl_log.open("ab") as fh:
        fh.write(garbage)

    daemon = daemons.start(stopped_dir)
    head = daemon.v2.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=10)
    assert head.tree_size == N
    leaves = [merkle_naive.leaf(entry_payload(i)) for i in range(N)]
    assert head.root_hash == merkle_naive.mth(leaves)
    assert daemon.terminate() == 0

    assert etl_log.read_bytes() == expected
    warnings = [
        e for e in daemon.log_events() if e.get("level") == "warning" and "etl.log" in e["msg"]
    ]
    assert warnings, daemon.stderr_text()
