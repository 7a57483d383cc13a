"""NullSpec e-processes: spec 30 §3.2 and §11 scenarios 8, 17-20."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.evalue import (
    EPROCESS_DIRICHLET,
    EPROCESS_FIXED_ALT,
    EProcessState,
    EValueError,
    LegacyEValueFn,
    NullSpecModel,
    compute_e_value,
    compute_eprocess_kind_id,
    compute_legacy_e_value,
    e_merge,
    e_merge_equal,
    e_product,
    fallback_model,
    update_eprocess,
    verify_legacy_nullspec,
)
from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    LikelihoodRatioFixedAlt,
    NullSpecContract,
    ParametricBernoulli,
    verify_eprocess_pairing,
)
from evidenceos.errors import FailedPrecondition, InvalidArgument

BERNOULLI = NullSpecModel(ParametricBernoulli(0.4), LikelihoodRatioFixedAlt((0.3, 0.7)))
DIRICHLET = NullSpecModel(
    DiscreteBuckets((0.2, 0.3, 0.5)), DirichletMultinomialMixture((1.0, 1.0, 1.0))
)

# --- scenario 19: Bernoulli / fixed alternative -----------------------------------------------


def test_bernoulli_vector_1_53125():
    e = compute_e_value(BERNOULLI, [1, 0, 1])
    assert abs(e - 1.53125) < 1e-12
    # the reference's exact operation order, so the double is the reference's double
    assert e == 1.0 * (0.7 / 0.4) * (0.3 / (1.0 - 0.4)) * (0.7 / 0.4)
    assert compute_eprocess_kind_id(BERNOULLI) == EPROCESS_FIXED_ALT


def test_bernoulli_rejects_bucket_two():
    with pytest.raises(EValueError, match="bucket out of range for bernoulli nullspec") as caught:
        compute_e_value(BERNOULLI, [1, 2])
    assert isinstance(caught.value, FailedPrecondition)


@pytest.mark.parametrize(
    "model",
    [
        NullSpecModel(ParametricBernoulli(0.0), LikelihoodRatioFixedAlt((0.5, 0.5))),
        NullSpecModel(ParametricBernoulli(1.0), LikelihoodRatioFixedAlt((0.5, 0.5))),
        NullSpecModel(ParametricBernoulli(0.5), LikelihoodRatioFixedAlt((0.5, 0.5, 0.0))),
    ],
)
def test_invalid_parametric_nullspec_fails_even_without_buckets(model):
    with pytest.raises(EValueError, match="invalid parametric nullspec"):
        compute_e_value(model, [])


def test_negative_alternative_is_refused():
    model = NullSpecModel(ParametricBernoulli(0.5), LikelihoodRatioFixedAlt((-1.0, 1.0)))
    with pytest.raises(EValueError, match="invalid bernoulli probabilities"):
        compute_e_value(model, [0])


def test_fallback_model_gives_one_for_binary_buckets():
    assert compute_e_value(fallback_model(), [0, 1, 1, 0]) == 1.0
    with pytest.raises(EValueError):
        compute_e_value(fallback_model(), [3])


def test_no_oracle_calls_give_exactly_one():
    assert compute_e_value(BERNOULLI, []) == 1.0
    assert compute_e_value(DIRICHLET, []) == 1.0


# --- scenario 20: Dirichlet mixture ------------------------------------------------------------


def test_dirichlet_vectors():
    state = update_eprocess(EProcessState(), DIRICHLET, 0)
    assert abs(state.e - 5.0 / 3.0) < 1e-12
    assert state.counts == (1, 0, 0) and state.total == 1
    state = update_eprocess(state, DIRICHLET, 2)
    assert abs(state.e - (5.0 / 3.0) * 0.5) < 1e-12
    e = compute_e_value(DIRICHLET, [2, 1, 2])
    assert abs(e - 4.0 / 9.0) < 1e-12
    assert e == 1.0 * ((1.0 / 3.0) / 0.5) * ((1.0 / 4.0) / 0.3) * ((2.0 / 5.0) / 0.5)
    assert compute_eprocess_kind_id(DIRICHLET) == EPROCESS_DIRICHLET


def test_dirichlet_rejects_bad_p0():
    model = NullSpecModel(DiscreteBuckets((0.0, 1.0)), DirichletMultinomialMixture((1.0, 1.0)))
    with pytest.raises(EValueError, match="invalid non-parametric e-process update"):
        compute_e_value(model, [0])
    # NaN and inf never get that far: the contract model refuses them (serde could not read them)
    for bad in (math.nan, math.inf):
        with pytest.raises(InvalidArgument):
            DiscreteBuckets((bad, 1.0))


def test_dirichlet_rejects_zero_alpha_and_out_of_range_buckets():
    model = NullSpecModel(DiscreteBuckets((0.5, 0.5)), DirichletMultinomialMixture((0.0, 1.0)))
    with pytest.raises(EValueError, match="invalid dirichlet alpha"):
        compute_e_value(model, [])
    with pytest.raises(EValueError):
        compute_e_value(DIRICHLET, [3])
    mismatched = NullSpecModel(DiscreteBuckets((0.5, 0.5)), DirichletMultinomialMixture((1.0,) * 3))
    with pytest.raises(EValueError):
        compute_e_value(mismatched, [0])


def test_mismatched_pairs_are_refused():
    model = NullSpecModel(ParametricBernoulli(0.5), DirichletMultinomialMixture((1.0, 1.0)))
    with pytest.raises(EValueError, match="nullspec kind/eprocess mismatch"):
        compute_e_value(model, [])
    with pytest.raises(EValueError):
        compute_eprocess_kind_id(model)


def test_two_processes_on_the_same_stream_are_bit_identical():
    model = NullSpecModel(
        DiscreteBuckets((0.25, 0.25, 0.5)), DirichletMultinomialMixture((0.5, 0.5, 0.5))
    )
    a = b = EProcessState()
    for y in [0, 2, 1, 2, 2, 0]:
        a, b = update_eprocess(a, model, y), update_eprocess(b, model, y)
        assert a.e == b.e


def test_null_mean_stays_near_one():
    # Reference Monte-Carlo: 32 runs x 64 draws under the null average in (0, 2).
    rng = random.Random(20260101)
    p0 = (0.2, 0.3, 0.5)
    model = NullSpecModel(DiscreteBuckets(p0), DirichletMultinomialMixture((1.0, 1.0, 1.0)))
    runs = [compute_e_value(model, rng.choices(range(3), weights=p0, k=64)) for _ in range(32)]
    assert 0.0 < sum(runs) / len(runs) < 2.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.001, 1.0), min_size=2, max_size=7),
    st.lists(st.floats(0.001, 3.0), min_size=7, max_size=7),
    st.lists(st.integers(0, 6), min_size=1, max_size=64),
)
def test_dirichlet_is_finite_and_non_negative(raw, alpha_raw, draws):
    total = sum(raw)
    p0 = tuple(v / total for v in raw)
    model = NullSpecModel(
        DiscreteBuckets(p0), DirichletMultinomialMixture(tuple(alpha_raw[: len(p0)]))
    )
    e = compute_e_value(model, [d % len(p0) for d in draws])
    assert math.isfinite(e) and e >= 0.0


# --- contracts are scored directly ------------------------------------------------------------


def test_a_contract_is_a_null_model():
    contract = NullSpecContract(
        oracle_id="builtin.accuracy",
        oracle_resolution_hash=bytes(32),
        holdout_handle="holdout",
        epoch_created=1,
        ttl_epochs=1,
        kind=ParametricBernoulli(0.4),
        eprocess=LikelihoodRatioFixedAlt((0.3, 0.7)),
        created_by="test",
    )
    verify_eprocess_pairing(contract)
    assert compute_e_value(contract, [1, 0, 1]) == compute_e_value(BERNOULLI, [1, 0, 1])
    assert compute_eprocess_kind_id(contract) == EPROCESS_FIXED_ALT
    verify_eprocess_pairing(fallback_model())  # type: ignore[arg-type]


# --- scenario 8: e-merging -----------------------------------------------------------------------


def test_e_merging():
    assert e_merge_equal([2.0, 4.0]) == 3.0
    assert e_merge([1.0, 3.0], [0.25, 0.75]) == 2.5
    assert e_product([2.0, 0.5, 3.0]) == 3.0
    bad_calls: list[Callable[[], float]] = [
        lambda: e_merge([1.0], [0.0]),
        lambda: e_merge([], []),
        lambda: e_merge([1.0], [1.0, 2.0]),
        lambda: e_merge([-1.0], [1.0]),
        lambda: e_merge_equal([]),
        lambda: e_product([]),
        lambda: e_product([-1.0]),
        lambda: e_product([1e300, 1e300]),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidArgument):
            call()


# --- scenarios 17-18: legacy e-values ------------------------------------------------------------


def test_legacy_e_values():
    lr = LegacyEValueFn.LIKELIHOOD_RATIO
    assert compute_legacy_e_value(lr, 0.5, 0.5, n_observations=8) == 1.0
    assert compute_legacy_e_value(lr, 0.0, 0.9, n_observations=8) == 0.0
    assert compute_legacy_e_value(lr, 0.5, math.nan, n_observations=8) == 0.0
    assert compute_legacy_e_value(lr, 0.5, 1.0, n_observations=8) == 256.0
    fixed = LegacyEValueFn.FIXED
    for acc in (0.0, 0.3, 1.0):
        assert compute_legacy_e_value(fixed, 0.5, acc, fixed_value=2.0) == 2.0
        assert compute_legacy_e_value(fixed, 0.5, acc, fixed_value=2.25) == 2.25
    mixture = LegacyEValueFn.MIXTURE_BINARY_MARTINGALE
    assert compute_legacy_e_value(mixture, 0.5, 1.0, grid=[0.75]) == 1.5
    assert compute_legacy_e_value(mixture, 0.5, 0.0, grid=[0.75]) == 0.5
    assert compute_legacy_e_value(mixture, 0.5, 1.0, grid=[]) == 0.0
    assert compute_legacy_e_value(mixture, 1.0, 1.0, grid=[0.75]) == 0.0


def test_legacy_e_value_is_domain_independent():
    # scenario 18: domains "a" and "b" give equal values; the domain only has to be non-blank
    verify_legacy_nullspec("a", 0.5)
    verify_legacy_nullspec("b", 0.5)


@pytest.mark.parametrize(
    ("domain", "null_accuracy"),
    [(" ", 0.5), ("", 0.5), ("d", 0.0), ("d", -0.1), ("d", 1.1), ("d", math.nan), ("d", math.inf)],
)
def test_legacy_nullspec_preconditions(domain, null_accuracy):
    with pytest.raises(InvalidArgument):
        verify_legacy_nullspec(domain, null_accuracy)
