"""The kernel's verdict on a settled execution: APPROVE, REJECT or DEFER, with reason codes.

Source: spec 30 §7 steps 10-14 and spec 20 §6.4, as changed by DESIGN §5: certification is
reachable (a fast-lane claim whose e-value clears ``2^k / alpha`` is CERTIFIED), the heavy lane
settles as DEFER pending heavy verification, and a tripped canary turns the stream's verdicts
into REJECT with reason 91.

Order of the rules (the last matching override wins only if it is stricter; see
:func:`compute_decision`):

1. DEFER when the ledger is frozen, a numeric guard fails (+9206), the lane is HEAVY, the PhysHIR
   hash mismatches (+9104) or the magnitude envelope is violated (+9205).
2. A CANARY-lane pulse never certifies: REJECT.
3. Otherwise APPROVE iff ``ledger.can_certify()`` — ``ln w_max >= -ln alpha + k ln 2`` — else
   REJECT.
4. A tripped canary forces REJECT (+91); a policy oracle may force REJECT or DEFER (+its code).

Severity is APPROVE < DEFER < REJECT and overrides only ever move up, so no input can turn a
stricter verdict into a laxer one. A claim that is not approved has its wealth scaled by
``1/e`` when ``e > 1`` (``w_max`` untouched) and reports ``min(e, 1)``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from evidenceos.core.ledger import ConservationLedger
from evidenceos.errors import InvalidArgument

__all__ = [
    "REASON_APPROVE",
    "REASON_CANARY_DRIFT",
    "REASON_DEFER",
    "REASON_LEDGER_NUMERIC_GUARD",
    "REASON_MAGNITUDE_ENVELOPE",
    "REASON_ORACLE_TTL_ESCALATED",
    "REASON_ORACLE_TTL_EXPIRED",
    "REASON_PHYSHIR_MISMATCH",
    "REASON_REJECT",
    "Decision",
    "DecisionInputs",
    "DecisionOutcome",
    "Lane",
    "PolicyOutcome",
    "PolicyVerdict",
    "compute_decision",
    "settle_and_decide",
]

REASON_APPROVE = 1
REASON_REJECT = 2
REASON_DEFER = 3
REASON_CANARY_DRIFT = 91
"""The stream's canary has tripped (spec 30 §4)."""
REASON_PHYSHIR_MISMATCH = 9104
REASON_ORACLE_TTL_EXPIRED = 9202
"""Added when a heavy claim ran on an expired oracle through the escalate-to-heavy policy."""
REASON_ORACLE_TTL_ESCALATED = 9203
"""Reason code of the ``oracle_ttl`` policy receipt in that case (not added to the claim's list)."""
REASON_MAGNITUDE_ENVELOPE = 9205
REASON_LEDGER_NUMERIC_GUARD = 9206


class Decision(enum.IntEnum):
    """Wire values of ``evidenceos.v2.Decision`` (spec 20 §2)."""

    APPROVE = 1
    REJECT = 2
    DEFER = 3


class Lane(enum.Enum):
    """Execution lane of a claim (DESIGN §5, §9); ``metadata.lane == "canary"`` marks a pulse."""

    FAST = "fast"
    HEAVY = "heavy"
    CANARY = "canary"


