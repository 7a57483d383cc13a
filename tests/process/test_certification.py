"""Certification is reachable, and only when the numbers say so (DESIGN §5, D-K1..K4, spec 30 §7).

The arithmetic, written out once for every test here:

* 4 oracle symbols, one oracle call, dependence multiplier 2: ``k = log2(4) · 1 · 2 = 4`` bits
  (legacy symbols add no output bits, D-K1);
* ``alpha = 0.05``: the barrier is ``2^k / alpha = 16 / 0.05 = 320``;
* the guest asks about a prediction vector that is right on 40 of the 128 synthetic labels:
  accuracy 0.3125, ``0.3125 · 3 = 0.9375`` rounds to bucket 1 (spec 30 §2.2);
* NullSpec ``ParametricBernoulli{p}`` + ``LikelihoodRatioFixedAlt{[0, 1]}`` scores bucket 1 as
  ``e = alt[1] / p = 1 / p`` (spec 30 §3.2 a): ``p = 1/1000`` gives ``e = 1000 ≥ 320`` →
  CERTIFIED; ``p = 1/319`` gives ``e = 319 < 320`` → REJECT [2], REVOKED, reported ``min(e, 1)``.

The heavy lane DEFERs whatever e is; the canary drift e-process of a stream is fed only by
CANARY-lane pulses and, once it crosses ``1/alpha_drift = 20``, turns the stream's approvals into
REJECT [2, 91]. Also here: idempotent replays and one compilation per module.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.claims import (
    WORST_CASE_FAST_4,
    ClaimClient,
    bernoulli_contract,
    claim_record,
    claim_state,
    create_request,
    db_snapshot,
    emit_only_wat,
    install_nullspec,
    oracle_then_emit_wat,
    predictions_with_correct,
    query,
    rpc_error,
    snapshot_diff,
    start_claims_daemon,
    synthetic_labels,
    topic_pool,
    wasm,
)
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.process

ALPHA_MICROS = 50_000
ALPHA = 0.05
NUM_SYMBOLS = 4
ORACLE_CALLS = 1
MULTIPLIER = 2
K_BITS = math.log2(NUM_SYMBOLS) * ORACLE_CALLS * MULTIPLIER  # 4 bits
BARRIER = 2**K_BITS / ALPHA  # 320
CORRECT_ROWS = 40  # accuracy 40/128 = 0.3125 -> bucket round(0.9375) = 1

HOLDOUT_PASS = "synthetic-cert-pass"  # noqa: S105 - a holdout ref; active NullSpec p = 1/1000
HOLDOUT_FAIL = "synthetic-cert-fail"  # active NullSpec p = 1/319
HOLDOUT_CANARY = "synthetic-canary"  # active pulse NullSpec p = 1/4; p = 1/1000 by explicit id
HOLDOUT_PLAIN = "synthetic-plain"  # no NullSpec: the fallback (e = 1)

P_CERTIFY = 1 / 1000
P_SHORT = 1 / 319
P_PULSE = 1 / 4
ALT = (0.0, 1.0)


def bucket_one_guest(holdout_ref: str) -> bytes:
    predictions = predictions_with_correct(synthetic_labels(holdout_ref), CORRECT_ROWS)
    assert sum(p == y for p, y in zip(predictions, synthetic_labels(holdout_ref), strict=True)) == (
        CORRECT_ROWS
    )
    return wasm(oracle_then_emit_wat(predictions))


@dataclass
class Env:
    data_dir: Path
    client: ClaimClient
    nullspec_ids: dict[str, bytes]
    daemon: DaemonProcess

    def metric(self, name: str) -> float:
        """One unlabelled sample from the daemon's /metrics endpoint."""
        url = f"http://127.0.0.1:{self.daemon.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match is not None, f"{name} not exported"
        return float(match[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    assert abs(BARRIER - 320.0) < 1e-9
    data_dir = tmp_path_factory.mktemp("certification") / "data"
    data_dir.mkdir()
    ids = {
        "pass": install_nullspec(
            data_dir, bernoulli_contract(holdout_ref=HOLDOUT_PASS, p=P_CERTIFY, alt=ALT)
        ),
        "fail": install_nullspec(
            data_dir, bernoulli_contract(holdout_ref=HOLDOUT_FAIL, p=P_SHORT, alt=ALT)
        ),
        "pulse": install_nullspec(
            data_dir, bernoulli_contract(holdout_ref=HOLDOUT_CANARY, p=P_PULSE, alt=ALT)
        ),
        "canary-certify": install_nullspec(
            data_dir,
            bernoulli_contract(holdout_ref=HOLDOUT_CANARY, p=P_CERTIFY, alt=ALT),
            activate=False,
        ),
    }
    daemon = start_claims_daemon(data_dir)
    try:
        yield Env(data_dir, ClaimClient.for_daemon(daemon), ids, daemon)
    finally:
        daemon.kill()


def own_topic(name: str, **kwargs: Any) -> pb.CreateClaimV2Request:
    """A create request whose semantic hash gives the claim a topic (and topic pool) of its own."""
    signals = pb.TopicSignalsV2(semantic_hash=hashlib.sha256(name.encode()).digest())
    return create_request(name, signals=signals, **kwargs)


def capsule_of(env: Env, claim_id: bytes) -> dict[str, Any]:
    fetched = env.client.fetch(claim_id)
    doc: dict[str, Any] = json.loads(fetched.capsule_bytes)
    return doc


def canary_state(env: Env, holdout_ref: str) -> dict[str, Any] | None:
    rows = query(
        env.data_dir,
        "SELECT state_json FROM canary_states WHERE oracle_id = ? AND holdout_ref = ?",
        ("builtin.accuracy", holdout_ref),
    )
    return None if not rows else dict(json.loads(rows[0][0]))


# -- the barrier ------------------------------------------------------------------------------


def test_evidence_above_the_barrier_certifies(env: Env) -> None:
    claim_id, out = env.client.run(
        own_topic("clears-barrier", holdout_ref=HOLDOUT_PASS), bucket_one_guest(HOLDOUT_PASS)
    )
    assert out.state == pb.CLAIM_STATE_CERTIFIED
    assert out.decision == pb.DECISION_APPROVE
    assert list(out.reason_codes) == [1]
    assert out.certified
    assert out.e_value == pytest.approx(1 / P_CERTIFY, rel=1e-12)  # 1000 >= 320
    assert out.e_value >= BARRIER
    assert out.canonical_output == b"\x01"

    capsule = capsule_of(env, claim_id)
    assert capsule["certified"] is True and capsule["decision"] == 1
    assert capsule["ledger"]["k_bits_total"] == K_BITS
    assert capsule["ledger"]["barrier"] == pytest.approx(BARRIER, rel=1e-12)
    assert capsule["ledger"]["w_max"] == pytest.approx(1000.0, rel=1e-12)
    assert capsule["nullspec_id_hex"] == env.nullspec_ids["pass"].hex()
    assert capsule["eprocess_kind"] == "likelihood_ratio_fixed_alt"
    assert claim_state(env.data_dir, claim_id) == "CERTIFIED"

    # The claim has a topic of its own: its reservation settled at the 4 bits actually used.
    pool = topic_pool(env.data_dir, bytes.fromhex(claim_record(env.data_dir, claim_id)["topic_id"]))
    assert pool is not None
    assert (pool["reserved_k_bits"], pool["k_bits_spent"]) == (0, K_BITS)


def test_evidence_just_below_the_barrier_is_rejected(env: Env) -> None:
    claim_id, out = env.client.run(
        create_request("short-of-barrier", holdout_ref=HOLDOUT_FAIL), bucket_one_guest(HOLDOUT_FAIL)
    )
    assert out.state == pb.CLAIM_STATE_REVOKED
    assert out.decision == pb.DECISION_REJECT
    assert list(out.reason_codes) == [2]
    assert not out.certified
    assert out.e_value == 1.0  # a claim that is not approved reports min(e, 1)
    capsule = capsule_of(env, claim_id)
    assert capsule["ledger"]["w_max"] == pytest.approx(1 / P_SHORT, rel=1e-12)  # 319 < 320
    assert capsule["ledger"]["w_max"] < capsule["ledger"]["barrier"]
    assert capsule["ledger"]["barrier"] == pytest.approx(BARRIER, rel=1e-12)
    assert capsule["certified"] is False
    assert claim_state(env.data_dir, claim_id) == "REVOKED"


def test_heavy_lane_defers_even_above_the_barrier(env: Env) -> None:
    client = env.client
    claim_id, out = client.run(
        create_request("heavy-lane", holdout_ref=HOLDOUT_PASS, lane="heavy"),
        bucket_one_guest(HOLDOUT_PASS),
    )
    assert out.state == pb.CLAIM_STATE_FROZEN
    assert out.decision == pb.DECISION_DEFER
    assert list(out.reason_codes) == [3]
    assert not out.certified
    assert out.e_value == 1.0
    capsule = capsule_of(env, claim_id)
    assert capsule["lane"] == "heavy"
    assert capsule["ledger"]["w_max"] >= capsule["ledger"]["barrier"]  # it would have certified
    code, _ = rpc_error(lambda: client.execute(claim_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


# -- the canary -------------------------------------------------------------------------------


def test_tripped_canary_turns_approval_into_reject_91(env: Env) -> None:
    """Pulses under p = 1/4 multiply the drift by 4 each: 4, 16, 64 — the third crosses 20."""
    client = env.client
    guest = bucket_one_guest(HOLDOUT_CANARY)
    explicit = env.nullspec_ids["canary-certify"].hex()

    def pulse(n: int) -> pb.ExecuteClaimV2Response:
        _, out = client.run(
            create_request(f"pulse-{n}", holdout_ref=HOLDOUT_CANARY, lane="canary"), guest
        )
        assert out.state == pb.CLAIM_STATE_REVOKED and not out.certified
        return out

    assert canary_state(env, HOLDOUT_CANARY) is None
    assert list(pulse(1).reason_codes) == [2]  # a pulse never certifies
    state = canary_state(env, HOLDOUT_CANARY)
    assert state is not None
    assert (state["e_drift"], state["drift_frozen"]) == (4.0, False)
    assert list(pulse(2).reason_codes) == [2]
    state = canary_state(env, HOLDOUT_CANARY)
    assert state is not None
    assert (state["e_drift"], state["drift_frozen"], state["barrier"]) == (16.0, False, 20.0)

    # Below the drift barrier the stream still certifies (e = 1000 under the explicit contract).
    _, control = client.run(
        create_request("before-trip", holdout_ref=HOLDOUT_CANARY, nullspec_id=explicit), guest
    )
    assert control.state == pb.CLAIM_STATE_CERTIFIED
    assert list(control.reason_codes) == [1]
    state = canary_state(env, HOLDOUT_CANARY)
    assert state is not None and state["e_drift"] == 16.0  # ordinary claims do not feed it

    assert list(pulse(3).reason_codes) == [2, 91]
    state = canary_state(env, HOLDOUT_CANARY)
    assert state is not None
    assert (state["e_drift"], state["drift_frozen"]) == (64.0, True)

    claim_id, out = client.run(
        create_request("after-trip", holdout_ref=HOLDOUT_CANARY, nullspec_id=explicit), guest
    )
    assert out.decision == pb.DECISION_REJECT
    assert list(out.reason_codes) == [2, 91]
    assert out.state == pb.CLAIM_STATE_REVOKED
    assert not out.certified
    assert out.e_value == 1.0
    capsule = capsule_of(env, claim_id)
    assert capsule["ledger"]["w_max"] == pytest.approx(1 / P_CERTIFY, rel=1e-12)
    assert capsule["reason_codes"] == [2, 91]


# -- idempotency and compilation ----------------------------------------------------------------


def test_create_replay_returns_the_same_response_and_a_changed_payload_is_refused(
    env: Env,
) -> None:
    client = env.client
    request = create_request("idem-create", holdout_ref=HOLDOUT_PLAIN)
    first = client.create(request, request_id="idem-create-1")
    before = db_snapshot(env.data_dir)
    again = client.create(request, request_id="idem-create-1")
    assert again.SerializeToString() == first.SerializeToString()
    changed = create_request("idem-create-other", holdout_ref=HOLDOUT_PLAIN)
    code, details = rpc_error(lambda: client.create(changed, request_id="idem-create-1"))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "different request payload" in details
    after = db_snapshot(env.data_dir)
    assert after == before, snapshot_diff(before, after)


def test_execute_replay_returns_the_same_response_and_a_changed_payload_is_refused(
    env: Env,
) -> None:
    client = env.client
    module = wasm(emit_only_wat())
    claim_id = client.sealed(create_request("idem-exec", holdout_ref=HOLDOUT_PLAIN), module)
    other = client.sealed(create_request("idem-exec-other", holdout_ref=HOLDOUT_PLAIN), module)
    first = client.execute(claim_id, request_id="idem-exec-1")
    assert first.state == pb.CLAIM_STATE_REVOKED  # fallback NullSpec: e = 1 < 320
    before = db_snapshot(env.data_dir)
    replay = client.execute(claim_id, request_id="idem-exec-1")
    assert replay.SerializeToString() == first.SerializeToString()
    code, details = rpc_error(lambda: client.execute(other, request_id="idem-exec-1"))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "different request payload" in details
    after = db_snapshot(env.data_dir)
    assert after == before, snapshot_diff(before, after)
    assert claim_state(env.data_dir, other) == "SEALED"
    # A new request id on the executed claim is a plain state refusal.
    code, _ = rpc_error(lambda: client.execute(claim_id, request_id="idem-exec-2"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_module_is_compiled_once(env: Env) -> None:
    client = env.client
    module = wasm(emit_only_wat(b"\x02"))
    digest = hashlib.sha256(module).digest()
    compiles = env.metric("evidenceos_sandbox_compiles_total")
    for name in ("compile-once-a", "compile-once-b"):
        _, out = client.run(create_request(name, holdout_ref=HOLDOUT_PLAIN), module)
        assert out.canonical_output == b"\x02"
    # Two commits and two executions of one module: wasmtime compiled it once.
    assert env.metric("evidenceos_sandbox_compiles_total") == compiles + 1
    stored = query(
        env.data_dir, "SELECT count(*) FROM wasm_modules WHERE module_sha256 = ?", (digest,)
    )
    compiled = query(
        env.data_dir,
        "SELECT count(*), count(DISTINCT engine_fingerprint) FROM compiled_modules "
        "WHERE module_sha256 = ?",
        (digest,),
    )
    assert stored == [(1,)]
    assert compiled == [(1, 1)]


def test_worst_case_reservation_is_held_between_create_and_execute(env: Env) -> None:
    client = env.client
    created = client.create(own_topic("reservation", holdout_ref=HOLDOUT_PLAIN))
    pool = topic_pool(env.data_dir, created.topic_id)
    assert pool is not None
    assert pool["reserved_k_bits"] == WORST_CASE_FAST_4  # ceil(2 · 32 · 2), D-K2
    assert claim_record(env.data_dir, created.claim_id)["reserved_k_bits"] == WORST_CASE_FAST_4
    module = wasm(emit_only_wat())
    client.commit(created.claim_id, module)
    client.freeze(created.claim_id)
    out = client.execute(created.claim_id)
    assert out.state == pb.CLAIM_STATE_REVOKED
    pool = topic_pool(env.data_dir, created.topic_id)
    assert pool is not None
    # Zero oracle calls are charged as one (spec 30 §1.5): 2 · max(0, 1) · 2 = 4 bits.
    assert (pool["reserved_k_bits"], pool["k_bits_spent"]) == (0, K_BITS)
    assert claim_record(env.data_dir, created.claim_id)["reserved_k_bits"] == 0
