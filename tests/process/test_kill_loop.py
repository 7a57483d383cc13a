"""The kill loop: SIGKILL the daemon at random instants under load, restart, check everything
(spec 40 §10 item 38, DESIGN §3).

Client threads drive create → commit → seal → execute → revoke (and revoke each other's
executed claims, and build claims on each other's capsules so revocations taint). A killer
thread SIGKILLs the daemon after a random delay, restarts it on the same data dir (the flock
of a dead process never blocks a restart), and — with the clients paused — checks:

* every acknowledged mutation is present (a loss is counted, and must be 0);
* every claim is in a state its acknowledged and in-flight history explains, and no mutation
  happened twice (one capsule per claim, no more revocations than requests);
* the stored leaves hash to their payloads and every head handed out so far (to clients or
  stored) is a prefix of the log; the new head is consistent with the previous checkpoint;
* the exports are whole and describe a committed state.

Clients retry an interrupted call against the next daemon with the same ``x-request-id``.

``EVIDENCEOS_KILL_LOOP_KILLS`` sets the number of kills (default 50, the CI run); ``make
torture`` runs 1,000 and prints the counts. ``EVIDENCEOS_KILL_LOOP_SEED`` replays a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3  # noqa: TID251 - an independent reader of the daemon's database
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc
from tests.support.claims import RPC_TIMEOUT, write_epoch_config
from tests.support.daemon import DaemonProcess, run_ctl
from tests.support.revocation import (
    BIG_BUDGETS,
    Head,
    LogChecker,
    claim_request,
    commit_with_dependencies,
    connect_ro,
    guest,
    stored_heads,
    stored_public_keys,
)

pytestmark = [pytest.mark.process, pytest.mark.slow]

KILLS = int(os.environ.get("EVIDENCEOS_KILL_LOOP_KILLS", "50"))
CLIENTS = int(os.environ.get("EVIDENCEOS_KILL_LOOP_CLIENTS", "4"))
SEED = int(os.environ.get("EVIDENCEOS_KILL_LOOP_SEED", str(random.randrange(1 << 32))))
#: Time the daemon serves before the next SIGKILL, uniform in this range (seconds).
UPTIME = (0.05, 0.6)
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
ENV = {**BIG_BUDGETS, "EVIDENCEOS_DEFAULT_CREDIT_LIMIT": str(10**18)}
EXECUTED_STATES = {"CERTIFIED", "REVOKED", "FROZEN"}
REVOKE_METHOD = "/evidenceos.v2.EvidenceOS/RevokeClaimV2"
EXECUTE_METHOD = "/evidenceos.v2.EvidenceOS/ExecuteClaimV2"

T = TypeVar("T")


class Stop(Exception):
    """The loop is over; client threads unwind."""


@dataclass
class Generation:
    number: int
    daemon: DaemonProcess
    channel: grpc.Channel
    stub: pb_grpc.EvidenceOSStub
    retired: bool = False  # killed; its channel is closed under calls still using it


@dataclass
class Track:
    """What one client knows about one claim: acknowledged steps, the step in flight."""

    name: str
    deps: list[bytes]
    claim_id: bytes | None = None
    acked: list[str] = field(default_factory=list)  # create, commit, seal, execute
    pending: str | None = None
    exec_state: str | None = None
    capsule_hash: bytes | None = None
    etl_index: int | None = None
    execute_rid: str | None = None
    revokes_attempted: set[str] = field(default_factory=set)
    revokes_acked: dict[str, int] = field(default_factory=dict)  # rid -> timestamp


@dataclass
class Stats:
    kills: int = 0
    acked: int = 0
    losses: int = 0
    retries: int = 0
    heads_checked: int = 0
    problems: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cond = threading.Condition()
        self.generation: Generation | None = None
        self.numbers = 0
        self.stopped = False
        self.lock = threading.Lock()  # guards tracks, executed, heads, stats
        self.tracks: list[Track] = []
        self.by_capsule: dict[bytes, Track] = {}
        self.executed: list[Track] = []
        self.heads: list[Head] = []
        self.issued_checked = 0
        self.stored_checked = 0
        self.stats = Stats()
        self.module = guest()

    # -- daemons --------------------------------------------------------------------------

    def start_daemon(self) -> Generation:
        daemon = DaemonProcess(
            self.data_dir, extra_args=["--insecure-synthetic-holdout"], env=ENV
        ).start()
        channel = daemon.new_channel()
        self.numbers += 1
        return Generation(self.numbers, daemon, channel, pb_grpc.EvidenceOSStub(channel))

    def publish(self, generation: Generation | None) -> None:
        with self.cond:
            self.generation = generation
            self.cond.notify_all()

    def current(self) -> Generation:
        with self.cond:
            while self.generation is None:
                if self.stopped:
                    raise Stop
                self.cond.wait(0.5)
            return self.generation

    # -- calls ----------------------------------------------------------------------------

    def call(self, fn: Callable[[pb_grpc.EvidenceOSStub], T]) -> T:
        """Run ``fn`` against the live daemon; retry (same arguments, so the same request id)
        when the daemon died under it."""
        while True:
            generation = self.current()
            try:
                return fn(generation.stub)
            except grpc.RpcError as exc:
                failed: Any = exc
                code = failed.code()
                if code not in RETRYABLE and not (
                    code == grpc.StatusCode.CANCELLED and generation.retired
                ):
                    raise
                with self.lock:
                    self.stats.retries += 1
                with self.cond:
                    if self.generation is generation and not self.stopped:
                        self.cond.wait(0.05)

    def ack(self, track: Track, op: str) -> None:
        with self.lock:
            track.acked.append(op)
            track.pending = None
            self.stats.acked += 1


def run_client(h: Harness, index: int, rng: random.Random) -> None:
    counter = 0
    while not h.stopped:
        counter += 1
        with h.lock:
            executed = list(h.executed)
        if executed and rng.random() < 0.3:
            revoke_existing(h, rng.choice(executed), f"c{index}-r{counter}")
            continue
        deps = [t.capsule_hash for t in rng.sample(executed, min(len(executed), rng.randint(0, 2)))]
        track = Track(f"kill-c{index}-{counter}", [d for d in deps if d is not None])
        with h.lock:
            h.tracks.append(track)
        lifecycle(h, track, f"c{index}-{counter}", rng)


def lifecycle(h: Harness, track: Track, rid: str, rng: random.Random) -> None:
    request = claim_request(track.name, track.deps)
    track.pending = "create"
    created = h.call(
        lambda s: s.CreateClaimV2(
            request, metadata=(("x-request-id", rid + "-create"),), timeout=RPC_TIMEOUT
        )
    )
    claim_id = track.claim_id = bytes(created.claim_id)
    h.ack(track, "create")
    commit = commit_with_dependencies(claim_id, h.module, track.deps)
    track.pending = "commit"
    h.call(lambda s: s.CommitArtifacts(commit, timeout=RPC_TIMEOUT))
    h.ack(track, "commit")
    track.pending = "seal"
    h.call(lambda s: s.SealClaim(pb.SealClaimRequest(claim_id=claim_id), timeout=30))
    h.ack(track, "seal")
    track.pending = "execute"
    track.execute_rid = rid + "-exec"
    out = h.call(
        lambda s: s.ExecuteClaimV2(
            pb.ExecuteClaimV2Request(claim_id=claim_id),
            metadata=(("x-request-id", rid + "-exec"),),
            timeout=RPC_TIMEOUT,
        )
    )
    with h.lock:
        track.exec_state = pb.ClaimState.Name(out.state).removeprefix("CLAIM_STATE_")
        track.capsule_hash = bytes(out.capsule_hash)
        track.etl_index = int(out.etl_index)
        h.by_capsule[track.capsule_hash] = track
        h.executed.append(track)
    h.ack(track, "execute")
    head = h.call(lambda s: s.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=30))
    with h.lock:
        h.heads.append(Head(head.tree_size, head.root_hash, head.signature, head.key_id))
    if rng.random() < 0.4:
        revoke_existing(h, track, rid + "-revoke")


def revoke_existing(h: Harness, track: Track, rid: str) -> None:
    assert track.claim_id is not None
    claim_id = track.claim_id
    with h.lock:
        track.revokes_attempted.add(rid)
    out = h.call(
        lambda s: s.RevokeClaim(
            pb.RevokeClaimRequest(claim_id=claim_id, reason=f"kill loop {rid}"),
            metadata=(("x-request-id", rid),),
            timeout=RPC_TIMEOUT,
        )
    )
    assert out.state == pb.CLAIM_STATE_REVOKED
    with h.lock:
        track.revokes_acked[rid] = int(out.timestamp_unix)
        h.stats.acked += 1


# -- checks after every restart ---------------------------------------------------------------


def under_revocation(tracks: list[Track]) -> set[int]:
    """``id`` of every track with an ancestor someone tried to revoke: forward from the revoked
    capsules over dependency edges, O(claims + edges) per check."""
    children: dict[bytes, list[Track]] = {}
    for track in tracks:
        for dep in track.deps:
            children.setdefault(dep, []).append(track)
    frontier = [t.capsule_hash for t in tracks if t.revokes_attempted and t.capsule_hash]
    seen: set[int] = set()
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if id(child) not in seen:
                seen.add(id(child))
                if child.capsule_hash is not None:
                    frontier.append(child.capsule_hash)
    return seen


def allowed_states(track: Track, revoked_ancestor: bool) -> set[str]:
    after = {"create": "UNCOMMITTED", "commit": "COMMITTED", "seal": "SEALED"}
    allowed: set[str] = set()
    last = track.acked[-1] if track.acked else None
    if last == "execute":
        assert track.exec_state is not None
        allowed.add(track.exec_state)
    elif last is not None:
        allowed.add(after[last])
    may_have_capsule = last == "execute" or track.pending == "execute"
    if track.pending == "execute":
        allowed |= EXECUTED_STATES
    elif track.pending in after:
        allowed.add(after[track.pending])
    if track.revokes_attempted:
        allowed.add("REVOKED")
    if may_have_capsule and revoked_ancestor:
        allowed.add("TAINTED")
    if track.revokes_acked and not revoked_ancestor:
        allowed = {"REVOKED"}
    return allowed


def check_database(h: Harness, conn: sqlite3.Connection, checker: LogChecker) -> list[str]:
    problems: list[str] = []
    conn.execute("BEGIN")
    claims = {
        bytes(cid): (state, etl_index, None if capsule is None else bytes(capsule), record)
        for cid, state, etl_index, capsule, record in conn.execute(
            "SELECT claim_id, state, etl_index, last_capsule_hash, record_json FROM claims"
        )
    }
    capsules: dict[bytes, int] = {
        bytes(cid): int(n)
        for cid, n in conn.execute("SELECT claim_id, count(*) FROM capsules GROUP BY claim_id")
    }
    revocations: dict[bytes, list[int]] = {}
    for cid, ts in conn.execute("SELECT claim_id, timestamp_unix FROM revocations"):
        revocations.setdefault(bytes(cid), []).append(int(ts))
    records = {
        (str(m), str(r))
        for m, r in conn.execute("SELECT rpc_method, request_id FROM idempotency_records")
    }
    leaf_sha = {
        int(i): bytes(s)
        for i, s in conn.execute("SELECT leaf_index, payload_sha256 FROM log_leaves")
    }
    size = checker.check(conn, want_sizes=[head.tree_size for head in h.heads])
    heads = stored_heads(conn)
    keys = stored_public_keys(conn)
    conn.execute("COMMIT")

    with h.lock:
        tracks = list(h.tracks)
        issued = list(h.heads)
    # Leaves are append-only and the verified prefix was just confirmed unchanged, so a head
    # checked once stays a prefix of the log: check each head once.
    fresh = [*issued[h.issued_checked :], *heads[h.stored_checked :]]
    h.stats.heads_checked += checker.assert_heads(fresh, keys)
    h.issued_checked, h.stored_checked = len(issued), len(heads)
    assert len(leaf_sha) == size
    tainted = under_revocation(tracks)
    for track in tracks:
        if track.claim_id is None:
            continue  # creation never acknowledged: it may or may not have happened
        row = claims.get(track.claim_id)
        if row is None:
            h.stats.losses += 1
            problems.append(f"{track.name}: acknowledged claim missing")
            continue
        state, etl_index, capsule, record_json = row
        record = json.loads(record_json)
        if "commit" in track.acked and state == "UNCOMMITTED":
            h.stats.losses += 1
            problems.append(f"{track.name}: acknowledged commit lost")
        if "seal" in track.acked and record.get("sealed_preimage_hash") is None:
            h.stats.losses += 1
            problems.append(f"{track.name}: acknowledged seal lost")
        if capsules.get(track.claim_id, 0) > 1:
            problems.append(f"{track.name}: executed {capsules[track.claim_id]} times")
        if "execute" in track.acked:
            if (etl_index, capsule) != (track.etl_index, track.capsule_hash):
                h.stats.losses += 1
                problems.append(f"{track.name}: acknowledged execution lost or changed")
            if (EXECUTE_METHOD, track.execute_rid) not in records:
                problems.append(f"{track.name}: execution's idempotency record missing")
        if capsule is not None and leaf_sha.get(etl_index) != capsule:
            problems.append(f"{track.name}: claim points to a missing or different leaf")
        found = revocations.get(track.claim_id, [])
        for rid, ts in track.revokes_acked.items():
            if ts not in found or (REVOKE_METHOD, rid) not in records:
                h.stats.losses += 1
                problems.append(f"{track.name}: acknowledged revocation {rid} lost")
        if len(found) > len(track.revokes_attempted):
            problems.append(
                f"{track.name}: {len(found)} revocations for "
                f"{len(track.revokes_attempted)} requests"
            )
        allowed = allowed_states(track, id(track) in tainted)
        if state not in allowed:
            problems.append(
                f"{track.name}: state {state} not explained by acked {track.acked} "
                f"pending {track.pending} revokes {sorted(track.revokes_attempted)} "
                f"(allowed {sorted(allowed)})"
            )
    return problems


def check_exports(data_dir: Path, checker: LogChecker) -> list[str]:
    problems: list[str] = []
    state_path = data_dir / "state.json"
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            return [f"state.json is torn: {exc}"]
        log = state["log"]
        size = int(log["tree_size"])
        if log["root_hash"] is not None and checker.roots.get(size) != bytes.fromhex(
            log["root_hash"]
        ):
            problems.append(f"state.json describes a log of size {size} that was never committed")
    accounts = data_dir / "accounts.json"
    if accounts.exists():
        try:
            json.loads(accounts.read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"accounts.json is torn: {exc}")
    etl = data_dir / "etl.log"
    if etl.exists():
        data = etl.read_bytes()
        offset = index = 0
        while offset < len(data):
            if offset + 4 > len(data):
                problems.append(f"etl.log torn inside the length of record {index}")
                break
            (length,) = struct.unpack_from("<I", data, offset)
            end = offset + 4 + length + 4
            if end > len(data):
                problems.append(f"etl.log torn inside record {index}")
                break
            payload = data[offset + 4 : offset + 4 + length]
            (crc,) = struct.unpack_from("<I", data, end - 4)
            if crc != zlib.crc32(data[offset : offset + 4 + length]):
                problems.append(f"etl.log record {index} has a bad CRC")
                break
            digest = hashlib.sha256(b"\x00" + payload).digest()
            if index >= len(checker.leaf_hashes) or checker.leaf_hashes[index] != digest:
                where = (
                    f"a copy of leaf {checker.leaf_hashes.index(digest)}"
                    if digest in checker.leaf_hashes
                    else "no leaf of the log"
                )
                problems.append(
                    f"etl.log record {index} is not leaf {index} but {where} "
                    f"({len(checker.leaf_hashes)} leaves)"
                )
                break
            offset, index = end, index + 1
    return problems


def test_kill_loop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_epoch_config(data_dir)
    h = Harness(data_dir)
    rng = random.Random(SEED)
    checker = LogChecker()
    generation = h.start_daemon()
    h.publish(generation)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            run_client(h, i, random.Random(rng.random()))
        except Stop:
            pass
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    checkpoint: Head | None = None
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(*UPTIME))
            assert not errors, f"a client failed: {errors[0]!r}"
            h.publish(None)  # clients hold their next call until the checks are done
            os.kill(generation.daemon.pid, signal.SIGKILL)
            assert generation.daemon.wait_exit(15) == -signal.SIGKILL
            generation.retired = True
            generation.channel.close()
            h.stats.kills += 1
            generation = h.start_daemon()
            with connect_ro(data_dir) as conn:
                problems = check_database(h, conn, checker)
            problems += check_exports(data_dir, checker)
            head = generation.stub.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=30)
            if checkpoint is not None:
                proof = generation.stub.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(
                        first_tree_size=checkpoint.tree_size, second_tree_size=head.tree_size
                    ),
                    timeout=30,
                )
                if not (proof.consistent and proof.first_root_hash == checkpoint.root_hash):
                    problems.append(f"head {head.tree_size} inconsistent with {checkpoint}")
            checkpoint = Head(head.tree_size, head.root_hash, head.signature, head.key_id)
            with h.lock:
                h.heads.append(checkpoint)
            h.stats.problems += [f"after kill {h.stats.kills}: {p}" for p in problems]
            assert not h.stats.problems, "\n".join(h.stats.problems[:20]) + f"\nseed {SEED}"
            h.publish(generation)
    finally:
        with h.cond:
            h.stopped = True
            h.cond.notify_all()
        for t in threads:
            t.join(30)
        final = generation.daemon.terminate() if generation.daemon.returncode is None else None
        generation.channel.close()
        print(  # noqa: T201 - the summary `make torture` prints
            f"\nkill loop: kills={h.stats.kills} acknowledged_mutations={h.stats.acked} "
            f"losses={h.stats.losses} retries={h.stats.retries} "
            f"heads_checked={h.stats.heads_checked} claims={len(h.tracks)} "
            f"leaves={len(checker.leaf_hashes)} seed={SEED}"
        )
    assert final == 0
    assert not errors, f"a client failed: {errors[0]!r}"
    assert h.stats.losses == 0
    assert h.stats.kills == KILLS
    verify = run_ctl("etl", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
