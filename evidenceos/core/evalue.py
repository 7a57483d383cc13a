"""NullSpec models and the e-processes computed from a claim's oracle buckets.

Source: spec 30 §3.2 (the two supported (kind, e-process) pairs and their exact formulas), §3.3
(the fallback contract), §1.1 (e-merging helpers) and §2.8 (legacy per-accuracy e-values).

An e-value is evidence against the null: its expectation under the null is at most 1, so
Ville's inequality bounds the chance that a null claim's wealth ever reaches ``1/alpha'``. The
e-value of one execution depends only on the ordered oracle buckets the guest received — never on
what the guest emitted — so it is a pure function of the transcript and the active NullSpec.

Two pairings exist, and any other is refused:

* ``ParametricBernoulli{p}`` with ``LikelihoodRatioFixedAlt{alt}``: ``e = prod alt[b] / p0(b)``,
  where bucket 1 is "success" with null probability ``p``. Vector: p 0.4, alt [0.3, 0.7],
  buckets [1, 0, 1] -> 1.53125.
* ``DiscreteBuckets{p0}`` with ``DirichletMultinomialMixture{alpha}``: each bucket multiplies e by
  the Dirichlet predictive over ``p0[y]``. Vector: alpha [1,1,1], p0 [0.2,0.3,0.5], stream
  [2, 1, 2] -> 4/9.

Error messages are the daemon's (all FAILED_PRECONDITION at execution, spec 30 §3.2).
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from evidenceos.core.nullspec import (
    DirichletMultinomialMixture,
    DiscreteBuckets,
    EProcessKind,
    LikelihoodRatioFixedAlt,
    NullSpecKind,
    ParametricBernoulli,
)
from evidenceos.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "EPROCESS_DIRICHLET",
    "EPROCESS_FIXED_ALT",
    "EProcessState",
    "EValueError",
    "LegacyEValueFn",
    "NullModel",
    "NullSpecModel",
    "compute_e_value",
    "compute_eprocess_kind_id",
    "compute_legacy_e_value",
    "e_merge",
    "e_merge_equal",
    "e_product",
    "fallback_model",
    "update_eprocess",
    "verify_legacy_nullspec",
]

_DBL_MAX = sys.float_info.max

EPROCESS_FIXED_ALT = "likelihood_ratio_fixed_alt"
"""Capsule ``eprocess_kind`` of the Bernoulli / fixed-alternative pair."""

EPROCESS_DIRICHLET = "dirichlet_multinomial_mixture"
"""Capsule ``eprocess_kind`` of the discrete-buckets / Dirichlet-mixture pair."""


class EValueError(FailedPrecondition):
    """The NullSpec cannot score this transcript (bad contract, mismatched pair, bad bucket)."""


def _is_bucket(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class NullModel(Protocol):
    """Anything that names a (kind, e-process) pair: a :class:`NullSpecModel`, or a
    :class:`evidenceos.core.nullspec.NullSpecContract` itself."""

    @property
    def kind(self) -> NullSpecKind:
        """The null hypothesis."""
        ...

    @property
    def eprocess(self) -> EProcessKind:
        """The e-process scored against it."""
        ...


@dataclass(frozen=True, slots=True)
class NullSpecModel:
    """A bare (kind, e-process) pair, for the fallback and for callers without a contract.

    The four variant types are the contract's own (:mod:`evidenceos.core.nullspec`), so a
    contract can be passed wherever a :class:`NullModel` is expected; creation-time validation
    of the pairing is :func:`evidenceos.core.nullspec.verify_eprocess_pairing`.
    """

    kind: NullSpecKind
    eprocess: EProcessKind


def fallback_model() -> NullSpecModel:
    """The non-production fallback: Bernoulli p 0.5, alt [0.5, 0.5] (e is 1 for buckets 0, 1).
    One frozen value, built once."""
    return _FALLBACK


_FALLBACK = NullSpecModel(ParametricBernoulli(0.5), LikelihoodRatioFixedAlt((0.5, 0.5)))


def compute_eprocess_kind_id(model: NullModel) -> str:
    """The capsule's ``eprocess_kind`` string for a supported pair."""
    if isinstance(model.kind, ParametricBernoulli) and isinstance(
        model.eprocess, LikelihoodRatioFixedAlt
    ):
        return EPROCESS_FIXED_ALT
    if isinstance(model.kind, DiscreteBuckets) and isinstance(
        model.eprocess, DirichletMultinomialMixture
    ):
        return EPROCESS_DIRICHLET
    raise EValueError("nullspec kind/eprocess mismatch")


