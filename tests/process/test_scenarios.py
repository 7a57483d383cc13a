"""The shared scenario files driven against a real ``evidenceosd`` (spec 20 §11 item 11).

Each ``../shared/vectors/scenarios/*.json`` is a list of RPC steps. The runner follows spec 20
§11: one-byte hex params expand to 32 copies of the byte; holdout and dependency params are
ignored (the holdout becomes a synthetic one, ``synthetic-<scenario_id>``); the epoch config named
by the scenario gets ``epoch_size`` 16 and PLN 100/500. ``expected_outcome: PASS`` must complete
every step, and the evidence the scenario asks for is checked the way an auditor would — head
signature with the key from GetPublicKey, inclusion and consistency proofs with
``tests/support/verify.py`` (which does not import the project's Merkle code), the consistency
roots from GetConsistencyProof for FetchCapsule's sizes. ``REJECT`` must fail at a step, with a
precise status, and leave every table of the database as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support import merkle_naive
from tests.support.claims import (
    EPOCH_CONFIG,
    ClaimClient,
    commit_request,
    db_snapshot,
    leaf_hashes,
    query,
    snapshot_diff,
    start_claims_daemon,
    wasm,
    write_epoch_config,
)
from tests.support.datadir import append_entries
from tests.support.paths import VECTORS_DIR
from tests.support.verify import (
    consistency_valid,
    inclusion_valid,
    key_id_of,
    leaf_hash,
    sth_signature_valid,
)

pytestmark = pytest.mark.process

SCENARIO_FILES = sorted((VECTORS_DIR / "scenarios").glob("*.json"))
PREFILLED_LEAVES = 5  # the log is not empty, so a capsule never sits at index 0 by accident
T = 30.0


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def expand_hex(value: str) -> bytes:
    """Spec 20 §11 item 11: a one-byte hex param stands for 32 copies of that byte."""
    raw = bytes.fromhex(value)
    return raw * 32 if len(raw) == 1 else raw


def synthetic_ref(scenario_id: str) -> str:
    return "synthetic-" + re.sub(r"[^A-Za-z0-9_-]", "-", scenario_id)


@dataclass
class ScenarioRun:
    """Executes one scenario's steps; keeps the claim id and the last response of each RPC."""

    client: ClaimClient
    scenario: dict[str, Any]
    name_suffix: str = ""
    claim_id: bytes = b""
    responses: dict[str, Any] = field(default_factory=dict)

    @property
    def holdout_ref(self) -> str:
        return synthetic_ref(str(self.scenario["scenario_id"]))

    def create_request(self, params: dict[str, Any]) -> pb.CreateClaimV2Request:
        meta = params.get("metadata")
        request = pb.CreateClaimV2Request(
            claim_name=str(params.get("claim_name", "")) + self.name_suffix,
            holdout_ref=self.holdout_ref,  # holdout params are ignored (spec 20 §11 item 11)
            epoch_size=int(params.get("epoch_size", 0)),
            oracle_num_symbols=int(params.get("oracle_num_symbols", 0)),
            access_credit=int(params.get("access_credit", 0)),
            oracle_id=str(params.get("oracle_id", "")),
            nullspec_id=str(params.get("nullspec_id", "")),
        )
        if meta is not None:
            request.metadata.CopyFrom(
                pb.ClaimMetadataV2(
                    lane=str(meta.get("lane", "")),
                    alpha_micros=int(meta.get("alpha_micros", 0)),
                    epoch_config_ref=str(meta.get("epoch_config_ref", "")),
                    output_schema_id=str(meta.get("output_schema_id", "")),
                )
            )
        signals = params.get("signals")
        if signals is not None:
            # dependency_merkle_root_hex is a dependency param: ignored by the runner.
            request.signals.CopyFrom(
                pb.TopicSignalsV2(
                    semantic_hash=expand_hex(signals.get("semantic_hash_hex", "")),
                    phys_hir_signature_hash=expand_hex(
                        signals.get("phys_hir_signature_hash_hex", "")
                    ),
                )
            )
        return request

    def step(self, rpc: str, params: dict[str, Any]) -> Any:
        client = self.client
        response: Any
        if rpc == "create_claim_v2":
            response = client.create(self.create_request(params))
            self.claim_id = bytes(response.claim_id)
        elif rpc == "commit_artifacts":
            module = wasm(str(params["wasm_wat"]))
            response = client.stub.CommitArtifacts(commit_request(self.claim_id, module), timeout=T)
        elif rpc == "freeze_gates":
            response = client.freeze(self.claim_id)
        elif rpc == "seal_claim":
            response = client.seal(self.claim_id)
        elif rpc == "execute_claim_v2":
            response = client.execute(self.claim_id)
        elif rpc == "fetch_capsule":
            response = client.fetch(self.claim_id)
        else:
            pytest.fail(f"scenario step {rpc!r} is not known to the runner")
        self.responses[rpc] = response
        return response

    def run_all(self) -> None:
        for step in self.scenario["steps"]:
            self.step(str(step["rpc"]), dict(step.get("params", {})))


