"""``evidenceosctl`` on real data directories: keys, etl verify, export, backup (spec 40 §4, §8.4,
§9; OPERATIONS). Commands run in-process through click's ``CliRunner``; the data dirs are written
by the service layer, and results are checked with plain ``sqlite3``, ``json`` and
``cryptography`` rather than with the package's own readers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3  # noqa: TID251 - an operator's view of the database, independent of apsw
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from evidenceos.cli.ctl import main as ctl
from tests.support import merkle_naive
from tests.support.datadir import append_entries, entry_payload, frame
from tests.support.paths import REPO_ROOT
from tests.support.verify import sth_signature_valid

N = 13
EXIT_ERROR = 1
EXIT_VERIFY_FAILED = 3
HEX64 = frozenset("0123456789abcdef")


def run(*args: str) -> Result:
    return CliRunner().invoke(ctl, list(args))


def validate(doc: Any, schema_path: Path) -> None:
    """Validate ``doc`` against a JSON Schema file of the repository (which must exist)."""
    assert schema_path.is_file(), f"{schema_path} is missing (--json output must be documented)"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(doc)


def run_json(*args: str, exit_code: int = 0) -> Any:
    """Run with ``--json``, parse stdout, and validate it against schema/cli/<command>.schema.json
    (the command words joined by ``-``: ``keys-list``, ``etl-verify``, ``backup``...)."""
    result = run(*args, "--json")
    assert result.exit_code == exit_code, result.output
    doc = json.loads(result.stdout)
    words = [a for a in args if not a.startswith("-")][:2]
    name = "-".join(words if words[0] in ("keys", "etl") else words[:1])
    validate(doc, REPO_ROOT / "schema" / "cli" / f"{name}.schema.json")
    return doc


def is_hex64(text: str) -> bool:
    return len(text) == 64 and set(text) <= HEX64


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    assert append_entries(data_dir, range(N)) == N
    return data_dir


def sql(db: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def tamper_leaf(data_dir: Path, index: int) -> None:
    """Change one payload behind the append-only trigger's back (dropped, then recreated)."""
    conn = sqlite3.connect(data_dir / "evidenceos.db", isolation_level=None)
    try:
        (trigger,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'log_leaves_no_update'"
        ).fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TRIGGER log_leaves_no_update")
        conn.execute(
            "UPDATE log_leaves SET payload = ? WHERE leaf_index = ?", (b'{"kind":"x"}', index)
        )
        conn.execute(trigger)
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- keys -----------------------------------------------------------------------------------


def test_keys_list_json_shape(populated: Path) -> None:
    doc = run_json("keys", "list", "--data-dir", str(populated))
    assert set(doc) == {"keys"}
    (row,) = doc["keys"]
    assert set(row) == {"key_id", "public_key", "active"}
    assert row["active"] is True
    assert is_hex64(row["key_id"])
    assert is_hex64(row["public_key"])
    assert row["key_id"] == hashlib.sha256(bytes.fromhex(row["public_key"])).hexdigest()
    assert (populated / "keys" / f"{row['key_id']}.key").is_file()
    active = (populated / "keys" / "active_key_id").read_text(encoding="ascii").strip()
    assert active == row["key_id"]


def test_keys_list_human(populated: Path) -> None:
    doc = run_json("keys", "list", "--data-dir", str(populated))
    result = run("keys", "list", "--data-dir", str(populated))
    assert result.exit_code == 0, result.output
    (row,) = doc["keys"]
    (line,) = result.stdout.splitlines()
    assert line.startswith("*")
    assert row["key_id"] in line
    assert row["public_key"] in line


def test_keys_rotate_adds_an_active_key_and_keeps_the_old(populated: Path) -> None:
    (old,) = run_json("keys", "list", "--data-dir", str(populated))["keys"]

    doc = run_json("keys", "rotate", "--data-dir", str(populated))
    assert set(doc) == {"active_key_id"}
    new_id = doc["active_key_id"]
    assert is_hex64(new_id)
    assert new_id != old["key_id"]

    keys_dir = populated / "keys"
    assert (keys_dir / "active_key_id").read_text(encoding="ascii") == f"{new_id}\n"
    new_file = keys_dir / f"{new_id}.key"
    assert new_file.stat().st_size == 32
    assert new_file.stat().st_mode & 0o077 == 0
    assert (keys_dir / f"{old['key_id']}.key").is_file()

    rows = {r["key_id"]: r for r in run_json("keys", "list", "--data-dir", str(populated))["keys"]}
    assert set(rows) == {old["key_id"], new_id}
    assert rows[new_id]["active"] is True
    assert rows[old["key_id"]]["active"] is False
    assert rows[old["key_id"]]["public_key"] == old["public_key"]


