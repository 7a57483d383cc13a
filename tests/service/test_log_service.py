"""The log service against a real store: appends, signed heads, proofs, integrity checks."""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import apsw
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidenceos.errors import InvalidArgument, LogIntegrityError, NotFound
from evidenceos.ids import KeyId
from evidenceos.service.log_service import SIGN_EVERY_LEAVES, LogService
from evidenceos.store.db import DB_FILENAME, Store
from evidenceos.store.keys import load_keyring, rotate_key, write_active_key_id
from tests.support import merkle_naive


def _open(data_dir: Path) -> tuple[Store, LogService]:
    store = Store(data_dir)
    service = LogService(store, load_keyring(data_dir, allow_generate=True))
    service.start()
    return store, service


def _verify_head_independently(public: bytes, size: int, root: bytes, sig: bytes) -> None:
    digest = hashlib.sha256(b"evidenceos:sth:v1" + struct.pack(">Q", size) + root).digest()
    Ed25519PublicKey.from_public_bytes(public).verify(sig, digest)


def test_empty_log_has_signed_empty_head(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        head = service.signed_tree_head()
        assert head.tree_size == 0
        assert head.root_hash == hashlib.sha256(b"").digest()
        public, key_id = service.public_key(b"")
        assert key_id == head.key_id == hashlib.sha256(public).digest()
        _verify_head_independently(public, 0, head.root_hash, head.signature)


def _head_sizes(store: Store) -> list[int]:
    with store.read() as conn:
        return [r[0] for r in conn.execute("SELECT tree_size FROM signed_tree_heads")]


def test_appends_sign_heads_lazily_and_match_naive_tree(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        payloads = []
        for i in range(37):
            leaf = service.append_entry({"kind": "test", "i": i})
            payloads.append(leaf.payload)
            assert leaf.leaf_index == i
            assert payloads[-1] == b'{"i":%d,"kind":"test"}' % i
        leaves = [hashlib.sha256(b"\x00" + p).digest() for p in payloads]
        head = service.signed_tree_head()
        assert head.tree_size == 37
        assert head.root_hash == merkle_naive.mth(leaves)
        public, _ = service.public_key(b"")
        _verify_head_independently(public, 37, head.root_hash, head.signature)
        # one head at start-up, one signed (and stored) when a head was first asked for
        assert _head_sizes(store) == [0, 37]
        assert service.signed_tree_head() == head
        assert _head_sizes(store) == [0, 37]
        for index in (0, 5, 36):
            proof = service.inclusion_proof(index)
            assert proof.audit_path == merkle_naive.path(index, leaves)
            assert proof.root_hash == head.root_hash
        for first in (0, 1, 8, 20, 37):
            result = service.consistency(first, 37)
            assert result.consistent
            assert result.path == merkle_naive.proof(first, leaves)
            assert result.first_root_hash == merkle_naive.mth(leaves[:first])


def test_proof_bounds(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test"})
        with pytest.raises(NotFound, match="leaf index not found"):
            service.inclusion_proof(1)
        with pytest.raises(InvalidArgument, match="first_tree_size must be <= second"):
            service.consistency(1, 0)
        with pytest.raises(InvalidArgument, match="second_tree_size out of bounds"):
            service.consistency(0, 2)
        with pytest.raises(InvalidArgument):
            service.public_key(b"short")
        with pytest.raises(NotFound, match="key not found"):
            service.public_key(b"\x01" * 32)


def test_rotation_signs_current_tree_with_new_key_and_keeps_old(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test"})
        old = service.signed_tree_head()
    new_id = rotate_key(data_dir)
    store, service = _open(data_dir)
    with store:
        head = service.signed_tree_head()
        assert head.key_id == new_id != old.key_id
        assert (head.tree_size, head.root_hash) == (old.tree_size, old.root_hash)
        old_public, _ = service.public_key(old.key_id)
        _verify_head_independently(old_public, old.tree_size, old.root_hash, old.signature)


def test_start_check_passes_on_healthy_log(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        for i in range(10):
            service.append_entry({"kind": "test", "i": i})
        service.verify_on_start()  # a running daemon's unsigned tail
        report = service.verify_full()
        assert report.ok and report.tree_size == 10 and report.heads_checked == 1
        service.close()
        service.verify_on_start()
        assert _head_sizes(store) == [0, 10]


def test_unsigned_tail_stays_shorter_than_the_bound(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        for i in range(2 * SIGN_EVERY_LEAVES + 3):
            service.append_entry({"kind": "test", "i": i})
            with store.read() as conn:
                latest = conn.execute("SELECT max(tree_size) FROM signed_tree_heads").get
            assert isinstance(latest, int) and i + 1 - latest < SIGN_EVERY_LEAVES
        assert _head_sizes(store) == [0, SIGN_EVERY_LEAVES, 2 * SIGN_EVERY_LEAVES]


def test_want_head_signs_in_the_same_commit(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test"})

        def write(conn: apsw.Connection) -> None:
            service.append(conn, {"kind": "test", "i": 1})
            service.want_head()

        store.write(write)
        assert _head_sizes(store) == [0, 2]


def test_offline_service_signs_every_growing_commit(data_dir: Path) -> None:
    _open(data_dir)[0].close()
    with Store(data_dir) as store:  # a CLI tool: keyring loaded, never started
        service = LogService(store, load_keyring(data_dir, allow_generate=False))
        service.append_entry({"kind": "test"})
        service.append_entry({"kind": "test"})
        assert _head_sizes(store) == [0, 1, 2]


def test_crash_tail_is_rehashed_and_signed_at_next_start(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:  # closed without service.close(): what a SIGKILL leaves
        for i in range(5):
            service.append_entry({"kind": "test", "i": i})
    store, service = _open(data_dir)
    with store:
        service.verify_on_start()
        assert _head_sizes(store) == [0, 5]


def _insert_leaf_outside(data_dir: Path, index: int) -> None:
    payload = b'{"kind":"evil"}'
    conn = apsw.Connection(str(data_dir / DB_FILENAME))
    conn.execute(
        "INSERT INTO log_leaves(leaf_index, kind, payload, leaf_hash, payload_sha256, "
        "appended_at_ms) VALUES (?, 'evil', ?, ?, ?, 0)",
        (
            index,
            payload,
            hashlib.sha256(b"\x00" + payload).digest(),
            hashlib.sha256(payload).digest(),
        ),
    )
    conn.close()


def test_start_check_refuses_leaves_added_after_a_clean_stop(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test"})
        service.close()
    _insert_leaf_outside(data_dir, 1)
    with Store(data_dir) as store:
        with pytest.raises(LogIntegrityError, match=r"extended outside the daemon.*cleanly"):
            LogService(store, None).verify_on_start()


def test_start_check_refuses_a_tail_no_crash_can_leave(data_dir: Path) -> None:
    store, _ = _open(data_dir)
    store.close()
    for index in range(SIGN_EVERY_LEAVES):
        _insert_leaf_outside(data_dir, index)
    with Store(data_dir) as store:
        with pytest.raises(LogIntegrityError, match=f"{SIGN_EVERY_LEAVES} leaves after"):
            LogService(store, None).verify_on_start()


def _log_of_eight(data_dir: Path, *, clean_stop: bool = False) -> None:
    """Eight leaves; without ``clean_stop`` they are the unsigned tail a crash leaves."""
    store, service = _open(data_dir)
    with store:
        for i in range(8):
            service.append_entry({"kind": "test", "i": i})
        if clean_stop:
            service.close()


def test_start_check_rehashes_the_unsigned_tail(data_dir: Path) -> None:
    _log_of_eight(data_dir)
    _tamper(
        data_dir,
        # node (level 3, index 0) is the third hash stored with leaf 7
        "UPDATE log_leaves SET subtree_hashes = "
        "CAST(substr(subtree_hashes, 1, 64) || zeroblob(32) AS BLOB) WHERE leaf_index = 7",
        "log_leaves_no_update",
    )
    with Store(data_dir) as store:
        keyring = load_keyring(data_dir, allow_generate=False)
        with pytest.raises(LogIntegrityError, match=r"merkle node \(level 3, index 0\) hash"):
            LogService(store, keyring).verify_on_start()
        with pytest.raises(LogIntegrityError, match="without the signing keys"):
            LogService(store, None).verify_on_start()


def test_start_check_refuses_tail_leaves_written_without_the_key(data_dir: Path) -> None:
    """Someone with write access to the database but not the keys: clean stop, flip
    meta.log_open back to 1, insert a well-formed leaf. The leaf carries no valid MAC."""
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test", "i": 0})
        service.append_entry({"kind": "test", "i": 1})
        service.close()
    conn = apsw.Connection(str(data_dir / DB_FILENAME))
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'log_open'")
    conn.close()
    _insert_leaf_outside(data_dir, 2)
    with Store(data_dir) as store:
        service = LogService(store, load_keyring(data_dir, allow_generate=False))
        with pytest.raises(LogIntegrityError, match="leaf 2 follows the last signed tree head"):
            service.verify_on_start()


def _tamper(data_dir: Path, sql: str, trigger: str) -> None:
    conn = apsw.Connection(str(data_dir / DB_FILENAME))
    trigger_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (trigger,)).get
    conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute(sql)
    conn.execute(str(trigger_sql))
    conn.close()


def test_full_verify_names_first_bad_leaf(data_dir: Path) -> None:
    _log_of_eight(data_dir)
    _tamper(
        data_dir,
        'UPDATE log_leaves SET payload = CAST(\'{"kind":"evil"}\' AS BLOB) '
        "WHERE leaf_index IN (3, 6)",
        "log_leaves_no_update",
    )
    store, service = _open(data_dir)
    with store:
        report = service.verify_full()
        assert not report.ok
        assert report.problems[0].startswith("leaf 3 hash mismatch")
        assert not store.schema_cookie_matches()


def test_start_check_detects_root_path_node_damage(data_dir: Path) -> None:
    _log_of_eight(data_dir, clean_stop=True)
    _tamper(
        data_dir,
        # node (level 3, index 0) is the third hash stored with leaf 7
        "UPDATE log_leaves SET subtree_hashes = "
        "CAST(substr(subtree_hashes, 1, 64) || zeroblob(32) AS BLOB) WHERE leaf_index = 7",
        "log_leaves_no_update",
    )
    store = Store(data_dir)
    with store:
        service = LogService(store, None)
        with pytest.raises(LogIntegrityError, match="does not match the last signed tree head"):
            service.verify_on_start()


def test_start_check_detects_missing_guard(data_dir: Path) -> None:
    store, _ = _open(data_dir)
    store.close()
    conn = apsw.Connection(str(data_dir / DB_FILENAME))
    conn.execute("DROP TRIGGER log_leaves_no_delete")
    conn.close()
    with Store(data_dir) as store:
        with pytest.raises(LogIntegrityError, match="log_leaves_no_delete"):
            LogService(store, None).verify_on_start()


def _run(conn: apsw.Connection, sql: str) -> None:
    conn.execute(sql)


def test_append_only_triggers_refuse_edits(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test"})
        for sql in (
            "UPDATE log_leaves SET kind = 'x'",
            "DELETE FROM log_leaves",
            "INSERT INTO log_leaves(leaf_index, kind, payload, leaf_hash, payload_sha256, "
            "appended_at_ms) VALUES (5, 'k', x'00', zeroblob(32), zeroblob(32), 0)",
            "DELETE FROM signed_tree_heads",
        ):
            with pytest.raises(Exception, match=r"append-only|tree size"):
                store.write(partial(_run, sql=sql))


def _assert_naive_tree(store: Store, service: LogService) -> None:
    with store.read() as conn:
        payloads = [
            r[0] for r in conn.execute("SELECT payload FROM log_leaves ORDER BY leaf_index")
        ]
    head = service.signed_tree_head()
    assert head.tree_size == len(payloads)
    assert head.root_hash == merkle_naive.mth([merkle_naive.leaf(bytes(p)) for p in payloads])
    service.verify_on_start()


def test_append_after_a_rolled_back_append_lands_at_the_tree_size(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        for i in range(3):
            service.append_entry({"kind": "test", "i": i})

        def append_then_fail(conn: apsw.Connection) -> None:
            service.append(conn, {"kind": "test", "i": "lost"})
            service.append(conn, {"kind": "test", "i": "lost too"})
            raise InvalidArgument("changed my mind")

        with pytest.raises(InvalidArgument):
            store.write(append_then_fail)
        assert service.append_entry({"kind": "test", "i": 3}).leaf_index == 3
        assert service.append_entry({"kind": "test", "i": 4}).leaf_index == 4
        _assert_naive_tree(store, service)


def test_append_after_another_writer_lands_at_the_tree_size(data_dir: Path) -> None:
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test", "i": 0})
        with Store(data_dir) as other:  # e.g. a governance command while the daemon runs
            keyring = load_keyring(data_dir, allow_generate=False)
            LogService(other, keyring).append_entry({"kind": "test", "i": "other"})
            LogService(other, keyring).append_entry({"kind": "test", "i": "other 2"})
        assert service.append_entry({"kind": "test", "i": 1}).leaf_index == 3
        _assert_naive_tree(store, service)


def test_a_group_with_a_rolled_back_append_builds_the_right_tree(data_dir: Path) -> None:
    """Appends in one group read left siblings from what the group stored; a job rolled back
    to its savepoint must not leave its leaves behind in that memory."""
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test", "i": 0})
        gate, holding = threading.Event(), threading.Event()
        group_sizes: list[int] = []
        store.add_commit_listener(lambda size, _seconds: group_sizes.append(size))

        def hold(conn: apsw.Connection) -> None:  # keeps the writer busy while jobs queue
            holding.set()
            gate.wait(10)

        def append_then_fail(conn: apsw.Connection) -> None:
            for i in range(3):
                service.append(conn, {"kind": "test", "i": f"lost {i}"})
            raise InvalidArgument("rolled back to its savepoint")

        holder = threading.Thread(target=store.write, args=(hold,))
        holder.start()
        assert holding.wait(10)
        results: list[object] = []

        def submit(fn: Any, **kw: Any) -> threading.Thread:
            def run() -> None:
                try:
                    results.append(store.write(fn, **kw))
                except InvalidArgument as exc:
                    results.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            return thread

        threads = [
            submit(lambda conn: service.append(conn, {"kind": "test", "i": 1})),
            submit(append_then_fail),
            *(
                submit(
                    lambda conn, i=i: service.append(conn, {"kind": "test", "i": i}), isolated=False
                )
                for i in range(2, 6)
            ),
        ]
        time.sleep(0.2)  # let every job queue behind the holder
        gate.set()
        for thread in [holder, *threads]:
            thread.join(10)
        assert sum(isinstance(r, InvalidArgument) for r in results) == 1
        assert max(group_sizes) >= 3  # the queued jobs really shared a transaction
        assert service.tree_size() == 6
        _assert_naive_tree(store, service)


def test_remembered_nodes_are_dropped_after_a_rollback_and_another_writer(data_dir: Path) -> None:
    """The worst case for remembered nodes: our append at 2 is rolled back, another process
    appends a different leaf at 2, so our guessed size (3) is right again; the append at 3 must
    still read the real leaf 2."""
    store, service = _open(data_dir)
    with store:
        service.append_entry({"kind": "test", "i": 0})
        service.append_entry({"kind": "test", "i": 1})

        def append_then_fail(conn: apsw.Connection) -> None:
            service.append(conn, {"kind": "test", "i": "lost"})
            raise InvalidArgument("rolled back")

        with pytest.raises(InvalidArgument):
            store.write(append_then_fail)
        with Store(data_dir) as other:
            keyring = load_keyring(data_dir, allow_generate=False)
            LogService(other, keyring).append_entry({"kind": "test", "i": "other"})
        assert service.append_entry({"kind": "test", "i": 3}).leaf_index == 3
        _assert_naive_tree(store, service)


def test_remembered_nodes_are_the_frontier_and_spare_every_read(data_dir: Path) -> None:
    """An append takes the left siblings it needs from the remembered nodes and keeps only left
    children: ~log2(n) nodes, and no node is read back from the table."""
    store, service = _open(data_dir)
    with store:
        reads: list[str] = []

        def trace(_cursor: apsw.Cursor, sql: str, _bindings: object) -> bool:
            reads.append(sql)
            return True

        service.append_entry({"kind": "test", "i": -1})  # the first append reads the size
        store._writer.set_exec_trace(trace)
        for i in range(SIGN_EVERY_LEAVES - 2):  # no head falls due (signing reads nodes)
            service.append_entry({"kind": "test", "i": i})
            assert len(service._known) <= (i + 2).bit_length()
        store._writer.set_exec_trace(None)
        assert not [sql for sql in reads if sql.lstrip().upper().startswith("SELECT")]
        _assert_naive_tree(store, service)


def test_rotating_back_to_an_earlier_key_reuses_its_stored_head(data_dir: Path) -> None:
    store, service = _open(data_dir)
    first = service.signed_tree_head().key_id
    store.close()
    rotate_key(data_dir)
    _open(data_dir)[0].close()  # the same tree, now also signed under the new key
    write_active_key_id(data_dir / "keys", KeyId(bytes(first)))
    store, service = _open(data_dir)
    with store:
        commits: list[int] = []
        store.add_commit_listener(lambda size, _s: commits.append(size))
        for _ in range(5):
            assert service.signed_tree_head().key_id == first
        assert commits == []  # the stored head under the active key is current: reads only
