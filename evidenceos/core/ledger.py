"""The conservation ledger and the shared topic/holdout budget pools, as immutable values.

Source: spec 30 §1 (formulas, state, operations, pools, per-claim wiring), spec 20 §6.3
(execution accounting) and DESIGN §3/§5 (one transaction per execution, certification reachable).

A ledger meters what a claim has learnt about the holdout in bits (``k_bits_total``) and turns
that into the certification barrier ``2^k / alpha``: ``alpha' = alpha * 2^-k``, and a claim
certifies when its wealth high-water mark ``w_max`` clears ``1 / alpha'``. All of it is evaluated
in log space, exactly as the reference does, so barrier values agree to the last bit with it.

Every value here is a frozen dataclass and every operation returns a new value. That is what
makes "one transaction, rollback on error" trivial for the store: load, apply, write the result
at commit; on any error the loaded value is simply dropped. Overruns still behave like the
reference's sticky freeze: the raised :class:`LedgerBudgetExhausted` / :class:`PoolBudgetExhausted`
carries the frozen value the pure algebra produces, and committing it is the caller's deliberate
choice (spec 30 §1.4 Port line).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from evidenceos.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "DBL_MAX",
    "DEFAULT_DEPENDENCE_MULTIPLIER",
    "DEFAULT_TTL_ESCALATION_TAX",
    "EPS",
    "KOUT_CAP_CBRN_BITS",
    "KOUT_CAP_LEGACY_BITS",
    "LN2",
    "BudgetPool",
    "ConservationLedger",
    "ExecutionCharge",
    "LedgerBudgetExhausted",
    "LedgerEvent",
    "LedgerFrozen",
    "LedgerSnapshot",
    "PoolBudgetExhausted",
    "PoolFrozen",
    "TranscriptReplay",
    "alpha_prime",
    "barrier_threshold",
    "certification_barrier",
    "compute_dependence_multiplier",
    "compute_execution_charge",
    "compute_kout_charge_bits",
    "compute_worst_case_reservation_bits",
    "log_alpha_prime",
    "log_alpha_target",
    "replay_transcript",
]

EPS = sys.float_info.epsilon
"""Slack on every budget comparison: ``next > budget + EPS`` overruns (spec 30 §1.3)."""

LN2 = math.log(2.0)
"""``ln 2``; ``k`` bits scale alpha by ``exp(-k * LN2)``."""

DBL_MAX = sys.float_info.max
"""Largest finite double; settling ``e`` with ``wealth > DBL_MAX / e`` is refused as overflow."""

DEFAULT_DEPENDENCE_MULTIPLIER = 2.0
"""Default dependence tax ``M`` (spec 30 §1.5); the daemon refuses anything below 2.0."""

DEFAULT_TTL_ESCALATION_TAX = 1.5
"""Extra tax factor for a heavy claim run on an expired, escalated oracle (spec 30 §2.5)."""

KOUT_CAP_LEGACY_BITS = 0
"""Output-bit cap of the legacy symbol schema: the symbol is the oracle answer itself."""

KOUT_CAP_CBRN_BITS = 3301
"""Output-bit cap of the CBRN structured schema (spec 20 §8.3: ``k_out_max`` = 3301 bits)."""


# --------------------------------------------------------------------------------------------
# Errors


class LedgerFrozen(FailedPrecondition):
    """The ledger is frozen: no charge or settlement is accepted, ever (spec 30 §1.3)."""


class LedgerBudgetExhausted(LedgerFrozen):
    """A charge would overrun a budget; nothing was committed.

    ``ledger`` is the value the reference would now hold (frozen, with the ``freeze_*`` event
    appended). Per DESIGN §3 an error rolls back, so callers drop it unless they commit the freeze
    on purpose (e.g. an incident after the guest ran).
    """

    def __init__(self, message: str, ledger: ConservationLedger) -> None:
        super().__init__(message)
        self.ledger = ledger


class PoolFrozen(FailedPrecondition):
    """The topic or holdout pool is frozen; every later reserve, charge or settle fails."""


class PoolBudgetExhausted(PoolFrozen):
    """A reserve or charge would overrun the pool; ``pool`` is the frozen value (spec 30 §1.4)."""

    def __init__(self, message: str, pool: BudgetPool) -> None:
        super().__init__(message)
        self.pool = pool


# --------------------------------------------------------------------------------------------
# Formulas (spec 30 §1.1), always in log space


def log_alpha_target(alpha: float) -> float:
    """``ln alpha``."""
    return math.log(alpha)


def log_alpha_prime(alpha: float, k_bits_total: float) -> float:
    """``ln alpha' = ln alpha - k * ln 2``."""
    return log_alpha_target(alpha) - k_bits_total * LN2


def alpha_prime(alpha: float, k_bits_total: float) -> float:
    """``alpha' = alpha * 2^-k`` computed as ``exp(ln alpha')``, bit for bit like the reference."""
    return math.exp(log_alpha_prime(alpha, k_bits_total))