# --------------------------------------------------------------------------------------------
# The e-processes


@dataclass(frozen=True, slots=True)
class EProcessState:
    """Running e-value plus the Dirichlet counts (empty until the first Dirichlet update)."""

    e: float = 1.0
    counts: tuple[int, ...] = ()
    total: int = 0


def _bernoulli_increment(kind: ParametricBernoulli, alt: Sequence[float], bucket: int) -> float:
    if bucket >= 2:
        raise EValueError("bucket out of range for bernoulli nullspec")
    p0 = kind.p if bucket == 1 else 1.0 - kind.p
    alt_p = alt[bucket]
    if not (math.isfinite(p0) and p0 > 0.0 and math.isfinite(alt_p) and alt_p >= 0.0):
        raise EValueError("invalid bernoulli probabilities")
    increment = alt_p / p0
    if not math.isfinite(increment) or increment < 0.0:
        raise EValueError("invalid e-process increment")
    return increment


def _verify_bernoulli(kind: ParametricBernoulli, eprocess: LikelihoodRatioFixedAlt) -> None:
    if len(eprocess.alt) != 2 or not (0.0 < kind.p < 1.0):
        raise EValueError("invalid parametric nullspec")


def _verify_dirichlet_alpha(eprocess: DirichletMultinomialMixture) -> None:
    if not eprocess.alpha or not all(math.isfinite(a) and a > 0.0 for a in eprocess.alpha):
        raise EValueError("invalid dirichlet alpha")


def _dirichlet_step(
    state: EProcessState, kind: DiscreteBuckets, eprocess: DirichletMultinomialMixture, y: int
) -> EProcessState:
    counts = state.counts or (0,) * len(eprocess.alpha)
    p0 = kind.p0
    if len(counts) != len(eprocess.alpha) or y >= len(counts) or len(p0) != len(counts):
        raise EValueError("invalid non-parametric e-process update")
    p0y = p0[y]
    if not (math.isfinite(p0y) and p0y > 0.0) or not all(math.isfinite(p) and p >= 0 for p in p0):
        raise EValueError("invalid non-parametric e-process update")
    alpha_sum = 0.0
    for a in eprocess.alpha:  # left-to-right like Rust's iter().sum(); Python's sum() compensates
        alpha_sum += a
    predictive = (counts[y] + eprocess.alpha[y]) / (state.total + alpha_sum)
    increment = predictive / p0y
    e = state.e * increment
    if not (math.isfinite(increment) and increment >= 0.0 and math.isfinite(e) and e >= 0.0):
        raise EValueError("invalid non-parametric e-process update")
    new_counts = (*counts[:y], counts[y] + 1, *counts[y + 1 :])
    return EProcessState(e=e, counts=new_counts, total=state.total + 1)


def update_eprocess(state: EProcessState, model: NullModel, bucket: int) -> EProcessState:
    """One e-process step for one oracle bucket (shared by claims and the canary, spec 30 §4)."""
    if not _is_bucket(bucket):
        raise EValueError("bucket overflow")
    kind, eprocess = model.kind, model.eprocess
    if isinstance(kind, ParametricBernoulli) and isinstance(eprocess, LikelihoodRatioFixedAlt):
        _verify_bernoulli(kind, eprocess)
        e = state.e * _bernoulli_increment(kind, eprocess.alt, bucket)
        if not math.isfinite(e) or e < 0.0:
            raise EValueError("invalid e-process state")
        return EProcessState(e=e, counts=state.counts, total=state.total)
    if isinstance(kind, DiscreteBuckets) and isinstance(eprocess, DirichletMultinomialMixture):
        _verify_dirichlet_alpha(eprocess)
        return _dirichlet_step(state, kind, eprocess, bucket)
    raise EValueError("nullspec kind/eprocess mismatch")


def compute_e_value(model: NullModel, buckets: Iterable[int]) -> float:
    """The e-value of one execution's ordered oracle buckets; no buckets gives exactly 1.

    The pairing and the contract parameters are checked even for an empty transcript, as the
    daemon does.
    """
    kind, eprocess = model.kind, model.eprocess
    if isinstance(kind, ParametricBernoulli) and isinstance(eprocess, LikelihoodRatioFixedAlt):
        _verify_bernoulli(kind, eprocess)
    elif isinstance(kind, DiscreteBuckets) and isinstance(eprocess, DirichletMultinomialMixture):
        _verify_dirichlet_alpha(eprocess)
    else:
        raise EValueError("nullspec kind/eprocess mismatch")
    state = EProcessState()
    for bucket in buckets:
        state = update_eprocess(state, model, bucket)
    return state.e


