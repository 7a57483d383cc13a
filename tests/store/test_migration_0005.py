"""Migration 0005 moves every stored subtree hash into its leaf's row without changing one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from evidenceos.core import merkle
from evidenceos.store import log as log_table
from evidenceos.store.db import DB_FILENAME, Store, load_migrations


def _old_layout_db(path: Path, leaves: int) -> list[tuple[int, int, bytes]]:
    """A database at schema 4 holding ``leaves`` leaves and their merkle_nodes rows."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    for migration in load_migrations()[:4]:
        conn.execute(migration.sql)
    conn.execute("PRAGMA user_version=4")
    nodes = merkle.MemoryNodes()
    rows: list[tuple[int, int, bytes]] = []
    with conn:
        for index in range(leaves):
            payload = b'{"i":%d,"kind":"old"}' % index
            leaf_hash = merkle.hash_leaf(payload)
            conn.execute(
                "INSERT INTO log_leaves VALUES (?, ?, ?, ?, ?, 0)",
                (index, "old", payload, leaf_hash, hashlib.sha256(payload).digest()),
            )
            for level, node_index, node_hash in merkle.completed_subtrees(index, leaf_hash, nodes):
                conn.execute(
                    "INSERT INTO merkle_nodes VALUES (?, ?, ?)", (level, node_index, node_hash)
                )
                rows.append((level, node_index, node_hash))
            nodes.append(leaf_hash)
    conn.close()
    return sorted(rows)


@pytest.mark.parametrize("leaves", [0, 1, 2, 7, 64, 1000])
def test_subtree_hashes_survive_the_move(tmp_path: Path, leaves: int) -> None:
    before = _old_layout_db(tmp_path / DB_FILENAME, leaves)
    with Store(tmp_path) as store, store.read() as conn:
        after = sorted(
            (int(level), int(index), bytes(h))
            for level, index, h in conn.execute("SELECT level, node_index, hash FROM merkle_nodes")
        )
        assert after == before  # the view shows exactly the old table
        get = log_table.node_getter(conn)
        assert all(get(level, index) == h for level, index, h in before)
        assert log_table.node_count(conn) == len(before)
        if leaves:
            expected = merkle.root_of(
                [merkle.hash_leaf(b'{"i":%d,"kind":"old"}' % i) for i in range(leaves)]
            )
            assert merkle.compute_root(leaves, get) == expected
        assert conn.execute("PRAGMA user_version").get == len(load_migrations())


def test_appends_after_the_move_continue_the_tree(tmp_path: Path) -> None:
    _old_layout_db(tmp_path / DB_FILENAME, 5)
    with Store(tmp_path) as store:
        store.write(lambda conn: log_table.append_leaf(conn, "new", b'{"kind":"new"}', 0))
        with store.read() as conn:
            payloads = [leaf.payload for leaf in log_table.iter_leaves(conn)]
            get = log_table.node_getter(conn)
            assert merkle.compute_root(6, get) == merkle.root_of(
                [merkle.hash_leaf(p) for p in payloads]
            )
            # leaf 5 completed node (1, 2); it is stored in leaf 5's row
            assert get(1, 2) == merkle.hash_children(get(0, 4), get(0, 5))


def test_governance_leaves_use_the_partial_index(tmp_path: Path) -> None:
    with Store(tmp_path) as store, store.read() as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT count(*), max(leaf_index) FROM log_leaves "
                "WHERE kind = 'governance'"
            )
        )
    assert "log_leaves_governance_idx" in plan


def test_an_edit_made_before_the_upgrade_still_shows_after_it(tmp_path: Path) -> None:
    """The upgrade records a new schema cookie; it must not hide an outside DDL edit made
    before it (start-up would skip the full re-hash)."""
    _old_layout_db(tmp_path / DB_FILENAME, 8)
    conn = apsw.Connection(str(tmp_path / DB_FILENAME))
    with conn:  # our cookie for schema 4, as a daemon of that version recorded it
        conn.execute(
            "INSERT INTO meta VALUES ('schema_cookie', ?)",
            (str(conn.execute("PRAGMA schema_version").get),),
        )
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'log_leaves_no_update'").get
    conn.execute("DROP TRIGGER log_leaves_no_update")  # what editing a leaf takes
    conn.execute(str(sql))
    conn.close()
    with Store(tmp_path) as store:
        assert not store.schema_cookie_matches()


def test_an_untouched_database_keeps_a_matching_cookie_across_the_upgrade(tmp_path: Path) -> None:
    _old_layout_db(tmp_path / DB_FILENAME, 8)
    conn = apsw.Connection(str(tmp_path / DB_FILENAME))
    with conn:
        conn.execute(
            "INSERT INTO meta VALUES ('schema_cookie', ?)",
            (str(conn.execute("PRAGMA schema_version").get),),
        )
    conn.close()
    with Store(tmp_path) as store:
        assert store.schema_cookie_matches()
