"""RevokeClaim, taint, the signed feed and its watchers against a real ``evidenceosd``
(spec 20 §3.16-3.18, spec 40 §3.3, §5, §10 items 12, 13, 21, 35; DESIGN §3).

Every feed and every watch message is verified the way a client holding only the public key
would: the head's signature and the snapshot signature are rebuilt from the spec's byte layout in
``tests/support/revocation.py`` (no ``evidenceos`` import) and checked against GetPublicKey.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb
from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc
from tests.support.claims import (
    RPC_TIMEOUT,
    ClaimClient,
    claim_state,
    db_snapshot,
    query,
    rpc_error,
    snapshot_diff,
    start_claims_daemon,
)
from tests.support.daemon import DaemonProcess
from tests.support.revocation import (
    BIG_BUDGETS,
    Head,
    entry_tuples,
    executed_claim,
    get_feed,
    guest,
    revoke,
    sealed_claim,
    verify_watch_message,
)
from tests.support.verify import inclusion_valid, leaf_hash

pytestmark = pytest.mark.process

TAINT = "tainted:"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that only look at their own claims."""
    daemon = start_claims_daemon(tmp_path_factory.mktemp("revocation") / "data", env=BIG_BUDGETS)
    try:
        yield daemon
    finally:
        daemon.kill()


@pytest.fixture(scope="module")
def module_bytes() -> bytes:
    return guest()


class Watcher:
    """Reads one WatchRevocations stream on a thread, keeping every message and the end."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()):
        self.call: Any = pb_grpc.EvidenceOSStub(channel).WatchRevocations(
            pb.WatchRevocationsRequest(), metadata=metadata
        )
        self.messages: list[pb.WatchRevocationsResponse] = []
        self.error: grpc.RpcError | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self.call:
                with self._cond:
                    self.messages.append(message)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def wait_entries(self, count: int, timeout: float = 10.0) -> list[tuple[bytes, int, str]]:
        """Block until the stream delivered ``count`` entries in total; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(len(m.entries) for m in self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"watcher got {self.entries()} instead of {count} entries"
                assert self.error is None, f"watch stream ended: {self.error}"
                self._cond.wait(left)
        return self.entries()

    def entries(self) -> list[tuple[bytes, int, str]]:
        return [e for m in self.messages for e in entry_tuples(m.entries)]

    def wait_end(self, timeout: float = 15.0) -> grpc.RpcError:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watch stream did not end"
        assert self.error is not None
        return self.error

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(5)


def feed_entries(stub: Any) -> list[tuple[bytes, int, str]]:
    response, _ = get_feed(stub)
    return entry_tuples(response.entries)


# -- empty feed -------------------------------------------------------------------------------


def test_fresh_daemon_serves_an_empty_signed_feed_and_watch(tmp_path: Path) -> None:
    daemon = start_claims_daemon(tmp_path / "data")
    try:
        response, head = get_feed(daemon.v2)
        assert list(response.entries) == []
        sth = daemon.v2.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=RPC_TIMEOUT)
        assert head == Head(sth.tree_size, sth.root_hash, sth.signature, sth.key_id)

        watcher = Watcher(daemon.channel())
        watcher.wait_entries(0)
        with watcher._cond:
            while not watcher.messages:
                watcher._cond.wait(5)
        first = watcher.messages[0]
        assert list(first.entries) == []
        assert verify_watch_message(daemon.v2, first) == head
        watcher.cancel()
        # v1 serves the same feed.
        v1 = daemon.v1.GetRevocationFeed(v1_pb.GetRevocationFeedRequest(), timeout=RPC_TIMEOUT)
        assert (v1.signature, v1.key_id) == (response.signature, response.key_id)
    finally:
        daemon.kill()


# -- taint ------------------------------------------------------------------------------------


