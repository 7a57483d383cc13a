"""Claim states and the transitions the daemon performs (spec 20 §4.1, DESIGN §5).

Pure: ``verify_transition`` is the single place that says which moves are legal, so every service
path refuses an illegal move with the same status and message.
"""

from __future__ import annotations

import enum

from evidenceos.errors import FailedPrecondition


class ClaimState(enum.Enum):
    """Names and wire numbers of ``ClaimState`` (spec 20 §2)."""

    UNCOMMITTED = 1
    COMMITTED = 2
    SEALED = 3
    EXECUTING = 4
    SETTLED = 5
    CERTIFIED = 6
    REVOKED = 7
    TAINTED = 8
    STALE = 9
    FROZEN = 10


S = ClaimState

_ALLOWED: dict[ClaimState, frozenset[ClaimState]] = {
    S.UNCOMMITTED: frozenset({S.COMMITTED, S.SEALED, S.FROZEN, S.STALE}),
    S.COMMITTED: frozenset({S.COMMITTED, S.SEALED, S.FROZEN}),
    S.SEALED: frozenset({S.EXECUTING, S.STALE, S.FROZEN}),
    S.EXECUTING: frozenset({S.SETTLED, S.STALE, S.FROZEN}),
    S.SETTLED: frozenset({S.CERTIFIED, S.REVOKED, S.FROZEN}),
    S.CERTIFIED: frozenset({S.REVOKED, S.TAINTED, S.FROZEN}),
    S.REVOKED: frozenset({S.TAINTED, S.REVOKED, S.FROZEN}),
    S.TAINTED: frozenset({S.REVOKED, S.TAINTED, S.FROZEN}),
    S.STALE: frozenset({S.SEALED, S.FROZEN}),
    S.FROZEN: frozenset({S.REVOKED, S.TAINTED, S.FROZEN, S.STALE}),
}

#: States in which artifacts can no longer change (spec 20 §3.5 step 4).
LOCKED_FOR_EDITS = frozenset({S.SEALED, S.EXECUTING, S.SETTLED, S.CERTIFIED, S.FROZEN})
#: States that record an executed claim (a capsule exists).
EXECUTED = frozenset({S.CERTIFIED, S.REVOKED, S.TAINTED})


def verify_transition(current: ClaimState, target: ClaimState) -> None:
    """Raise FAILED_PRECONDITION unless ``current → target`` is a move the daemon makes.

    A move to the current state is a no-op success, except into COMMITTED from anything but
    UNCOMMITTED/COMMITTED (spec 20 §4.1).
    """
    if current is target and target is not S.COMMITTED:
        return
    if target not in _ALLOWED[current]:
        raise FailedPrecondition("invalid claim state transition")