class PolicyVerdict(enum.Enum):
    """What a policy oracle (WASM veto plugin) says; it can never approve."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    REJECT = "reject"
    DEFER_TO_HEAVY = "defer_to_heavy"


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """One policy oracle's verdict and the reason code it contributes when not PASS (9000-9999).

    A policy oracle that fails to run is reported by the caller as DEFER_TO_HEAVY with its
    fail-closed reason code.
    """

    verdict: PolicyVerdict
    reason_code: int


_SEVERITY = {Decision.APPROVE: 0, Decision.DEFER: 1, Decision.REJECT: 2}
_BASE_REASON = {
    Decision.APPROVE: REASON_APPROVE,
    Decision.REJECT: REASON_REJECT,
    Decision.DEFER: REASON_DEFER,
}


def _stricter(current: Decision, candidate: Decision) -> Decision:
    return candidate if _SEVERITY[candidate] > _SEVERITY[current] else current


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """Everything besides the ledger and the e-value that the verdict depends on."""

    lane: Lane
    canary_frozen: bool = False
    """The stream's canary state after this execution (a pulse updates it first)."""
    physhir_mismatch: bool = False
    envelope_violation: bool = False
    oracle_ttl_escalated: bool = False
    policy_outcomes: Sequence[PolicyOutcome] = ()


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """The verdict, its sorted de-duplicated reason codes, the reported e and the final ledger."""

    decision: Decision
    reason_codes: tuple[int, ...]
    reported_e_value: float
    ledger: ConservationLedger
    canary_incident: bool
    """True when the stream's canary is tripped: log a ``canary_incident`` entry for this run."""

    @property
    def certified(self) -> bool:
        """Only APPROVE certifies."""
        return self.decision is Decision.APPROVE

    @property
    def claim_state_name(self) -> str:
        """Target claim state: APPROVE -> CERTIFIED, DEFER -> FROZEN, REJECT -> REVOKED."""
        return {
            Decision.APPROVE: "CERTIFIED",
            Decision.DEFER: "FROZEN",
            Decision.REJECT: "REVOKED",
        }[self.decision]


def compute_decision(
    ledger: ConservationLedger, e_value: float, inputs: DecisionInputs
) -> DecisionOutcome:
    """Decide a claim whose ledger has already settled ``e_value`` (spec 30 §7 steps 11-13).

    Certification: APPROVE iff the lane is FAST, no DEFER condition holds, the canary is not
    tripped, no policy objects and ``ledger.can_certify()``; for a claim's own fresh ledger that
    is exactly ``e >= 2^k / alpha`` (compared in log space).
    """
    guard = ledger.certification_guard_failure()
    if (
        ledger.frozen
        or guard is not None
        or inputs.lane is Lane.HEAVY
        or inputs.physhir_mismatch
        or inputs.envelope_violation
    ):
        decision = Decision.DEFER
    elif inputs.lane is Lane.CANARY:
        decision = Decision.REJECT
    elif ledger.can_certify():
        decision = Decision.APPROVE
    else:
        decision = Decision.REJECT

    extra: list[int] = []
    if inputs.canary_frozen:
        decision = _stricter(decision, Decision.REJECT)
        extra.append(REASON_CANARY_DRIFT)
    if inputs.physhir_mismatch:
        extra.append(REASON_PHYSHIR_MISMATCH)
    if inputs.envelope_violation:
        extra.append(REASON_MAGNITUDE_ENVELOPE)
    if guard is not None:
        extra.append(REASON_LEDGER_NUMERIC_GUARD)
    if inputs.oracle_ttl_escalated:
        extra.append(REASON_ORACLE_TTL_EXPIRED)
    for policy in inputs.policy_outcomes:
        if policy.verdict is PolicyVerdict.PASS:
            continue
        extra.append(policy.reason_code)
        forced = Decision.REJECT if policy.verdict is PolicyVerdict.REJECT else Decision.DEFER
        decision = _stricter(decision, forced)

    final_ledger = ledger
    reported = e_value
    if decision is not Decision.APPROVE:
        reported = min(e_value, 1.0)
        if e_value > 1.0 and not ledger.frozen:
            final_ledger = ledger.scale_wealth(reported / e_value)
    codes = tuple(sorted({_BASE_REASON[decision], *extra}))
    return DecisionOutcome(
        decision=decision,
        reason_codes=codes,
        reported_e_value=reported,
        ledger=final_ledger,
        canary_incident=inputs.canary_frozen,
    )


def settle_and_decide(
    ledger: ConservationLedger, e_value: float, inputs: DecisionInputs
) -> DecisionOutcome:
    """Settle the execution's e-value (event ``decision``) and decide (spec 30 §7 steps 10-13)."""
    if isinstance(e_value, bool):
        raise InvalidArgument("e-value must be a number")
    settled = ledger.settle_e_value(e_value, "decision", {"e_value_total": e_value})
    return compute_decision(settled, e_value, inputs)
