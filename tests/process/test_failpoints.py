"""Crash failpoints (``EVIDENCEOS_CRASH_FAILPOINT``) against a real daemon (spec 40 §6.4, §10
items 33-35; DESIGN §3).

For every failpoint: start the daemon with it set, drive the RPC, watch the process die by
SIGKILL without replying, restart without it, and check that

* a ``before_commit_*`` point left no trace: every table is byte-for-byte what it was before the
  call (the mutation was inside its transaction when the process died);
* an ``after_etl_append_*`` point left the whole mutation committed (log leaf, claim state,
  charges, revocation feed, idempotency record), though the client never got an answer;
* the log recomputed from the stored leaves matches every head issued before the crash, and the
  new head is consistent with them;
* a retry behaves as DESIGN §3 says: after a committed mutation the same ``x-request-id``
  returns the original answer and charges nothing twice, a changed payload under it is refused;
  after an uncommitted one the retry simply runs.

The data dir with a claim at every stage is built once and copied for each case.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb
from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.claims import (
    RPC_TIMEOUT,
    ClaimClient,
    account,
    claim_state,
    db_snapshot,
    query,
    rpc_error,
    snapshot_diff,
    start_claims_daemon,
    trap_wat,
    wasm,
    write_epoch_config,
)
from tests.support.daemon import DaemonProcess
from tests.support.paths import REPO_ROOT
from tests.support.revocation import (
    BIG_BUDGETS,
    LogChecker,
    claim_request,
    commit_with_dependencies,
    connect_ro,
    entry_tuples,
    executed_claim,
    get_feed,
    guest,
    revoke,
    sealed_claim,
    stored_heads,
    stored_public_keys,
    verify_watch_message,
)

pytestmark = pytest.mark.process

FAILPOINT_ENV = "EVIDENCEOS_CRASH_FAILPOINT"


@dataclass(frozen=True)
class Template:
    path: Path
    ids: dict[str, bytes]
    capsules: dict[str, bytes]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A stopped data dir holding one claim per stage: UNCOMMITTED, COMMITTED, SEALED (good and
    trapping guest), and an executed parent with an executed child."""
    data_dir = tmp_path_factory.mktemp("failpoints") / "template"
    daemon = start_claims_daemon(data_dir, env=BIG_BUDGETS)
    try:
        client = ClaimClient.for_daemon(daemon)
        module = guest()
        ids: dict[str, bytes] = {}
        capsules: dict[str, bytes] = {}
        ids["uncommitted"] = bytes(client.create(claim_request("fp-uncommitted")).claim_id)
        committed = bytes(client.create(claim_request("fp-committed")).claim_id)
        client.stub.CommitArtifacts(commit_with_dependencies(committed, module), timeout=30)
        ids["committed"] = committed
        ids["sealed"] = sealed_claim(client, "fp-sealed", module)
        ids["trap"] = sealed_claim(client, "fp-trap", wasm(trap_wat()))
        ids["parent"], parent = executed_claim(client, "fp-parent", module)
        ids["child"], child = executed_claim(client, "fp-child", module, [parent.capsule_hash])
        capsules["parent"], capsules["child"] = parent.capsule_hash, child.capsule_hash
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    return Template(data_dir, ids, capsules)


# -- the RPCs each failpoint interrupts -------------------------------------------------------

Driver = Callable[[ClaimClient, Template], Any]


def _v1_create(client: ClaimClient, t: Template) -> Any:
    stub: Any = client.stub
    return stub.CreateClaim(
        pb.CreateClaimRequest(
            topic_id=bytes([1]) * 32,
            holdout_handle_id=hashlib.sha256(b"synthetic-revocation").digest(),
            phys_hir_hash=bytes([3]) * 32,
            epoch_size=16,
            oracle_num_symbols=2,
            alpha=0.05,
            access_credit=1024,
        ),
        timeout=RPC_TIMEOUT,
    )


def _commit(client: ClaimClient, t: Template) -> Any:
    return client.stub.CommitArtifacts(
        commit_with_dependencies(t.ids["uncommitted"], guest()), timeout=RPC_TIMEOUT
    )


