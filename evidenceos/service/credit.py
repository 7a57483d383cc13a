"""Access-credit administration and holdout pool budgets (spec 60 §5.7, §5.8; DESIGN §2, §3, §6).

Each mutation is one write transaction that changes the accounts (or pools) **and** appends a
governance event to the hash-chained governance log (``governance_events`` plus its
``governance`` leaf in the transparency log, spec 50), so an operator's change is durable,
acknowledged and auditable at once — or not at all. The events are unsigned: they are
authorised by the caller's authenticated operator identity, which the payload names. The
execution charge itself lives in the execution's own transaction
(:mod:`evidenceos.service.execution`); this service only grants, limits and reads.

Roles (docs/security.md): GrantCredit, SetCreditLimit and SetHoldoutPoolBudgets need the
operator role; GetHoldoutPoolBudgets needs auditor or operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from evidenceos.core.auth import CallerIdentity, verify_auditor_role, verify_operator_role
from evidenceos.core.credit import (
    Account,
    AdmissionProvider,
    HoldoutPoolSelector,
    apply_grant_credit,
    apply_set_credit_limit,
    parse_holdout_pool_selector,
    verify_budget_value,
)
from evidenceos.core.governance import GovernanceEvent, OperatorKeyId
from evidenceos.core.ledger import EPS, BudgetPool
from evidenceos.errors import NotFound
from evidenceos.service.log_service import Clock, LogService, system_clock_ms
from evidenceos.store import accounts as accounts_table
from evidenceos.store import pools as pools_table
from evidenceos.store.db import Connection, Store
from evidenceos.store.governance import append_governance_event

log = logging.getLogger("evidenceos.credit")

MS_PER_DAY = 86_400_000
UNSIGNED = OperatorKeyId("")


@dataclass(frozen=True, slots=True)
class HoldoutPoolBudgets:
    """Budgets of one holdout pool selection; ``None`` = not given (Set) / not applicable."""

    holdout_id: str
    scope: str
    k_bits_budget: float | None
    access_credit_budget: float | None


def _pool_principal(stored: str) -> str | None:
    """The pools table stores the global pool under principal ``''``."""
    return stored or None


def _unfreeze_if_within_budget(pool: BudgetPool) -> BudgetPool:
    """Spec 60 §5.8: a pool whose spent amounts fit its budgets again is unfrozen (reserved
    amounts are not considered, as in the reference)."""
    if (
        pool.frozen
        and pool.k_bits_spent <= pool.k_bits_budget + EPS
        and pool.access_credit_spent <= pool.access_credit_budget + EPS
    ):
        return replace(pool, frozen=False)
    return pool


class CreditService:
    """Accounts and pool budgets; one daemon-wide instance."""

    def __init__(
        self,
        store: Store,
        log_service: LogService,
        admission: AdmissionProvider,
        clock: Clock = system_clock_ms,
    ) -> None:
        self._store = store
        self._log = log_service
        self._admission = admission
        self._clock = clock

    @property
    def admission(self) -> AdmissionProvider:
        return self._admission

    def _day(self) -> int:
        return self._clock() // MS_PER_DAY

    # -- accounts -----------------------------------------------------------------------------

    def find_account(self, principal_id: str) -> Account | None:
        """The stored account, or None if the principal never used or received credit."""
        with self._store.read() as conn:
            return accounts_table.find_account(conn, principal_id)

    def grant_credit(
        self, caller: CallerIdentity, principal_id: str, amount: int, reason: str
    ) -> int:
        """GrantCredit: ``balance = min(balance + amount, credit_limit)``; returns the balance."""
        verify_operator_role(caller)
        day = self._day()

        def write(conn: Connection) -> Account:
            account = apply_grant_credit(
                accounts_table.find_account(conn, principal_id),
                principal_id=principal_id,
                amount=amount,
                reason=reason,
                admission=self._admission,
                day=day,
            )
            accounts_table.put_account(conn, principal_id, account)
            self._append_governance(
                conn,
                "credit_grant",
                caller,
                {
                    "principal_id": principal_id,
                    "amount": amount,
                    "reason": reason,
                    "credit_balance": account.credit_balance,
                },
            )
            return account

        account = self._store.write(write)
        log.info(
            "credit granted",
            extra={
                "event": "credit_grant",
                "principal_id": principal_id,
                "amount": amount,
                "credit_balance": account.credit_balance,
                "operator_principal_id": caller.principal_id,
            },
        )
        return account.credit_balance

    def set_credit_limit(self, caller: CallerIdentity, principal_id: str, limit: int) -> int:
        """SetCreditLimit: new limit, balance cut to it; returns the limit."""
        verify_operator_role(caller)
        day = self._day()

        def write(conn: Connection) -> Account:
            account = apply_set_credit_limit(
                accounts_table.find_account(conn, principal_id),
                principal_id=principal_id,
                limit=limit,
                admission=self._admission,
                day=day,
            )
            accounts_table.put_account(conn, principal_id, account)
            self._append_governance(
                conn,
                "credit_limit_set",
                caller,
                {
                    "principal_id": principal_id,
                    "credit_limit": limit,
                    "credit_balance": account.credit_balance,
                },
            )
            return account

        account = self._store.write(write)
        log.info(
            "credit limit set",
            extra={
                "event": "credit_limit_set",
                "principal_id": principal_id,
                "credit_limit": limit,
                "credit_balance": account.credit_balance,
                "operator_principal_id": caller.principal_id,
            },
        )
        return account.limits.credit_limit

    # -- holdout pool budgets -----------------------------------------------------------------

    def set_holdout_pool_budgets(
        self,
        caller: CallerIdentity,
        holdout_id: str,
        scope: str,
        new_k_bits_budget: float | None,
        new_access_credit_budget: float | None,
    ) -> HoldoutPoolBudgets:
        """SetHoldoutPoolBudgets (spec 60 §5.8): update every matching pool, unfreeze those whose
        spending fits again; NOT_FOUND if none matches. The answer echoes the request."""
        verify_operator_role(caller)
        selector = parse_holdout_pool_selector(holdout_id, scope)
        if new_k_bits_budget is not None:
            verify_budget_value(new_k_bits_budget, "new_k_bits_budget")
        if new_access_credit_budget is not None:
            verify_budget_value(new_access_credit_budget, "new_access_credit_budget")

        def write(conn: Connection) -> int:
            updated = 0
            for principal, pool in self._matching_pools(conn, selector):
                changed = replace(
                    pool,
                    k_bits_budget=pool.k_bits_budget
                    if new_k_bits_budget is None
                    else new_k_bits_budget,
                    access_credit_budget=pool.access_credit_budget
                    if new_access_credit_budget is None
                    else new_access_credit_budget,
                )
                pools_table.put_holdout_pool(
                    conn, selector.holdout_id, principal, _unfreeze_if_within_budget(changed)
                )
                updated += 1
            if not updated:
                raise NotFound("holdout budget pool not found")
            self._append_governance(
                conn,
                "holdout_pool_budgets_set",
                caller,
                {
                    "holdout_id": selector.holdout_id.hex(),
                    "scope": selector.scope.value,
                    "new_k_bits_budget": new_k_bits_budget,
                    "new_access_credit_budget": new_access_credit_budget,
                    "pools_updated": updated,
                },
            )
            return updated

        updated = self._store.write(write)
        log.info(
            "holdout pool budgets set",
            extra={
                "event": "holdout_pool_budgets_set",
                "holdout_id": selector.holdout_id.hex(),
                "scope": selector.scope.value,
                "pools_updated": updated,
                "operator_principal_id": caller.principal_id,
            },
        )
        return HoldoutPoolBudgets(holdout_id, scope, new_k_bits_budget, new_access_credit_budget)

    def get_holdout_pool_budgets(
        self, caller: CallerIdentity, holdout_id: str, scope: str
    ) -> HoldoutPoolBudgets:
        """GetHoldoutPoolBudgets: the budgets of the matching pool with the smallest key
        (the global pool first, then principals in byte order); NOT_FOUND if none."""
        verify_auditor_role(caller)
        selector = parse_holdout_pool_selector(holdout_id, scope)
        with self._store.read() as conn:
            for _, pool in self._matching_pools(conn, selector):
                return HoldoutPoolBudgets(
                    holdout_id, scope, pool.k_bits_budget, pool.access_credit_budget
                )
        raise NotFound("holdout budget pool not found")

    @staticmethod
    def _matching_pools(
        conn: Connection, selector: HoldoutPoolSelector
    ) -> list[tuple[str, BudgetPool]]:
        """``(stored principal, pool)`` of the selected holdout and scope, smallest key first."""
        return [
            (principal, pool)
            for handle, principal, pool in pools_table.iter_holdout_pools(conn)
            if handle == selector.holdout_id and selector.scope.matches(_pool_principal(principal))
        ]

    # -- log ----------------------------------------------------------------------------------

    def _append_governance(
        self, conn: Connection, event_type: str, caller: CallerIdentity, fields: dict[str, Any]
    ) -> None:
        """Chain an unsigned governance event naming the operator (spec 50 §3.7 shape)."""
        now_ms = self._clock()
        payload = {"operator_principal_id": caller.principal_id, **fields}
        event = GovernanceEvent(event_type, now_ms // 1000, UNSIGNED, payload)
        append_governance_event(conn, self._log, event, now_ms)
