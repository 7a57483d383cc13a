"""Helpers for revocation, crash and disk tests: claims with dependencies, an independent
verifier for the signed revocation feed, and an incremental RFC 6962 checker for the log.

The feed verifier rebuilds the spec 40 §3.3 digest here with ``hashlib`` and ``struct`` (no
``evidenceos`` import) and checks it with ``cryptography`` against the public key served by
GetPublicKey: what a client holding only the public key can do (docs/revocation.md).
"""

from __future__ import annotations

import hashlib
import sqlite3  # noqa: TID251 - an independent reader of the daemon's database
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from tests.support.claims import (
    RPC_TIMEOUT,
    ClaimClient,
    create_request,
    oracle_then_emit_wat,
    synthetic_labels,
    wasm,
)
from tests.support.verify import sth_signature_valid

REVOCATIONS_DOMAIN = b"evidenceos:revocations:v1"
EMPTY_ROOT = hashlib.sha256(b"").digest()
HOLDOUT = "synthetic-revocation"

#: Pools large enough that no test runs out of budget (every claim reserves its worst case).
BIG_BUDGETS: dict[str, str] = {
    "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "1000000000000",
    "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "1000000000000",
}


def guest(holdout_ref: str = HOLDOUT) -> bytes:
    """Asks the oracle once about the whole synthetic holdout, then emits one symbol."""
    return wasm(oracle_then_emit_wat(synthetic_labels(holdout_ref)))


def dependency_root(items: Sequence[bytes]) -> bytes:
    """Spec 20 §5.4: Merkle root over the sorted dependency hashes (odd node pairs with itself)."""
    layer = [hashlib.sha256(item).digest() for item in sorted(items)]
    if not layer:
        return hashlib.sha256(b"").digest()
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


def claim_request(
    name: str, deps: Sequence[bytes] = (), holdout_ref: str = HOLDOUT
) -> pb.CreateClaimV2Request:
    """A 2-symbol fast-lane legacy claim on its own topic (the name picks the semantic hash)."""
    return create_request(
        name,
        holdout_ref=holdout_ref,
        oracle_num_symbols=2,
        signals=pb.TopicSignalsV2(
            semantic_hash=hashlib.sha256(name.encode()).digest(),
            dependency_merkle_root=dependency_root(deps) if deps else b"",
        ),
    )


def commit_with_dependencies(
    claim_id: bytes, module: bytes, deps: Sequence[bytes] = ()
) -> pb.CommitArtifactsRequest:
    artifacts = [pb.Artifact(artifact_hash=hashlib.sha256(module).digest(), kind="wasm")]
    artifacts += [pb.Artifact(artifact_hash=d, kind="dependency") for d in deps]
    return pb.CommitArtifactsRequest(claim_id=claim_id, artifacts=artifacts, wasm_module=module)


def sealed_claim(
    client: ClaimClient, name: str, module: bytes, deps: Sequence[bytes] = ()
) -> bytes:
    created = client.create(claim_request(name, deps))
    committed = client.stub.CommitArtifacts(
        commit_with_dependencies(created.claim_id, module, deps), timeout=RPC_TIMEOUT
    )
    assert committed.state == pb.CLAIM_STATE_COMMITTED
    assert client.seal(created.claim_id).state == pb.CLAIM_STATE_SEALED
    return bytes(created.claim_id)


def executed_claim(
    client: ClaimClient, name: str, module: bytes, deps: Sequence[bytes] = ()
) -> tuple[bytes, pb.ExecuteClaimV2Response]:
    claim_id = sealed_claim(client, name, module, deps)
    return claim_id, client.execute(claim_id)


def revoke(
    stub: Any, claim_id: bytes, reason: str, request_id: str | None
) -> pb.RevokeClaimResponse:
    metadata = () if request_id is None else (("x-request-id", request_id),)
    response: pb.RevokeClaimResponse = stub.RevokeClaim(
        pb.RevokeClaimRequest(claim_id=claim_id, reason=reason),
        metadata=metadata,
        timeout=RPC_TIMEOUT,
    )
    return response


# -- the signed feed, verified with only the public key ----------------------------------------


def snapshot_digest(
    entries: Iterable[tuple[bytes, int, str]], tree_size: int, root: bytes, key_id: bytes
) -> bytes:
    """Spec 40 §3.3, from the spec text: per entry ``u64be(32) ‖ id ‖ u64be(ts) ‖ u64be(len) ‖
    reason``, then ``u64be(size) ‖ root ‖ u64be(32) ‖ key_id``, under the domain."""
    parts = [REVOCATIONS_DOMAIN]
    for claim_id, ts, reason in entries:
        raw = reason.encode("utf-8")
        parts += [struct.pack(">Q", 32), claim_id, struct.pack(">QQ", ts, len(raw)), raw]
    parts += [struct.pack(">Q", tree_size), root, struct.pack(">Q", 32), key_id]
    return hashlib.sha256(b"".join(parts)).digest()


def signature_valid(public_key: bytes, signature: bytes, digest: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, digest)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Head:
    tree_size: int
    root_hash: bytes
    signature: bytes
    key_id: bytes


def entry_tuples(entries: Iterable[Any]) -> list[tuple[bytes, int, str]]:
    return [(bytes(e.claim_id), int(e.timestamp_unix), str(e.reason)) for e in entries]


def public_key(stub: Any, key_id: bytes) -> bytes:
    reply = stub.GetPublicKey(pb.GetPublicKeyRequest(key_id=key_id), timeout=RPC_TIMEOUT)
    assert hashlib.sha256(reply.ed25519_public_key).digest() == key_id
    return bytes(reply.ed25519_public_key)


