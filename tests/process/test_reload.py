"""Staged governance changes and SIGHUP on a real daemon (OPERATIONS "Recommended safe-change
order"; DESIGN §2, §7; spec 50 §6.4, §10 scenarios 10-12).

The real ``evidenceosd`` serves claims over gRPC while the real ``evidenceosctl`` stages a signed
change in the same database. The change must not be in effect until SIGHUP, its event must be in
``etl_governance_events.log`` before, and one ``config_reload`` line must announce it after —
then claims behave accordingly (a forced epoch makes a sealed claim stale). A tampered record or
one signed by a key that is no longer trusted is rejected at reload with the old configuration
kept, and a daemon whose governance configuration is invalid refuses to start and says why.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import wasmtime

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.daemon import DaemonPool, DaemonProcess, rpc_status, run_ctl, run_to_exit
from tests.support.datadir import append_entries
from tests.support.governance import (
    K7_PUBLIC_HEX,
    K7_SEED,
    K9_PUBLIC_HEX,
    K9_SEED,
    governance_event_lines,
    sql_write,
    write_seed,
    write_trusted_keys,
)

pytestmark = pytest.mark.process

GUEST = (
    '(module (import "env" "oracle_query" (func $q (param i32 i32) (result i32)))'
    ' (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))'
    ' (memory (export "memory") 1) (data (i32.const 0) "\\01")'
    ' (func (export "run") i32.const 16 i32.const 128 call $q drop'
    " i32.const 0 i32.const 1 call $emit drop))"
)
DAEMON_ARGS = ["--insecure-synthetic-holdout"]


def prepare(tmp_path: Path, keys: dict[str, str] | None = None) -> tuple[Path, Path, Path]:
    """An initialised data dir with an epoch config, trusted keys and two operator seeds."""
    data_dir = tmp_path / "data"
    append_entries(data_dir, range(1))
    config = data_dir / "epoch_configs" / "epoch" / "default.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"epoch_size": 16, "pln": {"target_fuel": 100, "max_fuel": 500}}))
    write_trusted_keys(data_dir, keys if keys is not None else {"ops-k1": K7_PUBLIC_HEX})
    return (
        data_dir,
        write_seed(tmp_path / "k7.seed", K7_SEED),
        write_seed(tmp_path / "k9.seed", K9_SEED),
    )


def ctl(*args: str) -> Any:
    """Run the real evidenceosctl with --json; fail the test with its stderr on error."""
    done = run_ctl(*args, "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def sealed_claim(daemon: DaemonProcess, name: str) -> bytes:
    """Create, commit and seal a fast-lane claim (pinned at the epoch in effect, ttl 1)."""
    wasm = bytes(wasmtime.wat2wasm(GUEST))
    stub = daemon.v2
    created = stub.CreateClaimV2(
        pb.CreateClaimV2Request(
            claim_name=name,
            holdout_ref="synthetic-holdout",
            epoch_size=16,
            oracle_num_symbols=4,
            access_credit=256,
            metadata=pb.ClaimMetadataV2(
                lane="fast",
                alpha_micros=50_000,
                epoch_config_ref="epoch/default",
                output_schema_id="legacy/v1",
            ),
        ),
        metadata=(("x-request-id", f"create-{name}"),),
    )
    stub.CommitArtifacts(
        pb.CommitArtifactsRequest(
            claim_id=created.claim_id,
            artifacts=[pb.Artifact(artifact_hash=hashlib.sha256(wasm).digest(), kind="wasm")],
            wasm_module=wasm,
        )
    )
    stub.FreezeGates(pb.FreezeGatesRequest(claim_id=created.claim_id))
    return bytes(created.claim_id)


def execute(daemon: DaemonProcess, claim_id: bytes) -> Any:
    return daemon.v2.ExecuteClaimV2(
        pb.ExecuteClaimV2Request(claim_id=claim_id),
        metadata=(("x-request-id", f"exec-{claim_id.hex()[:16]}"),),
    )


def wait_reload(daemon: DaemonProcess, event: str, seen: int) -> dict[str, Any]:
    """The next ``event`` line (config_reload / config_reload_rejected) after ``seen`` of them."""
    return daemon.wait_for_log(
        lambda doc: doc.get("event") == event and len(daemon.events(event)) > seen, timeout=15
    )


def test_safe_change_order(tmp_path: Path, daemons: DaemonPool) -> None:
    data_dir, k7, _ = prepare(tmp_path)
    sign = ["--signing-key", str(k7), "--key-id", "ops-k1"]
    daemon = daemons.start(data_dir, extra_args=DAEMON_ARGS)
    (startup,) = daemon.events("config_reload")
    assert startup["trigger"] == "startup" and startup["forced_epoch"] is None
    before, after = sealed_claim(daemon, "before"), sealed_claim(daemon, "after")

    # 1. Stage a signed change with evidenceosctl while the daemon serves.
    staged = ctl("epoch", "advance", "--data-dir", str(data_dir), "--to", "5", *sign)
    assert staged["status"] == "staged"
    assert f"kill -HUP {daemon.pid}" in staged["next_step"]
    # 2. The event is in etl_governance_events.log ...
    (line,) = governance_event_lines(data_dir)
    assert line["event_id"] == staged["event_id"] and line["payload"] == {"to": 5}
    shown = ctl("governance", "events", "show", "--data-dir", str(data_dir),
                "--event-id", staged["event_id"])  # fmt: skip
    assert shown["inclusion_proof"]["verified"] and shown["signature"] == "valid"
    # ... and the change is not in effect: a claim sealed at epoch 0 still executes.
    assert execute(daemon, before).etl_index > 0
    assert len(daemon.events("config_reload")) == 1

    # 3. Reload.
    daemon.send_signal(signal.SIGHUP)
    # 4. One structured config_reload line names the change.
    reload = wait_reload(daemon, "config_reload", 1)
    assert reload["trigger"] == "sighup" and reload["forced_epoch"] == 5
    assert reload["changed"] == ["forced_epoch None -> 5"]
    assert reload["level"] == "info"
    for key in ("trusted_keys_before", "trusted_keys_after", "oracle_ttls_before",
                "oracle_ttls_after", "calibrations_before", "calibrations_after",
                "nullspec_mappings"):  # fmt: skip
        assert key in reload
    # 5. Claims behave accordingly: epoch 5 - pinned 0 > ttl 1, the other claim is stale.
    code, details = rpc_status(lambda: execute(daemon, after))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "claim is stale" in details
    assert not daemon.events("config_reload_rejected")
    assert daemon.terminate() == 0


def test_rejected_reload_keeps_the_old_config(tmp_path: Path, daemons: DaemonPool) -> None:
    data_dir, k7, k9 = prepare(tmp_path, {"ops-k1": K7_PUBLIC_HEX, "ops-k2": K9_PUBLIC_HEX})
    d = ["--data-dir", str(data_dir)]
    daemon = daemons.start(data_dir, extra_args=DAEMON_ARGS)
    claim = sealed_claim(daemon, "kept")

    # A tampered staged record: its signature no longer covers what is stored.
    ctl("epoch", "advance", *d, "--to", "5", "--signing-key", str(k7), "--key-id", "ops-k1")
    sql_write(
        data_dir,
        "UPDATE epoch_controls SET control_json = json_set(control_json, '$.forced_epoch', 0) "
        "WHERE stage = 'staged'",
    )
    daemon.send_signal(signal.SIGHUP)
    rejected = wait_reload(daemon, "config_reload_rejected", 0)
    assert rejected["severity"] == "high" and rejected["level"] == "error"
    assert "epoch control signature verification failed" in rejected["error"]

    # A record signed by a key that is no longer trusted.
    ctl("epoch", "advance", *d, "--to", "5", "--signing-key", str(k9), "--key-id", "ops-k2")
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX})
    daemon.send_signal(signal.SIGHUP)
    rejected = wait_reload(daemon, "config_reload_rejected", 1)
    assert "unknown signing key for epoch control" in rejected["error"]

    # The old configuration stays: the claim sealed at epoch 0 is not stale.
    assert len(daemon.events("config_reload")) == 1  # the start-up line only
    assert execute(daemon, claim).etl_index > 0

    # Fixing the input makes the next reload apply the staged change.
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX, "ops-k2": K9_PUBLIC_HEX})
    daemon.send_signal(signal.SIGHUP)
    applied = wait_reload(daemon, "config_reload", 1)
    assert applied["forced_epoch"] == 5 and "trusted key ops-k2" not in " ".join(applied["changed"])
    assert daemon.terminate() == 0


def test_invalid_governance_config_refuses_to_start(tmp_path: Path) -> None:
    data_dir, k7, _ = prepare(tmp_path)
    ctl("oracle", "set-ttl", "--data-dir", str(data_dir), "--oracle-id", "settle",
        "--ttl-epochs", "5", "--signing-key", str(k7), "--key-id", "ops-k1")  # fmt: skip

    # Production mode: the record lacks calibration and disjointness provenance.
    exited = run_to_exit(data_dir, extra_args=[], env={"EVIDENCEOS_PRODUCTION_MODE": "1"})
    assert exited.returncode != 0
    assert "invalid governance configuration" in exited.stderr
    assert "calibration manifest hash missing" in exited.stderr

    # A trusted-keys file without "keys".
    write_trusted_keys(data_dir, {})
    (data_dir / "trusted_oracle_keys.json").write_text("{}")
    exited = run_to_exit(data_dir, extra_args=DAEMON_ARGS)
    assert exited.returncode != 0 and "decode trusted keys failed" in exited.stderr
    assert "trusted_oracle_keys.json" in exited.stderr

    # A tampered staged record.
    write_trusted_keys(data_dir, {"ops-k1": K7_PUBLIC_HEX})
    sql_write(
        data_dir,
        "UPDATE oracle_operator_records SET record_json = json_set(record_json, '$.ttl_epochs', 9)",
    )
    exited = run_to_exit(data_dir, extra_args=DAEMON_ARGS)
    assert exited.returncode != 0
    assert "oracle config signature verification failed" in exited.stderr
    refused = [e for e in exited.events if e.get("event") == "startup_refused"]
    assert refused and "settle" in refused[0]["msg"]
