"""``evidenceosctl nullspec|oracle|governance|epoch|canary`` on real data directories (spec 50 §4,
OPERATIONS "NullSpec lifecycle", "Calibration and TTL management", "Epoch settlement", "Canary
operations"; DESIGN §1, §2, §6, §7, §9).

Every command runs through click's ``CliRunner``. Results are checked with plain ``sqlite3``,
``json``, ``hashlib`` and ``cryptography`` (``tests.support.governance``); each ``--json`` output
and each exported file is validated against its schema in ``schema/``. "Applying" staged changes
is what the daemon does at start-up and on SIGHUP; here the service is driven directly (the
process tests send the real SIGHUP).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from evidenceos.cli.ctl import main as ctl
from evidenceos.core.canary import CanaryConfig, CanaryState
from evidenceos.errors import ConfigError
from evidenceos.service.governance import (
    GovernancePaths,
    GovernanceService,
    GovernanceSettings,
    ReloadOutcome,
)
from evidenceos.service.log_service import LogService
from evidenceos.store import canary as canary_table
from evidenceos.store.db import Store
from evidenceos.store.keys import load_keyring
from tests.support.datadir import append_entries
from tests.support.governance import (
    K7_PUBLIC_HEX,
    K7_SEED,
    K9_PUBLIC_HEX,
    K9_SEED,
    canon,
    epoch_control_digest,
    event_signed_bytes,
    governance_event_lines,
    record_digest,
    signed_event,
    sql,
    sql_write,
    verifies,
    write_seed,
    write_trusted_keys,
)
from tests.support.paths import REPO_ROOT
from tests.support.verify import inclusion_valid, leaf_hash, sth_signature_valid

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3
HASH_AB = "ab" * 32
HASH_CD = "cd" * 32
DEV_ENV: dict[str, str | None] = {
    "EVIDENCEOS_PRODUCTION_MODE": None,
    "EVIDENCEOS_REQUIRE_DISJOINTNESS_ATTESTATION": None,
}
PROD_ENV: dict[str, str | None] = {**DEV_ENV, "EVIDENCEOS_PRODUCTION_MODE": "1"}


@dataclass
class Ops:
    root: Path
    data_dir: Path
    k7: Path  # trusted as ops-k1
    k9: Path  # not trusted

    @property
    def d(self) -> list[str]:
        return ["--data-dir", str(self.data_dir)]

    @property
    def sign(self) -> list[str]:
        return ["--signing-key", str(self.k7), "--key-id", "ops-k1"]


@pytest.fixture
def ops(tmp_path: Path) -> Ops:
    data_dir = tmp_path / "data"
    append_entries(data_dir, range(2))
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX})
    return Ops(
        tmp_path,
        data_dir,
        write_seed(tmp_path / "k7.seed", K7_SEED),
        write_seed(tmp_path / "k9.seed", K9_SEED),
    )


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(ctl, list(args), env=env or DEV_ENV)


def validate(doc: Any, schema_path: Path) -> None:
    assert schema_path.is_file(), f"{schema_path} is missing"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema).validate(doc)


def run_json(schema: str, *args: str, env: dict[str, str | None] | None = None) -> Any:
    result = run(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc, REPO_ROOT / "schema" / "cli" / f"{schema}.schema.json")
    return doc


def fails(result: Result, code: int, *fragments: str) -> None:
    """The command failed with ``code`` and a message naming the problem."""
    assert result.exit_code == code, result.output
    text = result.output.lower()
    for fragment in fragments:
        assert fragment.lower() in text, result.output
    assert "Traceback" not in result.output


def event_count(data_dir: Path) -> int:
    return int(sql(data_dir, "SELECT count(*) FROM governance_events")[0][0])


@pytest.fixture
def service_for() -> Iterator[Any]:
    """Open a data dir the way the daemon does; closes everything at the end."""
    stores: list[Store] = []

    def open_(data_dir: Path, *, production: bool = False, **settings: Any) -> GovernanceService:
        store = Store(data_dir)
        stores.append(store)
        return GovernanceService(
            store,
            LogService(store, load_keyring(data_dir, allow_generate=False)),
            GovernancePaths.for_data_dir(data_dir),
            GovernanceSettings(production_mode=production, **settings),
        )

    yield open_
    for store in stores:
        store.close()


def apply(service_for: Any, data_dir: Path, **kwargs: Any) -> ReloadOutcome:
    """What SIGHUP does: reload, then the views are exported."""
    service = service_for(data_dir, **kwargs)
    outcome: ReloadOutcome = service.reload("test")
    service.export()
    return outcome


# -- oracle set-ttl / rotate-calibration / list / show ------------------------------------------


def test_set_ttl_stages_a_signed_record_and_a_chained_event(ops: Ops) -> None:
    doc = run_json(
        "oracle-set-ttl", "oracle", "set-ttl", *ops.d, "--oracle-id", "settle",
        "--ttl-epochs", "5", *ops.sign,
    )  # fmt: skip
    assert doc["status"] == "staged" and doc["event_type"] == "oracle_ttl_set"
    assert "SIGHUP" in doc["next_step"] or "next start" in doc["next_step"]
    record = doc["details"]["record"]
    assert record["ttl_epochs"] == 5 and record["key_id"] == "ops-k1"
    assert record["calibration_manifest_hash_hex"] is None  # D1: null, never "00"*32
    assert record["disjointness_attestation"] is None  # D1: never the legacy string
    assert verifies(K7_PUBLIC_HEX, record_digest("settle", record), record["signature_ed25519"])
    # The event: id = SHA-256 of the signed bytes (vector E rule), signed by the same key.
    (line,) = governance_event_lines(ops.data_dir)
    validate(line, REPO_ROOT / "schema/etl_governance_events.schema.json")
    assert line["payload"] == {"oracle_id": "settle", "ttl_epochs": 5}
    assert line["event_id"] == hashlib.sha256(event_signed_bytes(line)).hexdigest()
    assert line["event_id"] == doc["event_id"]
    assert verifies(K7_PUBLIC_HEX, event_signed_bytes(line), line["signature_ed25519"])
    assert line["prev_event_hash"] == "00" * 32
    # Staged, not applied: the database says so and the exported config is still empty.
    rows = sql(ops.data_dir, "SELECT oracle_id, stage FROM oracle_operator_records")
    assert rows == [("settle", "staged")]
    config = json.loads((ops.data_dir / "oracle_operator_config.json").read_text())
    assert config == {"oracles": {}}
    # The leaf in the log carries the event and its chain hash.
    (payload,) = sql(
        ops.data_dir, "SELECT payload FROM log_leaves WHERE leaf_index = ?", (doc["leaf_index"],)
    )[0]
    leaf = json.loads(payload)
    assert leaf["kind"] == "governance" and leaf["event_hash"] == line["event_hash"]


def test_set_ttl_then_apply_puts_record_in_effect_and_exports_it(
    ops: Ops, service_for: Any
) -> None:
    assert (
        run(
            "oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5", *ops.sign
        ).exit_code
        == 0
    )
    outcome = apply(service_for, ops.data_dir)
    assert outcome.ok and any("settle" in c for c in outcome.changes)
    config = json.loads((ops.data_dir / "oracle_operator_config.json").read_text())
    validate(config, REPO_ROOT / "schema/oracle_operator_config.schema.json")
    record = config["oracles"]["settle"]
    assert record["ttl_epochs"] == 5
    assert verifies(K7_PUBLIC_HEX, record_digest("settle", record), record["signature_ed25519"])
    assert sql(ops.data_dir, "SELECT stage FROM oracle_operator_records") == [("applied",)]
    listed = run_json("oracle-list", "oracle", "list", *ops.d)
    (row,) = listed["oracles"]
    assert row["applied"]["ttl_epochs"] == 5 and row["staged"] is None
    assert row["applied_check"]["verdict"] == "ok"
    human = run("oracle", "list", *ops.d)
    assert human.exit_code == 0 and "settle" in human.output and "applied" in human.output


def test_rotate_calibration_keeps_ttl_and_new_oracle_gets_ttl_one(ops: Ops) -> None:
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "7", *ops.sign)
    doc = run_json(
        "oracle-rotate-calibration", "oracle", "rotate-calibration", *ops.d,
        "--oracle-id", "settle", "--calib-hash", HASH_AB.upper(), *ops.sign,
    )  # fmt: skip
    record = doc["details"]["record"]
    assert record["ttl_epochs"] == 7 and record["calibration_manifest_hash_hex"] == HASH_AB
    assert record["calibration_epoch"] == record["updated_at_epoch"]
    assert verifies(K7_PUBLIC_HEX, record_digest("settle", record), record["signature_ed25519"])
    lines = governance_event_lines(ops.data_dir)
    assert lines[-1]["payload"] == {"oracle_id": "settle", "calibration_hash": HASH_AB}
    assert lines[-1]["prev_event_hash"] == lines[0]["event_hash"]  # chained
    fresh = run_json(
        "oracle-rotate-calibration", "oracle", "rotate-calibration", *ops.d,
        "--oracle-id", "other", "--calib-hash", HASH_CD, *ops.sign,
    )  # fmt: skip
    assert fresh["details"]["record"]["ttl_epochs"] == 1


def test_oracle_show(ops: Ops) -> None:
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5", *ops.sign)
    doc = run_json("oracle-show", "oracle", "show", *ops.d, "--oracle-id", "settle")
    assert doc["applied"] is None and doc["staged"]["ttl_epochs"] == 5
    assert doc["staged_check"]["verdict"] == "ok"
    assert "calibration manifest hash missing" in doc["staged_check"]["production_failures"]
    human = run("oracle", "show", *ops.d, "--oracle-id", "settle")
    assert human.exit_code == 0
    assert "staged" in human.output and "production mode:" in human.output


def test_oracle_list_empty(ops: Ops) -> None:
    assert run_json("oracle-list", "oracle", "list", *ops.d) == {"oracles": []}
    assert "(none)" in run("oracle", "list", *ops.d).output


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["--ttl-epochs", "0"], EXIT_USAGE, ["ttl_epochs must be > 0"]),
        (["--ttl-epochs", "-1"], EXIT_USAGE, ["--ttl-epochs"]),
        (["--ttl-epochs", "x"], EXIT_USAGE, ["--ttl-epochs"]),
    ],
)
def test_set_ttl_rejects_bad_ttl_and_writes_nothing(
    ops: Ops, args: list[str], code: int, fragments: list[str]
) -> None:
    result = run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", *args, *ops.sign)
    fails(result, code, *fragments)
    assert event_count(ops.data_dir) == 0
    assert sql(ops.data_dir, "SELECT count(*) FROM oracle_operator_records") == [(0,)]


def _mutations(ops: Ops) -> dict[str, list[str]]:
    """Every signed mutating ctl command, without its signing flags."""
    return {
        "set-ttl": ["oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5"],
        "rotate-calibration": [
            "oracle", "rotate-calibration", *ops.d, "--oracle-id", "settle",
            "--calib-hash", HASH_AB,
        ],
        "epoch-advance": ["epoch", "advance", *ops.d, "--to", "3"],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["set-ttl", "rotate-calibration", "epoch-advance"])
def test_signed_commands_refuse_bad_keys_with_actionable_messages(ops: Ops, command: str) -> None:
    args = _mutations(ops)[command]
    short = ops.root / "short.seed"
    short.write_bytes(K7_SEED[:31])
    hexed = ops.root / "hex.seed"
    hexed.write_text(K7_SEED.hex())
    cases = [
        # bad key file: not 32 raw bytes
        (["--signing-key", str(short), "--key-id", "ops-k1"], EXIT_USAGE,
         ["signing key must be raw 32-byte seed", "31 bytes"]),
        (["--signing-key", str(hexed), "--key-id", "ops-k1"], EXIT_USAGE,
         ["signing key must be raw 32-byte seed", "hex"]),
        # missing file
        (["--signing-key", str(ops.root / "nope.seed"), "--key-id", "ops-k1"], EXIT_ERROR,
         ["nope.seed", "does not exist"]),
        # unknown key id: says which file to edit and the line to add
        (["--signing-key", str(ops.k9), "--key-id", "ops-k2"], EXIT_ERROR,
         ["unknown signing key id 'ops-k2'", "trusted_oracle_keys.json", K9_PUBLIC_HEX]),
        # a seed that is not the trusted key of that id: its signature could never verify
        (["--signing-key", str(ops.k9), "--key-id", "ops-k1"], EXIT_ERROR,
         ["does not match key id 'ops-k1'", K9_PUBLIC_HEX, K7_PUBLIC_HEX]),
        # flags are required
        (["--key-id", "ops-k1"], EXIT_USAGE, ["--signing-key"]),
    ]  # fmt: skip
    for flags, code, fragments in cases:
        fails(run(*args, *flags), code, *fragments)
    assert event_count(ops.data_dir) == 0


def test_uninitialised_data_dir_is_refused(tmp_path: Path) -> None:
    k7 = write_seed(tmp_path / "k7.seed", K7_SEED)
    for args in (
        ["oracle", "list"],
        ["oracle", "set-ttl", "--oracle-id", "a", "--ttl-epochs", "1",
         "--signing-key", str(k7), "--key-id", "ops-k1"],
        ["governance", "events", "list"],
        ["nullspec", "list"],
        ["canary", "status", "--oracle-id", "a", "--holdout", "h"],
    ):  # fmt: skip
        result = run(*args, "--data-dir", str(tmp_path / "nodata"))
        fails(result, EXIT_ERROR, "does not exist", "start evidenceosd")
    assert not (tmp_path / "nodata").exists()


def test_oracle_show_unknown_oracle(ops: Ops) -> None:
    fails(
        run("oracle", "show", *ops.d, "--oracle-id", "nope"),
        EXIT_ERROR, "oracle not found", "'nope'", "oracle list",
    )  # fmt: skip


def test_rotate_calibration_rejects_short_hash(ops: Ops) -> None:
    result = run(
        "oracle", "rotate-calibration", *ops.d, "--oracle-id", "a", "--calib-hash", "ab" * 31,
        *ops.sign,
    )  # fmt: skip
    fails(result, EXIT_USAGE, "expected 32-byte hex")
    assert event_count(ops.data_dir) == 0


def test_bad_trusted_keys_file_is_named(ops: Ops) -> None:
    (ops.data_dir / "trusted_oracle_keys.json").write_text("{}")
    result = run(*_mutations(ops)["set-ttl"], *ops.sign)
    fails(result, EXIT_ERROR, "trusted_oracle_keys.json", "decode trusted keys failed")


def test_production_mode_refuses_records_without_provenance(ops: Ops) -> None:
    result = run(*_mutations(ops)["set-ttl"], *ops.sign, env=PROD_ENV)
    fails(result, EXIT_ERROR, "calibration manifest hash missing", "sign-oracle-record")
    assert event_count(ops.data_dir) == 0


# -- epoch advance ------------------------------------------------------------------------------


def test_epoch_advance_is_staged_until_applied(ops: Ops, service_for: Any) -> None:
    daemon = service_for(ops.data_dir)
    daemon.start()
    doc = run_json("epoch-advance", "epoch", "advance", *ops.d, "--to", "7", *ops.sign)
    control = doc["details"]["epoch_control"]
    assert control["forced_epoch"] == 7 and control["event_id"] == doc["event_id"]
    assert verifies(K7_PUBLIC_HEX, epoch_control_digest(control), control["signature_ed25519"])
    (line,) = governance_event_lines(ops.data_dir)
    assert line["event_type"] == "epoch_advanced" and line["payload"] == {"to": 7}
    assert sql(ops.data_dir, "SELECT value FROM meta WHERE key = 'forced_epoch'") == []
    assert json.loads((ops.data_dir / "epoch_control.json").read_text()) == {}
    assert daemon.reload().changes == ("forced_epoch None -> 7",)
    assert daemon.policy.forced_epoch == 7
    daemon.export()
    assert sql(ops.data_dir, "SELECT value FROM meta WHERE key = 'forced_epoch'") == [("7",)]
    exported = json.loads((ops.data_dir / "epoch_control.json").read_text())
    validate(exported, REPO_ROOT / "schema/epoch_control.schema.json")
    assert exported == control
    # Going backwards is allowed and logged.
    run("epoch", "advance", *ops.d, "--to", "2", *ops.sign)
    assert daemon.reload().changes == ("forced_epoch 7 -> 2",)


def test_epoch_advance_rejects_negative(ops: Ops) -> None:
    fails(run("epoch", "advance", *ops.d, "--to", "-1", *ops.sign), EXIT_USAGE, "--to")


# -- nullspec create / install / activate / list / show -----------------------------------------


def _buckets(ops: Ops, doc: dict[str, Any]) -> Path:
    path = ops.root / "buckets.json"
    path.write_text(json.dumps(doc))
    return path


def _create(
    ops: Ops,
    *,
    oracle: str = "settle",
    holdout: str = "h1",
    ttl: int = 10,
    counts: list[int] | None = None,
    epoch_created: int = 0,
) -> tuple[Path, dict[str, Any]]:
    out = ops.root / f"contract-{oracle}-{holdout}-{ttl}.json"
    buckets = _buckets(ops, {"counts": counts or [0, 1, 2], "epoch_created": epoch_created})
    result = run(
        "nullspec", "create", "--oracle-id", oracle, "--holdout", holdout,
        "--resolution-hash", HASH_AB, "--from-calibration-buckets", str(buckets),
        "--ttl-epochs", str(ttl), "--alpha", "1.0", "--signing-key", str(ops.k9),
        "--created-by", "op1", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(out.read_text())


def _signing_payload(contract: dict[str, Any]) -> bytes:
    """Spec 50 §3.4: canon with the id zeroed and the signature emptied (floats here are
    plain decimals, where json.dumps and serde agree)."""
    return canon({**contract, "nullspec_id": [0] * 32, "signature_ed25519": []})


def _keyring(ops: Ops) -> None:
    keys = ops.data_dir / "trusted-nullspec-keys"
    keys.mkdir(exist_ok=True)
    (keys / "op1.pub").write_text(K9_PUBLIC_HEX + "\n")


def test_nullspec_create_signs_a_contract(ops: Ops) -> None:
    buckets = _buckets(ops, {"counts": [0, 1, 2], "epoch_created": 5})
    doc = run_json(
        "nullspec-create", "nullspec", "create", "--oracle-id", "settle", "--holdout", "h1",
        "--resolution-hash", HASH_AB, "--from-calibration-buckets", str(buckets),
        "--ttl-epochs", "10", "--alpha", "1.0", "--signing-key", str(ops.k9), "--created-by", "op1",
    )  # fmt: skip
    assert doc["kind"] == {"DiscreteBuckets": {"p0": [1 / 6, 2 / 6, 3 / 6]}}
    assert doc["eprocess"] == {"DirichletMultinomialMixture": {"alpha": [1.0, 1.0, 1.0]}}
    assert doc["epoch_created"] == 5 and doc["oracle_resolution_hash"] == list(
        bytes.fromhex(HASH_AB)
    )
    payload = _signing_payload(doc)
    assert bytes(doc["nullspec_id"]) == hashlib.sha256(payload).digest()
    assert verifies(K9_PUBLIC_HEX, payload, bytes(doc["signature_ed25519"]).hex())


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        ({"buckets": {"counts": [], "epoch_created": 0}}, EXIT_USAGE, "counts must be non-empty"),
        ({"buckets": {"counts": [1]}}, EXIT_USAGE, "epoch_created"),
        ({"resolution": "ab" * 31}, EXIT_USAGE, "expected 32-byte hex"),
        ({"seed": bytes(64)}, EXIT_USAGE, "signing key must be raw 32-byte seed"),
        ({"alpha": "0"}, EXIT_USAGE, "--alpha"),
        ({"buckets_missing": True}, EXIT_ERROR, "does not exist"),
    ],
)
def test_nullspec_create_errors(ops: Ops, change: dict[str, Any], code: int, fragment: str) -> None:
    buckets = _buckets(ops, change.get("buckets", {"counts": [1, 2], "epoch_created": 0}))
    if change.get("buckets_missing"):
        buckets.unlink()
    seed = ops.k9
    if "seed" in change:
        seed = ops.root / "long.seed"
        seed.write_bytes(change["seed"])
    result = run(
        "nullspec", "create", "--oracle-id", "o", "--holdout", "h",
        "--resolution-hash", change.get("resolution", HASH_AB),
        "--from-calibration-buckets", str(buckets), "--ttl-epochs", "1",
        "--alpha", change.get("alpha", "1.0"), "--signing-key", str(seed), "--created-by", "op1",
    )  # fmt: skip
    fails(result, code, fragment)


def test_nullspec_install_activate_list_show(ops: Ops, service_for: Any) -> None:
    _keyring(ops)
    path, contract = _create(ops)
    nullspec_id = bytes(contract["nullspec_id"]).hex()
    installed = run_json(
        "nullspec-install", "nullspec", "install", *ops.d, "--contract", str(path), *ops.sign
    )
    assert installed["status"] == "applied" and installed["warnings"] == []
    assert installed["details"]["nullspec_id"] == nullspec_id
    exported = ops.data_dir / "nullspec" / f"{nullspec_id}.json"
    validate(json.loads(exported.read_bytes()), REPO_ROOT / "schema/nullspec.schema.json")
    assert json.loads(exported.read_bytes()) == contract
    activated = run_json(
        "nullspec-activate", "nullspec", "activate", *ops.d, "--oracle-id", "settle",
        "--holdout", "h1", "--nullspec-id", nullspec_id.upper(), *ops.sign,
    )  # fmt: skip
    assert activated["status"] == "staged"
    install_line, activate_line = governance_event_lines(ops.data_dir)
    assert install_line["event_type"] == "nullspec_install"
    assert install_line["payload"] == {
        "nullspec_id": nullspec_id, "oracle_id": "settle", "resolution_hash": HASH_AB,
    }  # fmt: skip
    assert activate_line["payload"]["holdout"] == "h1"
    assert activate_line["payload"]["nullspec_id"] == nullspec_id
    # Not in effect until applied.
    assert sql(ops.data_dir, "SELECT count(*) FROM nullspec_activations") == [(0,)]
    listed = run_json("nullspec-list", "nullspec", "list", *ops.d)
    (entry,) = listed["nullspecs"]
    assert entry["staged_for"] == [{"oracle_id": "settle", "holdout": "h1"}]
    assert entry["active_for"] == []
    assert apply(service_for, ops.data_dir).ok
    rows = sql(ops.data_dir, "SELECT oracle_id, holdout_ref, nullspec_id FROM nullspec_activations")
    assert rows == [("settle", "h1", bytes.fromhex(nullspec_id))]
    active_map = json.loads((ops.data_dir / "nullspec" / "active_map.json").read_text())
    validate(active_map, REPO_ROOT / "schema/nullspec_active_map.schema.json")
    assert active_map == {
        "mappings": [
            {"oracle_id": "settle", "holdout_handle": "h1", "nullspec_id_hex": nullspec_id}
        ]
    }
    shown = run_json("nullspec-show", "nullspec", "show", *ops.d, "--nullspec-id", nullspec_id)
    assert shown["active_for"] == [{"oracle_id": "settle", "holdout": "h1"}]
    human = run("nullspec", "show", *ops.d, "--nullspec-id", nullspec_id)
    assert human.exit_code == 0 and "active settle/h1" in human.output
    assert nullspec_id in run("nullspec", "list", *ops.d).output


def test_reactivation_replaces_the_staged_mapping(ops: Ops) -> None:
    first, c1 = _create(ops, ttl=10)
    second, c2 = _create(ops, ttl=11)
    for path in (first, second):
        assert run("nullspec", "install", *ops.d, "--contract", str(path)).exit_code == 0
    for contract in (c1, c2):
        result = run(
            "nullspec", "activate", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--nullspec-id", bytes(contract["nullspec_id"]).hex(),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    rows = sql(ops.data_dir, "SELECT nullspec_id FROM nullspec_activations_staged")
    assert rows == [(bytes(c2["nullspec_id"]),)]


def test_nullspec_install_without_keyring_warns_in_dev_and_refuses_in_production(
    ops: Ops,
) -> None:
    path, _ = _create(ops)
    refused = run("nullspec", "install", *ops.d, "--contract", str(path), *ops.sign, env=PROD_ENV)
    fails(refused, EXIT_ERROR, "'op1' is not in the authority keyring", "trusted-nullspec-keys")
    result = run("nullspec", "install", *ops.d, "--contract", str(path))
    assert result.exit_code == 0, result.output
    assert "signature not verified" in result.output and "unsigned" in result.output


def test_nullspec_install_rejects_tampered_and_badly_signed_contracts(ops: Ops) -> None:
    _keyring(ops)
    _, contract = _create(ops)
    edited = ops.root / "edited.json"
    edited.write_text(json.dumps({**contract, "ttl_epochs": 99}))
    fails(
        run("nullspec", "install", *ops.d, "--contract", str(edited)),
        EXIT_ERROR, "nullspec id mismatch", "edited after signing",
    )  # fmt: skip
    signature = list(contract["signature_ed25519"])
    signature[0] ^= 1
    forged = ops.root / "forged.json"
    forged.write_text(json.dumps({**contract, "signature_ed25519": signature}))
    fails(
        run("nullspec", "install", *ops.d, "--contract", str(forged)),
        EXIT_USAGE, "nullspec signature verification failed",
    )  # fmt: skip
    fails(
        run("nullspec", "install", *ops.d, "--contract", str(ops.root / "missing.json")),
        EXIT_ERROR, "missing.json", "does not exist",
    )  # fmt: skip
    assert event_count(ops.data_dir) == 0


def test_nullspec_activate_errors(ops: Ops, service_for: Any) -> None:
    path, contract = _create(ops, ttl=3)
    nullspec_id = bytes(contract["nullspec_id"]).hex()
    fails(
        run("nullspec", "activate", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--nullspec-id", nullspec_id),
        EXIT_ERROR, "nullspec not found", "nullspec install",
    )  # fmt: skip
    assert run("nullspec", "install", *ops.d, "--contract", str(path)).exit_code == 0
    fails(
        run("nullspec", "activate", *ops.d, "--oracle-id", "other", "--holdout", "h1",
            "--nullspec-id", nullspec_id),
        EXIT_ERROR, "created for oracle 'settle'",
    )  # fmt: skip
    fails(
        run("nullspec", "activate", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--nullspec-id", "zz"),
        EXIT_USAGE, "expected 32-byte hex",
    )  # fmt: skip
    fails(
        run("nullspec", "activate", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--nullspec-id", nullspec_id, env=PROD_ENV),
        EXIT_ERROR, "production mode refuses unsigned", "--signing-key",
    )  # fmt: skip
    # Expired TTL: valid through epoch 0 + 3; the applied forced epoch is 4.
    run("epoch", "advance", *ops.d, "--to", "4", *ops.sign)
    assert apply(service_for, ops.data_dir).ok
    fails(
        run("nullspec", "activate", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--nullspec-id", nullspec_id, *ops.sign),
        EXIT_ERROR, "expired", "valid through epoch 3", "current epoch is 4",
    )  # fmt: skip
    assert sql(ops.data_dir, "SELECT count(*) FROM nullspec_activations_staged") == [(0,)]


def test_nullspec_show_unknown(ops: Ops) -> None:
    fails(
        run("nullspec", "show", *ops.d, "--nullspec-id", "00" * 32),
        EXIT_ERROR, "nullspec not found", "nullspec list",
    )  # fmt: skip
    assert run_json("nullspec-list", "nullspec", "list", *ops.d) == {"nullspecs": []}


# -- governance events list / show / verify -----------------------------------------------------


def _three_events(ops: Ops) -> None:
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5", *ops.sign)
    run("epoch", "advance", *ops.d, "--to", "3", *ops.sign)
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "6", *ops.sign)


def test_governance_events_list_and_show_with_inclusion_proof(ops: Ops) -> None:
    _three_events(ops)
    listed = run_json("governance-events-list", "governance", "events", "list", *ops.d)
    events = listed["events"]
    assert [e["event_type"] for e in events] == [
        "oracle_ttl_set",
        "epoch_advanced",
        "oracle_ttl_set",
    ]
    assert events == governance_event_lines(ops.data_dir)
    for previous, event in itertools.pairwise(events):
        assert event["prev_event_hash"] == previous["event_hash"]
    target = events[1]
    shown = run_json(
        "governance-events-show", "governance", "events", "show", *ops.d, "--event-id",
        target["event_id"],
    )  # fmt: skip
    assert shown["event"] == target and shown["signature"] == "valid"
    proof = shown["inclusion_proof"]
    (payload,) = sql(
        ops.data_dir, "SELECT payload FROM log_leaves WHERE leaf_index = ?", (proof["leaf_index"],)
    )[0]
    assert proof["leaf_hash"] == leaf_hash(payload).hex()
    assert inclusion_valid(
        proof["leaf_index"], proof["tree_size"], leaf_hash(payload),
        [bytes.fromhex(h) for h in proof["audit_path"]], bytes.fromhex(proof["root_hash"]),
    )  # fmt: skip
    # The root is the one a stored signed tree head signs.
    (root, signature, key_id) = sql(
        ops.data_dir,
        "SELECT h.root_hash, h.signature, k.public_key FROM signed_tree_heads h "
        "JOIN signing_keys k ON k.key_id = h.key_id WHERE h.tree_size = ?",
        (proof["tree_size"],),
    )[0]
    assert root.hex() == proof["root_hash"]
    assert sth_signature_valid(key_id, proof["tree_size"], root, signature)
    human = run("governance", "events", "show", *ops.d, "--event-id", target["event_id"])
    assert human.exit_code == 0
    assert "inclusion proof" in human.output and "verified" in human.output
    assert "epoch_advanced" in run("governance", "events", "list", *ops.d).output


def test_governance_events_show_unknown(ops: Ops) -> None:
    fails(
        run("governance", "events", "show", *ops.d, "--event-id", "00" * 32),
        EXIT_ERROR, "governance event not found", "events list",
    )  # fmt: skip


def _drop_guard(data_dir: Path, name: str) -> str:
    (ddl,) = sql(data_dir, "SELECT sql FROM sqlite_master WHERE name = ?", (name,))[0]
    sql_write(data_dir, f"DROP TRIGGER {name}")
    return str(ddl)


def test_governance_verify_detects_an_edited_event(ops: Ops) -> None:
    _three_events(ops)
    ok = run_json("governance-verify", "governance", "verify", *ops.d)
    assert ok == {"ok": True, "events": 3, "problems": []}
    ddl = _drop_guard(ops.data_dir, "governance_events_no_update")
    sql_write(
        ops.data_dir,
        'UPDATE governance_events SET payload_json = \'{"oracle_id":"settle","ttl_epochs":50}\' '
        "WHERE seq = 0",
        ddl,
    )
    result = run("governance", "verify", *ops.d)
    fails(result, EXIT_DAMAGED, "DAMAGED", "governance event #0", "does not match its content")


def test_governance_verify_detects_a_deleted_last_event(ops: Ops) -> None:
    _three_events(ops)
    ddl = _drop_guard(ops.data_dir, "governance_events_no_delete")
    sql_write(
        ops.data_dir,
        "DELETE FROM oracle_operator_records",
        "DELETE FROM governance_events WHERE seq = 2",
        ddl,
    )
    result = run("governance", "verify", *ops.d, "--json")
    assert result.exit_code == EXIT_DAMAGED
    doc = json.loads(result.stdout)
    assert not doc["ok"] and "3 governance leaves but the chain has 2" in doc["problems"][0]


def test_applying_refuses_a_broken_chain(ops: Ops, service_for: Any) -> None:
    _three_events(ops)
    ddl = _drop_guard(ops.data_dir, "governance_events_no_delete")
    sql_write(
        ops.data_dir,
        "DELETE FROM oracle_operator_records",
        "DELETE FROM epoch_controls",
        "DELETE FROM governance_events WHERE seq = 1",
        ddl,
    )
    outcome = apply(service_for, ops.data_dir)
    assert not outcome.ok and outcome.error is not None
    assert "governance chain damaged" in outcome.error


# -- canary status / reset ---------------------------------------------------------------------


def _frozen_stream(data_dir: Path) -> CanaryState:
    state = CanaryState.create(CanaryConfig())
    state = CanaryState(
        config=state.config, barrier=state.barrier, e_drift=25.0, last_epoch_checked=4,
        drift_frozen=True, counts=(3, 1), total=4,
    )  # fmt: skip
    store = Store(data_dir)
    try:
        store.write(lambda conn: canary_table.put_canary_state(conn, "settle", "h1", state))
    finally:
        store.close()
    return state


def _reset_doc(ops: Ops, name: str, doc: dict[str, Any]) -> Path:
    path = ops.root / name
    path.write_text(json.dumps(doc))
    return path


def test_canary_status(ops: Ops) -> None:
    fails(
        run("canary", "status", *ops.d, "--claim-name", "settle", "--holdout", "h1"),
        EXIT_ERROR, "canary state not found", "(settle, h1)",
    )  # fmt: skip
    _frozen_stream(ops.data_dir)
    doc = run_json(
        "canary-status", "canary", "status", *ops.d, "--oracle-id", "settle", "--holdout", "h1"
    )
    assert doc["drift_frozen"] is True and doc["e_drift"] == 25.0
    assert (
        "FROZEN"
        in run("canary", "status", *ops.d, "--oracle-id", "settle", "--holdout", "h1").output
    )


def test_canary_reset_refuses_anything_but_a_verified_signature(ops: Ops) -> None:
    before = _frozen_stream(ops.data_dir)
    payload = {"oracle_id": "settle", "holdout": "h1"}
    good = signed_event(K7_SEED, "ops-k1", "canary_reset", payload)
    wrong_payload = signed_event(
        K7_SEED, "ops-k1", "canary_reset", {"oracle_id": "x", "holdout": "h1"}
    )
    flipped = dict(good)
    flipped["signature_ed25519"] = ("0" if good["signature_ed25519"][0] != "0" else "1") + good[
        "signature_ed25519"
    ][1:]
    edited = {**good, "payload": {"oracle_id": "settle", "holdout": "h2"}}
    edited.pop("event_id")
    cases = [
        ({**good, "event_type": "oracle_ttl_set"}, "governance event_type must be canary_reset"),
        ({**good, "signature_ed25519": ""}, "signed governance event required"),
        (
            {k: v for k, v in good.items() if k != "signature_ed25519"},
            "signed governance event required",
        ),
        (signed_event(K9_SEED, "ops-k9", "canary_reset", payload), "unknown signing key"),
        (flipped, "signature verification failed"),
        (edited, "signature verification failed"),
        ({**good, "payload": {"oracle_id": "settle", "holdout": "h2"}}, "event_id does not match"),
        (wrong_payload, "does not name this stream"),
        (signed_event(K7_SEED, "ops-k1", "canary_reset", payload, epoch=1_000_000), "too old"),
    ]
    for index, (doc, fragment) in enumerate(cases):
        path = _reset_doc(ops, f"bad-{index}.json", doc)
        result = run(
            "canary", "reset", *ops.d, "--claim-name", "settle", "--holdout", "h1",
            "--governance-event", str(path),
        )  # fmt: skip
        fails(result, EXIT_ERROR, "canary reset refused", fragment)
    not_json = _reset_doc(ops, "garbage.json", {})
    not_json.write_text("not json")
    fails(
        run("canary", "reset", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--governance-event", str(not_json)),
        EXIT_ERROR, "canary reset refused",
    )  # fmt: skip
    fails(
        run("canary", "reset", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--governance-event", str(ops.root / "absent.json")),
        EXIT_ERROR, "absent.json", "does not exist",
    )  # fmt: skip
    assert event_count(ops.data_dir) == 0
    status = run_json(
        "canary-status", "canary", "status", *ops.d, "--oracle-id", "settle", "--holdout", "h1"
    )
    assert status["drift_frozen"] is True and status["e_drift"] == before.e_drift


def test_canary_reset_with_a_signed_document(ops: Ops) -> None:
    before = _frozen_stream(ops.data_dir)
    doc = signed_event(K7_SEED, "ops-k1", "canary_reset", {"oracle_id": "settle", "holdout": "h1"})
    path = _reset_doc(ops, "reset.json", doc)
    args = ["canary", "reset", *ops.d, "--oracle-id", "settle", "--holdout", "h1",
            "--governance-event", str(path)]  # fmt: skip
    result = run_json("canary-reset", *args)
    assert result["status"] == "applied" and result["event_id"] == doc["event_id"]
    state = result["details"]["state"]
    assert state["e_drift"] == 1.0 and state["drift_frozen"] is False
    assert state["counts"] == [] and state["total"] == 0 and state["last_epoch_checked"] == 0
    assert state["barrier"] == before.barrier
    (line,) = governance_event_lines(ops.data_dir)
    assert (
        line["event_type"] == "canary_reset"
        and line["signature_ed25519"] == doc["signature_ed25519"]
    )
    # A document works once: replaying it is refused.
    _frozen_stream(ops.data_dir)
    fails(run(*args), EXIT_ERROR, "already used")
    # Another stream that never ran has no state.
    other = _reset_doc(
        ops, "other.json",
        signed_event(K7_SEED, "ops-k1", "canary_reset", {"oracle_id": "settle", "holdout": "h9"}),
    )  # fmt: skip
    fails(
        run("canary", "reset", *ops.d, "--oracle-id", "settle", "--holdout", "h9",
            "--governance-event", str(other)),
        EXIT_ERROR, "canary state not found",
    )  # fmt: skip


# -- reload semantics (what the daemon does on SIGHUP) ----------------------------------------


def test_reload_rejects_tampered_or_untrusted_records_and_keeps_the_old_config(
    ops: Ops, service_for: Any
) -> None:
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5", *ops.sign)
    service = service_for(ops.data_dir)
    service.start()
    assert service.policy.ttl_for("settle") == 5
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "9", *ops.sign)
    # Tamper with the staged record: its signature no longer covers it.
    sql_write(
        ops.data_dir,
        "UPDATE oracle_operator_records SET record_json = "
        "json_set(record_json, '$.ttl_epochs', 90) WHERE stage = 'staged'",
    )
    outcome = service.reload()
    assert not outcome.ok and "oracle config signature verification failed" in (outcome.error or "")
    assert service.policy.ttl_for("settle") == 5
    assert sql(ops.data_dir, "SELECT stage FROM oracle_operator_records ORDER BY stage") == [
        ("applied",), ("staged",),
    ]  # fmt: skip
    # A correctly signed record by a key that is no longer trusted is refused too.
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "9", *ops.sign)
    write_trusted_keys(ops.data_dir, {"ops-k9": K9_PUBLIC_HEX})
    outcome = service.reload()
    assert not outcome.ok and "unknown signing key for oracle config" in (outcome.error or "")
    assert service.policy.ttl_for("settle") == 5
    write_trusted_keys(ops.data_dir, {"ops-k1": K7_PUBLIC_HEX})
    outcome = service.reload()
    assert outcome.ok and outcome.changes == ("oracle settle ttl_epochs 5 -> 9",)
    assert service.policy.ttl_for("settle") == 9


def test_production_start_enforces_provenance(ops: Ops, service_for: Any) -> None:
    run("oracle", "set-ttl", *ops.d, "--oracle-id", "settle", "--ttl-epochs", "5", *ops.sign)
    with pytest.raises(ConfigError, match="calibration manifest hash missing"):
        service_for(ops.data_dir, production=True).start()
    assert sql(ops.data_dir, "SELECT stage FROM oracle_operator_records") == [("staged",)]
    assert service_for(ops.data_dir).start().ttl_for("settle") == 5  # dev mode loads it
