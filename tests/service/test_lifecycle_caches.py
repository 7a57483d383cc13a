"""What the lifecycle keeps between calls instead of reading it again, on real parts (apsw
SQLite, wasmtime, the services wired as the daemon wires them, no gRPC).

* Write functions read claim rows, pools and accounts that this store's own writes left from
  memory (``WriterRows``), while the store's generation is unchanged: a commit by another
  connection, a rolled-back write or a write that does not pass the generation makes them read
  the table again.
* ExecuteClaimV2 reads the stored reply and everything it needs up front in one snapshot, taken
  before the claim's execution hold; if an execution of the claim ended in between, it reads
  again under the hold, so it never runs on a claim that was already executed.
* CreateClaimV2 looks for a retry's stored reply inside its write (which then changes nothing
  and commits nothing); a retry still gets its reply when the request would now be refused.
* Each RPC takes at most one read snapshot.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest

from evidenceos.core.auth import CallerIdentity, Role
from evidenceos.core.claim import ClaimRecord
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.credit import Account, AccountLimits
from evidenceos.core.ledger import BudgetPool
from evidenceos.errors import AlreadyExists, FailedPrecondition
from evidenceos.service.claims import (
    CREATE_V2_METHOD,
    ClaimService,
    CreateClaimV2Input,
    IdempotencyKey,
)
from evidenceos.service.execution import EXECUTE_V2_METHOD, ExecutionService
from evidenceos.store import accounts as accounts_table
from evidenceos.store import claims as claims_table
from evidenceos.store import pools as pools_table
from evidenceos.store.db import Connection, Store
from tests.support.claims import claim_services, oracle_then_emit_wat, wasm

CALLER = CallerIdentity("alice", Role.AGENT)  # type: ignore[arg-type]
GUEST = wasm(oracle_then_emit_wat(bytes(i % 2 for i in range(128))))


@dataclass
class Kernel:
    data_dir: Path
    store: Store
    claims: ClaimService
    execution: ExecutionService

    def create(self, name: str, key: IdempotencyKey | None = None) -> bytes:
        return self.claims.create_claim_v2(CALLER, _request(name), key).claim_id

    def sealed(self, name: str) -> bytes:
        claim_id = self.create(name)
        self.claims.commit_artifacts(
            CALLER, claim_id, [(hashlib.sha256(GUEST).digest(), "wasm")], GUEST
        )
        self.claims.freeze(CALLER, claim_id, "freeze_gates")
        return claim_id

    def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``statement`` on a connection of its own, as another process would (apsw: a
        second SQLite library in this process would not see the store's locks)."""
        conn = apsw.Connection(str(self.data_dir / "evidenceos.db"))
        try:
            conn.setbusytimeout(5000)
            return list(conn.execute(statement, args))
        finally:
            conn.close()

    def in_write(self, fn: Any) -> Any:
        """``fn(conn, generation)`` in a write transaction of the store."""
        return self.store.write(lambda conn: fn(conn, self.store.generation))


def _request(name: str) -> CreateClaimV2Input:
    return CreateClaimV2Input(
        claim_name=name,
        lane="fast",
        alpha_micros=50_000,
        epoch_config_ref="epoch/default",
        output_schema_id="legacy/v1",
        has_metadata=True,
        semantic_hash=hashlib.sha256(name.encode()).digest(),
        phys_hir_signature_hash=b"",
        dependency_merkle_root=b"",
        holdout_ref="synthetic-lifecycle",
        epoch_size=16,
        oracle_num_symbols=2,
        access_credit=1024,
        oracle_id="",
        nullspec_id="",
        dp_epsilon_budget=None,
        dp_delta_budget=None,
    )


def _key(method: str, request_id: str, payload: bytes = b"") -> IdempotencyKey:
    return IdempotencyKey("alice", method, request_id, hashlib.sha256(payload).digest())


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    data_dir = tmp_path / "data"
    store, _log, claims = claim_services(data_dir)
    try:
        yield Kernel(data_dir, store, claims, ExecutionService(claims))
    finally:
        store.close()


# -- claim rows ------------------------------------------------------------------------------


def _stored(kernel: Kernel, claim_id: bytes) -> ClaimRecord:
    record: ClaimRecord = kernel.in_write(
        lambda conn, gen: claims_table.get_claim(conn, claim_id, gen)
    )
    return record


def _put(kernel: Kernel, record: ClaimRecord, *, with_generation: bool = True) -> None:
    def write(conn: Connection, gen: int) -> None:
        claims_table.put_claim(
            conn, record, 1, stored=True, generation=gen if with_generation else None
        )

    kernel.in_write(write)


def test_a_claim_row_changed_by_another_connection_is_read_again(kernel: Kernel) -> None:
    claim_id = kernel.create("external")
    record = _stored(kernel, claim_id)  # now in the writer's rows
    changed = record.evolve(state=ClaimState.FROZEN)
    kernel.sql(
        "UPDATE claims SET state = 'FROZEN', record_json = ? WHERE claim_id = ?",
        claims_table.encode_claim(changed),
        claim_id,
    )
    assert _stored(kernel, claim_id).state is ClaimState.FROZEN