def barrier_threshold(alpha: float, k_bits_total: float) -> float:
    """Log barrier ``-ln alpha' = -ln alpha + k ln 2``; certify iff ``ln w_max >=`` this."""
    return -log_alpha_prime(alpha, k_bits_total)


def certification_barrier(alpha: float, k_bits_total: float) -> float:
    """``2^k / alpha`` as ``exp(barrier_threshold)``; e.g. alpha 0.05, k 8 -> 5120.000000000001."""
    return math.exp(barrier_threshold(alpha, k_bits_total))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_non_negative(*values: object) -> bool:
    for v in values:
        if type(v) is float:  # the common case, checked without the isinstance chain
            if not (v >= 0.0 and v != _INF):  # NaN fails ``>=``
                return False
        elif not (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v >= 0.0
        ):
            return False
    return True


_INF = math.inf
_D = TypeVar("_D")


def unchecked_deriver(cls: type[_D]) -> Callable[[_D, Mapping[str, Any]], _D]:
    """``derive(value, changes)``: ``dataclasses.replace(value, **changes)`` for a frozen, slotted
    dataclass ``cls``, without running ``__init__``/``__post_init__``.

    Only for a value's own transitions whose result satisfies the class invariants by
    construction (the fields ``__post_init__`` checks are copied from an already validated value,
    or set to values the transition has checked); everything built from outside data still goes
    through the constructor. An unknown field name raises AttributeError, as the slots allow no
    other attribute; a value of a subclass goes through ``replace``.
    """
    names = tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    lines = [
        "def derive(self, changes):",
        "    if type(self) is not _cls:",  # a subclass may have fields and checks of its own
        "        return _replace(self, **changes)",
        "    new = _new(_cls)",
    ]
    lines += [f"    _set(new, {n!r}, self.{n})" for n in names]
    lines += ["    for name, value in changes.items():", "        _set(new, name, value)"]
    lines += ["    return new"]
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": cls,
        "_replace": replace,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the class's own field names
    derive: Callable[[_D, Mapping[str, Any]], _D] = namespace["derive"]
    return derive


def _valid_budget(budget: float | None) -> float | None:
    """The reference's budget setters silently treat NaN, +-inf and negatives as "unlimited"."""
    if budget is None or not _finite_non_negative(budget):
        return None
    return float(budget)


# --------------------------------------------------------------------------------------------
# Ledger


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One ledger event ``{kind, bits, meta}``; wealth events have ``bits == 0`` (spec 30 §1.2)."""

    kind: str
    bits: float
    meta: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, the reference's serde field names."""
        return {"kind": self.kind, "bits": self.bits, "meta": self.meta}

    @classmethod
    def from_json(cls, data: Any) -> LedgerEvent:
        """Parse :meth:`to_json` output; malformed input raises InvalidArgument."""
        if not isinstance(data, Mapping) or set(data) != {"kind", "bits", "meta"}:
            raise InvalidArgument("ledger event must have exactly kind, bits and meta")
        kind, bits = data["kind"], data["bits"]
        if not isinstance(kind, str) or not _is_number(bits):
            raise InvalidArgument("ledger event kind must be a string and bits a number")
        return cls(kind=kind, bits=float(bits), meta=data["meta"])


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """The numbers a capsule and ``state.json`` show for a ledger (spec 30 §1.3 ``snapshot()``)."""

    alpha: float
    log_alpha_target: float
    alpha_prime: float
    log_alpha_prime: float
    k_bits_total: float
    barrier_threshold: float
    barrier: float
    wealth: float
    w_max: float
    epsilon_total: float
    delta_total: float
    access_credit_spent: float
    k_bits_budget: float | None
    access_credit_budget: float | None
    epsilon_budget: float | None
    delta_budget: float | None
    frozen: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, fields in the reference's order."""
        return {
            "alpha": self.alpha,
            "log_alpha_target": self.log_alpha_target,
            "alpha_prime": self.alpha_prime,
            "log_alpha_prime": self.log_alpha_prime,
            "k_bits_total": self.k_bits_total,
            "barrier_threshold": self.barrier_threshold,
            "barrier": self.barrier,
            "wealth": self.wealth,
            "w_max": self.w_max,
            "epsilon_total": self.epsilon_total,
            "delta_total": self.delta_total,
            "access_credit_spent": self.access_credit_spent,
            "k_bits_budget": self.k_bits_budget,
            "access_credit_budget": self.access_credit_budget,
            "epsilon_budget": self.epsilon_budget,
            "delta_budget": self.delta_budget,
            "frozen": self.frozen,
        }


LEDGER_FLOAT_FIELDS = (
    "alpha",
    "k_bits_total",
    "epsilon_total",
    "delta_total",
    "access_credit_spent",
    "wealth",
    "w_max",
)
LEDGER_BUDGET_FIELDS = ("k_bits_budget", "access_credit_budget", "epsilon_budget", "delta_budget")
_LEDGER_KEYS = frozenset((*LEDGER_FLOAT_FIELDS, *LEDGER_BUDGET_FIELDS, "events", "frozen"))


