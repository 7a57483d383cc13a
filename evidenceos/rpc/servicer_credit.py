"""RPCs of access credit and holdout pool budgets (spec 60 §5.7, §5.8): translation only.

v1 serves GrantCredit and SetCreditLimit with the caller's own identity (DESIGN §6; the
reference drops it); the pool-budget RPCs exist on v2 only, and on v1 the generated base class
answers UNIMPLEMENTED as for any RPC the package does not declare.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import grpc

from evidenceos.errors import Unavailable
from evidenceos.rpc.errors import handle_errors
from evidenceos.rpc.identity import caller_from_context
from evidenceos.rpc.services import Services
from evidenceos.service.credit import CreditService, HoldoutPoolBudgets


class CreditRpc:
    pb: ModuleType
    services: Services

    def _credit(self) -> CreditService:
        credit = self.services.credit
        if not isinstance(credit, CreditService):
            raise Unavailable("credit administration is not configured on this server")
        return credit

    def _budgets(self, budgets: HoldoutPoolBudgets) -> Any:
        out = self.pb.HoldoutPoolBudgets(holdout_id=budgets.holdout_id, scope=budgets.scope)
        if budgets.k_bits_budget is not None:
            out.k_bits_budget = budgets.k_bits_budget
        if budgets.access_credit_budget is not None:
            out.access_credit_budget = budgets.access_credit_budget
        return out

    @handle_errors
    def GrantCredit(self, request: Any, context: grpc.ServicerContext) -> Any:
        balance = self._credit().grant_credit(
            caller_from_context(context),
            request.principal_id,
            int(request.amount),
            request.reason,
        )
        return self.pb.GrantCreditResponse(credit_balance=balance)

    @handle_errors
    def SetCreditLimit(self, request: Any, context: grpc.ServicerContext) -> Any:
        limit = self._credit().set_credit_limit(
            caller_from_context(context), request.principal_id, int(request.limit)
        )
        return self.pb.SetCreditLimitResponse(credit_limit=limit)

    @handle_errors
    def SetHoldoutPoolBudgets(self, request: Any, context: grpc.ServicerContext) -> Any:
        budgets = self._credit().set_holdout_pool_budgets(
            caller_from_context(context),
            request.holdout_id,
            request.scope,
            request.new_k_bits_budget if request.HasField("new_k_bits_budget") else None,
            request.new_access_credit_budget
            if request.HasField("new_access_credit_budget")
            else None,
        )
        return self.pb.SetHoldoutPoolBudgetsResponse(budgets=self._budgets(budgets))

    @handle_errors
    def GetHoldoutPoolBudgets(self, request: Any, context: grpc.ServicerContext) -> Any:
        budgets = self._credit().get_holdout_pool_budgets(
            caller_from_context(context), request.holdout_id, request.scope
        )
        return self.pb.GetHoldoutPoolBudgetsResponse(budgets=self._budgets(budgets))
