"""Access credit end to end against the real daemon (spec 60 §5, DESIGN §2, §3, §6).

The charge of an execution is ΔC = λk·k_bits + λcpu·fuel + λmem·max_memory_pages with the
environment's λ = (2, 3, 5); the measurements are read back from the capsule the daemon logged,
and the account from the database (with plain ``sqlite3`` and through ``export_accounts``, whose
output must match ``schema/accounts.schema.json``). A refused or crashed execution must leave
the balance — and everything else — as it was. GrantCredit and SetCreditLimit round-trip and are
governance events, chained and in the log. Set/GetHoldoutPoolBudgets round-trip too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import grpc
import jsonschema
import pytest

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb2
from evidenceos._proto.v1 import evidenceos_pb2_grpc as v1_grpc
from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos.store import governance as governance_table
from evidenceos.store.accounts import export_accounts
from tests.support.claims import (
    EPOCH_CONFIG,
    ClaimClient,
    account,
    claim_state,
    create_request,
    db_snapshot,
    oracle_then_emit_wat,
    snapshot_diff,
    synthetic_handle,
    synthetic_labels,
    wasm,
    write_epoch_config,
)
from tests.support.daemon import DaemonPool, DaemonProcess, rpc_status
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.process

T = 10.0
LAMBDA = {
    "EVIDENCEOS_LAMBDA_K_PER_BIT": "2",
    "EVIDENCEOS_LAMBDA_CPU_PER_FUEL": "3",
    "EVIDENCEOS_LAMBDA_MEM_PER_WASM_PAGE": "5",
}
OPERATOR_ENV = {"EVIDENCEOS_OPERATOR_PRINCIPALS": "anonymous"}
ANON = "anonymous"

#: Worst case the execution holds before the guest runs (2 symbols, fast lane, PLN max 500,
#: epoch 16): k = ceil(1 bit · 32 calls · 2.0) = 64 (D-K2), fuel = 500 padded to 512,
#: pages = the fast lane's 4.
WORST_K, WORST_FUEL, WORST_PAGES = 64, 512, 4
WORST = 2 * WORST_K + 3 * WORST_FUEL + 5 * WORST_PAGES
#: What the guest below is charged: k = 1 bit · 1 call · 2.0, fuel padded to the PLN target 100
#: and then to the epoch (112), one page.
K_BITS, FUEL, PAGES = 2, 112, 1
CHARGE = 2 * K_BITS + 3 * FUEL + 5 * PAGES


def request(name: str, ref: str) -> pb.CreateClaimV2Request:
    """A two-symbol legacy claim: the fallback NullSpec (Bernoulli) scores buckets 0 and 1."""
    return create_request(name, holdout_ref=ref, oracle_num_symbols=2)


def guest(ref: str) -> bytes:
    """One oracle call on all-correct predictions, then the symbol 1 (a 1-page guest)."""
    return wasm(oracle_then_emit_wat(synthetic_labels(ref)))


def start(daemons: DaemonPool, data_dir: Path, env: dict[str, str]) -> DaemonProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    write_epoch_config(data_dir)
    return daemons.start(data_dir, extra_args=["--insecure-synthetic-holdout"], env=env)


@contextmanager
def read_db(data_dir: Path) -> Iterator[apsw.Connection]:
    conn = apsw.Connection(str(data_dir / "evidenceos.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def capsule_of(client: ClaimClient, claim_id: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(client.fetch(claim_id).capsule_bytes)
    return doc


def find_value(doc: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        children: Any = doc.values()
    elif isinstance(doc, list):
        children = doc
    else:
        return None
    for child in children:
        found = find_value(child, key)
        if found is not None:
            return found
    return None


def balance(data_dir: Path, principal: str = ANON) -> int | None:
    found = account(data_dir, principal)
    return None if found is None else int(found["credit_balance"])


# -- the charge ----------------------------------------------------------------------------------


def test_execution_charges_the_lambda_weighted_measurements(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    daemon = start(daemons, data_dir, {**LAMBDA, "EVIDENCEOS_DEFAULT_CREDIT_LIMIT": "100000"})
    client = ClaimClient.for_daemon(daemon)
    ref = "synthetic-charge"
    claim_id, executed = client.run(request("charge", ref), guest(ref))
    assert executed.capsule_hash

    capsule = capsule_of(client, claim_id)
    fuel = int(find_value(capsule, "compute_fuel_spent"))
    k_bits = float(find_value(capsule, "k_bits_total"))
    # One oracle call on 2 symbols: 1 bit, taxed by 2 = 2 bits, no output bits (legacy).
    assert k_bits == K_BITS
    # PLN pads the fuel to the target (100) and then to the epoch size (16): 112.
    assert fuel == FUEL
    expected = 2 * K_BITS + 3 * fuel + 5 * PAGES  # the guest never grows its one page
    assert balance(data_dir) == 100_000 - expected
    assert account(data_dir) == {
        "credit_balance": 100_000 - expected,
        "burned_total": expected,
        "denied_total": 0,
        "credit_limit": 100_000,
    }
    with read_db(data_dir) as conn:
        exported = export_accounts(conn)
    schema = json.loads((REPO_ROOT / "schema" / "accounts.schema.json").read_text())
    jsonschema.validate(exported, schema)
    assert exported["accounts"][ANON]["credit_balance"] == 100_000 - expected
    assert exported["accounts"][ANON]["limits"] == {
        "credit_limit": 100_000,
        "daily_mint_limit": 100_000,
    }


def test_insufficient_credit_refuses_before_the_guest_runs_and_changes_nothing(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    """The worst case is held before the guest runs: one credit short of it refuses."""
    charge = CHARGE
    limit = WORST + charge - 1  # after one execution, one short of the worst case
    data_dir = tmp_path / "data"
    env = {**LAMBDA, **OPERATOR_ENV, "EVIDENCEOS_DEFAULT_CREDIT_LIMIT": str(limit)}
    daemon = start(daemons, data_dir, env)
    client = ClaimClient.for_daemon(daemon)
    client.run(request("first", "synthetic-a"), guest("synthetic-a"))
    assert balance(data_dir) == WORST - 1

    second = client.sealed(request("second", "synthetic-b"), guest("synthetic-b"))
    before = db_snapshot(data_dir)
    code, details = rpc_status(lambda: client.execute(second))
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "insufficient credit")
    assert snapshot_diff(before, db_snapshot(data_dir)) == {}
    assert claim_state(data_dir, second) == "SEALED"

    # One more credit and the same execution passes: the hold is exactly the worst case.
    granted = daemon.v2.GrantCredit(
        pb.GrantCreditRequest(principal_id=ANON, amount=1, reason="top up"), timeout=T
    )
    assert granted.credit_balance == WORST  # not capped: the limit is above it
    assert client.execute(second).capsule_hash
    assert balance(data_dir) == WORST - charge


def test_crash_before_commit_charges_nothing(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**LAMBDA, "EVIDENCEOS_DEFAULT_CREDIT_LIMIT": "100000"}
    crashing = start(
        daemons, data_dir, {**env, "EVIDENCEOS_CRASH_FAILPOINT": "before_commit_execute_claim_v2"}
    )
    client = ClaimClient.for_daemon(crashing)
    ref = "synthetic-crash"
    claim_id = client.sealed(request("crash", ref), guest(ref))
    code, _ = rpc_status(lambda: client.execute(claim_id, request_id="exec-1"))
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
    crashing.kill()
    assert balance(data_dir) is None  # the account was never written
    assert claim_state(data_dir, claim_id) == "SEALED"

    restarted = start(daemons, data_dir, env)
    retry = ClaimClient.for_daemon(restarted)
    executed = retry.execute(claim_id, request_id="exec-1")
    assert executed.capsule_hash
    assert balance(data_dir) == 100_000 - CHARGE
    again = retry.execute(claim_id, request_id="exec-1")  # the idempotent answer, no new charge
    assert again.capsule_hash == executed.capsule_hash
    assert balance(data_dir) == 100_000 - CHARGE


# -- administration --------------------------------------------------------------------------------


def governance_events(data_dir: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(event type, payload, kind of its log leaf) of every chained event; the chain verifies."""
    with read_db(data_dir) as conn:
        assert governance_table.chain_problems(conn) == []
        out = []
        for stored in governance_table.iter_events(conn):
            kind = conn.execute(
                "SELECT kind FROM log_leaves WHERE leaf_index = ?", (stored.leaf_index,)
            ).get
            event = stored.chained.event
            out.append((event.event_type, dict(event.payload), str(kind)))
    return out