@dataclass(frozen=True, slots=True)
class ConservationLedger:
    """Per-claim conservation ledger (spec 30 §1.2-§1.3); every operation returns a new ledger.

    Construction checks only ``0 < alpha < 1`` (and that budgets are ``None`` or finite >= 0),
    like the reference constructor: other numeric oddities are left for
    :meth:`certification_guard_failure`, which turns them into DEFER + 9206 instead of a crash.
    Use :meth:`create` to get the reference's lenient budget handling.
    """

    alpha: float
    k_bits_total: float = 0.0
    epsilon_total: float = 0.0
    delta_total: float = 0.0
    access_credit_spent: float = 0.0
    wealth: float = 1.0
    w_max: float = 1.0
    events: tuple[LedgerEvent, ...] = ()
    k_bits_budget: float | None = None
    access_credit_budget: float | None = None
    epsilon_budget: float | None = None
    delta_budget: float | None = None
    frozen: bool = False

    def __post_init__(self) -> None:
        if not (_is_number(self.alpha) and 0.0 < self.alpha < 1.0):
            raise InvalidArgument("alpha must satisfy 0 < alpha < 1")
        for name in LEDGER_BUDGET_FIELDS:
            budget = getattr(self, name)
            if budget is not None and not _finite_non_negative(budget):
                raise InvalidArgument(f"{name} must be finite and >= 0, or None")

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        alpha: float,
        *,
        k_bits_budget: float | None = None,
        access_credit_budget: float | None = None,
        epsilon_budget: float | None = None,
        delta_budget: float | None = None,
    ) -> ConservationLedger:
        """A fresh ledger; invalid budgets (NaN, +-inf, < 0) mean "unlimited" (spec 30 §1.2)."""
        return _derive_ledger(
            cls(alpha=alpha),
            {
                "k_bits_budget": _valid_budget(k_bits_budget),
                "access_credit_budget": _valid_budget(access_credit_budget),
                "epsilon_budget": _valid_budget(epsilon_budget),
                "delta_budget": _valid_budget(delta_budget),
            },
        )

    def with_budget(self, budget: float | None) -> ConservationLedger:
        """Set the k-bits and access-credit budgets to the same value (``with_budget``)."""
        valid = _valid_budget(budget)
        return _derive_ledger(self, {"k_bits_budget": valid, "access_credit_budget": valid})

    def with_budgets(
        self, k_bits_budget: float | None, access_credit_budget: float | None
    ) -> ConservationLedger:
        """Set the k-bits and access-credit budgets separately, dropping invalid ones."""
        return _derive_ledger(
            self,
            {
                "k_bits_budget": _valid_budget(k_bits_budget),
                "access_credit_budget": _valid_budget(access_credit_budget),
            },
        )

    def with_dp_budgets(
        self, epsilon_budget: float | None, delta_budget: float | None
    ) -> ConservationLedger:
        """Set the (epsilon, delta) budgets, dropping invalid ones."""
        return _derive_ledger(
            self,
            {
                "epsilon_budget": _valid_budget(epsilon_budget),
                "delta_budget": _valid_budget(delta_budget),
            },
        )

    # -- derived values ----------------------------------------------------------------------

    @property
    def log_alpha_target(self) -> float:
        """``ln alpha``."""
        return log_alpha_target(self.alpha)

    @property
    def log_alpha_prime(self) -> float:
        """``ln alpha - k ln 2``."""
        return log_alpha_prime(self.alpha, self.k_bits_total)

    @property
    def alpha_prime(self) -> float:
        """``alpha * 2^-k``; DP charges never change it (only ``k_bits_total`` does)."""
        return alpha_prime(self.alpha, self.k_bits_total)

    @property
    def barrier_threshold(self) -> float:
        """``-ln alpha'``; the log-space certification barrier."""
        return barrier_threshold(self.alpha, self.k_bits_total)

    @property
    def barrier(self) -> float:
        """``2^k / alpha``."""
        return certification_barrier(self.alpha, self.k_bits_total)

    def snapshot(self) -> LedgerSnapshot:
        """Every number a capsule reports about this ledger."""
        return LedgerSnapshot(
            alpha=self.alpha,
            log_alpha_target=self.log_alpha_target,
            alpha_prime=self.alpha_prime,
            log_alpha_prime=self.log_alpha_prime,
            k_bits_total=self.k_bits_total,
            barrier_threshold=self.barrier_threshold,
            barrier=self.barrier,
            wealth=self.wealth,
            w_max=self.w_max,
            epsilon_total=self.epsilon_total,
            delta_total=self.delta_total,
            access_credit_spent=self.access_credit_spent,
            k_bits_budget=self.k_bits_budget,
            access_credit_budget=self.access_credit_budget,
            epsilon_budget=self.epsilon_budget,
            delta_budget=self.delta_budget,
            frozen=self.frozen,
        )

    # -- certification -----------------------------------------------------------------------

    def certification_guard_failure(self) -> str | None:
        """The first failing numeric guard (``invalid_alpha``, ``invalid_w_max``, ...) or None.

        A failure makes the decision DEFER with reason 9206 (spec 30 §7 steps 11-12).
        """
        if not (math.isfinite(self.alpha) and 0.0 < self.alpha < 1.0):
            return "invalid_alpha"
        if not math.isfinite(self.k_bits_total) or self.k_bits_total < 0.0:
            return "invalid_k_bits_total"
        if not (math.isfinite(self.w_max) and self.w_max > 0.0):
            return "invalid_w_max"
        if not math.isfinite(self.barrier_threshold):
            return "invalid_barrier_threshold"
        return None

    def can_certify(self) -> bool:
        """``ln(w_max) >= -ln alpha + k ln 2`` — the high-water mark, not current wealth, counts.

        Equality certifies (spec 30 §1.3: alpha 0.5, settle 8, charge 2 bits, settle 0.1).
        """
        if self.certification_guard_failure() is not None:
            return False
        log_w_max = math.log(self.w_max)
        threshold = self.barrier_threshold
        if not math.isfinite(log_w_max) or math.isnan(threshold):
            return False
        return log_w_max >= threshold

    # -- charges -----------------------------------------------------------------------------

    def charge_all(
        self,
        k_bits: float,
        epsilon: float,
        delta: float,
        access_credit: float,
        kind: str,
        meta: Any = None,
    ) -> ConservationLedger:
        """Charge k-bits, (epsilon, delta) and access credit at once (spec 30 §1.3 ``charge_all``).

        Frozen -> :class:`LedgerFrozen`; a negative or non-finite argument -> InvalidArgument
        without freezing; the first budget overrun (k, access, epsilon, delta, in that order,
        strict ``next > budget + EPS``) -> :class:`LedgerBudgetExhausted` carrying the frozen
        ledger. Nothing of the charge itself is committed on any error.
        """
        if self.frozen:
            raise LedgerFrozen("ledger is frozen")
        if not _finite_non_negative(k_bits, epsilon, delta, access_credit):
            raise InvalidArgument("ledger charges must be finite and >= 0")
        next_k = self.k_bits_total + k_bits
        next_epsilon = self.epsilon_total + epsilon
        next_delta = self.delta_total + delta
        next_access = self.access_credit_spent + access_credit
        if not all(math.isfinite(v) for v in (next_k, next_epsilon, next_delta, next_access)):
            raise InvalidArgument("ledger totals would overflow")
        checks = (
            (self.k_bits_budget, next_k, "freeze_budget_exhausted", "overrun_bits", "k-bits"),
            (
                self.access_credit_budget,
                next_access,
                "freeze_access_credit_exhausted",
                "overrun_credit",
                "access credit",
            ),
            (
                self.epsilon_budget,
                next_epsilon,
                "freeze_epsilon_budget_exhausted",
                "overrun_epsilon",
                "epsilon",
            ),
            (
                self.delta_budget,
                next_delta,
                "freeze_delta_budget_exhausted",
                "overrun_delta",
                "delta",
            ),
        )
        for budget, nxt, event_kind, overrun_key, label in checks:
            if budget is not None and nxt > budget + EPS:
                frozen = _derive_ledger(
                    self,
                    {
                        "frozen": True,
                        "events": (
                            *self.events,
                            LedgerEvent(event_kind, 0.0, {overrun_key: nxt - budget}),
                        ),
                    },
                )
                raise LedgerBudgetExhausted(f"ledger {label} budget exhausted", frozen)
        return _derive_ledger(
            self,
            {
                "k_bits_total": next_k,
                "epsilon_total": next_epsilon,
                "delta_total": next_delta,
                "access_credit_spent": next_access,
                "events": (*self.events, LedgerEvent(kind, float(k_bits), _meta(meta))),
            },
        )

    def charge(self, k_bits: float, kind: str, meta: Any = None) -> ConservationLedger:
        """Charge ``k`` bits and the same amount of access credit."""
        return self.charge_all(k_bits, 0.0, 0.0, k_bits, kind, meta)

    def charge_kout_bits(self, kout_bits: float) -> ConservationLedger:
        """Charge output bits as k and access credit (event ``structured_output_kout``)."""
        return self.charge_all(
            kout_bits,
            0.0,
            0.0,
            kout_bits,
            "structured_output_kout",
            {"kout_bits": kout_bits},
        )

    def charge_dp(
        self, epsilon: float, delta: float, kind: str, meta: Any = None
    ) -> ConservationLedger:
        """Charge only (epsilon, delta); alpha' is unaffected."""
        return self.charge_all(0.0, epsilon, delta, 0.0, kind, meta)

    def charge_execution(self, charge: ExecutionCharge) -> ConservationLedger:
        """Apply one execution's charges exactly as the daemon does (spec 30 §1.5).

        First the taxed transcript bits (event ``structured_output`` with the reference's meta),
        then the output bits through :meth:`charge_kout_bits` (also when they are 0).
        """
        charged = self.charge_all(
            charge.taxed_k_bits,
            0.0,
            0.0,
            charge.taxed_k_bits,
            "structured_output",
            {  # keys in sorted order, as in the ledger's JSON
                "dependence_multiplier": charge.dependence_multiplier,
                "post_canonical_bits": charge.post_canonical_bits,
                "taxed_k_bits": charge.taxed_k_bits,
            },
        )
        return charged.charge_kout_bits(charge.kout_bits)

    # -- wealth ------------------------------------------------------------------------------

    def settle_e_value(self, e_value: float, kind: str, meta: Any = None) -> ConservationLedger:
        """Multiply wealth by ``e`` and raise ``w_max``; ``e = 0`` zeroes wealth for good."""
        if self.frozen:
            raise LedgerFrozen("ledger is frozen")
        if not _finite_non_negative(e_value):
            raise InvalidArgument("e-value must be finite and >= 0")
        if e_value > 0.0 and self.wealth > DBL_MAX / e_value:
            raise InvalidArgument("e-value settlement would overflow wealth")
        wealth = self.wealth * e_value
        event_meta = _meta(meta)
        if isinstance(event_meta, dict):
            event_meta = _sorted_meta({**event_meta, "e_value": e_value})
        return _derive_ledger(
            self,
            {
                "wealth": wealth,
                "w_max": wealth if wealth > self.w_max else self.w_max,
                "events": (*self.events, LedgerEvent(kind, 0.0, event_meta)),
            },
        )

    def scale_wealth(self, factor: float) -> ConservationLedger:
        """Scale current wealth, ``w_max`` untouched; clamps a non-approved claim's e to 1."""
        if self.frozen:
            raise LedgerFrozen("ledger is frozen")
        if not _finite_non_negative(factor):
            raise InvalidArgument("wealth scale must be finite and >= 0")
        wealth = self.wealth * factor
        if not math.isfinite(wealth):
            raise InvalidArgument("wealth scale would overflow")
        return _derive_ledger(self, {"wealth": wealth})

    def freeze(self, kind: str, meta: Any = None) -> ConservationLedger:
        """Freeze unconditionally (incidents); a frozen ledger is never unfrozen."""
        return _derive_ledger(
            self, {"frozen": True, "events": (*self.events, LedgerEvent(kind, 0.0, _meta(meta)))}
        )

    # -- serialisation -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict with the reference's serde field names."""
        return {
            "alpha": self.alpha,
            "k_bits_total": self.k_bits_total,
            "epsilon_total": self.epsilon_total,
            "delta_total": self.delta_total,
            "access_credit_spent": self.access_credit_spent,
            "wealth": self.wealth,
            "w_max": self.w_max,
            "events": [event.to_json() for event in self.events],
            "k_bits_budget": self.k_bits_budget,
            "access_credit_budget": self.access_credit_budget,
            "epsilon_budget": self.epsilon_budget,
            "delta_budget": self.delta_budget,
            "frozen": self.frozen,
        }

    @classmethod
    def from_json(cls, data: Any) -> ConservationLedger:
        """Parse :meth:`to_json` output (integers accepted for floats, as RFC 8785 writes them)."""
        if not isinstance(data, Mapping) or set(data) != _LEDGER_KEYS:
            raise InvalidArgument("ledger JSON must have exactly the ledger fields")
        floats: dict[str, float] = {}
        for name in LEDGER_FLOAT_FIELDS:
            value = data[name]
            if not _is_number(value):
                raise InvalidArgument(f"ledger field {name} must be a number")
            floats[name] = float(value)
        budgets: list[float | None] = []
        for name in LEDGER_BUDGET_FIELDS:
            value = data[name]
            if value is not None and not _is_number(value):
                raise InvalidArgument(f"ledger field {name} must be a number or null")
            budgets.append(None if value is None else float(value))
        events, frozen = data["events"], data["frozen"]
        if not isinstance(events, list) or not isinstance(frozen, bool):
            raise InvalidArgument("ledger events must be a list and frozen a boolean")
        return cls(
            **floats,
            k_bits_budget=budgets[0],
            access_credit_budget=budgets[1],
            epsilon_budget=budgets[2],
            delta_budget=budgets[3],
            events=tuple(LedgerEvent.from_json(e) for e in events),
            frozen=frozen,
        )