def test_revoking_a_three_level_chain_taints_every_descendant(
    tmp_path: Path, module_bytes: bytes
) -> None:
    """a ← b ← c and a ← b ← x (two children of b), d unrelated: revoking a makes a REVOKED and
    b, c, x TAINTED in the database, in the feed (breadth-first) and in state.json, in one
    transaction with one revocation leaf; it all survives a restart."""
    data_dir = tmp_path / "data"
    daemon = start_claims_daemon(data_dir, env=BIG_BUDGETS)
    client = ClaimClient.for_daemon(daemon)
    a, a_out = executed_claim(client, "chain-a", module_bytes)
    b, b_out = executed_claim(client, "chain-b", module_bytes, [a_out.capsule_hash])
    c, c_out = executed_claim(client, "chain-c", module_bytes, [b_out.capsule_hash])
    x, x_out = executed_claim(client, "chain-x", module_bytes, [b_out.capsule_hash])
    d, _ = executed_claim(client, "chain-d", module_bytes)
    d_state = claim_state(data_dir, d)
    size_before = client.head().tree_size

    reply = revoke(daemon.v2, a, "dataset withdrawn", "revoke-a")
    assert reply.state == pb.CLAIM_STATE_REVOKED
    assert abs(reply.timestamp_unix - time.time()) < 120

    states = {
        name: claim_state(data_dir, cid) for name, cid in zip("abcxd", (a, b, c, x, d), strict=True)
    }
    assert states == {
        "a": "REVOKED",
        "b": "TAINTED",
        "c": "TAINTED",
        "x": "TAINTED",
        "d": d_state,
    }
    # One leaf: the revocation record, at the index it names.
    rows = query(
        data_dir,
        "SELECT leaf_index, kind, payload FROM log_leaves WHERE leaf_index >= ?",
        (size_before,),
    )
    assert len(rows) == 1
    index, kind, payload = rows[0]
    assert kind == "revocation"
    assert json.loads(payload) == {
        "kind": "revocation",
        "capsule_hash_hex": a_out.capsule_hash.hex(),
        "claim_id_hex": a.hex(),
        "reason": "dataset withdrawn",
        "revoked_at_index": index,
        "timestamp_unix": reply.timestamp_unix,
    }

    # The feed, breadth-first: b, then b's children in the order their capsules were appended.
    ts = reply.timestamp_unix
    taint = TAINT + a_out.capsule_hash.hex()
    expected = [
        (a_out.capsule_hash, ts, "dataset withdrawn"),
        (b_out.capsule_hash, ts, taint),
        (c_out.capsule_hash, ts, taint),
        (x_out.capsule_hash, ts, taint),
    ]
    response, head = get_feed(daemon.v2)
    assert entry_tuples(response.entries) == expected
    assert head.tree_size == index + 1
    # The revocation leaf is in the log the feed's head commits to.
    proof = daemon.v2.GetInclusionProof(
        pb.GetInclusionProofRequest(leaf_index=index), timeout=RPC_TIMEOUT
    )
    assert proof.root_hash == head.root_hash
    assert inclusion_valid(
        index, head.tree_size, leaf_hash(payload), proof.sibling_hashes, head.root_hash
    )
    feed_rows = query(
        data_dir,
        "SELECT entry_kind, claim_id_hex FROM revocation_feed ORDER BY feed_seq",
    )
    assert feed_rows == [
        ("revoked", a.hex()),
        ("tainted", b.hex()),
        ("tainted", c.hex()),
        ("tainted", x.hex()),
    ]

    # Revoking the middle re-taints its subtree: b REVOKED, c and x TAINTED again.
    second = revoke(daemon.v2, b, "second look", "revoke-b")
    assert [claim_state(data_dir, cid) for cid in (a, b, c, x)] == [
        "REVOKED",
        "REVOKED",
        "TAINTED",
        "TAINTED",
    ]
    taint_b = TAINT + b_out.capsule_hash.hex()
    expected += [
        (b_out.capsule_hash, second.timestamp_unix, "second look"),
        (c_out.capsule_hash, second.timestamp_unix, taint_b),
        (x_out.capsule_hash, second.timestamp_unix, taint_b),
    ]
    assert feed_entries(daemon.v2) == expected

    # state.json (written at clean shutdown) shows the feed and the states.
    assert daemon.terminate() == 0
    state = json.loads((data_dir / "state.json").read_text(encoding="utf-8"))
    exported = [
        (r["kind"], r["claim_id"], r["capsule_hash"], r["reason"]) for r in state["revocations"]
    ]
    assert exported == [
        ("revoked", a.hex(), a_out.capsule_hash.hex(), "dataset withdrawn"),
        ("tainted", b.hex(), b_out.capsule_hash.hex(), taint),
        ("tainted", c.hex(), c_out.capsule_hash.hex(), taint),
        ("tainted", x.hex(), x_out.capsule_hash.hex(), taint),
        ("revoked", b.hex(), b_out.capsule_hash.hex(), "second look"),
        ("tainted", c.hex(), c_out.capsule_hash.hex(), taint_b),
        ("tainted", x.hex(), x_out.capsule_hash.hex(), taint_b),
    ]
    claims = {c_["claim_id"]: c_["state"] for c_ in state["claims"]}
    assert [claims[cid.hex()] for cid in (a, b, c, x)] == [
        "REVOKED",
        "REVOKED",
        "TAINTED",
        "TAINTED",
    ]

    # Durable: a restart serves the same feed.
    restarted = start_claims_daemon(data_dir, env=BIG_BUDGETS)
    try:
        assert feed_entries(restarted.v2) == expected
    finally:
        restarted.kill()