def test_a_rolled_back_claim_write_is_never_read(kernel: Kernel) -> None:
    claim_id = kernel.create("rolled-back")
    record = _stored(kernel, claim_id)

    def write(conn: Connection, gen: int) -> None:
        claims_table.put_claim(conn, record.evolve(state=ClaimState.SEALED), 2, generation=gen)
        raise FailedPrecondition("roll back")

    with pytest.raises(FailedPrecondition):
        kernel.in_write(write)
    assert _stored(kernel, claim_id).state is ClaimState.UNCOMMITTED


def test_a_write_without_the_generation_drops_the_remembered_row(kernel: Kernel) -> None:
    claim_id = kernel.create("unknowing-writer")
    record = _stored(kernel, claim_id)
    _put(kernel, record.evolve(state=ClaimState.FROZEN), with_generation=False)  # as revocation
    assert _stored(kernel, claim_id).state is ClaimState.FROZEN


def test_another_store_on_the_same_file_is_another_connection(kernel: Kernel) -> None:
    claim_id = kernel.create("two-stores")
    record = _stored(kernel, claim_id)
    other = Store(kernel.data_dir)
    try:
        other.write(
            lambda conn: claims_table.put_claim(
                conn, record.evolve(state=ClaimState.FROZEN), 3, stored=True, generation=0
            )
        )
    finally:
        other.close()
    assert _stored(kernel, claim_id).state is ClaimState.FROZEN


# -- pools and accounts ----------------------------------------------------------------------


def test_pools_are_read_again_after_another_connection_or_a_rollback(kernel: Kernel) -> None:
    topic = b"\x07" * 32
    kernel.in_write(
        lambda conn, gen: pools_table.put_topic_pool(conn, topic, BudgetPool(10.0, 10.0), gen)
    )
    kernel.sql(
        "UPDATE topic_pools SET pool_json = ? WHERE topic_id = ?",
        json.dumps(BudgetPool(20.0, 20.0).to_json(), sort_keys=True),
        topic,
    )
    found = kernel.in_write(lambda conn, gen: pools_table.find_topic_pool(conn, topic, gen))
    assert found == BudgetPool(20.0, 20.0)

    def write(conn: Connection, gen: int) -> None:
        pools_table.put_topic_pool(conn, topic, BudgetPool(30.0, 30.0), gen)
        raise FailedPrecondition("roll back")

    with pytest.raises(FailedPrecondition):
        kernel.in_write(write)
    found = kernel.in_write(lambda conn, gen: pools_table.find_topic_pool(conn, topic, gen))
    assert found == BudgetPool(20.0, 20.0)


def test_a_pool_that_would_not_decode_to_itself_is_read_back_decoded(kernel: Kernel) -> None:
    handle = b"\x08" * 32
    written = BudgetPool(1024, 1024)  # ints: from_json makes floats of them
    kernel.in_write(lambda conn, gen: pools_table.put_holdout_pool(conn, handle, "", written, gen))
    found = kernel.in_write(lambda conn, gen: pools_table.find_holdout_pool(conn, handle, "", gen))
    assert found == written and type(found.k_bits_budget) is float


def test_accounts_are_read_again_after_another_connection(kernel: Kernel) -> None:
    account = Account(100, 100, 1, AccountLimits(100, 100))
    kernel.in_write(lambda conn, gen: accounts_table.put_account(conn, "bob", account, gen))
    kernel.sql("UPDATE accounts SET credit_balance = 7 WHERE principal_id = 'bob'")
    found = kernel.in_write(lambda conn, gen: accounts_table.find_account(conn, "bob", gen))
    assert found is not None and found.credit_balance == 7


def test_an_account_clamped_on_write_is_read_back_clamped(kernel: Kernel) -> None:
    big = Account(2**64 - 1, 0, 1, AccountLimits(2**64 - 1, 0))
    kernel.in_write(lambda conn, gen: accounts_table.put_account(conn, "max", big, gen))
    found = kernel.in_write(lambda conn, gen: accounts_table.find_account(conn, "max", gen))
    assert found is not None and found.credit_balance == 2**63 - 1


# -- ExecuteClaimV2: the snapshot taken before the execution hold ---------------------------


