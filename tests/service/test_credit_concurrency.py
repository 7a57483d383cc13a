"""Access credit in the service layer, against a real store, sandbox and log
(spec 60 §5.3 to §5.7; DESIGN §3).

* 32 threads execute 32 sealed claims of one principal at once: the account never goes below
  zero, exactly the committed executions are charged, and every refused one is refused before
  its guest runs and leaves its claim SEALED.
* An execution that fails inside its transaction — after the credit was charged in it — leaves
  the balance unchanged.
* A measurement the sandbox does not report is charged at its worst case.
* 32 concurrent grants lose no update, and each is one chained governance event.
* Only operators administer credit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from evidenceos.core.auth import ANONYMOUS, CallerIdentity, Role
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.credit import CreditPricing, StaticAdmissionProvider
from evidenceos.errors import EvidenceOSError, PermissionDenied, ResourceExhausted, StorageError
from evidenceos.ids import PrincipalId
from evidenceos.sandbox import Sandbox
from evidenceos.sandbox.vault import ExecutionResult
from evidenceos.service.claims import ClaimService, CreateClaimV2Input, KernelSettings
from evidenceos.service.credit import CreditService
from evidenceos.service.execution import ExecutionService
from evidenceos.store import accounts as accounts_table
from evidenceos.store import claims as claims_table
from evidenceos.store import governance as governance_table
from evidenceos.store.db import Store
from tests.support.claims import (
    claim_services,
    oracle_then_emit_wat,
    synthetic_labels,
)

THREADS = 32
HOLDOUT = "synthetic-credit"
PRICING = CreditPricing(
    lambda_k_per_bit=1,
    lambda_cpu_per_fuel=1,
    lambda_mem_per_wasm_page=1000,
    worst_case_k_bits=7,
    worst_case_fuel=11,
    worst_case_wasm_pages=13,
)
#: Held before the guest runs: k = 64 (2 symbols, 32 calls, tax 2), fuel 500 → 512, 4 pages.
WORST = 64 + 512 + 1000 * 4
#: Charged after it ran: k = 2, fuel padded to 112, one page.
CHARGE = 2 + 112 + 1000 * 1
AGENT = CallerIdentity(PrincipalId("bearer:" + "a" * 64), Role.AGENT)
OPERATOR = CallerIdentity(PrincipalId("bearer:" + "0" * 64), Role.OPERATOR)


@dataclass
class Stack:
    store: Store
    claims: ClaimService
    execution: ExecutionService
    credit: CreditService

    def balance(self, principal: str) -> int | None:
        with self.store.read() as conn:
            account = accounts_table.find_account(conn, principal)
        return None if account is None else account.credit_balance

    def state(self, claim_id: bytes) -> ClaimState:
        with self.store.read() as conn:
            return claims_table.get_claim(conn, claim_id).state


class UnmeasuredPagesSandbox(Sandbox):
    """Reports no memory measurement, as a sandbox that cannot tell would."""

    def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        return replace(super().execute(*args, **kwargs), max_memory_pages=0)


def make_stack(data_dir: Path, *, limit: int, sandbox: Sandbox | None = None) -> Stack:
    admission = StaticAdmissionProvider(default_limit=limit)
    settings = KernelSettings(
        default_holdout_k_bits_budget=1e9,
        default_holdout_access_credit_budget=1e9,
        pricing=PRICING,
        admission=admission,
    )
    store, log_service, claims = claim_services(data_dir, settings, sandbox)
    return Stack(
        store, claims, ExecutionService(claims), CreditService(store, log_service, admission)
    )


@pytest.fixture
def stack(data_dir: Path) -> Iterator[Stack]:
    built = make_stack(data_dir, limit=5 * WORST)
    try:
        yield built
    finally:
        built.store.close()


GUEST = bytes(wasmtime.wat2wasm(oracle_then_emit_wat(synthetic_labels(HOLDOUT))))


def sealed_claim(stack: Stack, name: str, caller: CallerIdentity = AGENT) -> bytes:
    created = stack.claims.create_claim_v2(
        caller,
        CreateClaimV2Input(
            claim_name=name,
            lane="fast",
            alpha_micros=50_000,
            epoch_config_ref="epoch/default",
            output_schema_id="legacy/v1",
            has_metadata=True,
            semantic_hash=b"",
            phys_hir_signature_hash=b"",
            dependency_merkle_root=b"",
            holdout_ref=HOLDOUT,
            epoch_size=16,
            oracle_num_symbols=2,
            access_credit=4096,  # the topic pool: 32 reservations of 64
            oracle_id="",
            nullspec_id="",
            dp_epsilon_budget=None,
            dp_delta_budget=None,
        ),
        None,
    )
    claim_id = created.claim_id
    stack.claims.commit_artifacts(
        caller, claim_id, [(hashlib.sha256(GUEST).digest(), "wasm")], GUEST
    )
    stack.claims.freeze(caller, claim_id, "freeze_gates")
    return claim_id


def test_concurrent_executions_never_overspend(stack: Stack) -> None:
    claim_ids = [sealed_claim(stack, f"claim-{i}") for i in range(THREADS)]
    start = threading.Barrier(THREADS)

    def execute(claim_id: bytes) -> EvidenceOSError | None:
        start.wait()
        try:
            stack.execution.execute_claim_v2(AGENT, claim_id, None)
        except EvidenceOSError as exc:
            return exc
        return None

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(execute, claim_ids))

    executed = [c for c, err in zip(claim_ids, outcomes, strict=True) if err is None]
    refused = [(c, err) for c, err in zip(claim_ids, outcomes, strict=True) if err is not None]
    assert executed, "at least the first holds fit"
    for claim_id, error in refused:
        assert isinstance(error, ResourceExhausted), error
        assert error.message == "insufficient credit"
        assert stack.state(claim_id) is ClaimState.SEALED
    with stack.store.read() as conn:
        account = accounts_table.find_account(conn, AGENT.principal_id)
    assert account is not None
    assert account.burned_total == CHARGE * len(executed)
    assert account.credit_balance == 5 * WORST - CHARGE * len(executed) >= 0
    # With 5·WORST and holds of WORST, no more than this many can ever have been admitted.
    assert len(executed) <= (5 * WORST - WORST) // CHARGE + 1
    # Whatever the interleaving, the refused claims can still run once credit allows.
    while account.credit_balance >= WORST and refused:
        stack.execution.execute_claim_v2(AGENT, refused.pop()[0], None)
        with stack.store.read() as conn:
            account = accounts_table.find_account(conn, AGENT.principal_id)
        assert account is not None
    assert account.credit_balance >= 0


def test_failed_execution_charges_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    claim_id = sealed_claim(stack, "fails-after-charge")
    original = ExecutionService._charge_credit

    def charge_then_fail(self: ExecutionService, conn: Any, *args: Any) -> Any:
        original(self, conn, *args)
        raise StorageError("disk on fire after the charge")

    monkeypatch.setattr(ExecutionService, "_charge_credit", charge_then_fail)
    with pytest.raises(StorageError):
        stack.execution.execute_claim_v2(AGENT, claim_id, None)
    assert stack.balance(AGENT.principal_id) is None  # the account was never committed
    assert stack.state(claim_id) is ClaimState.SEALED
    monkeypatch.undo()
    stack.execution.execute_claim_v2(AGENT, claim_id, None)
    assert stack.balance(AGENT.principal_id) == 5 * WORST - CHARGE


def test_unmeasured_memory_is_charged_at_its_worst_case(data_dir: Path) -> None:
    built = make_stack(data_dir, limit=5 * WORST, sandbox=UnmeasuredPagesSandbox())
    try:
        claim_id = sealed_claim(built, "no-pages")
        built.execution.execute_claim_v2(AGENT, claim_id, None)
        worst_pages_charge = 2 + 112 + 1000 * PRICING.worst_case_wasm_pages
        assert built.balance(AGENT.principal_id) == 5 * WORST - worst_pages_charge
    finally:
        built.store.close()


def test_concurrent_grants_lose_no_update(stack: Stack) -> None:
    principal = "bearer:" + "b" * 64
    stack.credit.set_credit_limit(OPERATOR, principal, 10)  # balance 10, limit 10
    stack.credit.set_credit_limit(OPERATOR, principal, 1_000)  # room to grow
    start = threading.Barrier(THREADS)

    def grant(i: int) -> int:
        start.wait()
        return stack.credit.grant_credit(OPERATOR, principal, 3, f"grant {i}")

    with ThreadPoolExecutor(THREADS) as pool:
        balances = sorted(pool.map(grant, range(THREADS)))
    assert balances == [10 + 3 * (i + 1) for i in range(THREADS)]
    assert stack.balance(principal) == 10 + 3 * THREADS
    with stack.store.read() as conn:
        assert governance_table.chain_problems(conn) == []
        events = [e.chained.event for e in governance_table.iter_events(conn)]
    assert [e.event_type for e in events].count("credit_grant") == THREADS
    assert sorted(int(str(e.payload["credit_balance"])) for e in events[2:]) == balances


@pytest.mark.parametrize(
    "caller",
    [
        AGENT,
        CallerIdentity(PrincipalId("bearer:" + "c" * 64), Role.AUDITOR),
        CallerIdentity(ANONYMOUS, Role.AUDITOR),
    ],
)
def test_only_operators_administer_credit(stack: Stack, caller: CallerIdentity) -> None:
    for action in (
        lambda: stack.credit.grant_credit(caller, caller.principal_id, 1, "self-service"),
        lambda: stack.credit.set_credit_limit(caller, caller.principal_id, 1),
        lambda: stack.credit.set_holdout_pool_budgets(caller, "00" * 32, "global", 1.0, None),
    ):
        with pytest.raises(PermissionDenied, match="operator role required"):
            action()
    assert stack.balance(caller.principal_id) is None