@pytest.fixture(scope="module")
def scenario_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ClaimClient]]:
    data_dir = tmp_path_factory.mktemp("scenarios") / "data"
    data_dir.mkdir()
    append_entries(data_dir, range(PREFILLED_LEAVES))
    refs = {
        str(step["params"]["metadata"]["epoch_config_ref"])
        for path in SCENARIO_FILES
        for step in load(path)["steps"]
        if step["rpc"] == "create_claim_v2" and "metadata" in step.get("params", {})
    }
    for ref in refs:  # every epoch ref a scenario names: epoch_size 16, PLN 100/500
        write_epoch_config(data_dir, ref, EPOCH_CONFIG)
    daemon = start_claims_daemon(data_dir)
    try:
        yield data_dir, ClaimClient.for_daemon(daemon)
    finally:
        daemon.kill()


def test_scenario_files_exist() -> None:
    assert SCENARIO_FILES, f"no scenario files under {VECTORS_DIR / 'scenarios'}"
    outcomes = {load(p)["expected_outcome"] for p in SCENARIO_FILES}
    assert outcomes <= {"PASS", "REJECT"}


def assert_evidence(
    data_dir: Path, client: ClaimClient, run: ScenarioRun, expected: dict[str, Any]
) -> None:
    executed: pb.ExecuteClaimV2Response = run.responses["execute_claim_v2"]
    fetched: pb.FetchCapsuleResponse = run.responses["fetch_capsule"]
    capsule = bytes(fetched.capsule_bytes)
    assert capsule
    assert hashlib.sha256(capsule).digest() == fetched.capsule_hash == executed.capsule_hash
    assert fetched.etl_index == executed.etl_index
    doc = json.loads(capsule)
    assert doc["claim_id_hex"] == run.claim_id.hex()
    assert (
        doc["structured_output_hash_hex"] == hashlib.sha256(executed.canonical_output).hexdigest()
    )

    head = fetched.signed_tree_head
    assert (head.tree_size, head.root_hash) == (fetched.tree_size, fetched.root_hash)
    if expected.get("verify_sth_signature"):
        key = client.public_key(head.key_id)
        assert key.key_id == key_id_of(key.ed25519_public_key) == head.key_id
        assert sth_signature_valid(
            key.ed25519_public_key, head.tree_size, head.root_hash, head.signature
        )
    proof = fetched.inclusion_proof
    if expected.get("verify_inclusion_proof"):
        assert proof.leaf_hash == leaf_hash(capsule)
        assert (proof.leaf_index, proof.tree_size) == (fetched.etl_index, head.tree_size)
        assert inclusion_valid(
            proof.leaf_index,
            proof.tree_size,
            proof.leaf_hash,
            list(proof.audit_path),
            head.root_hash,
        )
    consistency = fetched.consistency_proof
    if expected.get("verify_consistency_proof"):
        old, new = consistency.old_tree_size, consistency.new_tree_size
        assert (old, new) == (fetched.etl_index + 1, head.tree_size)
        roots = client.consistency(old, new)
        assert roots.consistent
        assert roots.second_root_hash == head.root_hash
        assert consistency_valid(
            old, new, roots.first_root_hash, roots.second_root_hash, list(consistency.path)
        )
        # Both roots are the trees the database holds, recomputed naively from its leaf hashes.
        leaves = leaf_hashes(data_dir)
        assert merkle_naive.mth(leaves[:old]) == roots.first_root_hash
        assert merkle_naive.mth(leaves[:new]) == roots.second_root_hash


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_scenario(path: Path, scenario_daemon: tuple[Path, ClaimClient]) -> None:
    data_dir, client = scenario_daemon
    scenario = load(path)
    run = ScenarioRun(client, scenario)
    before = db_snapshot(data_dir)
    if scenario["expected_outcome"] == "PASS":
        run.run_all()
        assert_evidence(data_dir, client, run, scenario["expected_evidence"])
        return
    failed_at = None
    for position, step in enumerate(scenario["steps"]):
        try:
            run.step(str(step["rpc"]), dict(step.get("params", {})))
        except grpc.RpcError as exc:
            failure: Any = exc
            code = failure.code()
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), failure
            assert code in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ), failure
            failed_at = position
            break
    assert failed_at is not None, "a REJECT scenario completed every step"
    after = db_snapshot(data_dir)
    assert after == before, snapshot_diff(before, after)
    assert not any(scenario["expected_evidence"].values())


