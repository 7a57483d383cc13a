"""Incidents and refusals, checked in the database of a real daemon (DESIGN §3, D-C6..C8).

Once the guest has run, its failure is information: fuel exhaustion, a trap or a non-canonical
output answers with its precise gRPC status *and* commits an incident — the claim FROZEN for
good, an ``incident`` leaf in the log and a row in ``incidents``, the whole worst-case
reservation settled as spent in the topic and holdout pools, the fuel used charged as credit.
Anything refused before the guest runs — a claim in the wrong state or unknown, a missing
``x-request-id``, a module ASPEC refuses, too little credit, an exhausted topic or holdout pool —
leaves every table byte-identical (read with plain ``sqlite3``).

Every incident claim gets a topic and a holdout of its own, so its pools hold exactly its own
reservation: ``ceil(log2(4) · 32 · 2) = 128`` bits on the fast lane, ``ceil(2 · 8 · 2) = 32``
on the heavy lane (D-K2).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.claims import (
    WORST_CASE_FAST_4,
    WORST_CASE_HEAVY_4,
    ClaimClient,
    account,
    claim_record,
    claim_state,
    counted_loops_wat,
    create_request,
    db_snapshot,
    emit_only_wat,
    heavy_flagged_wat,
    holdout_pool,
    infinite_loop_wat,
    memory_grow_wat,
    non_canonical_wat,
    query,
    rpc_error,
    snapshot_diff,
    start_claims_daemon,
    topic_pool,
    trap_wat,
    unexported_memory_wat,
    wasm,
)
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.process

HEAVY_LANE_FUEL = 250_000  # spec 30 §5.3
PLN_MAX_FUEL = 500  # the epoch config's PLN block
PAGE_PRICE = 1_000  # λmem per wasm page (spec 30 §5.6)


def padded_max_fuel(epoch_size: int = 16) -> int:
    """The largest fuel a run can be charged after PLN padding: 500 rounded up to 16 → 512."""
    return -(-PLN_MAX_FUEL // epoch_size) * epoch_size


#: Credit held before a run (D-C8): reserved bits + padded max fuel + the lane's pages · λmem.
HOLD_FAST = WORST_CASE_FAST_4 + padded_max_fuel() + 4 * PAGE_PRICE  # 4,640
HOLD_HEAVY = WORST_CASE_HEAVY_4 + padded_max_fuel() + 2 * PAGE_PRICE  # 2,544


@dataclass
class Env:
    data_dir: Path
    client: ClaimClient
    daemon: DaemonProcess

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return db_snapshot(self.data_dir)

    def assert_no_trace(self, call: Callable[[], object], code: grpc.StatusCode, text: str) -> None:
        """``call`` fails with ``code`` (details containing ``text``) and changes no table."""
        before = self.snapshot()
        got, details = rpc_error(call)
        assert got == code, (got, details)
        assert text in details, details
        after = self.snapshot()
        assert after == before, snapshot_diff(before, after)


def isolated(name: str, **kwargs: Any) -> pb.CreateClaimV2Request:
    """A claim with a topic of its own (semantic hash) and a holdout of its own."""
    signals = pb.TopicSignalsV2(semantic_hash=hashlib.sha256(name.encode()).digest())
    return create_request(name, holdout_ref=f"synthetic-{name}", signals=signals, **kwargs)


def start(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Env:
    data_dir = tmp_path_factory.mktemp(name) / "data"
    daemon = start_claims_daemon(data_dir, env=env)
    return Env(data_dir, ClaimClient.for_daemon(daemon), daemon)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = start(tmp_path_factory, "incidents")
    try:
        yield e
    finally:
        e.daemon.kill()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Credit limit 5,000 (one fast run fits, two do not) and holdout pools of 200 bits."""
    e = start(
        tmp_path_factory,
        "tight",
        EVIDENCEOS_DEFAULT_CREDIT_LIMIT="5000",
        EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET="200",
    )
    try:
        yield e
    finally:
        e.daemon.kill()


# -- incidents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentCase:
    name: str
    wat: str
    lane: str
    code: grpc.StatusCode
    message: str
    reason: str
    worst: int
    hold: int