def test_grant_and_set_limit_round_trip_and_are_governance_events(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    daemon = start(daemons, data_dir, OPERATOR_ENV)
    v2 = daemon.v2
    v1 = v1_grpc.EvidenceOSStub(daemon.channel())
    p = "bearer:" + hashlib.sha256(b"some-agent").hexdigest()

    assert (
        v2.SetCreditLimit(
            pb.SetCreditLimitRequest(principal_id=p, limit=10), timeout=T
        ).credit_limit
        == 10
    )
    assert account(data_dir, p) == {
        "credit_balance": 10,
        "burned_total": 0,
        "denied_total": 0,
        "credit_limit": 10,
    }
    grant = pb.GrantCreditRequest(principal_id=p, amount=5, reason="capped at the limit")
    assert v2.GrantCredit(grant, timeout=T).credit_balance == 10
    raised = pb.SetCreditLimitRequest(principal_id=p, limit=100)
    assert v2.SetCreditLimit(raised, timeout=T).credit_limit == 100
    assert balance(data_dir, p) == 10  # raising a limit grants nothing
    grant = pb.GrantCreditRequest(principal_id=p, amount=50, reason="quarterly budget")
    assert v2.GrantCredit(grant, timeout=T).credit_balance == 60
    v1_grant = v1_pb2.GrantCreditRequest(principal_id=p, amount=1, reason="through v1")
    assert v1.GrantCredit(v1_grant, timeout=T).credit_balance == 61

    before = db_snapshot(data_dir)

    def refused_grant(principal: str, amount: int, reason: str) -> tuple[grpc.StatusCode, str]:
        request = pb.GrantCreditRequest(principal_id=principal, amount=amount, reason=reason)
        return rpc_status(lambda: v2.GrantCredit(request, timeout=T))

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    over_admission = "requested credit exceeds admission limit"
    assert refused_grant(p, 0, "r") == (invalid, "amount must be > 0")
    assert refused_grant(p, 1, "") == (invalid, "reason must be in [1,256]")
    assert refused_grant("", 1, "r") == (invalid, "principal_id must be in [1,256]")
    assert refused_grant(p, 10**7 + 1, "r") == (exhausted, over_admission)
    too_high = pb.SetCreditLimitRequest(principal_id=p, limit=10**7 + 1)
    assert rpc_status(lambda: v2.SetCreditLimit(too_high, timeout=T)) == (
        exhausted,
        over_admission,
    )
    assert snapshot_diff(before, db_snapshot(data_dir)) == {}, "a refused change leaves no trace"

    events = governance_events(data_dir)
    assert [(t, e["principal_id"]) for t, e, _ in events] == [
        ("credit_limit_set", p),
        ("credit_grant", p),
        ("credit_limit_set", p),
        ("credit_grant", p),
        ("credit_grant", p),
    ]
    assert all(kind == "governance" for _, _, kind in events)
    assert all(e["operator_principal_id"] == ANON for _, e, _ in events)
    assert events[3][1] == {
        "principal_id": p,
        "amount": 50,
        "reason": "quarterly budget",
        "credit_balance": 60,
        "operator_principal_id": ANON,
    }
    assert events[2][1]["credit_limit"] == 100


def test_holdout_pool_budgets_round_trip(daemons: DaemonPool, tmp_path: Path) -> None:
    """Spec 60 §5.8 and scenario 41, with DESIGN §3's rollback: an exhausted reservation
    freezes nothing, and raising the budget lets the next claim in."""
    data_dir = tmp_path / "data"
    env = {**OPERATOR_ENV, "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "100"}
    daemon = start(daemons, data_dir, env)
    v2 = daemon.v2
    client = ClaimClient.for_daemon(daemon)
    ref = "synthetic-pool"
    handle = synthetic_handle(ref).hex()
    client.create(request("one", ref))  # reserves 64 of 100

    got = v2.GetHoldoutPoolBudgets(
        pb.GetHoldoutPoolBudgetsRequest(holdout_id=handle, scope="global"), timeout=T
    ).budgets
    assert (got.holdout_id, got.scope, got.k_bits_budget, got.access_credit_budget) == (
        handle,
        "global",
        100.0,
        1024.0,
    )
    code, details = rpc_status(lambda: client.create(request("two", ref)))
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "holdout budget exhausted")

    change = pb.SetHoldoutPoolBudgetsRequest(holdout_id=handle, scope="global")
    change.new_k_bits_budget = 1000.0
    echoed = v2.SetHoldoutPoolBudgets(change, timeout=T).budgets
    assert echoed.k_bits_budget == 1000.0
    assert not echoed.HasField("access_credit_budget")
    got = v2.GetHoldoutPoolBudgets(
        pb.GetHoldoutPoolBudgetsRequest(holdout_id=handle, scope="both"), timeout=T
    ).budgets
    assert (got.k_bits_budget, got.access_credit_budget) == (1000.0, 1024.0)
    assert client.create(request("two", ref)).claim_id

    for holdout_id, scope, expected in (
        (handle, "per_principal", (grpc.StatusCode.NOT_FOUND, "holdout budget pool not found")),
        ("ab" * 32, "global", (grpc.StatusCode.NOT_FOUND, "holdout budget pool not found")),
        (handle, "everyone", (grpc.StatusCode.INVALID_ARGUMENT, "invalid holdout_pool_scope")),
        ("zz" * 32, "global", (grpc.StatusCode.INVALID_ARGUMENT, "holdout_id is not valid hex")),
    ):
        get = pb.GetHoldoutPoolBudgetsRequest(holdout_id=holdout_id, scope=scope)

        def read(get: pb.GetHoldoutPoolBudgetsRequest = get) -> object:
            return v2.GetHoldoutPoolBudgets(get, timeout=T)

        assert rpc_status(read) == expected
    negative = pb.SetHoldoutPoolBudgetsRequest(holdout_id=handle, scope="global")
    negative.new_access_credit_budget = -1.0
    assert rpc_status(lambda: v2.SetHoldoutPoolBudgets(negative, timeout=T)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "new_access_credit_budget must be finite and >= 0",
    )
    (event_type, payload, kind) = governance_events(data_dir)[-1]
    assert (event_type, kind) == ("holdout_pool_budgets_set", "governance")
    assert payload["holdout_id"] == handle and payload["new_k_bits_budget"] == 1000.0
    assert payload["pools_updated"] == 1


def test_epoch_config_matches_the_worst_case_constants() -> None:
    """The constants above assume the shared helper's epoch config."""
    assert EPOCH_CONFIG == {"epoch_size": 16, "pln": {"target_fuel": 100, "max_fuel": 500}}