#: The ledger's own transitions: alpha and the budgets, all ``__post_init__`` checks, are either
#: copied from the validated ledger or set from ``_valid_budget``.
_derive_ledger = unchecked_deriver(ConservationLedger)


def _meta(meta: Any) -> Any:
    """Event meta defaults to an empty object; mappings are copied so callers cannot alias them."""
    if meta is None:
        return {}
    if isinstance(meta, Mapping):
        return dict(meta)
    return meta


def _sorted_meta(meta: dict[Any, Any]) -> dict[Any, Any]:
    """``meta`` with string keys in sorted order, the order of every JSON form of the ledger: a
    ledger decoded from its stored text then equals this one, dicts in the same order."""
    if all(type(key) is str for key in meta):
        return dict(sorted(meta.items()))
    return meta


# --------------------------------------------------------------------------------------------
# Pools (spec 30 §1.4)


_POOL_KEYS = frozenset(
    (
        "k_bits_budget",
        "access_credit_budget",
        "k_bits_spent",
        "access_credit_spent",
        "reserved_k_bits",
        "reserved_access_credit",
        "covariance_charge_total",
        "frozen",
    )
)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class BudgetPool:
    """A shared k-bits / access-credit budget with reservations (topic and holdout pools).

    One algebra serves the reference's ``TopicBudgetPool`` and ``HoldoutBudgetPool`` (the holdout
    pool simply never receives covariance) and its library-only ``JointLeakagePool``. The store
    keys pools (topic id; ``(holdout handle, principal | None)``); the value does not repeat it.

    Reservations are whole bits/credits (``int``): the worst-case reservation of spec 30 §1.5 is
    a ceiling, and integer arithmetic is what makes reserve-then-release restore the pool exactly,
    which float addition would not (``0.1 + 0.2 - 0.2 != 0.1``). Spent amounts stay floats.
    """

    k_bits_budget: float
    access_credit_budget: float
    k_bits_spent: float = 0.0
    access_credit_spent: float = 0.0
    reserved_k_bits: int = 0
    reserved_access_credit: int = 0
    covariance_charge_total: float = 0.0
    frozen: bool = False

    def __post_init__(self) -> None:
        if not _finite_non_negative(self.k_bits_budget, self.access_credit_budget):
            raise InvalidArgument("pool budgets must be finite and >= 0")
        if not _finite_non_negative(
            self.k_bits_spent, self.access_credit_spent, self.covariance_charge_total
        ):
            raise InvalidArgument("pool spent amounts must be finite and >= 0")
        if not (_is_whole(self.reserved_k_bits) and _is_whole(self.reserved_access_credit)):
            raise InvalidArgument("pool reservations must be whole numbers >= 0")

    @property
    def k_bits_remaining(self) -> float:
        """``max(0, budget - spent - reserved)``."""
        return max(0.0, self.k_bits_budget - self.k_bits_spent - self.reserved_k_bits)

    @property
    def access_credit_remaining(self) -> float:
        """``max(0, budget - spent - reserved)`` for access credit."""
        return max(
            0.0, self.access_credit_budget - self.access_credit_spent - self.reserved_access_credit
        )

    def with_budgets(self, k_bits_budget: float, access_credit_budget: float) -> BudgetPool:
        """New budgets (SetHoldoutPoolBudgets); spent, reserved and a freeze are kept."""
        return replace(self, k_bits_budget=k_bits_budget, access_credit_budget=access_credit_budget)

    def _exhausted(self, what: str) -> PoolBudgetExhausted:
        return PoolBudgetExhausted(
            f"pool budget exhausted ({what})", _derive_pool(self, {"frozen": True})
        )

    def reserve(self, k_bits: int, access_credit: int) -> BudgetPool:
        """Hold back a worst-case amount; ``spent + reserved + new`` must fit both budgets."""
        if self.frozen:
            raise PoolFrozen("pool is frozen")
        if not (_is_whole(k_bits) and _is_whole(access_credit)):
            raise InvalidArgument("pool reservations must be whole numbers >= 0")
        next_k = self.reserved_k_bits + k_bits
        next_access = self.reserved_access_credit + access_credit
        if (
            self.k_bits_spent + next_k > self.k_bits_budget + EPS
            or self.access_credit_spent + next_access > self.access_credit_budget + EPS
        ):
            raise self._exhausted("reserve")
        return _derive_pool(
            self, {"reserved_k_bits": next_k, "reserved_access_credit": next_access}
        )

    def release(self, k_bits: int, access_credit: int) -> BudgetPool:
        """Give back a reservation unused; it must not exceed what is reserved.

        A frozen pool still accepts releases (the reference does too): returning a hold never
        spends anything.
        """
        if not (_is_whole(k_bits) and _is_whole(access_credit)):
            raise InvalidArgument("pool releases must be whole numbers >= 0")
        if k_bits > self.reserved_k_bits or access_credit > self.reserved_access_credit:
            raise InvalidArgument("release exceeds the pool's reservation")
        return _derive_pool(
            self,
            {
                "reserved_k_bits": self.reserved_k_bits - k_bits,
                "reserved_access_credit": self.reserved_access_credit - access_credit,
            },
        )

    def charge(self, k_bits: float, access_credit: float, covariance: float = 0.0) -> BudgetPool:
        """Spend directly; outstanding reservations are not counted (reference behaviour)."""
        if self.frozen:
            raise PoolFrozen("pool is frozen")
        if not _finite_non_negative(k_bits, access_credit, covariance):
            raise InvalidArgument("pool charges must be finite and >= 0")
        next_k = self.k_bits_spent + k_bits
        next_access = self.access_credit_spent + access_credit
        next_cov = self.covariance_charge_total + covariance
        if not all(math.isfinite(v) for v in (next_k, next_access, next_cov)):
            raise InvalidArgument("pool totals would overflow")
        if next_k > self.k_bits_budget + EPS or next_access > self.access_credit_budget + EPS:
            raise self._exhausted("charge")
        return _derive_pool(
            self,
            {
                "k_bits_spent": next_k,
                "access_credit_spent": next_access,
                "covariance_charge_total": next_cov,
            },
        )

    def settle(
        self,
        reserved_k_bits: int,
        reserved_access_credit: int,
        actual_k_bits: float,
        actual_access_credit: float,
        covariance: float = 0.0,
    ) -> BudgetPool:
        """Turn a reservation into the actual spend: drop the hold, then :meth:`charge` the actual.

        The actual amounts may not exceed the reservation (+EPS): a reservation is a promise.
        """
        if not _finite_non_negative(actual_k_bits, actual_access_credit, covariance):
            raise InvalidArgument("pool settlement amounts must be finite and >= 0")
        if (
            actual_k_bits > reserved_k_bits + EPS
            or actual_access_credit > reserved_access_credit + EPS
        ):
            raise InvalidArgument("actual charge exceeds its reservation")
        return self.release(reserved_k_bits, reserved_access_credit).charge(
            actual_k_bits, actual_access_credit, covariance
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict; reservations are integers."""
        return {
            "k_bits_budget": self.k_bits_budget,
            "access_credit_budget": self.access_credit_budget,
            "k_bits_spent": self.k_bits_spent,
            "access_credit_spent": self.access_credit_spent,
            "reserved_k_bits": self.reserved_k_bits,
            "reserved_access_credit": self.reserved_access_credit,
            "covariance_charge_total": self.covariance_charge_total,
            "frozen": self.frozen,
        }

    @classmethod
    def from_json(cls, data: Any) -> BudgetPool:
        """Parse :meth:`to_json` output; malformed input raises InvalidArgument."""
        if not isinstance(data, Mapping) or set(data) != _POOL_KEYS:
            raise InvalidArgument("pool JSON must have exactly the pool fields")
        floats: dict[str, float] = {}
        for name in (
            "k_bits_budget",
            "access_credit_budget",
            "k_bits_spent",
            "access_credit_spent",
            "covariance_charge_total",
        ):
            if not _is_number(data[name]):
                raise InvalidArgument(f"pool field {name} must be a number")
            floats[name] = float(data[name])
        if not isinstance(data["frozen"], bool):
            raise InvalidArgument("pool field frozen must be a boolean")
        return cls(
            **floats,
            reserved_k_bits=data["reserved_k_bits"],
            reserved_access_credit=data["reserved_access_credit"],
            frozen=data["frozen"],
        )


#: The pool's own transitions (reserve, release, charge, freeze): new reservations are whole and
#: within what is reserved, new spent amounts finite and >= 0, as ``__post_init__`` demands.
#: ``with_budgets`` takes outside values and keeps the validating constructor.
_derive_pool = unchecked_deriver(BudgetPool)


# --------------------------------------------------------------------------------------------
# Execution accounting (spec 30 §1.5, spec 20 §6.3)


def compute_dependence_multiplier(
    base: float = DEFAULT_DEPENDENCE_MULTIPLIER,
    ttl_escalation_tax: float = DEFAULT_TTL_ESCALATION_TAX,
    *,
    ttl_escalated: bool = False,
) -> float:
    """Effective dependence tax ``M``: ``base`` (finite, >= 2), times the TTL tax when escalated."""
    if not (_finite_non_negative(base) and base >= 2.0):
        raise InvalidArgument("dependence tax multiplier must be finite and >= 2.0")
    if not (_finite_non_negative(ttl_escalation_tax) and ttl_escalation_tax >= 1.0):
        raise InvalidArgument("TTL escalation tax must be finite and >= 1.0")
    return base * ttl_escalation_tax if ttl_escalated else float(base)


def compute_kout_charge_bits(
    kout_cap_bits: int, output_len_bytes: int, bits_per_call: float, oracle_calls: int
) -> float:
    """Output bits charged for one execution (our decision; docs/decisions.md, spec 30 §7).

    ``kout = min(kout_cap, 8 * len(canonical output), bits_per_call * max(oracle_calls, 1))``.

    The guest is deterministic and committed before it runs; the only holdout-dependent input it
    ever sees is its oracle transcript. By data processing, its output cannot reveal more about
    the holdout than the transcript (already charged, taxed) nor more than its own length. The
    reference charges the schema cap outright (3301 bits for CBRN), which puts every structured
    claim's barrier beyond any finite e-value; this bound keeps the charge sound and lets strong
    evidence certify. Legacy symbols have a cap of 0, as in the reference.
    """
    if not (_is_whole(kout_cap_bits) and _is_whole(output_len_bytes) and _is_whole(oracle_calls)):
        raise InvalidArgument("kout cap, output length and oracle calls must be whole numbers")
    if not (_finite_non_negative(bits_per_call) and bits_per_call > 0.0):
        raise InvalidArgument("bits per call must be finite and > 0")
    transcript_bits = bits_per_call * max(oracle_calls, 1)
    return float(min(float(kout_cap_bits), 8.0 * output_len_bytes, transcript_bits))


def compute_worst_case_reservation_bits(
    bits_per_call: float,
    max_oracle_calls: int,
    dependence_multiplier: float,
    kout_cap_bits: int,
) -> int:
    """Whole-bit worst case reserved in the topic and holdout pools before the guest runs.

    ``ceil(bits_per_call * max_calls * M) + min(kout_cap, ceil(bits_per_call * max_calls))``:
    the reference's formula with the output term bounded the same way as
    :func:`compute_kout_charge_bits`, so the actual settlement never exceeds it.
    """
    if not (_is_whole(max_oracle_calls) and max_oracle_calls >= 1 and _is_whole(kout_cap_bits)):
        raise InvalidArgument("max oracle calls must be >= 1 and the kout cap a whole number")
    if not (_finite_non_negative(bits_per_call, dependence_multiplier) and bits_per_call > 0.0):
        raise InvalidArgument("bits per call and multiplier must be finite, bits per call > 0")
    transcript = bits_per_call * max_oracle_calls
    return math.ceil(transcript * dependence_multiplier) + min(kout_cap_bits, math.ceil(transcript))


@dataclass(frozen=True, slots=True)
class ExecutionCharge:
    """What one execution costs: taxed transcript bits plus output bits (spec 30 §1.5)."""

    post_canonical_bits: float
    """``log2(num_symbols) * max(oracle_calls, 1)`` — a run with no oracle call pays for one."""
    dependence_multiplier: float
    taxed_k_bits: float
    """``post_canonical_bits * M``."""
    covariance_bits: float
    """``taxed - post_canonical``: the dependence-tax share, tracked by the topic pool."""
    kout_bits: float

    @property
    def total_k_bits(self) -> float:
        """``taxed + kout``: what pools settle and what the principal's credit is charged on."""
        return self.taxed_k_bits + self.kout_bits

    @property
    def principal_k_bits(self) -> int:
        """``ceil(max(0, taxed + kout))``, the k term of the credit charge (spec 30 §5.6)."""
        return math.ceil(max(0.0, self.total_k_bits))


def compute_execution_charge(
    bits_per_call: float,
    oracle_calls: int,
    dependence_multiplier: float,
    kout_bits: float = 0.0,
) -> ExecutionCharge:
    """The execution's charge from the transcript length, tax and output bits (spec 30 §1.5)."""
    if not _is_whole(oracle_calls):
        raise InvalidArgument("oracle calls must be a whole number >= 0")
    if not _finite_non_negative(bits_per_call, dependence_multiplier, kout_bits):
        raise InvalidArgument("charge inputs must be finite and >= 0")
    post = bits_per_call * max(oracle_calls, 1)
    taxed = post * dependence_multiplier
    return ExecutionCharge(
        post_canonical_bits=post,
        dependence_multiplier=float(dependence_multiplier),
        taxed_k_bits=taxed,
        covariance_bits=taxed - post,
        kout_bits=float(kout_bits),
    )


# --------------------------------------------------------------------------------------------
# Paper-conformance replay (spec 30 §9)


@dataclass(frozen=True, slots=True)
class TranscriptReplay:
    """The five values the paper kernel's runner prints for a fixture (spec 30 §9)."""

    k_bits_total: float
    alpha_prime: float
    certification_barrier: float
    frozen_transitions: tuple[bool, ...]
    final_frozen: bool
    ledger: ConservationLedger

    def to_json(self) -> dict[str, Any]:
        """The runner's output object (wealth is not part of the contract)."""
        return {
            "k_bits_total": self.k_bits_total,
            "alpha_prime": self.alpha_prime,
            "certification_barrier": self.certification_barrier,
            "frozen_transitions": list(self.frozen_transitions),
            "final_frozen": self.final_frozen,
        }


def replay_transcript(fixture: Mapping[str, Any]) -> TranscriptReplay:
    """Run a paper-conformance fixture through this ledger, reference-runner style.

    Budget overruns commit the freeze (the reference kernel's sticky semantics) and operations on
    a frozen ledger are no-ops, so ``frozen_transitions[i]`` is the frozen flag after op ``i``.
    Unknown op kinds raise InvalidArgument.
    """
    ledger = ConservationLedger.create(
        fixture["alpha"],
        k_bits_budget=fixture.get("k_bits_budget"),
        access_credit_budget=fixture.get("access_credit_budget"),
    )
    transitions: list[bool] = []
    for item in fixture["transcript"]:
        op = item["op"]
        kind = op["kind"]
        try:
            if kind == "charge_all":
                ledger = ledger.charge_all(
                    op["k_bits"],
                    op["epsilon"],
                    op["delta"],
                    op["access_credit"],
                    op["event_kind"],
                    op["meta"],
                )
            elif kind == "charge_kout_bits":
                ledger = ledger.charge_kout_bits(op["kout_bits"])
            elif kind == "settle_e_value":
                ledger = ledger.settle_e_value(op["e_value"], op["event_kind"], op["meta"])
            else:
                raise InvalidArgument(f"unknown transcript op kind: {kind!r}")
        except LedgerBudgetExhausted as exc:
            ledger = exc.ledger
        except LedgerFrozen:
            pass
        transitions.append(ledger.frozen)
    return TranscriptReplay(
        k_bits_total=ledger.k_bits_total,
        alpha_prime=ledger.alpha_prime,
        certification_barrier=ledger.barrier,
        frozen_transitions=tuple(transitions),
        final_frozen=ledger.frozen,
        ledger=ledger,
    )