def _freeze_rpc(name: str) -> Driver:
    request = {
        "FreezeGates": pb.FreezeGatesRequest,
        "Freeze": pb.FreezeRequest,
        "SealClaim": pb.SealClaimRequest,
        "Seal": pb.SealRequest,
    }[name]

    def drive(client: ClaimClient, t: Template) -> Any:
        return getattr(client.stub, name)(request(claim_id=t.ids["committed"]), timeout=RPC_TIMEOUT)

    return drive


@dataclass(frozen=True)
class Case:
    failpoint: str
    drive: Driver
    committed: bool  # True: after the commit (mutation kept); False: inside the transaction


CASES = [
    Case(
        "before_commit_create_claim_v2",
        lambda c, t: c.create(claim_request("fp-new"), "fp-create"),
        False,
    ),
    Case("before_commit_create_claim", _v1_create, False),
    Case("before_commit_commit_artifacts", _commit, False),
    Case("before_commit_freeze_gates", _freeze_rpc("FreezeGates"), False),
    Case("before_commit_freeze", _freeze_rpc("Freeze"), False),
    Case("before_commit_seal_claim", _freeze_rpc("SealClaim"), False),
    Case("before_commit_seal", _freeze_rpc("Seal"), False),
    Case(
        "before_commit_execute_claim_v2",
        lambda c, t: c.execute(t.ids["sealed"], "fp-exec"),
        False,
    ),
    Case(
        "before_commit_execute_claim_v2_incident",
        lambda c, t: c.execute(t.ids["trap"], "fp-trap"),
        False,
    ),
    Case(
        "before_commit_revoke_claim",
        lambda c, t: revoke(c.stub, t.ids["parent"], "fp reason", "fp-revoke"),
        False,
    ),
    Case(
        "after_etl_append_execute_claim_v2",
        lambda c, t: c.execute(t.ids["sealed"], "fp-exec"),
        True,
    ),
    Case(
        "after_etl_append_revoke_claim",
        lambda c, t: revoke(c.stub, t.ids["parent"], "fp reason", "fp-revoke"),
        True,
    ),
]

#: ``failpoint(f"before_commit_{op}")`` call sites and the ops they are reached with.
TEMPLATES = {
    "before_commit_{op}": {
        "create_claim_v2",
        "create_claim",
        "freeze_gates",
        "freeze",
        "seal_claim",
        "seal",
    }
}
#: Names the code documents but never reaches in this daemon (v1 ExecuteClaim is not served).
UNREACHABLE = {"after_etl_append_execute_claim"}


def test_every_failpoint_in_the_code_has_a_case() -> None:
    """New ``failpoint(...)`` call sites must join CASES (or TEMPLATES) above."""
    names: set[str] = set()
    templates: set[str] = set()
    for path in (REPO_ROOT / "evidenceos").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for f_prefix, name in re.findall(r'\bfailpoint\(\s*(f?)"([^"]+)"', text):
            (templates if f_prefix and "{" in name else names).add(name)
    covered = {case.failpoint for case in CASES}
    assert names <= covered, f"failpoints without a crash test: {sorted(names - covered)}"
    assert templates <= set(TEMPLATES), f"unknown failpoint templates: {templates}"
    for template, ops in TEMPLATES.items():
        expanded = {template.format(op=op) for op in ops}
        assert expanded <= covered
    assert {"after_etl_append_execute_claim_v2", "after_etl_append_revoke_claim"} <= covered


def _copy(template: Template, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(template.path, data_dir, symlinks=True)
    (data_dir / "kernel.lock").unlink(missing_ok=True)
    return data_dir


def _tree_size(data_dir: Path) -> int:
    return int(query(data_dir, "SELECT count(*) FROM log_leaves")[0][0])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.failpoint)