def verify_signed_snapshot(
    key: bytes, entries: Iterable[Any], signature: bytes, key_id: bytes, head: Head
) -> None:
    """Both signatures with the public key alone: the head's, then the snapshot's over the
    entries and that head."""
    assert head.key_id == key_id, "the feed is signed by the key that signed its head"
    assert sth_signature_valid(key, head.tree_size, head.root_hash, head.signature)
    digest = snapshot_digest(entry_tuples(entries), head.tree_size, head.root_hash, key_id)
    assert signature_valid(key, signature, digest), "revocation snapshot signature"


def get_feed(stub: Any) -> tuple[pb.GetRevocationFeedResponse, Head]:
    """GetRevocationFeed plus the head from its trailing metadata, both verified."""
    response, call = stub.GetRevocationFeed.with_call(
        pb.GetRevocationFeedRequest(), timeout=RPC_TIMEOUT
    )
    trailing = {m.key: m.value for m in call.trailing_metadata()}
    head = Head(
        int(trailing["x-evidenceos-feed-tree-size"]),
        bytes.fromhex(trailing["x-evidenceos-feed-root-hash"]),
        bytes.fromhex(trailing["x-evidenceos-feed-sth-signature"]),
        bytes(response.key_id),
    )
    key = public_key(stub, bytes(response.key_id))
    verify_signed_snapshot(key, response.entries, response.signature, response.key_id, head)
    return response, head


def verify_watch_message(stub: Any, message: pb.WatchRevocationsResponse) -> Head:
    sth = message.signed_tree_head
    head = Head(sth.tree_size, bytes(sth.root_hash), bytes(sth.signature), bytes(sth.key_id))
    key = public_key(stub, bytes(message.key_id))
    verify_signed_snapshot(key, message.entries, message.signature, message.key_id, head)
    return head


def rpc_code(exc: grpc.RpcError) -> grpc.StatusCode:
    failed: Any = exc
    code: grpc.StatusCode = failed.code()
    return code


# -- the log, checked incrementally from the database ------------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass
class LogChecker:
    """Recomputes RFC 6962 roots from the stored leaves, keeping what it verified before.

    Leaves are append-only, so :meth:`check` only re-reads leaf hashes to confirm the verified
    prefix is unchanged, re-hashes the new payloads, and extends a stack of perfect subtrees;
    the root at any size is the right-to-left fold of that stack (RFC 6962 §2.1)."""

    leaf_hashes: list[bytes] = field(default_factory=list)
    roots: dict[int, bytes] = field(default_factory=lambda: {0: EMPTY_ROOT})
    _stack: list[tuple[int, bytes]] = field(default_factory=list)

    def _push(self, leaf: bytes) -> None:
        size, value = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            prev_size, prev = self._stack.pop()
            value = _node(prev, value)
            size += prev_size
        self._stack.append((size, value))

    def _root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            root = _node(left, root)
        return root

    def check(self, conn: sqlite3.Connection, want_sizes: Iterable[int] = ()) -> int:
        """Verify the stored leaves and record the roots at ``want_sizes`` and every stored
        head size; returns the tree size. Raises AssertionError on any mismatch."""
        stored = [
            bytes(h)
            for (h,) in conn.execute("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
        ]
        known = len(self.leaf_hashes)
        assert stored[:known] == self.leaf_hashes, "a leaf that was verified before changed"
        wanted = set(want_sizes)
        wanted.update(int(s) for (s,) in conn.execute("SELECT tree_size FROM signed_tree_heads"))
        rows = conn.execute(
            "SELECT leaf_index, payload, leaf_hash FROM log_leaves WHERE leaf_index >= ? "
            "ORDER BY leaf_index",
            (known,),
        ).fetchall()
        for index, payload, leaf_hash in rows:
            assert index == len(self.leaf_hashes), f"leaf {index} out of order"
            assert hashlib.sha256(b"\x00" + bytes(payload)).digest() == bytes(leaf_hash), (
                f"leaf {index} hash does not match its payload"
            )
            self.leaf_hashes.append(bytes(leaf_hash))
            self._push(bytes(leaf_hash))
            if len(self.leaf_hashes) in wanted:
                self.roots[len(self.leaf_hashes)] = self._root()
        size = len(self.leaf_hashes)
        self.roots[size] = self._root()
        return size

    def assert_heads(self, heads: Iterable[Head], public_keys: Mapping[bytes, bytes]) -> int:
        """Every head verifies and its root is the recomputed root at its size; returns the
        number of heads checked."""
        checked = 0
        for head in heads:
            assert head.tree_size in self.roots, f"head for size {head.tree_size} beyond the log"
            assert self.roots[head.tree_size] == head.root_hash, (
                f"issued head for size {head.tree_size} is not a prefix of the log"
            )
            key = public_keys[head.key_id]
            assert sth_signature_valid(key, head.tree_size, head.root_hash, head.signature)
            checked += 1
        return checked


def stored_heads(conn: sqlite3.Connection) -> list[Head]:
    return [
        Head(int(size), bytes(root), bytes(sig), bytes(key_id))
        for size, root, sig, key_id in conn.execute(
            "SELECT tree_size, root_hash, signature, key_id FROM signed_tree_heads ORDER BY head_id"
        )
    ]


def stored_public_keys(conn: sqlite3.Connection) -> dict[bytes, bytes]:
    return {
        bytes(k): bytes(p) for k, p in conn.execute("SELECT key_id, public_key FROM signing_keys")
    }


def connect_ro(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'evidenceos.db'}?mode=ro", uri=True, timeout=10.0)