def test_keys_rotate_human_says_to_restart(populated: Path) -> None:
    result = run("keys", "rotate", "--data-dir", str(populated))
    assert result.exit_code == 0, result.output
    active = (populated / "keys" / "active_key_id").read_text(encoding="ascii").strip()
    assert active in result.stdout
    assert "restart evidenceosd" in result.stdout


# -- etl verify -----------------------------------------------------------------------------


def test_etl_verify_ok(populated: Path) -> None:
    db = populated / "evidenceos.db"
    doc = run_json("etl", "verify", "--data-dir", str(populated))
    assert doc == {
        "ok": True,
        "tree_size": N,
        "nodes_checked": sql(db, "SELECT count(*) FROM merkle_nodes")[0][0],
        "heads_checked": sql(db, "SELECT count(*) FROM signed_tree_heads")[0][0],
        "problems": [],
    }
    assert doc["nodes_checked"] == 6 + 3 + 1  # perfect subtrees of 13 leaves above level 0
    human = run("etl", "verify", "--data-dir", str(populated))
    assert human.exit_code == 0
    assert human.stdout.startswith(f"ok: {N} leaves")


def test_etl_verify_damaged_exits_3_naming_the_first_bad_leaf(populated: Path) -> None:
    tamper_leaf(populated, 7)
    doc = run_json("etl", "verify", "--data-dir", str(populated), exit_code=EXIT_VERIFY_FAILED)
    assert doc["ok"] is False
    assert doc["problems"][0].startswith("leaf 7 ")

    human = run("etl", "verify", "--data-dir", str(populated))
    assert human.exit_code == EXIT_VERIFY_FAILED
    assert human.stdout.splitlines()[0].startswith("DAMAGED: leaf 7 ")


# -- export ---------------------------------------------------------------------------------


def test_export_writes_etl_log_and_state_json(populated: Path) -> None:
    doc = run_json("export", "--data-dir", str(populated))
    etl_log, state_json = populated / "etl.log", populated / "state.json"
    written = set(doc["written"])
    assert {str(etl_log), str(state_json), str(populated / "accounts.json")} <= written
    assert all(Path(p).is_file() for p in written)

    assert etl_log.read_bytes() == b"".join(frame(entry_payload(i)) for i in range(N))
    state = json.loads(state_json.read_text(encoding="utf-8"))
    log = state["log"]
    assert log["tree_size"] == N
    assert (
        log["root_hash"]
        == merkle_naive.mth([merkle_naive.leaf(entry_payload(i)) for i in range(N)]).hex()
    )
    (key,) = run_json("keys", "list", "--data-dir", str(populated))["keys"]
    assert log["key_id"] == key["key_id"]
    assert sth_signature_valid(
        bytes.fromhex(key["public_key"]),
        log["tree_size"],
        bytes.fromhex(log["root_hash"]),
        bytes.fromhex(log["signature"]),
    )
    # Nothing half-written is left behind.
    assert sorted(p.name for p in populated.iterdir() if p.name.endswith(".tmp")) == []


def test_export_replaces_files_atomically(populated: Path, tmp_path: Path) -> None:
    """A reader holding the old file sees the old bytes, never a half-rewritten file: the new
    file is renamed over the old one (checked through hard links to the old inodes)."""
    etl_log, state_json = populated / "etl.log", populated / "state.json"
    etl_log.write_bytes(b"not a log")
    state_json.write_text("{}", encoding="utf-8")
    os.link(etl_log, tmp_path / "old-etl.log")
    os.link(state_json, tmp_path / "old-state.json")

    result = run("export", "--data-dir", str(populated))
    assert result.exit_code == 0, result.output

    assert (tmp_path / "old-etl.log").read_bytes() == b"not a log"
    assert (tmp_path / "old-state.json").read_text(encoding="utf-8") == "{}"
    assert etl_log.read_bytes() == b"".join(frame(entry_payload(i)) for i in range(N))
    assert json.loads(state_json.read_text(encoding="utf-8"))["log"]["tree_size"] == N