def test_failpoint_crash_then_restart(case: Case, template: Template, tmp_path: Path) -> None:
    data_dir = _copy(template, tmp_path)
    crashing = DaemonProcess(
        data_dir,
        extra_args=["--insecure-synthetic-holdout"],
        env={**BIG_BUDGETS, FAILPOINT_ENV: case.failpoint},
    ).start()
    restarted: DaemonProcess | None = None
    try:
        client = ClaimClient.for_daemon(crashing)
        issued = client.head()  # a head handed out before the crash
        before = db_snapshot(data_dir)
        size_before = _tree_size(data_dir)
        credit_before = account(data_dir)

        with pytest.raises(grpc.RpcError) as crashed:
            case.drive(client, template)
        failed: Any = crashed.value
        assert failed.code() == grpc.StatusCode.UNAVAILABLE, failed.details()
        assert crashing.wait_exit(15) == -9, "the failpoint must end the process like SIGKILL"

        restarted = start_claims_daemon(data_dir, env=BIG_BUDGETS)
        client = ClaimClient.for_daemon(restarted)
        after = db_snapshot(data_dir)
        if case.committed:
            assert snapshot_diff(before, after), "the committed mutation is missing"
        else:
            assert snapshot_diff(before, after) == {}, "an uncommitted mutation left a trace"

        # The log: every stored leaf hashes right, every head issued so far (the one handed to
        # the client before the crash included) is a prefix of it, and the new head extends it.
        with connect_ro(data_dir) as conn:
            checker = LogChecker()
            size = checker.check(conn, want_sizes=[issued.tree_size])
            heads = stored_heads(conn)
            keys = stored_public_keys(conn)
        assert checker.roots[issued.tree_size] == issued.root_hash
        assert checker.assert_heads(heads, keys) == len(heads)
        new = client.head()
        assert new.tree_size == size == size_before + (1 if case.committed else 0)
        proof = client.consistency(issued.tree_size, new.tree_size)
        assert proof.consistent
        assert (proof.first_root_hash, proof.second_root_hash) == (
            issued.root_hash,
            new.root_hash,
        )

        check = CHECKS.get(case.failpoint)
        if check is not None:
            check(client, template, data_dir, credit_before)
        elif not case.committed:
            case.drive(client, template)  # the retry runs for the first time
            assert snapshot_diff(after, db_snapshot(data_dir)), "the retry changed nothing"
    finally:
        crashing.kill()
        if restarted is not None:
            restarted.kill()


# -- per-failpoint checks after the restart ---------------------------------------------------

Check = Callable[[ClaimClient, Template, Path, Any], None]


def _execution_committed(
    client: ClaimClient, t: Template, data_dir: Path, credit_before: Any
) -> None:
    claim_id = t.ids["sealed"]
    rows = query(
        data_dir,
        "SELECT state, etl_index, last_capsule_hash FROM claims WHERE claim_id = ?",
        (claim_id,),
    )
    state, etl_index, capsule_hash = rows[0]
    assert state in ("CERTIFIED", "REVOKED", "FROZEN")
    assert query(data_dir, "SELECT count(*) FROM capsules WHERE claim_id = ?", (claim_id,)) == [
        (1,)
    ]
    (payload,) = query(
        data_dir, "SELECT payload FROM log_leaves WHERE leaf_index = ?", (etl_index,)
    )[0]
    assert hashlib.sha256(payload).digest() == capsule_hash
    charged = account(data_dir)
    assert charged is not None
    assert credit_before is None or charged["credit_balance"] < credit_before["credit_balance"]
    size = _tree_size(data_dir)

    # The retry under the same request id gets the committed answer and is not charged again.
    retry = client.execute(claim_id, "fp-exec")
    assert (pb.ClaimState.Name(retry.state)[len("CLAIM_STATE_") :], retry.etl_index) == (
        state,
        etl_index,
    )
    assert retry.capsule_hash == capsule_hash
    assert _tree_size(data_dir) == size
    assert account(data_dir) == charged
    assert rpc_error(lambda: client.execute(t.ids["trap"], "fp-exec")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "x-request-id reused with different request payload",
    )
    assert rpc_error(lambda: client.execute(claim_id, "fp-exec-new")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "claim must be SEALED before execution",
    )
    fetched = client.fetch(claim_id)
    assert (fetched.capsule_hash, fetched.etl_index) == (capsule_hash, etl_index)


def _execution_absent(client: ClaimClient, t: Template, data_dir: Path, _: Any) -> None:
    assert claim_state(data_dir, t.ids["sealed"]) == "SEALED"
    retry = client.execute(t.ids["sealed"], "fp-exec")  # runs now, once
    assert claim_state(data_dir, t.ids["sealed"]) == pb.ClaimState.Name(retry.state)[12:]
    assert client.execute(t.ids["sealed"], "fp-exec") == retry


