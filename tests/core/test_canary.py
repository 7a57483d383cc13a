"""Canary drift breaker: spec 30 §4, spec 50 §3.8, §11 scenario 22."""

from __future__ import annotations

import json

import pytest
import rfc8785

from evidenceos.core.canary import CanaryConfig, CanaryState, compute_canary_stream_key
from evidenceos.core.evalue import NullSpecModel
from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    LikelihoodRatioFixedAlt,
    ParametricBernoulli,
)
from evidenceos.errors import FailedPrecondition, InvalidArgument

CONTRACT = NullSpecModel(DiscreteBuckets((0.2, 0.8)), DirichletMultinomialMixture((1.0, 1.0)))


def _state(micros: int, staleness: int = 10) -> CanaryState:
    return CanaryState.create(
        CanaryConfig(
            alpha_drift_micros=micros, check_every_epochs=1, max_staleness_epochs=staleness
        )
    )


def test_default_config_barrier_is_20():
    config = CanaryConfig()
    assert (config.alpha_drift_micros, config.check_every_epochs, config.max_staleness_epochs) == (
        50_000,
        1,
        100,
    )
    assert config.barrier == 20.0
    assert CanaryState.create(config).barrier == 20.0


def test_barrier_uses_the_reference_form():
    # spec 50 §3.8 conflict: 1 / (micros / 1e6), not 1e6 / micros
    assert CanaryConfig(alpha_drift_micros=5).barrier == 199999.99999999997


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha_drift_micros": 0},
        {"alpha_drift_micros": 1_000_001},
        {"check_every_epochs": 0},
        {"max_staleness_epochs": -1},
    ],
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(InvalidArgument):
        CanaryConfig(**kwargs)


def test_freezes_at_epoch_three_with_barrier_ten():
    state = _state(100_000)
    assert state.barrier == 10.0
    seen = []
    for epoch in (1, 2, 3):
        state = state.update_with_bucket(CONTRACT, 0, epoch)
        seen.append(state.e_drift)
        assert state.drift_frozen is (epoch == 3)
    assert seen == pytest.approx([2.5, 25.0 / 3.0, 31.25], abs=1e-12)
    assert state.counts == (3, 0) and state.total == 3
    # frozen is sticky: nothing changes any more
    assert state.update_with_bucket(CONTRACT, 1, 4) == state


def test_non_freezing_stream_with_barrier_twenty():
    state = _state(50_000)
    values = []
    for epoch, bucket in enumerate([0, 1, 0, 0, 1, 0], start=1):
        state = state.update_with_bucket(CONTRACT, bucket, epoch)
        values.append(state.e_drift)
    assert values == pytest.approx([2.5, 1.0417, 2.6042, 7.8125, 3.2552, 9.3006], abs=1e-4)
    assert not state.drift_frozen


def test_reaching_the_barrier_exactly_freezes():
    state = _state(200_000)
    from dataclasses import replace

    state = replace(state, e_drift=state.barrier)
    assert state.update_with_bucket(CONTRACT, 0, 1).drift_frozen


def test_deterministic_for_a_fixed_stream():
    a = b = _state(50_000)
    for epoch, bucket in enumerate([0, 1, 0, 0, 1, 0], start=1):
        a = a.update_with_bucket(CONTRACT, bucket, epoch)
        b = b.update_with_bucket(CONTRACT, bucket, epoch)
        assert a.e_drift == b.e_drift and a.drift_frozen == b.drift_frozen


def test_staleness_trips_and_fresh_state_never_goes_stale():
    state = _state(50_000, staleness=5).update_with_bucket(CONTRACT, 1, 1)
    assert not state.update_with_bucket(CONTRACT, 1, 6).drift_frozen
    stale = state.update_with_bucket(CONTRACT, 1, 7)
    assert stale.drift_frozen and stale.e_drift == state.e_drift
    assert not _state(50_000, staleness=5).update_with_bucket(CONTRACT, 1, 1_000).drift_frozen


def test_check_every_skips_early_updates_but_not_same_epoch_ones():
    config = CanaryConfig(check_every_epochs=3)
    state = CanaryState.create(config).update_with_bucket(CONTRACT, 1, 10)
    same_epoch = state.update_with_bucket(CONTRACT, 1, 10)
    assert same_epoch.total == 2
    assert state.update_with_bucket(CONTRACT, 1, 12) == state  # 2 < 3 epochs later: skipped
    assert state.update_with_bucket(CONTRACT, 1, 13).total == 2


def test_bernoulli_contract_and_update_errors():
    bernoulli = NullSpecModel(ParametricBernoulli(0.1), LikelihoodRatioFixedAlt((0.0, 1.0)))
    state = CanaryState.create(CanaryConfig()).update_with_buckets(bernoulli, [1, 1], 1)
    assert state.e_drift == pytest.approx(100.0) and state.drift_frozen
    with pytest.raises(FailedPrecondition, match="canary drift update failed"):
        CanaryState.create(CanaryConfig()).update_with_bucket(bernoulli, 2, 1)
    three = NullSpecModel(DiscreteBuckets((0.2, 0.3, 0.5)), DirichletMultinomialMixture((1.0,) * 3))
    # a stream's stored counts do not fit a contract with another bucket count
    state = _state(50_000).update_with_bucket(CONTRACT, 0, 1)
    with pytest.raises(FailedPrecondition, match="canary drift update failed"):
        state.update_with_bucket(three, 0, 1)


def test_reset_clears_evidence_and_keeps_barrier_and_config():
    state = _state(100_000).update_with_buckets(CONTRACT, [0, 0, 0], 3)
    assert state.drift_frozen
    reset = state.reset()
    assert (reset.e_drift, reset.last_epoch_checked, reset.drift_frozen) == (1.0, 0, False)
    assert (reset.counts, reset.total) == ((), 0)
    assert (reset.barrier, reset.config) == (state.barrier, state.config)


def test_state_json_shape_and_round_trip():
    state = _state(100_000).update_with_buckets(CONTRACT, [0, 1], 2)
    data = state.to_json()
    assert set(data) == {
        "e_drift",
        "barrier",
        "last_epoch_checked",
        "config",
        "drift_frozen",
        "counts",
        "total",
    }
    assert data["config"] == {
        "alpha_drift_micros": 100_000,
        "check_every_epochs": 1,
        "max_staleness_epochs": 10,
    }
    assert CanaryState.from_json(data) == state
    assert CanaryState.from_json(json.loads(rfc8785.dumps(data))) == state
    legacy = {k: v for k, v in data.items() if k not in ("counts", "total")}
    assert CanaryState.from_json(legacy).counts == ()
    with pytest.raises(InvalidArgument):
        CanaryState.from_json({**data, "drift_frozen": "no"})
    with pytest.raises(InvalidArgument):
        CanaryState.from_json({**data, "extra": 1})


def test_stream_key():
    assert (
        compute_canary_stream_key("builtin.accuracy", "holdout-a") == "builtin.accuracy::holdout-a"
    )
    for oracle_id, holdout in (("", "h"), ("o", ""), ("o", "a:b")):
        with pytest.raises(InvalidArgument):
            compute_canary_stream_key(oracle_id, holdout)
