"""Conservation ledger, pools and execution accounting: spec 30 §1 and §11 scenarios 1-7, 9, 10."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evidenceos.core.ledger import (
    DBL_MAX,
    EPS,
    KOUT_CAP_CBRN_BITS,
    KOUT_CAP_LEGACY_BITS,
    BudgetPool,
    ConservationLedger,
    LedgerBudgetExhausted,
    LedgerFrozen,
    PoolBudgetExhausted,
    PoolFrozen,
    alpha_prime,
    barrier_threshold,
    certification_barrier,
    compute_dependence_multiplier,
    compute_execution_charge,
    compute_kout_charge_bits,
    compute_worst_case_reservation_bits,
    unchecked_deriver,
)
from evidenceos.errors import FailedPrecondition, InvalidArgument

TOL = 1e-12  # the reference's tolerance on every ledger float (spec 30 §1.1)


# --- scenario 1: formulas ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "k", "want_alpha_prime", "want_barrier"),
    [(0.05, 8, 0.0001953125, 5120.0), (0.05, 4, 0.003125, 320.0), (0.05, 6, 0.00078125, 1280.0)],
)
def test_alpha_prime_and_barrier(alpha, k, want_alpha_prime, want_barrier):
    assert abs(alpha_prime(alpha, k) - want_alpha_prime) < TOL
    assert abs(certification_barrier(alpha, k) - want_barrier) < 1e-9
    ledger = ConservationLedger(alpha).charge(k, "test")
    assert ledger.alpha_prime == alpha_prime(alpha, k)
    assert ledger.barrier == certification_barrier(alpha, k)


def test_log_space_values_match_the_reference_bit_for_bit():
    # spec 30 §1.1: computing through exp(log ...) differs from the naive formulas.
    assert certification_barrier(0.05, 8) == 5120.000000000001
    assert alpha_prime(0.05, 8) == 0.00019531249999999998
    assert alpha_prime(0.1, 3) < 0.1


def test_barrier_strictly_increases_with_k_and_stays_finite_in_log_space():
    previous = -math.inf
    for k in [0, 1, 2, 3, 10, 100, 1_000, 10_000, 100_000, 1_000_000]:
        threshold = barrier_threshold(1e-30, k)
        assert math.isfinite(threshold)
        assert not math.isnan(alpha_prime(1e-30, k))
        assert threshold > previous
        previous = threshold
    barriers = [certification_barrier(0.05, k) for k in range(20)]
    assert all(a < b for a, b in itertools.pairwise(barriers))


# --- scenario 2: construction -------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_constructor_rejects_alpha_outside_open_unit_interval(alpha):
    with pytest.raises(InvalidArgument):
        ConservationLedger(alpha)


@pytest.mark.parametrize("budget", [-1.0, math.nan, math.inf])
def test_invalid_budgets_are_ignored(budget):
    ledger = ConservationLedger.create(
        0.05,
        k_bits_budget=budget,
        access_credit_budget=budget,
        epsilon_budget=budget,
        delta_budget=budget,
    )
    assert ledger.k_bits_budget is None and ledger.access_credit_budget is None
    assert ledger.charge(1.0, "ok").k_bits_total == 1.0
    assert ConservationLedger(0.05).with_budget(budget).k_bits_budget is None


def test_direct_construction_refuses_invalid_budgets():
    with pytest.raises(InvalidArgument):
        ConservationLedger(0.05, k_bits_budget=-1.0)


# --- scenario 3: freezing -----------------------------------------------------------------


def test_overrun_freezes_and_everything_after_is_refused():
    ledger = ConservationLedger(0.05).with_budget(1.0).charge(1.0, "first")
    with pytest.raises(LedgerBudgetExhausted) as caught:
        ledger.charge(0.1, "second")
    frozen = caught.value.ledger
    assert frozen.frozen
    assert frozen.k_bits_total == 1.0  # nothing of the failed charge is committed
    assert frozen.events[-1].kind == "freeze_budget_exhausted"
    assert frozen.events[-1].meta["overrun_bits"] == pytest.approx(0.1)
    assert not ledger.frozen  # the original value is untouched: rollback is free
    with pytest.raises(LedgerFrozen):
        frozen.charge(0.0, "zero")
    with pytest.raises(LedgerFrozen):
        frozen.settle_e_value(1.1, "settle")
    assert isinstance(caught.value, FailedPrecondition)


def test_k_budget_is_checked_even_when_access_fits():
    ledger = ConservationLedger(0.05).with_budgets(1.0, 1.0).charge_all(0.5, 0, 0, 0.5, "a")
    with pytest.raises(LedgerBudgetExhausted) as caught:
        ledger.charge_all(1.0, 0, 0, 0, "b")
    assert caught.value.ledger.events[-1].kind == "freeze_budget_exhausted"


def test_access_credit_budget_freezes_with_its_own_event():
    ledger = ConservationLedger(0.05).with_budgets(10.0, 1.0)
    with pytest.raises(LedgerBudgetExhausted) as caught:
        ledger.charge_all(0.5, 0, 0, 1.5, "a")
    assert caught.value.ledger.events[-1].kind == "freeze_access_credit_exhausted"


def test_charge_exactly_at_budget_is_allowed():
    ledger = ConservationLedger(0.05).with_budget(6.0)
    for k in (1.25, 2.25, 2.5):
        ledger = ledger.charge(k, "c")
    assert ledger.k_bits_total == 6.0 and not ledger.frozen


# --- scenario 4: invalid inputs -------------------------------------------------------------


@pytest.mark.parametrize("k", [-1.0, math.inf, math.nan])
def test_invalid_charges_raise_without_freezing(k):
    ledger = ConservationLedger(0.05).with_budget(10.0)
    with pytest.raises(InvalidArgument):
        ledger.charge(k, "bad")
    with pytest.raises(InvalidArgument):
        ledger.charge_all(1.0, k, 0.0, 1.0, "bad")


@pytest.mark.parametrize("e", [-1.0, math.nan, math.inf])
def test_invalid_settlements_raise(e):
    with pytest.raises(InvalidArgument):
        ConservationLedger(0.05).settle_e_value(e, "bad")


def test_settlement_overflow_is_refused():
    ledger = ConservationLedger(0.05).settle_e_value(2.0, "two")
    with pytest.raises(InvalidArgument):
        ledger.settle_e_value(DBL_MAX, "max")


def test_zero_e_value_zeroes_wealth_for_good():
    ledger = ConservationLedger(0.05).settle_e_value(0.0, "zero").settle_e_value(1e9, "big")
    assert ledger.wealth == 0.0 and ledger.w_max == 1.0


# --- scenario 5: w_max and certification ------------------------------------------------------


def test_w_max_is_the_high_water_mark():
    ledger = ConservationLedger(0.05).settle_e_value(3.0, "a").settle_e_value(0.5, "b")
    assert ledger.wealth == 1.5 and ledger.w_max == 3.0
    assert ledger.events[-1].meta == {"e_value": 0.5}


def test_certification_uses_w_max_and_equality_certifies():
    ledger = (
        ConservationLedger(0.5).settle_e_value(8.0, "a").charge(2.0, "k").settle_e_value(0.1, "b")
    )
    assert ledger.wealth == pytest.approx(0.8)
    assert ledger.wealth < ledger.barrier
    assert math.log(8.0) == ledger.barrier_threshold  # bit-identical, spec 30 §1.3
    assert ledger.can_certify()


def test_scale_wealth_leaves_w_max():
    ledger = ConservationLedger(0.05).settle_e_value(10.0, "a").scale_wealth(0.1)
    assert ledger.wealth == pytest.approx(1.0) and ledger.w_max == 10.0
    with pytest.raises(InvalidArgument):
        ledger.scale_wealth(-1.0)


# --- scenario 6: numeric guards ---------------------------------------------------------------


def test_huge_k_cannot_certify_even_with_max_wealth():
    ledger = ConservationLedger(1e-30).charge(1e6, "huge").settle_e_value(DBL_MAX, "max")
    assert ledger.w_max == DBL_MAX
    assert ledger.certification_guard_failure() is None
    assert not ledger.can_certify()


def test_nan_w_max_fails_the_guard():
    ledger = ConservationLedger(0.05, w_max=math.nan)
    assert ledger.certification_guard_failure() == "invalid_w_max"
    assert not ledger.can_certify()
    assert ConservationLedger(0.05, k_bits_total=-1.0).certification_guard_failure() == (
        "invalid_k_bits_total"
    )
    assert ConservationLedger(0.05).certification_guard_failure() is None


# --- scenario 7: (epsilon, delta) -------------------------------------------------------------


def test_dp_totals_accumulate_and_never_move_alpha_prime():
    ledger = ConservationLedger(0.05).charge_all(1.0, 0.5, 0.25, 1.0, "dp")
    assert (ledger.epsilon_total, ledger.delta_total) == (0.5, 0.25)
    ledger = ConservationLedger(0.05).charge(3.0, "k")
    before = ledger.alpha_prime
    assert ledger.charge_dp(0.4, 1e-6, "dp").alpha_prime == before


def test_dp_budgets_freeze():
    ledger = ConservationLedger(0.05).with_dp_budgets(0.5, 1e-6).charge_dp(0.2, 4e-7, "a")
    with pytest.raises(LedgerBudgetExhausted) as caught:
        ledger.charge_dp(0.31, 0.0, "b")
    assert caught.value.ledger.events[-1].kind == "freeze_epsilon_budget_exhausted"
    with pytest.raises(LedgerBudgetExhausted) as caught:
        ledger.charge_dp(0.0, 7e-7, "c")
    assert caught.value.ledger.events[-1].kind == "freeze_delta_budget_exhausted"


def test_two_structured_output_dp_charges_sum():
    ledger = (
        ConservationLedger(0.05)
        .with_dp_budgets(0.5, 1e-6)
        .charge_all(1.0, 0.1, 2e-7, 1.0, "structured_output")
        .charge_all(1.0, 0.2, 8e-7, 1.0, "structured_output")
    )
    assert ledger.epsilon_total == pytest.approx(0.3)
    assert ledger.delta_total == pytest.approx(1e-6)


def test_kout_charge_event():
    ledger = ConservationLedger(0.05).charge_kout_bits(2.25)
    assert ledger.k_bits_total == ledger.access_credit_spent == 2.25
    assert ledger.events[-1].kind == "structured_output_kout"
    assert ledger.events[-1].meta == {"kout_bits": 2.25}


# --- scenarios 9 and 10: pools ---------------------------------------------------------------


def test_joint_pool_charges_until_frozen():
    pool = BudgetPool(10.0, 10.0).charge(3.0, 0.0).charge(3.0, 0.0)
    assert pool.k_bits_remaining == 4.0
    with pytest.raises(PoolBudgetExhausted) as caught:
        pool.charge(5.0, 0.0)
    assert caught.value.pool.frozen
    with pytest.raises(PoolFrozen):
        caught.value.pool.charge(0.0, 0.0)


@pytest.mark.parametrize(
    ("budget", "fit", "exceed"), [(0, 0, 0.1), (0.5, 0.5, 0.5000001), (100, 99, 101)]
)
def test_pool_boundary_matrix(budget, fit, exceed):
    pool = BudgetPool(budget, budget)
    assert pool.charge(fit, 0.0).k_bits_spent == fit
    with pytest.raises(PoolBudgetExhausted) as caught:
        pool.charge(exceed, 0.0)
    with pytest.raises(PoolFrozen):
        caught.value.pool.charge(0.0, 0.0)


@pytest.mark.parametrize("budget", [-1.0, math.nan, math.inf])
def test_pool_rejects_invalid_budgets(budget):
    with pytest.raises(InvalidArgument):
        BudgetPool(budget, 1.0)
    with pytest.raises(InvalidArgument):
        BudgetPool(1.0, budget)


def test_topic_pool_charges_and_dependence_tax():
    pool = BudgetPool(10.0, 10.0).charge(6.0, 6.0)
    with pytest.raises(PoolBudgetExhausted):
        pool.charge(5.0, 5.0)
    charge = compute_execution_charge(bits_per_call=1.0, oracle_calls=4, dependence_multiplier=2.0)
    assert (charge.post_canonical_bits, charge.taxed_k_bits, charge.covariance_bits) == (4, 8, 4)
    pool = BudgetPool(10.0, 10.0).charge(charge.taxed_k_bits, charge.taxed_k_bits, 4.0)
    assert pool.covariance_charge_total == 4.0
    with pytest.raises(PoolBudgetExhausted):
        pool.charge(charge.taxed_k_bits, charge.taxed_k_bits, 4.0)


@pytest.mark.parametrize(
    ("k_budget", "a_budget", "fit", "cov"), [(0, 0, 0, 0), (1, 1, 0.5, 0.5), (50, 50, 20, 30)]
)
def test_topic_pool_matrix(k_budget, a_budget, fit, cov):
    pool = BudgetPool(k_budget, a_budget).charge(fit, fit, cov)
    assert pool.covariance_charge_total >= cov
    over = (k_budget - fit) + 1e-6
    with pytest.raises(PoolBudgetExhausted):
        pool.charge(over, over, 0.0)


def test_reserve_counts_reservations_and_settle_spends_the_actual():
    pool = BudgetPool(10.0, 10.0).reserve(6, 6)
    assert pool.k_bits_remaining == 4.0
    with pytest.raises(PoolBudgetExhausted):
        pool.reserve(5, 0)
    settled = pool.settle(6, 6, 4.5, 4.5, 2.25)
    assert (settled.reserved_k_bits, settled.k_bits_spent) == (0, 4.5)
    assert settled.covariance_charge_total == 2.25
    with pytest.raises(InvalidArgument):
        pool.settle(6, 6, 6.5, 6.5)  # actual above reservation
    with pytest.raises(InvalidArgument):
        pool.settle(7, 7, 1.0, 1.0)  # more than is reserved
    with pytest.raises(InvalidArgument):
        pool.release(7, 0)
    with pytest.raises(InvalidArgument):
        pool.reserve(1.5, 0)  # type: ignore[arg-type]  # reservations are whole units


def test_frozen_pool_still_releases_but_never_settles():
    with pytest.raises(PoolBudgetExhausted) as caught:
        BudgetPool(10.0, 10.0).reserve(6, 6).reserve(5, 5)
    frozen = caught.value.pool
    assert frozen.release(6, 6).reserved_k_bits == 0
    with pytest.raises(PoolFrozen):
        frozen.settle(6, 6, 1.0, 1.0)


# --- execution accounting (spec 30 §1.5) -------------------------------------------------------


def test_zero_oracle_calls_are_charged_as_one():
    charge = compute_execution_charge(bits_per_call=2.0, oracle_calls=0, dependence_multiplier=2.0)
    assert charge.taxed_k_bits == 4.0 and charge.total_k_bits == 4.0


def test_charge_execution_applies_both_ledger_events():
    charge = compute_execution_charge(math.log2(3), 2, 2.0, kout_bits=1.5)
    ledger = ConservationLedger(0.05).charge_execution(charge)
    assert [e.kind for e in ledger.events] == ["structured_output", "structured_output_kout"]
    assert ledger.events[0].meta == {
        "post_canonical_bits": charge.post_canonical_bits,
        "dependence_multiplier": 2.0,
        "taxed_k_bits": charge.taxed_k_bits,
    }
    assert ledger.k_bits_total == charge.taxed_k_bits + 1.5
    assert charge.principal_k_bits == math.ceil(charge.taxed_k_bits + 1.5)


def test_dependence_multiplier_rules():
    assert compute_dependence_multiplier() == 2.0
    assert compute_dependence_multiplier(2.0, 1.5, ttl_escalated=True) == 3.0
    with pytest.raises(InvalidArgument):
        compute_dependence_multiplier(1.9)
    with pytest.raises(InvalidArgument):
        compute_dependence_multiplier(2.0, 0.5)


def test_kout_charge_formula():
    # legacy symbols: cap 0, nothing charged for the output (reference parity)
    assert compute_kout_charge_bits(KOUT_CAP_LEGACY_BITS, 1, 2.0, 1) == 0.0
    # CBRN: bounded by the transcript, not the 3301-bit cap
    assert compute_kout_charge_bits(KOUT_CAP_CBRN_BITS, 300, 1.0, 4) == 4.0
    assert compute_kout_charge_bits(KOUT_CAP_CBRN_BITS, 300, 1.0, 0) == 1.0
    # ... nor by more than the output's own length
    assert compute_kout_charge_bits(KOUT_CAP_CBRN_BITS, 1, 10.0, 32) == 8.0
    # ... and never above the schema cap
    assert compute_kout_charge_bits(3, 300, 10.0, 32) == 3.0


def test_worst_case_reservation_covers_every_actual_settlement():
    assert compute_worst_case_reservation_bits(2.0, 32, 2.0, KOUT_CAP_LEGACY_BITS) == 128
    assert compute_worst_case_reservation_bits(1.0, 32, 2.0, KOUT_CAP_CBRN_BITS) == 96
    for symbols in (2, 3, 4, 7, 256, 1000):
        bits = math.log2(symbols)
        for cap in (KOUT_CAP_LEGACY_BITS, KOUT_CAP_CBRN_BITS):
            for multiplier in (2.0, 3.0, 2.7):
                worst = compute_worst_case_reservation_bits(bits, 32, multiplier, cap)
                for calls in (0, 1, 7, 32):
                    kout = compute_kout_charge_bits(cap, 2048, bits, calls)
                    actual = compute_execution_charge(bits, calls, multiplier, kout)
                    assert actual.total_k_bits <= worst
                    BudgetPool(worst, worst).reserve(worst, worst).settle(
                        worst, worst, actual.total_k_bits, actual.total_k_bits
                    )


# --- JSON ------------------------------------------------------------------------------------


def test_ledger_json_shape_and_strictness():
    ledger = ConservationLedger(0.05).with_budget(10.0).charge(1.0, "k", {"x": 1})
    data = ledger.to_json()
    assert list(data) == [
        "alpha",
        "k_bits_total",
        "epsilon_total",
        "delta_total",
        "access_credit_spent",
        "wealth",
        "w_max",
        "events",
        "k_bits_budget",
        "access_credit_budget",
        "epsilon_budget",
        "delta_budget",
        "frozen",
    ]
    assert data["events"] == [{"kind": "k", "bits": 1.0, "meta": {"x": 1}}]
    with pytest.raises(InvalidArgument):
        ConservationLedger.from_json({**data, "extra": 1})
    with pytest.raises(InvalidArgument):
        ConservationLedger.from_json({**data, "wealth": "1"})
    with pytest.raises(InvalidArgument):
        ConservationLedger.from_json({**data, "frozen": 0})
    with pytest.raises(InvalidArgument):
        BudgetPool.from_json({**BudgetPool(1, 1).to_json(), "reserved_k_bits": 0.5})


def test_snapshot_fields():
    snap = ConservationLedger(0.05).charge(4.0, "k").snapshot()
    assert snap.barrier == certification_barrier(0.05, 4.0)
    assert snap.to_json()["k_bits_total"] == 4.0 and snap.frozen is False


# --- Hypothesis ------------------------------------------------------------------------------

amounts = st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False)
budgets = st.one_of(st.none(), amounts)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("charge_all"), amounts, amounts, amounts, amounts),
        st.tuples(st.just("kout"), amounts),
        st.tuples(st.just("settle"), st.floats(min_value=0.0, max_value=10.0)),
        st.tuples(st.just("scale"), st.floats(min_value=0.0, max_value=2.0)),
    ),
    max_size=25,
)


def _apply(ledger: ConservationLedger, op: tuple[Any, ...]) -> ConservationLedger:
    kind = op[0]
    exhausted: LedgerBudgetExhausted | None = None
    try:
        if kind == "charge_all":
            return ledger.charge_all(op[1], op[2], op[3], op[4], "c")
        if kind == "kout":
            return ledger.charge_kout_bits(op[1])
        if kind == "settle":
            return ledger.settle_e_value(op[1], "s", {"n": op[1]})
        return ledger.scale_wealth(op[1])
    except LedgerBudgetExhausted as exc:
        exhausted = exc
    except LedgerFrozen:
        assert ledger.frozen
        return ledger
    # an overrun commits nothing of the charge; only the freeze differs
    assert exhausted.ledger.frozen
    assert exhausted.ledger.k_bits_total == ledger.k_bits_total
    assert exhausted.ledger.access_credit_spent == ledger.access_credit_spent
    return exhausted.ledger


def _within(total: float, budget: float | None) -> bool:
    return budget is None or total <= budget + EPS


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=0.999), budgets, budgets, budgets, budgets, ops)
def test_ledger_never_spends_beyond_its_budgets(alpha, kb, ab, eb, db, operations):
    ledger = ConservationLedger.create(
        alpha, k_bits_budget=kb, access_credit_budget=ab, epsilon_budget=eb, delta_budget=db
    )
    for op in operations:
        ledger = _apply(ledger, op)
        assert _within(ledger.k_bits_total, ledger.k_bits_budget)
        assert _within(ledger.access_credit_spent, ledger.access_credit_budget)
        assert _within(ledger.epsilon_total, ledger.epsilon_budget)
        assert _within(ledger.delta_total, ledger.delta_budget)
        assert ledger.w_max >= ledger.wealth or ledger.w_max >= 1.0
    assert ConservationLedger.from_json(ledger.to_json()) == ledger
    assert ConservationLedger.from_json(json.loads(json.dumps(ledger.to_json()))) == ledger
    # the store may write RFC 8785 (integral floats become integers); the value must survive
    assert ConservationLedger.from_json(json.loads(rfc8785.dumps(ledger.to_json()))) == ledger


pool_ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 20), st.integers(0, 20)),
        st.tuples(st.just("release"), st.integers(0, 20), st.integers(0, 20)),
        st.tuples(st.just("charge"), amounts, amounts, amounts),
        st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 20), amounts, amounts),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 100.0), st.floats(0.0, 100.0), pool_ops)
def test_pools_never_go_negative_or_overspend(k_budget, a_budget, operations):
    pool = BudgetPool(k_budget, a_budget)
    for op in operations:
        try:
            if op[0] == "reserve":
                pool = pool.reserve(op[1], op[2])
            elif op[0] == "release":
                pool = pool.release(op[1], op[2])
            elif op[0] == "charge":
                pool = pool.charge(op[1], op[2], op[3])
            else:
                pool = pool.settle(op[1], op[2], op[3], op[4])
        except PoolBudgetExhausted as exc:
            pool = exc.pool
        except (PoolFrozen, InvalidArgument):
            pass
        for value in (
            pool.k_bits_spent,
            pool.access_credit_spent,
            pool.reserved_k_bits,
            pool.reserved_access_credit,
            pool.covariance_charge_total,
            pool.k_bits_remaining,
            pool.access_credit_remaining,
        ):
            assert value >= 0
        assert pool.k_bits_spent <= pool.k_bits_budget + EPS
        assert pool.access_credit_spent <= pool.access_credit_budget + EPS
    assert BudgetPool.from_json(json.loads(rfc8785.dumps(pool.to_json()))) == pool


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.0, 1e6),
    st.floats(0.0, 1e6),
    st.floats(0.0, 1e3),
    st.floats(0.0, 1e3),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.floats(0.0, 1e3),
)
def test_reserve_then_release_restores_the_pool_exactly(kb, ab, ks, as_, rk, ra, k, a, cov):
    pool = BudgetPool(kb, ab, k_bits_spent=ks, access_credit_spent=as_, covariance_charge_total=cov)
    try:
        pool = pool.reserve(rk, ra)
        reserved = pool.reserve(k, a)
    except PoolBudgetExhausted:
        assume(False)
    assert reserved.release(k, a) == pool
    assert reserved.release(k, a).to_json() == pool.to_json()


def test_float_reservations_would_not_restore_exactly():
    # Why reservations are integers: with floats, reserve+release drifts.
    assert 0.1 + 0.2 - 0.2 != 0.1
    pool = BudgetPool(10.0, 10.0, k_bits_spent=0.1, reserved_k_bits=1)
    assert pool.reserve(3, 3).release(3, 3) == pool


def test_replace_revalidates():
    with pytest.raises(InvalidArgument):
        replace(BudgetPool(1.0, 1.0), reserved_k_bits=-1)


# --- transitions without re-validation --------------------------------------------------------


def test_create_is_the_chain_of_budget_setters():
    for budgets in [(None, None, None, None), (8.0, 16.0, 1.0, 0.5), (-1.0, math.inf, math.nan, 2)]:
        k, a, e, d = budgets
        want = ConservationLedger(alpha=0.05).with_budgets(k, a).with_dp_budgets(e, d)
        got = ConservationLedger.create(
            0.05, k_bits_budget=k, access_credit_budget=a, epsilon_budget=e, delta_budget=d
        )
        assert got == want
        assert [type(getattr(got, f)) for f in ("k_bits_budget", "epsilon_budget")] == [
            type(want.k_bits_budget),
            type(want.epsilon_budget),
        ]


def test_ledger_transitions_equal_replace_and_keep_validating_the_constructor():
    ledger = ConservationLedger.create(0.25, k_bits_budget=100.0, access_credit_budget=100.0)
    charged = ledger.charge(3.0, "c", {"x": 1})
    assert charged == replace(
        ledger,
        k_bits_total=3.0,
        access_credit_spent=3.0,
        events=(*ledger.events, charged.events[-1]),
    )
    settled = charged.settle_e_value(4.0, "s")
    assert (settled.wealth, settled.w_max, settled.alpha) == (4.0, 4.0, 0.25)
    assert settled.scale_wealth(0.5).wealth == 2.0
    assert settled.freeze("f").frozen
    with pytest.raises(InvalidArgument):
        ConservationLedger(alpha=1.5)
    with pytest.raises(InvalidArgument):
        replace(settled, k_bits_budget=-1.0)  # the public path still checks


def test_pool_transitions_equal_replace_and_with_budgets_still_validates():
    pool = BudgetPool(100.0, 50.0)
    reserved = pool.reserve(10, 5)
    assert reserved == replace(pool, reserved_k_bits=10, reserved_access_credit=5)
    settled = reserved.settle(10, 5, 2.5, 1.5, covariance=0.5)
    assert settled == BudgetPool(100.0, 50.0, 2.5, 1.5, 0, 0, 0.5)
    with pytest.raises(PoolBudgetExhausted) as exhausted:
        settled.reserve(1000, 1)
    assert exhausted.value.pool == replace(settled, frozen=True)
    with pytest.raises(InvalidArgument):
        settled.with_budgets(-1.0, 5.0)
    with pytest.raises(InvalidArgument):
        settled.with_budgets(math.nan, 5.0)


def test_unchecked_deriver_refuses_unknown_fields_and_defers_subclasses_to_replace():
    derive = unchecked_deriver(BudgetPool)
    pool = BudgetPool(1.0, 1.0)
    with pytest.raises(AttributeError):
        derive(pool, {"no_such_field": 1})
    assert derive(pool, {"frozen": True}) == replace(pool, frozen=True)
    assert derive(pool, {}) == pool
    assert derive(pool, {}) is not pool

    class Checked(BudgetPool):
        __slots__ = ()

        def __post_init__(self) -> None:
            if self.frozen:
                raise InvalidArgument("no frozen checked pools")

    with pytest.raises(InvalidArgument):  # a subclass goes through replace and its checks
        derive(Checked(1.0, 1.0), {"frozen": True})