# -- refusals and exactly once ----------------------------------------------------------------


def test_revoke_refusals_leave_no_trace(shared: DaemonProcess, module_bytes: bytes) -> None:
    client = ClaimClient.for_daemon(shared)
    executed, _ = executed_claim(client, "refusals-executed", module_bytes)
    sealed = sealed_claim(client, "refusals-sealed", module_bytes)
    before = db_snapshot(shared.data_dir)
    stub = shared.v2
    cases = [
        (
            lambda: revoke(stub, executed, "why", None),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing x-request-id",
        ),
        (
            lambda: revoke(stub, executed, "", "r-empty"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason must be in [1,256]",
        ),
        (
            lambda: revoke(stub, executed, "é" * 129, "r-long"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason must be in [1,256]",
        ),
        (
            lambda: revoke(stub, executed[:31], "why", "r-short"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
        ),
        (
            lambda: revoke(stub, bytes(32), "why", "r-unknown"),
            grpc.StatusCode.NOT_FOUND,
            "claim not found",
        ),
        (
            lambda: revoke(stub, sealed, "why", "r-sealed"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "capsule hash unavailable",
        ),
    ]
    for call, code, message in cases:
        assert rpc_error(call) == (code, message)
    assert snapshot_diff(before, db_snapshot(shared.data_dir)) == {}
    # A refused request leaves no idempotency record: fixing it under the same id works.
    assert revoke(stub, executed, "é" * 128, "r-long").state == pb.CLAIM_STATE_REVOKED


def test_revoke_is_exactly_once_per_request_id(shared: DaemonProcess, module_bytes: bytes) -> None:
    client = ClaimClient.for_daemon(shared)
    claim_id, _ = executed_claim(client, "exactly-once", module_bytes)
    first = revoke(shared.v2, claim_id, "superseded", "once-1")
    size = client.head().tree_size
    feed = feed_entries(shared.v2)
    time.sleep(1.1)  # a re-run would carry a new timestamp

    assert revoke(shared.v2, claim_id, "superseded", "once-1") == first
    v1 = pb_grpc.EvidenceOSStub(shared.channel())
    assert revoke(v1, claim_id, "superseded", "once-1") == first  # records shared with v1
    v1_stub: Any = shared.v1
    v1_reply = v1_stub.RevokeClaim(
        v1_pb.RevokeClaimRequest(claim_id=claim_id, reason="superseded"),
        metadata=(("x-request-id", "once-1"),),
        timeout=RPC_TIMEOUT,
    )
    assert (v1_reply.state, v1_reply.timestamp_unix) == (first.state, first.timestamp_unix)
    assert client.head().tree_size == size
    assert feed_entries(shared.v2) == feed

    assert rpc_error(lambda: revoke(shared.v2, claim_id, "other reason", "once-1")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "x-request-id reused with different request payload",
    )
    # A new request id revokes again (spec 20 §3.16: no state check).
    again = revoke(shared.v2, claim_id, "superseded", "once-2")
    assert again.timestamp_unix > first.timestamp_unix
    assert feed_entries(shared.v2)[-1] == (
        query(
            shared.data_dir, "SELECT last_capsule_hash FROM claims WHERE claim_id = ?", (claim_id,)
        )[0][0],
        again.timestamp_unix,
        "superseded",
    )
    assert client.head().tree_size == size + 1


# -- watchers ---------------------------------------------------------------------------------


def test_watchers_get_each_committed_revocation_once(
    shared: DaemonProcess, module_bytes: bytes
) -> None:
    client = ClaimClient.for_daemon(shared)
    root, root_out = executed_claim(client, "watch-root", module_bytes)
    child, _ = executed_claim(client, "watch-child", module_bytes, [root_out.capsule_hash])
    other, _ = executed_claim(client, "watch-other", module_bytes)
    start = feed_entries(shared.v2)
    channels = [shared.new_channel() for _ in range(3)]
    watchers = [Watcher(ch) for ch in channels]
    for w in watchers:
        assert w.wait_entries(len(start)) == start  # the snapshot

    revoke(shared.v2, root, "watch 1", "watch-1")  # root + tainted child
    revoke(shared.v2, other, "watch 2", "watch-2")
    revoke(shared.v2, child, "watch 3", "watch-3")
    full = feed_entries(shared.v2)
    assert len(full) == len(start) + 4
    for w in watchers:
        assert w.wait_entries(len(full)) == full  # each entry exactly once, in feed order
        assert [len(m.entries) for m in w.messages[1:]] == [2, 1, 1]  # one message per revoke
        for message in w.messages:
            verify_watch_message(shared.v2, message)

    # A late watcher gets everything in its first message; one that resumes gets the rest.
    late = Watcher(shared.new_channel())
    assert late.wait_entries(len(full)) == full
    assert len(late.messages) == 1
    resumed = Watcher(
        shared.new_channel(), metadata=(("x-evidenceos-feed-after", str(len(start))),)
    )
    assert resumed.wait_entries(4) == full[len(start) :]
    verify_watch_message(shared.v2, resumed.messages[0])
    for w in [*watchers, late, resumed]:
        w.cancel()
    for ch in channels:
        ch.close()

    bad = Watcher(shared.channel(), metadata=(("x-evidenceos-feed-after", "nope"),))
    error: Any = bad.wait_end()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_slow_watcher_is_dropped_and_never_slows_writers(
    tmp_path: Path, module_bytes: bytes
) -> None:
    env = {
        **BIG_BUDGETS,
        "EVIDENCEOS_REVOCATION_WATCH_BUFFER": "2",
        "EVIDENCEOS_REVOCATION_WATCHERS_MAX": "2",
    }
    daemon = start_claims_daemon(tmp_path / "data", env=env)
    try:
        client = ClaimClient.for_daemon(daemon)
        claim_id, _ = executed_claim(client, "slow", module_bytes)
        # A client that stops reading: small HTTP/2 windows, so flow control pushes back at
        # once and the daemon's per-watcher buffer (2) fills.
        slow_channel = grpc.insecure_channel(
            daemon.address,
            options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
        )
        slow: Any = pb_grpc.EvidenceOSStub(slow_channel).WatchRevocations(
            pb.WatchRevocationsRequest()
        )
        next(slow)
        fast = Watcher(daemon.new_channel())
        fast.wait_entries(0)
        # The cap: a third watcher is refused while two are connected.
        third = Watcher(daemon.channel())
        error: Any = third.wait_end()
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many revocation watchers" in error.details()

        worst = 0.0
        done = 0
        for i in range(200):
            started = time.monotonic()
            revoke(daemon.v2, claim_id, "r" * 256, f"slow-{i}")
            worst = max(worst, time.monotonic() - started)
            done += 1
            if daemon.events("revocation_watcher_dropped") and done >= 10:
                break
        assert daemon.events("revocation_watcher_dropped"), "the slow watcher was never dropped"
        assert worst < 2.0, f"a revoke took {worst:.2f} s with a blocked watcher"
        # The fast watcher still got every revocation, once.
        assert fast.wait_entries(done) == feed_entries(daemon.v2)
        # The slow one reads what was in flight, then a clear status.
        with pytest.raises(grpc.RpcError) as dropped:
            for _ in slow:
                pass
        failed: Any = dropped.value
        assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "revocation watcher dropped" in failed.details()
        assert "reconnect" in failed.details()
        slow_channel.close()
        # A dropped watcher freed its slot: a new watcher is admitted and sees everything.
        again = Watcher(daemon.new_channel())
        assert again.wait_entries(done) == feed_entries(daemon.v2)

        # SIGTERM ends every watch at once with UNAVAILABLE instead of waiting for the grace.
        started = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - started < 8
        for w in (fast, again):
            ended: Any = w.wait_end()
            assert ended.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        daemon.kill()


def test_feed_signature_covers_entries_and_head(shared: DaemonProcess) -> None:
    """Tampering with any signed byte — an entry, the head size or root — fails verification."""
    from tests.support.revocation import public_key, signature_valid, snapshot_digest

    response, head = get_feed(shared.v2)
    key = public_key(shared.v2, response.key_id)
    entries = entry_tuples(response.entries)
    good = snapshot_digest(entries, head.tree_size, head.root_hash, head.key_id)
    assert signature_valid(key, response.signature, good)
    variants = [
        snapshot_digest(entries, head.tree_size + 1, head.root_hash, head.key_id),
        snapshot_digest(entries, head.tree_size, hashlib.sha256(b"x").digest(), head.key_id),
        snapshot_digest(
            [*entries, (bytes(32), 1, "x")], head.tree_size, head.root_hash, head.key_id
        ),
    ]
    if entries:
        first = entries[0]
        variants.append(
            snapshot_digest(
                [(first[0], first[1] + 1, first[2]), *entries[1:]],
                head.tree_size,
                head.root_hash,
                head.key_id,
            )
        )
    for digest in variants:
        assert not signature_valid(key, response.signature, digest)
