"""``evidenceos-operator sign-oracle-record|sign-epoch-control|sign-canary-reset`` on real data
directories (spec 50 §5, OPERATIONS "Generating signed oracle operator records").

The record hashes the exact bytes of the calibration manifest and the disjointness proof; a
production-mode daemon (the service it runs, driven directly here) loads it, and refuses it once
its freshness window (``updated_at_epoch + ttl_epochs`` seconds) has passed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from evidenceos.cli.ctl import main as ctl
from evidenceos.cli.operator import main as operator
from evidenceos.errors import ConfigError
from evidenceos.service.governance import GovernancePaths, GovernanceService, GovernanceSettings
from evidenceos.service.log_service import LogService
from evidenceos.store.db import Store
from evidenceos.store.keys import load_keyring
from tests.support.datadir import append_entries
from tests.support.governance import (
    K7_PUBLIC_HEX,
    K7_SEED,
    K9_SEED,
    epoch_control_digest,
    event_signed_bytes,
    governance_event_lines,
    record_digest,
    sql,
    verifies,
    write_seed,
    write_trusted_keys,
)
from tests.support.paths import REPO_ROOT

EXIT_ERROR = 1
EXIT_USAGE = 2
ENV: dict[str, str | None] = {
    "EVIDENCEOS_PRODUCTION_MODE": None,
    "EVIDENCEOS_REQUIRE_DISJOINTNESS_ATTESTATION": None,
}
MANIFEST = b'{"model": "settle-v3", "bins": [0.1, 0.2]}\n'
PROOF = b"proof bytes \x00\x01 exactly as given"


def run(*args: str) -> Result:
    return CliRunner().invoke(operator, list(args), env=ENV)


def validate(doc: Any, name: str) -> None:
    schema = json.loads((REPO_ROOT / "schema" / "cli" / f"{name}.schema.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(doc)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    append_entries(data_dir, range(1))
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX})
    (tmp_path / "calibration_manifest.json").write_bytes(MANIFEST)
    (tmp_path / "disjointness_proof.json").write_bytes(PROOF)
    write_seed(tmp_path / "ops-k1.seed", K7_SEED)
    write_seed(tmp_path / "k9.seed", K9_SEED)
    return data_dir


def guide_args(data_dir: Path, **overrides: str) -> list[str]:
    """The flags of the operations guide's example."""
    root = data_dir.parent
    flags = {
        "--data-dir": str(data_dir),
        "--oracle-id": "settle",
        "--ttl-epochs": "86400",
        "--signing-key": str(root / "ops-k1.seed"),
        "--key-id": "ops-k1",
        "--calibration-manifest-path": str(root / "calibration_manifest.json"),
        "--disjointness-proof-path": str(root / "disjointness_proof.json"),
        "--disjointness-scope": "global/settle",
    }
    flags.update(overrides)
    return ["sign-oracle-record", *(x for pair in flags.items() for x in pair)]


@pytest.fixture
def daemon_service() -> Iterator[Any]:
    """The daemon's governance service on a data dir, with an adjustable clock."""
    stores: list[Store] = []

    def open_(data_dir: Path, *, production: bool, now_s: int | None = None) -> GovernanceService:
        store = Store(data_dir)
        stores.append(store)
        kwargs: dict[str, Any] = {}
        if now_s is not None:
            kwargs["clock_ms"] = lambda: now_s * 1000
        return GovernanceService(
            store,
            LogService(store, load_keyring(data_dir, allow_generate=False)),
            GovernancePaths.for_data_dir(data_dir),
            GovernanceSettings(production_mode=production),
            **kwargs,
        )

    yield open_
    for store in stores:
        store.close()


def test_sign_oracle_record_hashes_the_exact_file_bytes(data_dir: Path) -> None:
    result = run(*guide_args(data_dir), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc, "operator-sign-oracle-record")
    record = doc["details"]["record"]
    assert record["calibration_manifest_hash_hex"] == hashlib.sha256(MANIFEST).hexdigest()
    assert record["disjointness_attestation"] == {
        "statement_type": "oracle_disjointness_v1",
        "scope": "global/settle",
        "proof_sha256_hex": hashlib.sha256(PROOF).hexdigest(),
    }
    assert record["ttl_epochs"] == 86400 and record["key_id"] == "ops-k1"
    assert verifies(K7_PUBLIC_HEX, record_digest("settle", record), record["signature_ed25519"])
    (line,) = governance_event_lines(data_dir)
    assert line["event_type"] == "oracle_record_signed" and line["key_id"] == "ops-k1"
    assert line["payload"]["record_digest"] == record_digest("settle", record).hex()
    assert verifies(K7_PUBLIC_HEX, event_signed_bytes(line), line["signature_ed25519"])
    assert sql(data_dir, "SELECT stage FROM oracle_operator_records") == [("staged",)]
    human = run(*guide_args(data_dir))
    assert human.exit_code == 0 and "staged" in human.output and "SIGHUP" in human.output


def test_a_production_daemon_loads_the_record_until_it_expires(
    data_dir: Path, daemon_service: Any
) -> None:
    result = run(*guide_args(data_dir, **{"--ttl-epochs": "100"}), "--json")
    assert result.exit_code == 0, result.output
    updated = json.loads(result.stdout)["details"]["record"]["updated_at_epoch"]
    # Still fresh at updated + ttl (inclusive): loads in production mode.
    policy = daemon_service(data_dir, production=True, now_s=updated + 100).start()
    assert policy.ttl_for("settle") == 100
    assert policy.calibration_for("settle") == hashlib.sha256(MANIFEST).digest()
    assert policy.require_calibration("settle") == hashlib.sha256(MANIFEST).digest()
    # One second later the production daemon refuses to start with it.
    with pytest.raises(ConfigError, match="oracle operator record expired"):
        daemon_service(data_dir, production=True, now_s=updated + 101).start()
    # Dev mode does not enforce freshness.
    assert daemon_service(data_dir, production=False, now_s=updated + 101).start().ttl_for("settle")


