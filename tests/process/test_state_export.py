"""state.json after a real lifecycle: claims, pools and the head, hex not integer arrays, and
valid against schema/state.schema.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
import wasmtime

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.daemon import DaemonProcess
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.process

GUEST = (
    '(module (import "env" "oracle_query" (func $q (param i32 i32) (result i32)))'
    ' (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))'
    ' (memory (export "memory") 1) (data (i32.const 0) "\\01")'
    ' (func (export "run") i32.const 16 i32.const 128 call $q drop'
    " i32.const 0 i32.const 1 call $emit drop))"
)


def test_state_json_describes_executed_claim(data_dir: Path) -> None:
    config = data_dir / "epoch_configs" / "epoch" / "default.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"epoch_size": 16, "pln": {"target_fuel": 100, "max_fuel": 500}}))
    wasm = bytes(wasmtime.wat2wasm(GUEST))
    with DaemonProcess(data_dir, extra_args=["--insecure-synthetic-holdout"]) as daemon:
        daemon.start()
        stub = daemon.v2
        created = stub.CreateClaimV2(
            pb.CreateClaimV2Request(
                claim_name="state-export",
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
            metadata=(("x-request-id", "create-1"),),
        )
        stub.CommitArtifacts(
            pb.CommitArtifactsRequest(
                claim_id=created.claim_id,
                artifacts=[pb.Artifact(artifact_hash=hashlib.sha256(wasm).digest(), kind="wasm")],
                wasm_module=wasm,
            )
        )
        stub.FreezeGates(pb.FreezeGatesRequest(claim_id=created.claim_id))
        executed = stub.ExecuteClaimV2(
            pb.ExecuteClaimV2Request(claim_id=created.claim_id),
            metadata=(("x-request-id", "exec-1"),),
        )
        assert daemon.terminate() == 0
    doc = json.loads((data_dir / "state.json").read_text())
    jsonschema.validate(doc, json.loads((REPO_ROOT / "schema/state.schema.json").read_text()))
    (claim,) = doc["claims"]
    assert claim["claim_id"] == created.claim_id.hex()
    assert claim["topic_id"] == created.topic_id.hex()
    assert claim["last_capsule_hash"] == executed.capsule_hash.hex()
    assert claim["etl_index"] == executed.etl_index
    assert claim["state"] == pb.ClaimState.Name(executed.state).removeprefix("CLAIM_STATE_")
    assert doc["log"]["tree_size"] == executed.etl_index + 1
    (topic,) = doc["topic_pools"]
    assert topic["topic_id"] == created.topic_id.hex()
    assert topic["reserved_k_bits"] == 0 and topic["k_bits_spent"] > 0
    assert not any(isinstance(v, list) and v and isinstance(v[0], int) for v in claim.values())
