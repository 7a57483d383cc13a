"""Kernel decision: spec 30 §7, spec 20 §6.4, §11 scenarios 36-40 as DESIGN §5 changes them.

``_run_claim`` strings the pure pieces together in the daemon's order (decode the legacy output
first, then charge, then score, then settle and decide), so the scenarios read like executions.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.canary import CanaryConfig, CanaryState
from evidenceos.core.decision import (
    REASON_CANARY_DRIFT,
    Decision,
    DecisionInputs,
    DecisionOutcome,
    Lane,
    PolicyOutcome,
    PolicyVerdict,
    compute_decision,
    settle_and_decide,
)
from evidenceos.core.evalue import EValueError, NullSpecModel, compute_e_value, fallback_model
from evidenceos.core.ledger import (
    DBL_MAX,
    KOUT_CAP_CBRN_BITS,
    KOUT_CAP_LEGACY_BITS,
    ConservationLedger,
    compute_execution_charge,
    compute_kout_charge_bits,
)
from evidenceos.core.nullspec import (
    LikelihoodRatioFixedAlt,
    ParametricBernoulli,
)
from evidenceos.core.oracle import InvalidCanonicalEncoding, OracleResolution


def _bernoulli(p: float) -> NullSpecModel:
    """Bucket 1 ("success") has null probability p; the alternative always succeeds."""
    return NullSpecModel(ParametricBernoulli(p), LikelihoodRatioFixedAlt((0.0, 1.0)))


def _run_claim(
    *,
    alpha: float,
    num_symbols: int,
    buckets: list[int],
    model: NullSpecModel,
    lane: Lane = Lane.FAST,
    output: bytes | None = None,
    kout_cap_bits: int = KOUT_CAP_LEGACY_BITS,
    canary_frozen: bool = False,
) -> DecisionOutcome:
    resolution = OracleResolution(num_symbols)
    if output is None:
        output = resolution.encode_bucket(buckets[-1] if buckets else 0)
    if kout_cap_bits == KOUT_CAP_LEGACY_BITS:
        resolution.decode_bucket(output)  # before any charge (spec 30 §2.3)
    kout = compute_kout_charge_bits(
        kout_cap_bits, len(output), resolution.bits_per_call, len(buckets)
    )
    charge = compute_execution_charge(resolution.bits_per_call, len(buckets), 2.0, kout)
    ledger = ConservationLedger(alpha).charge_execution(charge)
    e = compute_e_value(model, buckets)
    return settle_and_decide(ledger, e, DecisionInputs(lane=lane, canary_frozen=canary_frozen))


# --- certification at the barrier ----------------------------------------------------------------


def test_evidence_clearing_the_barrier_certifies_and_just_below_does_not():
    alpha, k = 0.05, 4.0  # barrier 2^4 / 0.05 = 320
    ledger = ConservationLedger(alpha).charge(k, "structured_output")
    assert ledger.barrier == pytest.approx(320.0)
    at = settle_and_decide(ledger, 320.0, DecisionInputs(Lane.FAST))
    assert at.decision is Decision.APPROVE and at.certified
    assert at.reason_codes == (1,)
    assert at.reported_e_value == 320.0 and at.claim_state_name == "CERTIFIED"
    below = settle_and_decide(ledger, 319.99, DecisionInputs(Lane.FAST))
    assert below.decision is Decision.REJECT and not below.certified
    assert below.reason_codes == (2,) and below.claim_state_name == "REVOKED"
    assert below.reported_e_value == 1.0
    assert below.ledger.wealth == pytest.approx(1.0) and below.ledger.w_max == 319.99


def test_heavy_lane_defers_even_with_overwhelming_evidence():
    ledger = ConservationLedger(0.05).charge(4.0, "structured_output")
    outcome = settle_and_decide(ledger, 1e9, DecisionInputs(Lane.HEAVY))
    assert outcome.decision is Decision.DEFER
    assert outcome.reason_codes == (3,) and outcome.claim_state_name == "FROZEN"
    assert outcome.reported_e_value == 1.0


def test_tripped_canary_turns_approve_into_reject_91():
    ledger = ConservationLedger(0.05).charge(4.0, "structured_output")
    outcome = settle_and_decide(ledger, 1000.0, DecisionInputs(Lane.FAST, canary_frozen=True))
    assert outcome.decision is Decision.REJECT
    assert outcome.reason_codes == (2, REASON_CANARY_DRIFT)
    assert outcome.canary_incident
    assert outcome.reported_e_value == 1.0
    assert outcome.ledger.wealth == pytest.approx(1.0) and outcome.ledger.w_max == 1000.0


# --- scenarios 36-40 (DESIGN §5) ---------------------------------------------------------------


def test_scenario_36_both_claims_of_a_stream_certify():
    for _ in range(2):  # fast-lane runs no longer feed the canary, so the second one certifies too
        outcome = _run_claim(alpha=0.5, num_symbols=2, buckets=[1], model=_bernoulli(0.1))
        assert outcome.ledger.k_bits_total == 2.0
        assert outcome.ledger.barrier == pytest.approx(8.0)
        assert outcome.decision is Decision.APPROVE and outcome.reason_codes == (1,)
        assert outcome.reported_e_value == pytest.approx(10.0)
        assert outcome.ledger.wealth == pytest.approx(10.0)
        assert not outcome.canary_incident


def test_scenario_37_strong_evidence_at_alpha_005_certifies():
    outcome = _run_claim(alpha=0.05, num_symbols=2, buckets=[1], model=_bernoulli(0.01))
    assert outcome.ledger.barrier == pytest.approx(80.0)
    assert outcome.reported_e_value == pytest.approx(100.0)
    assert outcome.decision is Decision.APPROVE and outcome.reason_codes == (1,)


def test_scenario_38_heavy_lane_defers():
    outcome = _run_claim(
        alpha=0.5, num_symbols=2, buckets=[1], model=_bernoulli(0.1), lane=Lane.HEAVY
    )
    assert outcome.decision is Decision.DEFER and outcome.reason_codes == (3,)
    assert outcome.claim_state_name == "FROZEN"
    assert outcome.reported_e_value == 1.0
    assert outcome.ledger.w_max == pytest.approx(10.0)


def test_scenario_39_fallback_nullspec():
    outcome = _run_claim(alpha=0.05, num_symbols=4, buckets=[1], model=fallback_model())
    assert outcome.decision is Decision.REJECT and outcome.reason_codes == (2,)
    assert outcome.ledger.k_bits_total == 4.0
    assert outcome.ledger.alpha_prime == pytest.approx(0.003125, abs=1e-12)
    assert outcome.ledger.barrier == pytest.approx(320.0)
    # accuracy 1.0 -> bucket 3: the e-value fails; the caller's ledger is untouched (rollback)
    with pytest.raises(EValueError, match="bucket out of range for bernoulli nullspec"):
        _run_claim(alpha=0.05, num_symbols=4, buckets=[3], model=fallback_model())


def test_scenario_40_no_oracle_call_is_charged_as_one():
    outcome = _run_claim(
        alpha=0.05, num_symbols=4, buckets=[], model=fallback_model(), output=b"\x02"
    )
    assert outcome.ledger.k_bits_total == 4.0
    assert outcome.reported_e_value == 1.0
    assert outcome.decision is Decision.REJECT


def test_non_canonical_legacy_output_fails_before_charging():
    with pytest.raises(InvalidCanonicalEncoding):
        _run_claim(
            alpha=0.05, num_symbols=1024, buckets=[3], model=fallback_model(), output=b"\x03"
        )


# --- canary lane --------------------------------------------------------------------------------


def test_canary_pulses_never_certify_and_trip_the_stream():
    pulse_model = _bernoulli(0.1)
    stream = CanaryState.create(CanaryConfig())  # barrier 20
    pulse = _run_claim(alpha=0.5, num_symbols=2, buckets=[1], model=pulse_model, lane=Lane.CANARY)
    assert pulse.decision is Decision.REJECT and pulse.reason_codes == (2,)
    stream = stream.update_with_buckets(pulse_model, [1], epoch=1)
    assert stream.e_drift == pytest.approx(10.0) and not stream.drift_frozen
    stream = stream.update_with_buckets(pulse_model, [1], epoch=2)
    assert stream.drift_frozen  # e_drift 100 >= 20
    pulse = _run_claim(
        alpha=0.5,
        num_symbols=2,
        buckets=[1],
        model=pulse_model,
        lane=Lane.CANARY,
        canary_frozen=stream.drift_frozen,
    )
    assert pulse.reason_codes == (2, 91) and pulse.canary_incident
    claim = _run_claim(
        alpha=0.5,
        num_symbols=2,
        buckets=[1],
        model=_bernoulli(0.1),
        canary_frozen=stream.drift_frozen,
    )
    assert claim.decision is Decision.REJECT and claim.reason_codes == (2, 91)
    after_reset = _run_claim(
        alpha=0.5,
        num_symbols=2,
        buckets=[1],
        model=_bernoulli(0.1),
        canary_frozen=stream.reset().drift_frozen,
    )
    assert after_reset.decision is Decision.APPROVE


# --- structured claims: the output-bit charge --------------------------------------------------


def test_structured_claim_with_strong_evidence_certifies():
    # CBRN schema, 300-byte canonical output, 2 symbols, 4 oracle calls, every answer a success
    # that the null gives probability 0.01: e = 100^4 = 1e8.
    outcome = _run_claim(
        alpha=0.05,
        num_symbols=2,
        buckets=[1, 1, 1, 1],
        model=_bernoulli(0.01),
        output=b"{" + b"x" * 298 + b"}",
        kout_cap_bits=KOUT_CAP_CBRN_BITS,
    )
    # taxed transcript 4 x 1 bit x 2 = 8, output min(3301, 2400, 4) = 4 -> k 12, barrier 81920
    assert outcome.ledger.k_bits_total == 12.0
    assert outcome.ledger.barrier == pytest.approx(81920.0)
    assert outcome.decision is Decision.APPROVE


def test_reference_kout_charge_could_never_certify():
    ledger = ConservationLedger(0.05).charge(8.0, "structured_output").charge_kout_bits(3301.0)
    assert ledger.barrier_threshold > math.log(DBL_MAX)
    outcome = settle_and_decide(ledger, DBL_MAX, DecisionInputs(Lane.FAST))
    assert outcome.decision is Decision.REJECT


# --- other reasons and policy oracles -----------------------------------------------------------


def _certifiable() -> ConservationLedger:
    return ConservationLedger(0.05).charge(2.0, "k").settle_e_value(100.0, "decision")


@pytest.mark.parametrize(
    ("inputs", "decision", "codes"),
    [
        (DecisionInputs(Lane.FAST), Decision.APPROVE, (1,)),
        (DecisionInputs(Lane.FAST, physhir_mismatch=True), Decision.DEFER, (3, 9104)),
        (DecisionInputs(Lane.FAST, envelope_violation=True), Decision.DEFER, (3, 9205)),
        (DecisionInputs(Lane.HEAVY, oracle_ttl_escalated=True), Decision.DEFER, (3, 9202)),
        (
            DecisionInputs(Lane.FAST, policy_outcomes=[PolicyOutcome(PolicyVerdict.PASS, 9001)]),
            Decision.APPROVE,
            (1,),
        ),
        (
            DecisionInputs(Lane.FAST, policy_outcomes=[PolicyOutcome(PolicyVerdict.REJECT, 9001)]),
            Decision.REJECT,
            (2, 9001),
        ),
        (
            DecisionInputs(
                Lane.FAST, policy_outcomes=[PolicyOutcome(PolicyVerdict.DEFER_TO_HEAVY, 9002)]
            ),
            Decision.DEFER,
            (3, 9002),
        ),
        (
            DecisionInputs(
                Lane.FAST,
                canary_frozen=True,
                policy_outcomes=[PolicyOutcome(PolicyVerdict.DEFER_TO_HEAVY, 9002)],
            ),
            Decision.REJECT,
            (2, 91, 9002),
        ),
        (
            DecisionInputs(
                Lane.HEAVY,
                canary_frozen=True,
                policy_outcomes=[
                    PolicyOutcome(PolicyVerdict.REJECT, 9003),
                    PolicyOutcome(PolicyVerdict.REJECT, 9003),
                ],
            ),
            Decision.REJECT,
            (2, 91, 9003),
        ),
    ],
)
def test_reason_codes(inputs, decision, codes):
    outcome = compute_decision(_certifiable(), 100.0, inputs)
    assert outcome.decision is decision
    assert outcome.reason_codes == codes


def test_numeric_guard_defers_with_9206():
    ledger = replace(_certifiable(), w_max=math.nan)
    outcome = compute_decision(ledger, 100.0, DecisionInputs(Lane.FAST))
    assert outcome.decision is Decision.DEFER and outcome.reason_codes == (3, 9206)


def test_frozen_ledger_defers_and_is_left_alone():
    ledger = _certifiable().freeze("incident_freeze", {"reason": "test"})
    outcome = compute_decision(ledger, 100.0, DecisionInputs(Lane.FAST))
    assert outcome.decision is Decision.DEFER and outcome.reason_codes == (3,)
    assert outcome.ledger is ledger
    assert outcome.reported_e_value == 1.0


def test_settle_records_the_decision_event():
    outcome = settle_and_decide(ConservationLedger(0.05), 2.0, DecisionInputs(Lane.FAST))
    assert outcome.ledger.events[-1].kind == "decision"
    assert outcome.ledger.events[-1].meta == {"e_value_total": 2.0, "e_value": 2.0}


@settings(max_examples=300, deadline=None)
@given(
    st.floats(1e-6, 0.999),
    st.floats(0.0, 64.0),
    st.floats(0.0, 1e30),
    st.sampled_from(list(Lane)),
    st.booleans(),
)
def test_approve_iff_fast_lane_healthy_canary_and_e_clears_the_barrier(alpha, k, e, lane, tripped):
    ledger = ConservationLedger(alpha).charge(k, "structured_output")
    outcome = settle_and_decide(ledger, e, DecisionInputs(lane, canary_frozen=tripped))
    clears = math.log(max(e, 1.0)) >= ledger.barrier_threshold
    assert outcome.certified is (lane is Lane.FAST and not tripped and clears)
    if not outcome.certified:
        assert outcome.reported_e_value == min(e, 1.0)
        assert outcome.ledger.wealth <= 1.0 + 1e-12
    assert list(outcome.reason_codes) == sorted(set(outcome.reason_codes))