def test_sign_oracle_record_keeps_calibration_epoch_of_an_existing_record(data_dir: Path) -> None:
    root = data_dir.parent
    rotated = CliRunner().invoke(
        ctl,
        ["oracle", "rotate-calibration", "--data-dir", str(data_dir), "--oracle-id", "settle",
         "--calib-hash", "ab" * 32, "--signing-key", str(root / "ops-k1.seed"),
         "--key-id", "ops-k1", "--json"],
        env=ENV,
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    calibration_epoch = json.loads(rotated.stdout)["details"]["record"]["calibration_epoch"]
    result = run(*guide_args(data_dir), "--json")
    record = json.loads(result.stdout)["details"]["record"]
    assert record["calibration_epoch"] == calibration_epoch
    assert record["calibration_manifest_hash_hex"] == hashlib.sha256(MANIFEST).hexdigest()


@pytest.mark.parametrize(
    ("overrides", "files", "code", "fragments"),
    [
        ({"--ttl-epochs": "0"}, {}, EXIT_USAGE, ["ttl_epochs must be > 0"]),
        ({"--disjointness-scope": "   "}, {}, EXIT_USAGE, ["disjointness_scope must be non-empty"]),
        ({}, {"disjointness_proof.json": b""}, EXIT_USAGE,
         ["disjointness proof must be non-empty"]),
        ({}, {"calibration_manifest.json": b""}, EXIT_USAGE,
         ["calibration manifest must be non-empty"]),
        ({"--calibration-manifest-path": "/nonexistent/manifest.json"}, {}, EXIT_ERROR,
         ["calibration manifest", "/nonexistent/manifest.json", "does not exist"]),
        ({"--disjointness-proof-path": "/nonexistent/proof.json"}, {}, EXIT_ERROR,
         ["disjointness proof", "does not exist"]),
        ({"--signing-key": "SHORT"}, {"short.seed": b"x" * 31}, EXIT_USAGE,
         ["signing key must be raw 32-byte seed", "31 bytes"]),
        ({"--key-id": "ops-k2"}, {}, EXIT_ERROR,
         ["unknown signing key id 'ops-k2'", "trusted_oracle_keys.json"]),
        ({"--signing-key": "K9"}, {}, EXIT_ERROR, ["does not match key id 'ops-k1'"]),
    ],
)  # fmt: skip
def test_sign_oracle_record_errors(
    data_dir: Path,
    overrides: dict[str, str],
    files: dict[str, bytes],
    code: int,
    fragments: list[str],
) -> None:
    root = data_dir.parent
    for name, content in files.items():
        (root / name).write_bytes(content)
    if overrides.get("--signing-key") == "SHORT":
        overrides = {**overrides, "--signing-key": str(root / "short.seed")}
    if overrides.get("--signing-key") == "K9":
        overrides = {**overrides, "--signing-key": str(root / "k9.seed")}
    result = run(*guide_args(data_dir, **overrides))
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert sql(data_dir, "SELECT count(*) FROM governance_events") == [(0,)]


def test_sign_epoch_control(data_dir: Path) -> None:
    root = data_dir.parent
    result = run(
        "sign-epoch-control", "--data-dir", str(data_dir), "--forced-epoch", "99",
        "--signing-key", str(root / "ops-k1.seed"), "--key-id", "ops-k1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    validate(doc, "operator-sign-epoch-control")
    control = doc["details"]["epoch_control"]
    assert control["forced_epoch"] == 99
    assert verifies(K7_PUBLIC_HEX, epoch_control_digest(control), control["signature_ed25519"])
    (line,) = governance_event_lines(data_dir)
    assert line["event_type"] == "epoch_advanced" and line["payload"] == {"to": 99}
    bad = run(
        "sign-epoch-control", "--data-dir", str(data_dir), "--forced-epoch", "-3",
        "--signing-key", str(root / "ops-k1.seed"), "--key-id", "ops-k1",
    )  # fmt: skip
    assert bad.exit_code == EXIT_USAGE and "--forced-epoch" in bad.output


def test_sign_canary_reset_writes_a_document_canary_reset_accepts(data_dir: Path) -> None:
    root = data_dir.parent
    out = root / "reset.json"
    args = ["sign-canary-reset", "--oracle-id", "settle", "--holdout", "h1",
            "--signing-key", str(root / "ops-k1.seed"), "--key-id", "ops-k1",
            "--out", str(out)]  # fmt: skip
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    validate(doc, "operator-sign-canary-reset")
    assert json.loads(result.stdout) == doc
    assert doc["payload"] == {"oracle_id": "settle", "holdout": "h1"}
    assert doc["event_id"] == hashlib.sha256(event_signed_bytes(doc)).hexdigest()
    assert verifies(K7_PUBLIC_HEX, event_signed_bytes(doc), doc["signature_ed25519"])
    again = run(*args)
    assert again.exit_code == EXIT_ERROR and "already exists" in again.output


def test_operator_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ("sign-oracle-record", "sign-epoch-control", "sign-canary-reset"):
        assert name in result.output