def test_export_again_is_unchanged(populated: Path) -> None:
    run_json("export", "--data-dir", str(populated))
    first = (populated / "etl.log").read_bytes(), (populated / "state.json").read_bytes()
    run_json("export", "--data-dir", str(populated))
    assert ((populated / "etl.log").read_bytes(), (populated / "state.json").read_bytes()) == first


def test_state_json_validates_against_schema(populated: Path) -> None:
    run_json("export", "--data-dir", str(populated))
    state = json.loads((populated / "state.json").read_text(encoding="utf-8"))
    validate(state, REPO_ROOT / "schema" / "state.schema.json")


def test_state_json_of_an_empty_log_validates(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert append_entries(data_dir, []) == 0
    run_json("export", "--data-dir", str(data_dir))
    state = json.loads((data_dir / "state.json").read_text(encoding="utf-8"))
    assert state["log"]["tree_size"] == 0
    assert state["log"]["root_hash"] == hashlib.sha256(b"").hexdigest()
    validate(state, REPO_ROOT / "schema" / "state.schema.json")


# -- backup ---------------------------------------------------------------------------------


def test_backup_copy_opens_and_verifies(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "backups" / "evidenceos-backup.db"
    target.parent.mkdir()
    doc = run_json("backup", "--data-dir", str(populated), "--to", str(target))
    assert doc == {"backup": str(target), "tree_size": N, "verified": True, "problems": []}

    # A plain sqlite3 reader opens the copy on its own (no WAL needed beside it).
    assert sql(target, "PRAGMA integrity_check") == [("ok",)]
    assert sql(target, "SELECT count(*) FROM log_leaves") == [(N,)]
    payloads = [
        bytes(p) for (p,) in sql(target, "SELECT payload FROM log_leaves ORDER BY leaf_index")
    ]
    assert payloads == [entry_payload(i) for i in range(N)]
    source_heads = sql(populated / "evidenceos.db", "SELECT * FROM signed_tree_heads")
    assert sql(target, "SELECT * FROM signed_tree_heads") == source_heads

    # Restored as a data dir, the copy passes the full verification.
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "evidenceos.db").write_bytes(target.read_bytes())
    verified = run("etl", "verify", "--data-dir", str(restored))
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith(f"ok: {N} leaves")


def test_backup_human_output(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "b.db"
    result = run("backup", "--data-dir", str(populated), "--to", str(target))
    assert result.exit_code == 0, result.output
    assert str(target) in result.stdout
    assert "verified" in result.stdout


def test_backup_refuses_an_existing_target(populated: Path, tmp_path: Path) -> None:
    target = tmp_path / "existing.db"
    target.write_bytes(b"keep me")
    result = run("backup", "--data-dir", str(populated), "--to", str(target))
    assert result.exit_code == EXIT_ERROR
    assert str(target) in result.stderr
    assert "already exists" in result.stderr
    assert "Traceback" not in result.output
    assert target.read_bytes() == b"keep me"


# -- a data dir that does not exist ---------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["keys", "list"], id="keys-list"),
        pytest.param(["keys", "rotate"], id="keys-rotate"),
        pytest.param(["etl", "verify"], id="etl-verify"),
        pytest.param(["export"], id="export"),
        pytest.param(["backup", "--to", "{tmp}/backup.db"], id="backup"),
    ],
)
def test_missing_data_dir_fails_naming_evidenceosd(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such-dir"
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in command]
    result = run(*args, "--data-dir", str(missing))
    assert result.exit_code == EXIT_ERROR, result.output
    message = result.stderr
    assert str(missing) in message
    assert "evidenceosd" in message
    assert "--data-dir" in message
    assert "Traceback" not in result.output
    assert not missing.exists(), "a failed command must not create the data dir"
    assert not (tmp_path / "backup.db").exists()
