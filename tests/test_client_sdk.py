"""The client SDK (evidenceos.client): offline verification, auth headers, and the real daemon
through the SDK and the ``verify capsule`` / ``log head`` / ``log watch`` commands."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos.client import BearerAuth, Client, HmacAuth, VerificationError
from evidenceos.client.verify import (
    consistency_proof_from_inclusion,
    prefix_root_from_inclusion,
    verify_capsule,
    verify_consistency,
    verify_head,
)
from evidenceos.core import merkle
from evidenceos.core.auth import (
    HmacKeyring,
    headers_from_metadata,
    parse_hmac_headers,
    verify_hmac_signature,
)
from evidenceos.core.sth import (
    SignedTreeHead,
    private_key_from_seed,
    public_key_bytes,
    sign_tree_head,
)
from evidenceos.store import log as log_table
from evidenceos.store.db import Store
from tests.support.claims import (
    create_request,
    oracle_then_emit_wat,
    predictions_with_correct,
    start_claims_daemon,
    synthetic_labels,
    wasm,
)
from tests.support.daemon import EVIDENCEOSCTL, DaemonProcess, daemon_env, run_ctl
from tests.support.datadir import append_entries
from tests.support.paths import REPO_ROOT, VECTORS_DIR

KEY = private_key_from_seed(b"\x07" * 32)
PUB = public_key_bytes(KEY)
OTHER_PUB = public_key_bytes(private_key_from_seed(b"\x08" * 32))


def _leaves(n: int) -> list[bytes]:
    return [merkle.hash_leaf(json.dumps({"kind": "test", "i": i}).encode()) for i in range(n)]


# -- offline verification ---------------------------------------------------------------------


def test_consistency_proof_rebuilt_from_inclusion_is_rfc6962_proof() -> None:
    leaves = _leaves(40)
    nodes = merkle.MemoryNodes(leaves)
    for n in range(1, 41):
        new_root = merkle.compute_root(n, nodes)
        for m in range(0, n + 1):
            old_root = merkle.compute_root(m, nodes)
            if m == 0:
                assert consistency_proof_from_inclusion(0, n, b"", []) == []
                continue
            audit = merkle.build_inclusion_proof(m - 1, n, nodes)
            assert prefix_root_from_inclusion(m - 1, n, leaves[m - 1], audit) == old_root
            built = consistency_proof_from_inclusion(m, n, leaves[m - 1], audit)
            assert built == merkle.build_consistency_proof(m, n, nodes), (m, n)
            verify_consistency(
                SignedTreeHead(m, old_root, b"", b""), SignedTreeHead(n, new_root, b"", b""), built
            )


def test_verify_consistency_refuses_a_fork_and_mismatched_sizes() -> None:
    leaves = _leaves(9)
    nodes = merkle.MemoryNodes(leaves)
    old = SignedTreeHead(5, merkle.compute_root(5, nodes), b"", b"")
    new = SignedTreeHead(9, merkle.compute_root(9, nodes), b"", b"")
    proof = merkle.build_consistency_proof(5, 9, nodes)
    verify_consistency(
        old, new, pb.MerkleConsistencyProof(old_tree_size=5, new_tree_size=9, path=proof)
    )
    forked = dataclasses.replace(old, root_hash=hashlib.sha256(b"other").digest())
    with pytest.raises(VerificationError, match="does not extend"):
        verify_consistency(forked, new, proof)
    with pytest.raises(VerificationError, match="sizes 4 -> 9"):
        verify_consistency(
            old, new, pb.MerkleConsistencyProof(old_tree_size=4, new_tree_size=9, path=proof)
        )


def _fetch_response(capsule: dict[str, Any], index: int, size: int) -> Any:
    """A FetchCapsuleResponse built the way the daemon builds it, over an in-memory log."""
    payloads = [json.dumps({"kind": "test", "i": i}).encode() for i in range(size)]
    capsule_bytes = json.dumps(capsule, sort_keys=True, separators=(",", ":")).encode()
    payloads[index] = capsule_bytes
    nodes = merkle.MemoryNodes(merkle.hash_leaf(p) for p in payloads)
    head = sign_tree_head(KEY, size, merkle.compute_root(size, nodes))
    return pb.FetchCapsuleResponse(
        capsule_bytes=capsule_bytes,
        capsule_hash=hashlib.sha256(capsule_bytes).digest(),
        etl_index=index,
        signed_tree_head=pb.SignedTreeHead(
            tree_size=size, root_hash=head.root_hash, signature=head.signature, key_id=head.key_id
        ),
        inclusion_proof=pb.MerkleInclusionProof(
            leaf_hash=merkle.hash_leaf(capsule_bytes),
            leaf_index=index,
            tree_size=size,
            audit_path=merkle.build_inclusion_proof(index, size, nodes),
        ),
        consistency_proof=pb.MerkleConsistencyProof(
            old_tree_size=index + 1,
            new_tree_size=size,
            path=merkle.build_consistency_proof(index + 1, size, nodes),
        ),
        root_hash=head.root_hash,
        tree_size=size,
    )


CLAIM = bytes(range(32))
CAPSULE = {"kind": "capsule", "claim_id_hex": CLAIM.hex(), "certified": False}


@pytest.mark.parametrize(("index", "size"), [(0, 1), (4, 11), (7, 8), (10, 11), (5, 6)])
def test_verify_capsule_accepts_what_the_daemon_builds(index: int, size: int) -> None:
    result = verify_capsule(_fetch_response(CAPSULE, index, size), PUB, claim_id=CLAIM)
    assert result.etl_index == index and result.head.tree_size == size
    assert result.claim_id_hex == CLAIM.hex()


def _tampered(field: str) -> Any:
    response = _fetch_response(CAPSULE, 4, 11)
    if field == "capsule_bytes":
        response.capsule_bytes = response.capsule_bytes.replace(b"false", b"true ")
    elif field == "capsule_hash":
        response.capsule_hash = bytes(32)
    elif field == "signature":
        response.signed_tree_head.signature = bytes(64)
    elif field == "audit_path":
        response.inclusion_proof.audit_path[0] = bytes(32)
    elif field == "consistency":
        response.consistency_proof.path[0] = bytes(32)
    elif field == "etl_index":
        response.etl_index = 3
    elif field == "root_hash":
        response.root_hash = bytes(32)
    return response


@pytest.mark.parametrize(
    "field",
    [
        "capsule_bytes",
        "capsule_hash",
        "signature",
        "audit_path",
        "consistency",
        "etl_index",
        "root_hash",
    ],
)
def test_verify_capsule_refuses_any_tampering(field: str) -> None:
    with pytest.raises(VerificationError):
        verify_capsule(_tampered(field), PUB, claim_id=CLAIM)


def test_verify_capsule_refuses_other_key_and_other_claim() -> None:
    response = _fetch_response(CAPSULE, 2, 5)
    with pytest.raises(VerificationError, match="key id"):
        verify_capsule(response, OTHER_PUB)
    with pytest.raises(VerificationError, match="not " + bytes(32).hex()):
        verify_capsule(response, PUB, claim_id=bytes(32))


# -- auth headers -----------------------------------------------------------------------------


class _Recorder:
    """A tiny gRPC server answering v2 Health and keeping each call's metadata."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def health(request: Any, context: grpc.ServicerContext) -> Any:
            metadata = [(k, v) for k, v in context.invocation_metadata()]
            self.calls.append(("/evidenceos.v2.EvidenceOS/Health", headers_from_metadata(metadata)))
            return pb.HealthResponse(status="SERVING")

        handler = grpc.method_handlers_generic_handler(
            "evidenceos.v2.EvidenceOS",
            {
                "Health": grpc.unary_unary_rpc_method_handler(
                    health,
                    request_deserializer=pb.HealthRequest.FromString,
                    response_serializer=pb.HealthResponse.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    yield rec
    rec.server.stop(None)


def test_hmac_auth_signs_the_real_method_path(recorder: _Recorder) -> None:
    secret = b"hmac-secret"
    auth = HmacAuth(secret, key_id="k1", clock=lambda: 1_700_000_000.7)
    with Client(f"127.0.0.1:{recorder.port}", auth=auth) as client:
        assert client.health() == "SERVING"
    ((path, headers),) = recorder.calls
    assert headers["x-evidenceos-key-id"] == "k1"
    assert headers["x-evidenceos-timestamp"] == "1700000000"
    signed = parse_hmac_headers(headers, path, now=1_700_000_000, require_timestamp=True)
    verify_hmac_signature(HmacKeyring({"k1": secret}), signed)
    assert "authorization" not in headers


def test_hmac_signature_matches_the_shared_vectors() -> None:
    vectors = json.loads((VECTORS_DIR / "auth" / "auth_signing_vectors.json").read_text())
    for vector in (v for v in vectors if v["timestamp"] is not None):
        auth = HmacAuth(
            bytes.fromhex(vector["secret_hex"]),
            clock=functools.partial(float, vector["timestamp"]),
        )
        headers = dict(auth.headers(vector["path"], vector["request_id"]))
        assert headers["x-evidenceos-signature"] == vector["signature_header"], vector["name"]


def test_bearer_auth_and_request_ids(recorder: _Recorder) -> None:
    with Client(f"127.0.0.1:{recorder.port}", auth=BearerAuth("tok-1")) as client:
        client.health()
        client.v2.Health(pb.HealthRequest(), metadata=(("x-request-id", "mine-1"),))
    (_, first), (_, second) = recorder.calls
    assert first["authorization"] == "Bearer tok-1"
    assert len(first["x-request-id"]) == 32  # generated
    assert second["x-request-id"] == "mine-1"  # kept
    assert "tok-1" not in repr(BearerAuth("tok-1"))


# -- against a real daemon --------------------------------------------------------------------


HOLDOUT = "synthetic-sdk"


@dataclasses.dataclass(frozen=True)
class Executed:
    claim_id: bytes
    capsule_hash: bytes
    etl_index: int


def run_claim(client: Client, name: str) -> Executed:
    """The whole lifecycle through the SDK: create, commit, freeze, execute."""
    predictions = predictions_with_correct(synthetic_labels(HOLDOUT), 40)  # bucket 1
    module = wasm(oracle_then_emit_wat(predictions))
    signals = pb.TopicSignalsV2(semantic_hash=hashlib.sha256(name.encode()).digest())
    request = create_request(name, holdout_ref=HOLDOUT, signals=signals)
    created = client.create_claim_v2(request, request_id=f"create-{name}")
    client.commit_artifacts(created.claim_id, [(hashlib.sha256(module).digest(), "wasm")], module)
    client.freeze_gates(created.claim_id)
    executed = client.execute_claim_v2(created.claim_id, request_id=f"execute-{name}")
    return Executed(bytes(created.claim_id), bytes(executed.capsule_hash), executed.etl_index)


@dataclasses.dataclass
class Served:
    daemon: DaemonProcess
    data_dir: Path
    public_key: str
    first: Executed


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("sdk") / "data"
    daemon = start_claims_daemon(data_dir)
    with daemon, Client(daemon.address) as client:
        first = run_claim(client, "sdk-first")
        keys = json.loads(run_ctl("keys", "list", "--json", "--data-dir", str(data_dir)).stdout)
        (key,) = keys["keys"]
        yield Served(daemon, data_dir, key["public_key"], first)


@pytest.mark.process
def test_sdk_fetches_and_verifies_a_capsule(served: Served) -> None:
    with Client(served.daemon.address) as client:
        head = client.signed_tree_head()
        verify_head(head, bytes.fromhex(served.public_key))
        verified = client.fetch_verified_capsule(
            served.first.claim_id, bytes.fromhex(served.public_key)
        )
        assert verified.capsule_hash == served.first.capsule_hash
        assert verified.etl_index == served.first.etl_index
        assert client.public_key() == bytes.fromhex(served.public_key)


def check_schema(name: str, doc: Any) -> None:
    schema = json.loads((REPO_ROOT / "schema" / "cli" / f"{name}.schema.json").read_text())
    jsonschema.validate(doc, schema)


def _ctl(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(*args, "--endpoint", served.daemon.address)


@pytest.mark.process
def test_verify_capsule_command(served: Served) -> None:
    claim = served.first.claim_id.hex()
    pinned = _ctl(served, "verify", "capsule", "--claim-id", claim, "--json",
                  "--public-key", served.public_key)  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    doc = json.loads(pinned.stdout)
    check_schema("verify-capsule", doc)
    assert doc["verified"] and doc["key_pinned"]
    assert doc["capsule_hash"] == served.first.capsule_hash.hex()
    unpinned = _ctl(served, "verify", "capsule", "--claim-id", claim)
    assert unpinned.returncode == 0, unpinned.stderr
    assert (
        unpinned.stdout.startswith("ok: capsule") and "pin it with --public-key" in unpinned.stderr
    )
    wrong = _ctl(served, "verify", "capsule", "--claim-id", claim, "--public-key", OTHER_PUB.hex())
    assert wrong.returncode == 3 and "not a trusted key" in wrong.stderr
    missing = _ctl(served, "verify", "capsule", "--claim-id", "ab" * 32)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.mark.process
def test_log_head_command(served: Served) -> None:
    result = _ctl(served, "log", "head", "--json", "--public-key", served.public_key)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    check_schema("log-head", doc)
    assert doc["tree_size"] >= 1 and doc["key_pinned"]


@pytest.mark.process
def test_log_watch_proves_each_new_head_extends_the_last(served: Served, tmp_path: Path) -> None:
    state = tmp_path / "head.json"
    args = [str(EVIDENCEOSCTL), "log", "watch", "--endpoint", served.daemon.address, "--json",
            "--interval", "0.1", "--count", "2", "--state", str(state),
            "--public-key", served.public_key]  # fmt: skip
    watcher = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon_env()
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["extends"] is None
        with Client(served.daemon.address) as client:
            run_claim(client, f"sdk-watch-{time.monotonic_ns()}")
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    second = json.loads(out.splitlines()[0])
    check_schema("log-watch", first)
    check_schema("log-watch", second)
    assert second["extends"] == first["tree_size"] and second["tree_size"] > first["tree_size"]
    assert json.loads(state.read_text())["root_hash"] == second["root_hash"]


@pytest.mark.process
def test_log_watch_catches_a_fork_signed_with_the_right_key(served: Served, tmp_path: Path) -> None:
    """A head with a valid signature over a different history (a second log under the same key,
    as a compromised or rolled-back daemon would show) must not pass as an extension."""
    fork_dir = tmp_path / "fork"
    shutil.copytree(served.data_dir / "keys", fork_dir / "keys")
    append_entries(fork_dir, range(1))
    store = Store(fork_dir)
    try:
        with store.read() as conn:
            head = log_table.latest_head(conn)
    finally:
        store.close()
    assert head is not None and head.tree_size == 1
    state = tmp_path / "head.json"
    state.write_text(
        json.dumps(
            {
                "tree_size": head.tree_size,
                "root_hash": head.root_hash.hex(),
                "key_id": head.key_id.hex(),
                "signature": head.signature.hex(),
            }
        )
    )
    result = _ctl(served, "log", "watch", "--count", "1", "--state", str(state),
                  "--public-key", served.public_key)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "does not extend head of size 1" in result.stderr