# --------------------------------------------------------------------------------------------
# e-merging helpers (spec 30 §1.1; library only)


def e_merge(e_values: Sequence[float], weights: Sequence[float]) -> float:
    """Weighted arithmetic mean ``sum w_i e_i / sum w_i``: valid under any dependence."""
    if not e_values or len(e_values) != len(weights):
        raise InvalidArgument("e_merge needs equally many e-values and weights")
    numerator = 0.0
    denominator = 0.0
    for e, w in zip(e_values, weights, strict=True):
        if w < 0.0 or not math.isfinite(e) or e < 0.0:
            raise InvalidArgument("e-values must be finite >= 0 and weights >= 0")
        numerator += w * e
        denominator += w
    if not denominator > 0.0:
        raise InvalidArgument("weights must have a positive sum")
    return numerator / denominator


def e_merge_equal(e_values: Sequence[float]) -> float:
    """Equal-weight mean of e-values."""
    if not e_values:
        raise InvalidArgument("e_merge_equal needs at least one e-value")
    return e_merge(e_values, [1.0] * len(e_values))


def e_product(e_values: Sequence[float]) -> float:
    """Product of e-values; only valid for e-processes on disjoint filtrations."""
    if not e_values:
        raise InvalidArgument("e_product needs at least one e-value")
    out = 1.0
    for e in e_values:
        if not math.isfinite(e) or e <= 0.0:
            raise InvalidArgument("e_product needs finite e-values > 0")
        if out > _DBL_MAX / e:
            raise InvalidArgument("e_product overflows")
        out *= e
    return out


# --------------------------------------------------------------------------------------------
# Legacy per-accuracy e-values (spec 30 §2.8; library only, unused by the V2 claim path)


class LegacyEValueFn(enum.Enum):
    """The legacy e-value functions of ``oracle.rs``."""

    LIKELIHOOD_RATIO = "likelihood_ratio"
    FIXED = "fixed"
    MIXTURE_BINARY_MARTINGALE = "mixture_binary_martingale"


def verify_legacy_nullspec(domain: str, null_accuracy: float) -> None:
    """Accuracy-oracle preconditions: a non-blank domain and ``0 < null_accuracy <= 1``."""
    if not domain.strip():
        raise InvalidArgument("nullspec domain must not be blank")
    if not (math.isfinite(null_accuracy) and 0.0 < null_accuracy <= 1.0):
        raise InvalidArgument("null accuracy must satisfy 0 < null_accuracy <= 1")


def compute_legacy_e_value(
    fn: LegacyEValueFn,
    null_accuracy: float,
    observed_accuracy: float,
    *,
    n_observations: int = 1,
    fixed_value: float = 1.0,
    grid: Sequence[float] = (),
) -> float:
    """Legacy per-accuracy e-value: ``max(0, acc/null)^n``, a fixed value, or a grid mixture.

    NaN accuracy gives 0 for the likelihood ratio (the reference's NaN-ignoring ``max``).
    """
    if fn is LegacyEValueFn.FIXED:
        return fixed_value
    if fn is LegacyEValueFn.LIKELIHOOD_RATIO:
        if null_accuracy == 0.0:
            return 0.0
        ratio = observed_accuracy / null_accuracy
        ratio = 0.0 if math.isnan(ratio) else max(ratio, 0.0)
        try:
            value = ratio**n_observations
        except OverflowError:
            return _DBL_MAX
        return min(max(value, 0.0), _DBL_MAX)
    if not grid or not (0.0 < null_accuracy < 1.0):
        return 0.0
    clamped = min(max(observed_accuracy, 0.0), 1.0)
    k = 1 if clamped >= 0.5 else 0
    total = 0.0
    for p in grid:
        term = (p / null_accuracy) ** k * ((1.0 - p) / (1.0 - null_accuracy)) ** (1 - k)
        if not math.isfinite(term) or term < 0.0:
            return 0.0
        total += term
    return min(max(total / len(grid), 0.0), _DBL_MAX)