def _incident_absent(client: ClaimClient, t: Template, data_dir: Path, _: Any) -> None:
    assert claim_state(data_dir, t.ids["trap"]) == "SEALED"
    assert query(data_dir, "SELECT count(*) FROM incidents") == [(0,)]
    code, _message = rpc_error(lambda: client.execute(t.ids["trap"], "fp-trap"))
    assert code != grpc.StatusCode.UNAVAILABLE
    assert claim_state(data_dir, t.ids["trap"]) == "FROZEN"
    assert query(data_dir, "SELECT count(*) FROM incidents") == [(1,)]


def _revocation_committed(client: ClaimClient, t: Template, data_dir: Path, _: Any) -> None:
    parent, child = t.ids["parent"], t.ids["child"]
    assert claim_state(data_dir, parent) == "REVOKED"
    assert claim_state(data_dir, child) == "TAINTED"
    ((timestamp,),) = query(
        data_dir, "SELECT timestamp_unix FROM revocations WHERE claim_id = ?", (parent,)
    )
    expected = [
        (t.capsules["parent"], timestamp, "fp reason"),
        (t.capsules["child"], timestamp, "tainted:" + t.capsules["parent"].hex()),
    ]
    response, _head = get_feed(client.stub)
    assert entry_tuples(response.entries) == expected
    # The first WatchRevocations message holds the entry exactly once, signed.
    stream: Any = client.stub.WatchRevocations(pb.WatchRevocationsRequest(), timeout=RPC_TIMEOUT)
    first = next(stream)
    stream.cancel()
    assert entry_tuples(first.entries) == expected
    verify_watch_message(client.stub, first)

    size = _tree_size(data_dir)
    retry = revoke(client.stub, parent, "fp reason", "fp-revoke")
    assert (retry.state, retry.timestamp_unix) == (pb.CLAIM_STATE_REVOKED, timestamp)
    v1: Any = client.stub
    assert _tree_size(data_dir) == size
    assert entry_tuples(get_feed(v1)[0].entries) == expected
    assert rpc_error(lambda: revoke(client.stub, parent, "other", "fp-revoke")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "x-request-id reused with different request payload",
    )


def _revocation_absent(client: ClaimClient, t: Template, data_dir: Path, _: Any) -> None:
    assert claim_state(data_dir, t.ids["child"]) != "TAINTED"
    assert list(get_feed(client.stub)[0].entries) == []
    retry = revoke(client.stub, t.ids["parent"], "fp reason", "fp-revoke")
    assert retry.state == pb.CLAIM_STATE_REVOKED
    assert claim_state(data_dir, t.ids["child"]) == "TAINTED"
    assert len(get_feed(client.stub)[0].entries) == 2


def _create_absent(client: ClaimClient, t: Template, data_dir: Path, _: Any) -> None:
    created = client.create(claim_request("fp-new"), "fp-create")
    assert created.state == pb.CLAIM_STATE_UNCOMMITTED
    assert claim_state(data_dir, created.claim_id) == "UNCOMMITTED"
    assert client.create(claim_request("fp-new"), "fp-create") == created


CHECKS: dict[str, Check] = {
    "after_etl_append_execute_claim_v2": _execution_committed,
    "before_commit_execute_claim_v2": _execution_absent,
    "before_commit_execute_claim_v2_incident": _incident_absent,
    "after_etl_append_revoke_claim": _revocation_committed,
    "before_commit_revoke_claim": _revocation_absent,
    "before_commit_create_claim_v2": _create_absent,
}


def test_v1_execute_failpoint_is_never_reached(tmp_path: Path) -> None:
    """``after_etl_append_execute_claim`` belongs to v1 ExecuteClaim, which this daemon never
    serves (it lets the caller pick the decision): the call is refused, nothing dies."""
    write_epoch_config(tmp_path / "data")
    daemon = DaemonProcess(
        tmp_path / "data",
        env={FAILPOINT_ENV: "after_etl_append_execute_claim", "EVIDENCEOS_ENABLE_INSECURE_V1": "1"},
    ).start()
    try:
        stub: Any = daemon.v1
        code, _ = rpc_error(
            lambda: stub.ExecuteClaim(
                v1_pb.ExecuteClaimRequest(claim_id=bytes(32), decision=v1_pb.DECISION_APPROVE),
                timeout=RPC_TIMEOUT,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert daemon.returncode is None
        assert daemon.v2.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT).status == "SERVING"
    finally:
        daemon.kill()
