"""The claim/execute path's caches and its check-and-set write, on real parts (apsw SQLite,
wasmtime, the real services wired as the daemon wires them, no gRPC).

* ExecuteClaimV2 decides and encodes the capsule before the write transaction from the claim it
  read; the write function commits that only if the claim row and the stream's canary state are
  still exactly what was read, else it decides again from the rows it reads (or aborts).
* Decoded claim records, ASPEC verdicts, synthetic holdouts and resolution hashes are memoised:
  a different key (module, lane, record text) never gets another key's value.
* CommitArtifacts writes a module's compiled artefact once per (module, engine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from evidenceos.core.auth import CallerIdentity, Role
from evidenceos.core.canary import CanaryState
from evidenceos.core.capsule import encode_capsule
from evidenceos.core.claim import ClaimRecord
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.oracle import OracleResolution, compute_resolution_hash
from evidenceos.errors import Aborted, FailedPrecondition
from evidenceos.sandbox import Sandbox
from evidenceos.service.claims import ClaimService, CreateClaimV2Input
from evidenceos.service.execution import ExecutionService, resolution_hash
from evidenceos.store import canary as canary_table
from evidenceos.store import claims as claims_table
from evidenceos.store.db import Store
from tests.support.claims import (
    claim_services,
    counted_loops_wat,
    emit_only_wat,
    oracle_then_emit_wat,
    wasm,
)

CALLER = CallerIdentity("alice", Role.AGENT)  # type: ignore[arg-type]
HOLDOUT = "synthetic-caches"


@dataclass
class Kernel:
    store: Store
    claims: ClaimService
    execution: ExecutionService
    sandbox: Sandbox
    names: Iterator[int]

    def create(self, name: str, semantic: bytes, lane: str = "fast") -> bytes:
        """A new claim on the synthetic holdout; returns its id."""
        return self.claims.create_claim_v2(
            CALLER,
            CreateClaimV2Input(
                claim_name=name,
                lane=lane,
                alpha_micros=50_000,
                epoch_config_ref="epoch/default",
                output_schema_id="legacy/v1",
                has_metadata=True,
                semantic_hash=hashlib.sha256(semantic).digest(),
                phys_hir_signature_hash=b"",
                dependency_merkle_root=b"",
                holdout_ref=HOLDOUT,
                epoch_size=16,
                oracle_num_symbols=4,
                access_credit=1024,
                oracle_id="",
                nullspec_id="",
                dp_epsilon_budget=None,
                dp_delta_budget=None,
            ),
            None,
        ).claim_id

    def sealed(self, module: bytes, lane: str = "fast") -> bytes:
        """A new claim, committed with ``module`` and sealed; returns its id."""
        n = next(self.names)
        claim_id = self.create(f"claim-{n}", b"topic %d" % n, lane)
        digest = hashlib.sha256(module).digest()
        self.claims.commit_artifacts(CALLER, claim_id, [(digest, "wasm")], module)
        self.claims.freeze(CALLER, claim_id, "freeze_gates")
        return claim_id

    def row(self, sql: str, *args: Any) -> Any:
        with self.store.read() as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    sandbox = Sandbox()
    store, _log, claims = claim_services(tmp_path / "data", sandbox=sandbox)
    try:
        yield Kernel(store, claims, ExecutionService(claims), sandbox, iter(range(10**6)))
    finally:
        store.close()


ORACLE_GUEST = wasm(oracle_then_emit_wat(bytes(i % 2 for i in range(128))))


def _leaf(kernel: Kernel, index: int) -> bytes:
    [(payload,)] = kernel.row("SELECT payload FROM log_leaves WHERE leaf_index = ?", index)
    return bytes(payload)


# -- the capsule ----------------------------------------------------------------------------


def test_capsule_leaf_is_the_rfc8785_form_of_the_capsule(kernel: Kernel) -> None:
    claim_id = kernel.sealed(ORACLE_GUEST)
    out = kernel.execution.execute_claim_v2(CALLER, claim_id, None)
    payload = _leaf(kernel, out.etl_index)
    capsule = json_of(payload)
    assert payload == rfc8785.dumps(capsule) == encode_capsule(capsule)
    assert out.capsule_hash == hashlib.sha256(payload).digest()
    [(state, capsule_hash)] = kernel.row(
        "SELECT state, last_capsule_hash FROM claims WHERE claim_id = ?", claim_id
    )
    assert (state, bytes(capsule_hash)) == (out.state.name, out.capsule_hash)


# -- check-and-set: the write commits what was prepared only if nothing moved ------------------


def _during_burn(kernel: Kernel, action: Any) -> None:
    """Run ``action`` once, after the snapshot was read and the guest ran, before the write."""
    original = kernel.sandbox.burn
    done: list[bool] = []

    def burn(padding_fuel: int) -> None:
        original(padding_fuel)
        if not done:
            done.append(True)
            action()

    kernel.sandbox.burn = burn  # type: ignore[method-assign]


def test_a_canary_trip_after_the_snapshot_is_seen_by_the_write(kernel: Kernel) -> None:
    """The canary tripped between the snapshot and the write: the prepared APPROVE/REJECT is
    dropped and the write decides again with the tripped canary, exactly like a run that saw
    the tripped canary from the start."""
    tripped = dataclasses.replace(
        CanaryState.create(kernel.execution.canary_config), drift_frozen=True
    )
    oracle_id = "builtin.accuracy"

    def trip() -> None:
        kernel.store.write(
            lambda conn: canary_table.put_canary_state(conn, oracle_id, HOLDOUT, tripped)
        )

    baseline = kernel.execution.execute_claim_v2(CALLER, kernel.sealed(ORACLE_GUEST), None)
    first = kernel.sealed(ORACLE_GUEST)
    second = kernel.sealed(ORACLE_GUEST)
    _during_burn(kernel, trip)
    raced = kernel.execution.execute_claim_v2(CALLER, first, None)
    kernel.sandbox.burn = Sandbox.burn.__get__(kernel.sandbox)  # type: ignore[method-assign]
    seen = kernel.execution.execute_claim_v2(CALLER, second, None)
    assert baseline.reason_codes != seen.reason_codes  # the tripped canary is in the verdict
    assert raced.decision == seen.decision
    assert raced.reason_codes == seen.reason_codes
    assert raced.state is seen.state
    capsules = [json_of(_leaf(kernel, o.etl_index)) for o in (raced, seen)]
    for capsule in capsules:
        capsule.pop("claim_id_hex")
        capsule.pop("topic_id_hex")
        capsule.pop("semantic_hash_hex")
    assert capsules[0] == capsules[1]


def test_a_claim_changed_after_the_snapshot_aborts_the_execution(kernel: Kernel) -> None:
    claim_id = kernel.sealed(ORACLE_GUEST)
    leaves_before = kernel.row("SELECT count(*) FROM log_leaves")

    def freeze_it() -> None:
        def write(conn: Any) -> None:
            current = claims_table.get_claim(conn, claim_id)
            claims_table.put_claim(conn, current.with_state(ClaimState.FROZEN), 1)

        kernel.store.write(write)

    _during_burn(kernel, freeze_it)
    with pytest.raises(Aborted, match="superseded"):
        kernel.execution.execute_claim_v2(CALLER, claim_id, None)
    assert kernel.row("SELECT state FROM claims WHERE claim_id = ?", claim_id) == [("FROZEN",)]
    assert kernel.row("SELECT count(*) FROM log_leaves") == leaves_before
    assert kernel.row("SELECT count(*) FROM capsules") == [(0,)]


def test_an_unrelated_change_to_the_row_is_decided_again_not_lost(kernel: Kernel) -> None:
    """Same state and nonce, other text (here an ``extra`` note): the write re-reads the claim
    and keeps the note in the record it stores."""
    claim_id = kernel.sealed(ORACLE_GUEST)

    def annotate() -> None:
        def write(conn: Any) -> None:
            current = claims_table.get_claim(conn, claim_id)
            claims_table.put_claim(conn, dataclasses.replace(current, extra={"note": "x"}), 1)

        kernel.store.write(write)

    _during_burn(kernel, annotate)
    out = kernel.execution.execute_claim_v2(CALLER, claim_id, None)
    with kernel.store.read() as conn:
        stored = claims_table.get_claim(conn, claim_id)
    assert stored.extra == {"note": "x"}
    assert stored.state is out.state
    assert stored.etl_index == out.etl_index
    assert stored.execution_nonce == 1


def json_of(payload: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(payload)
    return value


# -- memoised pure results ------------------------------------------------------------------


def test_decoded_claims_are_keyed_by_their_exact_text(kernel: Kernel) -> None:
    claim_id = kernel.sealed(ORACLE_GUEST)
    with kernel.store.read() as conn:
        record, text = claims_table.get_claim_and_text(conn, claim_id)
        assert claims_table.get_claim(conn, claim_id) is record  # same text: cached value
    kernel.execution.execute_claim_v2(CALLER, claim_id, None)
    with kernel.store.read() as conn:
        after, after_text = claims_table.get_claim_and_text(conn, claim_id)
    assert after_text != text
    assert after is not record
    assert (record.state, after.state) == (ClaimState.SEALED, after.state)
    assert after.execution_nonce == record.execution_nonce + 1
    # the claim's write dropped the text it no longer holds; decoding it again gives the same
    assert text not in claims_table._decoded
    assert claims_table.decode_claim(text) == record


def test_decode_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, kernel: Kernel) -> None:
    monkeypatch.setattr(claims_table, "DECODE_CACHE_SIZE", 2)
    ids = [kernel.sealed(ORACLE_GUEST) for _ in range(3)]
    with kernel.store.read() as conn:
        for claim_id in ids:
            claims_table.get_claim(conn, claim_id)
    assert len(claims_table._decoded) <= 2


def test_resolution_hash_is_per_number_of_symbols() -> None:
    for n in (2, 3, 4, 255, 4, 2):
        assert resolution_hash(n) == compute_resolution_hash(OracleResolution(num_symbols=n))
    assert resolution_hash(2) != resolution_hash(3)


def test_aspec_verdicts_are_per_module_and_lane(kernel: Kernel) -> None:
    """A module accepted for HEAVY (nested counted loops) is still verified, and refused, when
    a FAST claim commits it; another module is verified on its own."""
    loops = wasm(counted_loops_wat(10, 10))
    kernel.sealed(loops, lane="heavy")
    with pytest.raises(FailedPrecondition, match="ASPEC rejected"):
        kernel.sealed(loops, lane="fast")
    with pytest.raises(FailedPrecondition, match="ASPEC rejected"):
        kernel.sealed(loops, lane="fast")  # a refusal is never cached as a pass
    kernel.sealed(wasm(emit_only_wat()), lane="fast")


def test_compiled_artefact_is_serialized_and_written_once(kernel: Kernel) -> None:
    calls = []
    original = kernel.sandbox.serialize

    def serialize(module: Any) -> bytes:
        calls.append(module.sha256)
        return original(module)

    kernel.sandbox.serialize = serialize  # type: ignore[method-assign]
    digest = hashlib.sha256(ORACLE_GUEST).digest()
    for _ in range(3):
        kernel.sealed(ORACLE_GUEST)
    other = wasm(emit_only_wat(b"\x02"))
    kernel.sealed(other)
    assert calls == [digest, hashlib.sha256(other).digest()]
    rows = kernel.row("SELECT module_sha256, length(artefact) > 0 FROM compiled_modules")
    assert sorted((bytes(m), ok) for m, ok in rows) == sorted(
        [(digest, 1), (hashlib.sha256(other).digest(), 1)]
    )
    # the stored artefact still loads and runs in a fresh sandbox
    [(artefact,)] = kernel.row(
        "SELECT artefact FROM compiled_modules WHERE module_sha256 = ?", digest
    )
    assert Sandbox().load_serialized(digest, bytes(artefact)).sha256 == digest


# -- records written on the lifecycle path stand for their stored text ------------------------


def test_lifecycle_records_are_read_back_as_written_and_equal_to_their_decoding(
    kernel: Kernel,
) -> None:
    """Create, commit and freeze write records that decode to themselves, so the next RPC's
    read gets the written record instead of decoding; each is what decoding would give."""
    claim_id = kernel.sealed(ORACLE_GUEST)
    [(text,)] = kernel.row("SELECT record_json FROM claims WHERE claim_id = ?", claim_id)
    with kernel.store.read() as conn:
        read = claims_table.get_claim(conn, claim_id)
    assert read.decodes_to_itself()
    decoded = ClaimRecord.from_json(json.loads(text))
    assert read == decoded
    assert list(read.oracle_pins or {}) == list(decoded.oracle_pins or {})
    assert claims_table.encode_claim(read) == text


def test_freeze_rewrites_the_artifact_rows_only_when_sorting_changes_them(
    kernel: Kernel,
) -> None:
    module = ORACLE_GUEST
    wasm_hash = hashlib.sha256(module).digest()
    other = b"\x00" * 32
    claim_id = kernel.create("artifact-order", b"artifact order")
    # request order: wasm, then "log" (sorted by kind: "log" < "wasm")
    kernel.claims.commit_artifacts(CALLER, claim_id, [(wasm_hash, "wasm"), (other, "log")], module)
    sql = "SELECT position, kind FROM claim_artifacts WHERE claim_id = ? ORDER BY position"
    assert kernel.row(sql, claim_id) == [(0, "wasm"), (1, "log")]
    kernel.claims.freeze(CALLER, claim_id, "freeze_gates")
    assert kernel.row(sql, claim_id) == [(0, "log"), (1, "wasm")]
    kernel.claims.freeze(CALLER, claim_id, "seal_claim")
    assert kernel.row(sql, claim_id) == [(0, "log"), (1, "wasm")]