def test_an_execution_that_ended_after_the_snapshot_is_seen(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request executes the claim between this call's snapshot and its hold: the call
    reads again and refuses the executed claim, as it would have had it read under the hold
    (without that read it would run the guest and abort its write as superseded)."""
    claim_id = kernel.sealed("raced")
    execution = kernel.execution
    original = ExecutionService._read_up_front
    other: list[Any] = []
    raced = threading.Event()

    def read_then_race(self: ExecutionService, *args: Any) -> Any:
        read = original(self, *args)
        if not raced.is_set():  # a concurrent request, on its own thread, runs meanwhile
            raced.set()
            thread = threading.Thread(
                target=lambda: other.append(execution.execute_claim_v2(CALLER, claim_id, None))
            )
            thread.start()
            thread.join()
        return read

    monkeypatch.setattr(ExecutionService, "_read_up_front", read_then_race)
    with pytest.raises(FailedPrecondition, match="claim must be SEALED before execution"):
        execution.execute_claim_v2(CALLER, claim_id, None)
    assert len(other) == 1 and other[0].capsule_hash
    assert kernel.sql("SELECT count(*) FROM capsules WHERE claim_id = ?", claim_id) == [(1,)]


# -- CreateClaimV2 retries -------------------------------------------------------------------


def test_a_create_retry_commits_nothing_and_gets_its_reply(kernel: Kernel) -> None:
    key = _key(CREATE_V2_METHOD, "create-1", b"payload")
    first = kernel.claims.create_claim_v2(CALLER, _request("retried"), key)
    commits: list[int] = []
    kernel.store.add_commit_listener(lambda size, _s: commits.append(size))
    rows = kernel.sql("SELECT count(*) FROM idempotency_records")
    assert kernel.claims.create_claim_v2(CALLER, _request("retried"), key) == first
    assert commits == [] and kernel.sql("SELECT count(*) FROM idempotency_records") == rows
    with pytest.raises(AlreadyExists):
        kernel.claims.create_claim_v2(
            CALLER, _request("retried"), _key(CREATE_V2_METHOD, "create-1", b"other")
        )
    assert commits == []


def test_a_create_retry_gets_its_reply_when_the_request_is_now_refused(kernel: Kernel) -> None:
    key = _key(CREATE_V2_METHOD, "create-2", b"payload")
    first = kernel.claims.create_claim_v2(CALLER, _request("refused-now"), key)
    (kernel.data_dir / "epoch_configs" / "epoch" / "default.json").unlink()  # now: no PLN
    assert kernel.claims.create_claim_v2(CALLER, _request("refused-now"), key) == first
    with pytest.raises(FailedPrecondition, match="PLN"):
        kernel.claims.create_claim_v2(
            CALLER, _request("fresh"), _key(CREATE_V2_METHOD, "create-3", b"payload")
        )
    with pytest.raises(AlreadyExists):  # a changed payload is refused even then
        kernel.claims.create_claim_v2(
            CALLER, _request("refused-now"), _key(CREATE_V2_METHOD, "create-2", b"other")
        )


# -- read snapshots per RPC ------------------------------------------------------------------


def test_each_lifecycle_call_takes_at_most_one_read_snapshot(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel.sealed("warm-up")  # the module is compiled and its artefact stored
    reads: list[str] = []
    original = Store.read

    def counted(self: Store) -> AbstractContextManager[Connection]:
        reads.append(step[0])
        return original(self)

    step = ["create"]
    monkeypatch.setattr(Store, "read", counted)
    claim_id = kernel.create("counted", _key(CREATE_V2_METHOD, "counted", b"p"))
    step[0] = "commit"
    kernel.claims.commit_artifacts(
        CALLER, claim_id, [(hashlib.sha256(GUEST).digest(), "wasm")], GUEST
    )
    step[0] = "freeze"
    kernel.claims.freeze(CALLER, claim_id, "freeze_gates")
    step[0] = "seal"
    kernel.claims.freeze(CALLER, claim_id, "seal_claim")
    step[0] = "execute"
    kernel.execution.execute_claim_v2(CALLER, claim_id, _key(EXECUTE_V2_METHOD, "counted", b"p"))
    assert reads == ["commit", "freeze", "seal", "execute"]


# -- decoded records -------------------------------------------------------------------------


def test_written_records_stand_for_their_text_and_replace_the_previous_one(
    kernel: Kernel,
) -> None:
    """What a state.json export reads: a claim's latest text decodes to the record written for
    it (when that record decodes to itself), without decoding; a superseded text is not kept."""
    ids = [kernel.sealed(f"export-{i}") for i in range(3)]

    def texts() -> dict[bytes, str]:
        sql = "SELECT record_json FROM claims WHERE claim_id = ?"
        return {c: kernel.sql(sql, c)[0][0] for c in ids}

    sealed = texts()
    with kernel.store.read() as conn:
        read = {r.claim_id: r for r in claims_table.iter_claims(conn)}
    for claim_id in ids:
        record = claims_table._decoded[sealed[claim_id]]
        assert read[claim_id] is record and record.state is ClaimState.SEALED
        assert record.decodes_to_itself()
        assert claims_table.encode_claim(record) == sealed[claim_id]
    for claim_id in ids:
        kernel.execution.execute_claim_v2(CALLER, claim_id, None)
    executed = texts()
    for claim_id in ids:  # executed records decode to themselves too (ledger meta in order)
        assert sealed[claim_id] not in claims_table._decoded
        record = claims_table._decoded[executed[claim_id]]
        assert record.state is not ClaimState.SEALED and record.decodes_to_itself()