CASES = [
    IncidentCase(
        "fuel",
        counted_loops_wat(),
        "heavy",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "fuel exhausted",
        "execution_failure",
        WORST_CASE_HEAVY_4,
        HOLD_HEAVY,
    ),
    IncidentCase(
        "trap",
        trap_wat(),
        "fast",
        grpc.StatusCode.FAILED_PRECONDITION,
        "wasm trap",
        "execution_failure",
        WORST_CASE_FAST_4,
        HOLD_FAST,
    ),
    IncidentCase(
        "noncanonical",
        non_canonical_wat(b"\x09"),  # 9 >= 4 symbols
        "fast",
        grpc.StatusCode.INVALID_ARGUMENT,
        "canonical symbol out of range",
        "non_canonical_output",
        WORST_CASE_FAST_4,
        HOLD_FAST,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_guest_failure_commits_an_incident(env: Env, case: IncidentCase) -> None:
    client, data_dir = env.client, env.data_dir
    name = f"incident-{case.name}"
    request = isolated(name, lane=case.lane)
    claim_id = client.sealed(request, wasm(case.wat))
    record = claim_record(data_dir, claim_id)
    topic_id = bytes.fromhex(record["topic_id"])
    assert record["lane"] == case.lane
    assert record["reserved_k_bits"] == case.worst
    leaves_before = query(data_dir, "SELECT count(*) FROM log_leaves")[0][0]
    credit_before = account(data_dir)

    code, details = rpc_error(lambda: client.execute(claim_id))
    assert code == case.code, details
    assert case.message in details

    # The claim is FROZEN with a frozen ledger and no reservation left.
    assert claim_state(data_dir, claim_id) == "FROZEN"
    record = claim_record(data_dir, claim_id)
    assert record["incident_reason"] == case.reason
    assert record["ledger"]["frozen"] is True
    assert (record["reserved_k_bits"], record["reserved_access_credit"]) == (0, 0)
    assert record["last_capsule_hash"] is None
    assert query(data_dir, "SELECT count(*) FROM capsules WHERE claim_id = ?", (claim_id,)) == [
        (0,)
    ]

    # One incident row and exactly one new leaf, of kind "incident", describing it.
    rows = query(
        data_dir,
        "SELECT leaf_index, reason, fuel_used, k_bits_settled FROM incidents WHERE claim_id = ?",
        (claim_id,),
    )
    assert len(rows) == 1
    leaf_index, reason, fuel_used, settled = rows[0]
    assert (reason, settled) == (case.reason, case.worst)
    assert query(data_dir, "SELECT count(*) FROM log_leaves")[0][0] == leaves_before + 1
    assert leaf_index == leaves_before
    ((kind, payload),) = query(
        data_dir, "SELECT kind, payload FROM log_leaves WHERE leaf_index = ?", (leaf_index,)
    )
    assert kind == "incident"
    entry = json.loads(payload)
    assert entry["kind"] == "incident"
    assert entry["claim_id_hex"] == claim_id.hex()
    assert (entry["reason"], entry["fuel_used"]) == (case.reason, fuel_used)
    assert client.head().tree_size == leaves_before + 1

    # The worst case is settled as spent in the topic pool and the holdout pool.
    for pool in (topic_pool(data_dir, topic_id), holdout_pool(data_dir, request.holdout_ref)):
        assert pool is not None
        assert (pool["reserved_k_bits"], pool["reserved_access_credit"]) == (0, 0)
        assert (pool["k_bits_spent"], pool["access_credit_spent"]) == (case.worst, case.worst)

    # The fuel used is charged (λcpu = 1), and never more than the credit held for the run.
    after = account(data_dir)
    assert after is not None
    charged = after["burned_total"] - (credit_before["burned_total"] if credit_before else 0)
    assert charged == fuel_used
    if credit_before is not None:
        assert credit_before["credit_balance"] - after["credit_balance"] == fuel_used
    if case.name == "fuel":
        assert fuel_used > 0

    # FROZEN for good: a new attempt is refused before the guest runs and changes nothing.
    env.assert_no_trace(
        lambda: client.execute(claim_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "claim must be SEALED before execution",
    )
    # Last, so every check above runs first: D-C8 holds the worst-case charge before the run.
    assert charged <= case.hold, (
        f"incident charged {charged} credits, above the {case.hold} held before the run (D-C8)"
    )


def test_incident_retry_with_the_same_request_id_finds_the_claim_frozen(env: Env) -> None:
    client = env.client
    claim_id = client.sealed(isolated("incident-retry"), wasm(trap_wat()))
    code, _ = rpc_error(lambda: client.execute(claim_id, request_id="incident-retry-1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    env.assert_no_trace(
        lambda: client.execute(claim_id, request_id="incident-retry-1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "claim must be SEALED",
    )
    assert query(
        env.data_dir, "SELECT count(*) FROM incidents WHERE claim_id = ?", (claim_id,)
    ) == [(1,)]


# -- memory ------------------------------------------------------------------------------------


def test_memory_grow_is_refused_at_commit_and_leaves_no_trace(env: Env) -> None:
    """ASPEC bans ``memory.grow`` (spec 30 §5.4), so a guest can never grow its memory: the
    module is refused at CommitArtifacts and the claim stays UNCOMMITTED."""
    client = env.client
    created = client.create(isolated("memory-grow"))
    env.assert_no_trace(
        lambda: client.commit(created.claim_id, wasm(memory_grow_wat())),
        grpc.StatusCode.FAILED_PRECONDITION,
        "memory.grow is banned",
    )
    assert claim_state(env.data_dir, created.claim_id) == "UNCOMMITTED"


@pytest.mark.parametrize(
    ("label", "wat"),
    [
        ("unexported-5-pages", unexported_memory_wat(5)),  # fast lane limit: 4 pages
        ("rerouted-to-heavy-3-pages", heavy_flagged_wat(3)),  # heavy lane limit: 2 pages
    ],
)
def test_memory_above_the_lane_limit_is_refused_before_the_guest_runs(
    env: Env, label: str, wat: str
) -> None:
    """D-C7: the declared memory is checked against the lane limit at commit, so nothing can
    fail at instantiation. Either CommitArtifacts refuses the module, or — at the latest —
    ExecuteClaimV2 refuses it without running it (no incident, nothing changed)."""
    client = env.client
    created = client.create(isolated(f"memory-{label}"))
    module = wasm(wat)
    before = env.snapshot()
    try:
        client.commit(created.claim_id, module)
    except grpc.RpcError as exc:
        failed: Any = exc
        assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION, failed.details()
        after = env.snapshot()
        assert after == before, snapshot_diff(before, after)
        return
    client.freeze(created.claim_id)
    before = env.snapshot()
    code, details = rpc_error(lambda: client.execute(created.claim_id))
    after = env.snapshot()
    assert after == before, (
        f"memory above the {claim_record(env.data_dir, created.claim_id)['lane']} lane limit "
        f"passed CommitArtifacts and failed at execution ({code.name} {details!r}) with an "
        f"incident: {snapshot_diff(before, after)}"
    )


# -- refusals before the guest runs -----------------------------------------------------------


def test_execute_refusals_before_the_guest_leave_no_trace(env: Env) -> None:
    client = env.client
    module = wasm(emit_only_wat())
    uncommitted = client.create(isolated("refuse-uncommitted")).claim_id
    committed = client.create(isolated("refuse-committed")).claim_id
    client.commit(committed, module)
    executed = client.sealed(isolated("refuse-executed"), module)
    assert client.execute(executed).state == pb.CLAIM_STATE_REVOKED
    sealed = client.sealed(isolated("refuse-no-request-id"), module)

    fp = grpc.StatusCode.FAILED_PRECONDITION
    for claim_id in (uncommitted, committed, executed):
        env.assert_no_trace(
            functools.partial(client.execute, claim_id), fp, "claim must be SEALED before execution"
        )
    env.assert_no_trace(
        lambda: client.execute(hashlib.sha256(b"no such claim").digest()),
        grpc.StatusCode.NOT_FOUND,
        "claim not found",
    )
    env.assert_no_trace(
        lambda: client.execute(b"\x01" * 31), grpc.StatusCode.INVALID_ARGUMENT, "invalid request"
    )
    env.assert_no_trace(
        lambda: client.stub.ExecuteClaimV2(pb.ExecuteClaimV2Request(claim_id=sealed), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-request-id",
    )
    assert claim_state(env.data_dir, sealed) == "SEALED"
    assert client.execute(sealed).state == pb.CLAIM_STATE_REVOKED  # still executable


def test_lifecycle_refusals_leave_no_trace(env: Env) -> None:
    client = env.client
    fp = grpc.StatusCode.FAILED_PRECONDITION
    module = wasm(emit_only_wat())
    unknown = hashlib.sha256(b"unknown claim").digest()
    env.assert_no_trace(
        lambda: client.stub.CreateClaimV2(isolated("refuse-no-rid"), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-request-id",
    )
    env.assert_no_trace(
        lambda: client.create(create_request("", holdout_ref="synthetic-x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "claim_name",
    )
    env.assert_no_trace(
        lambda: client.commit(unknown, module), grpc.StatusCode.NOT_FOUND, "claim not found"
    )
    env.assert_no_trace(
        lambda: client.freeze(unknown), grpc.StatusCode.NOT_FOUND, "claim not found"
    )

    created = client.create(isolated("refuse-lifecycle")).claim_id
    env.assert_no_trace(lambda: client.freeze(created), fp, "COMMITTED or STALE")
    env.assert_no_trace(
        lambda: client.commit(created, wasm(infinite_loop_wat())), fp, "ASPEC rejected"
    )
    env.assert_no_trace(
        lambda: client.stub.CommitArtifacts(
            pb.CommitArtifactsRequest(
                claim_id=created,
                artifacts=[pb.Artifact(artifact_hash=bytes(32), kind="wasm")],
                wasm_module=module,
            ),
            timeout=30,
        ),
        fp,
        "wasm artifact hash does not match",
    )
    assert claim_state(env.data_dir, created) == "UNCOMMITTED"
    client.commit(created, module)
    client.freeze(created)
    env.assert_no_trace(lambda: client.commit(created, module), fp, "after freeze")
    assert client.seal(created).state == pb.CLAIM_STATE_SEALED  # a no-op on SEALED

    # Budget: access_credit below the worst-case reservation exhausts a fresh topic pool.
    env.assert_no_trace(
        lambda: client.create(isolated("refuse-topic", access_credit=WORST_CASE_FAST_4 - 1)),
        fp,
        "topic budget exhausted",
    )


def test_exhausted_holdout_pool_refuses_creation_and_charges_nothing(tight: Env) -> None:
    """Holdout pools of 200 bits: one fast claim reserves 128, a second (other topic) would
    need 256 — refused, and the topic reservation made first in the same transaction is gone."""
    client = tight.client
    first = client.create(isolated("holdout-a", access_credit=1024))
    shared = create_request(
        "holdout-b",
        holdout_ref="synthetic-holdout-a",
        access_credit=1024,
        signals=pb.TopicSignalsV2(semantic_hash=hashlib.sha256(b"holdout-b").digest()),
    )
    tight.assert_no_trace(
        lambda: client.create(shared),
        grpc.StatusCode.FAILED_PRECONDITION,
        "holdout budget exhausted",
    )
    pool = holdout_pool(tight.data_dir, "synthetic-holdout-a")
    assert pool is not None
    assert (pool["reserved_k_bits"], pool["k_bits_spent"]) == (WORST_CASE_FAST_4, 0)
    assert first.state == pb.CLAIM_STATE_UNCOMMITTED


def test_insufficient_credit_is_refused_before_the_guest_runs(tight: Env) -> None:
    """Credit limit 5,000: the first fast run holds 4,640 and burns 1,116 (4 bits + 112 padded
    fuel + 1 page); the second cannot hold 4,640 of the 3,884 left."""
    client = tight.client
    module = wasm(emit_only_wat())
    tight.assert_no_trace(
        lambda: client.create(isolated("credit-too-much", access_credit=5001)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "requested credit exceeds admission limit",
    )
    first = client.sealed(isolated("credit-first"), module)
    second = client.sealed(isolated("credit-second"), module)
    assert client.execute(first).state == pb.CLAIM_STATE_REVOKED
    left = account(tight.data_dir)
    assert left is not None
    assert left["credit_balance"] == 5_000 - (4 + 112 + PAGE_PRICE)
    assert left["credit_balance"] < HOLD_FAST
    tight.assert_no_trace(
        lambda: client.execute(second), grpc.StatusCode.RESOURCE_EXHAUSTED, "insufficient credit"
    )
    assert claim_state(tight.data_dir, second) == "SEALED"