def test_pass_scenarios_prove_inclusion_and_consistency_after_later_appends(
    scenario_daemon: tuple[Path, ClaimClient],
) -> None:
    """A capsule fetched after later executions: its inclusion proof is against the newer head and
    the consistency proof from the tree that ended with it is non-trivial (spec 20 §11 item 22)."""
    data_dir, client = scenario_daemon
    passing = [load(p) for p in SCENARIO_FILES if load(p)["expected_outcome"] == "PASS"]
    assert passing
    for scenario in passing:
        first = ScenarioRun(client, scenario, name_suffix="-first")
        first.run_all()
        second = ScenarioRun(client, scenario, name_suffix="-second")
        second.run_all()
        fetched = client.fetch(first.claim_id)
        assert fetched.tree_size > fetched.etl_index + 1
        assert fetched.consistency_proof.path, "consistency proof between distinct sizes is empty"
        first.responses["fetch_capsule"] = fetched
        assert_evidence(
            data_dir,
            client,
            first,
            {
                "verify_sth_signature": True,
                "verify_inclusion_proof": True,
                "verify_consistency_proof": True,
            },
        )
        leaves = query(data_dir, "SELECT count(*) FROM log_leaves")[0][0]
        assert fetched.tree_size == leaves
        # The checks are not vacuous: one flipped bit anywhere fails them.
        head, proof = fetched.signed_tree_head, fetched.inclusion_proof
        path = [_flip(proof.audit_path[0]), *proof.audit_path[1:]]
        assert not inclusion_valid(
            proof.leaf_index, proof.tree_size, proof.leaf_hash, path, head.root_hash
        )
        old, new = fetched.consistency_proof.old_tree_size, fetched.consistency_proof.new_tree_size
        roots = client.consistency(old, new)
        bad = [_flip(fetched.consistency_proof.path[0]), *fetched.consistency_proof.path[1:]]
        assert not consistency_valid(old, new, roots.first_root_hash, roots.second_root_hash, bad)
        key = client.public_key(head.key_id).ed25519_public_key
        assert not sth_signature_valid(key, head.tree_size, head.root_hash, _flip(head.signature))


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + bytes(value[1:])
