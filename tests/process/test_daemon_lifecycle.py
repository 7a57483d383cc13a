"""The daemon as a process: start on a fresh data dir, answer every implemented RPC on both API
versions, standard health checking and reflection, clean SIGTERM, one writer per data dir, and a
restart after SIGKILL (spec 40 §2.7, §4.3, §6.5, §10 items 21 and 39; spec 20 §3).

Everything here is real: the installed ``evidenceosd`` console script, gRPC over loopback and
Ed25519 from ``cryptography``; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from evidenceos._proto.v1 import evidenceos_pb2 as v1_pb2
from evidenceos._proto.v1 import evidenceos_pb2_grpc as v1_grpc
from evidenceos._proto.v2 import evidenceos_pb2 as v2_pb2
from evidenceos._proto.v2 import evidenceos_pb2_grpc as v2_grpc
from tests.support.daemon import DaemonPool, DaemonProcess, rpc_status, run_to_exit
from tests.support.paths import REPO_ROOT
from tests.support.verify import sth_digest

pytestmark = pytest.mark.process

EMPTY_ROOT = hashlib.sha256(b"").digest()
U64_MAX = (1 << 64) - 1
RPC_TIMEOUT = 10.0


# -- independent helpers --------------------------------------------------------------------


_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)


def semver_key(text: str) -> tuple[Any, ...]:
    """A sort key implementing SemVer 2.0 precedence (build metadata ignored)."""
    match = _SEMVER.fullmatch(text)
    assert match is not None, f"{text!r} is not a SemVer version"
    core = (int(match[1]), int(match[2]), int(match[3]))
    if match[4] is None:
        return (*core, 1, ())  # a release ranks above every pre-release of the same core
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in match[4].split(".")
    )
    return (*core, 0, identifiers)


def test_semver_key_orders_prereleases() -> None:
    ordered = ["0.1.0-alpha", "0.1.0-alpha.1", "0.1.0-beta", "0.1.0-rc.1", "0.1.0", "0.1.1"]
    assert sorted(ordered, key=semver_key) == ordered
    assert semver_key("0.2.0-alpha") < semver_key("0.2.0")


# -- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    name: str
    pb: ModuleType
    stub: Any


@pytest.fixture(scope="module")
def fresh_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon on a fresh data dir, shared by the read-only RPC tests of this module."""
    with DaemonProcess(tmp_path_factory.mktemp("fresh") / "data") as daemon:
        daemon.start()
        yield daemon


@pytest.fixture(params=["v2", "v1"])
def api(request: pytest.FixtureRequest, fresh_daemon: DaemonProcess) -> Api:
    if request.param == "v2":
        return Api("evidenceos.v2", v2_pb2, v2_grpc.EvidenceOSStub(fresh_daemon.channel()))
    return Api("evidenceos.v1", v1_pb2, v1_grpc.EvidenceOSStub(fresh_daemon.channel()))


# -- implemented RPCs, both services --------------------------------------------------------


def test_health_rpc(api: Api) -> None:
    response = api.stub.Health(api.pb.HealthRequest(), timeout=RPC_TIMEOUT)
    assert response.status == "SERVING"


def test_get_server_info(api: Api) -> None:
    info = api.stub.GetServerInfo(api.pb.GetServerInfoRequest(), timeout=RPC_TIMEOUT)
    proto_bytes = (REPO_ROOT / "proto" / "evidenceos" / "v2" / "evidenceos.proto").read_bytes()
    assert info.proto_hash == hashlib.sha256(proto_bytes).hexdigest()
    assert semver_key("0.1.0-alpha") <= semver_key(info.daemon_version) < semver_key("0.2.0")
    assert semver_key(info.protocol_semver) >= semver_key("2.0.0")
    flags = info.feature_flags
    assert not flags.tls_enabled
    assert not flags.mtls_enabled
    assert not flags.insecure_v1_enabled


def test_get_public_key_active(api: Api, fresh_daemon: DaemonProcess) -> None:
    response = api.stub.GetPublicKey(api.pb.GetPublicKeyRequest(), timeout=RPC_TIMEOUT)
    assert len(response.ed25519_public_key) == 32
    assert response.key_id == hashlib.sha256(response.ed25519_public_key).digest()
    assert response.key_id.hex() == fresh_daemon.serving_event["key_id"]
    key_file = fresh_daemon.data_dir / "keys" / f"{response.key_id.hex()}.key"
    assert key_file.is_file()
    # Asking for the active key by its id gives the same answer.
    again = api.stub.GetPublicKey(
        api.pb.GetPublicKeyRequest(key_id=response.key_id), timeout=RPC_TIMEOUT
    )
    assert again.ed25519_public_key == response.ed25519_public_key
    assert again.key_id == response.key_id


def test_get_public_key_unknown_id_is_not_found(api: Api) -> None:
    request = api.pb.GetPublicKeyRequest(key_id=b"\x42" * 32)
    code, details = rpc_status(lambda: api.stub.GetPublicKey(request, timeout=RPC_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "key not found" in details


def test_get_public_key_short_id_is_invalid(api: Api) -> None:
    request = api.pb.GetPublicKeyRequest(key_id=b"\x01" * 5)
    code, _ = rpc_status(lambda: api.stub.GetPublicKey(request, timeout=RPC_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_signed_tree_head_of_empty_log_verifies(api: Api) -> None:
    head = api.stub.GetSignedTreeHead(api.pb.GetSignedTreeHeadRequest(), timeout=RPC_TIMEOUT)
    assert head.tree_size == 0
    assert head.root_hash == EMPTY_ROOT
    assert len(head.signature) == 64
    key = api.stub.GetPublicKey(api.pb.GetPublicKeyRequest(key_id=head.key_id), timeout=10)
    Ed25519PublicKey.from_public_bytes(key.ed25519_public_key).verify(
        head.signature, sth_digest(head.tree_size, head.root_hash)
    )
    # Deterministic Ed25519 and a stored head: asking again gives identical bytes.
    again = api.stub.GetSignedTreeHead(api.pb.GetSignedTreeHeadRequest(), timeout=RPC_TIMEOUT)
    assert again == head


@pytest.mark.parametrize("leaf_index", [0, 1, U64_MAX])
def test_inclusion_proof_beyond_log_is_not_found(api: Api, leaf_index: int) -> None:
    request = api.pb.GetInclusionProofRequest(leaf_index=leaf_index)
    code, details = rpc_status(lambda: api.stub.GetInclusionProof(request, timeout=RPC_TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "leaf index not found" in details


def test_consistency_of_empty_log_with_itself(api: Api) -> None:
    request = api.pb.GetConsistencyProofRequest(first_tree_size=0, second_tree_size=0)
    response = api.stub.GetConsistencyProof(request, timeout=RPC_TIMEOUT)
    assert response.consistent
    assert response.first_root_hash == EMPTY_ROOT
    assert response.second_root_hash == EMPTY_ROOT


@pytest.mark.parametrize(
    ("first", "second", "needle"),
    [
        (2, 1, "first_tree_size must be <= second_tree_size"),
        (0, 1, "second_tree_size out of bounds"),
        (1, 1, "first_tree_size out of bounds"),
        (0, U64_MAX, "second_tree_size out of bounds"),
    ],
)
def test_consistency_proof_bad_sizes_are_invalid(
    api: Api, first: int, second: int, needle: str
) -> None:
    request = api.pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second)
    code, details = rpc_status(lambda: api.stub.GetConsistencyProof(request, timeout=RPC_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in details


def test_unknown_method_answers_unimplemented(api: Api, fresh_daemon: DaemonProcess) -> None:
    call = fresh_daemon.channel().unary_unary(
        f"/{api.name}.EvidenceOS/NoSuchMethod",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=api.pb.HealthResponse.FromString,
    )
    code, _ = rpc_status(lambda: call(api.pb.HealthRequest(), timeout=RPC_TIMEOUT))
    assert code == grpc.StatusCode.UNIMPLEMENTED


# -- standard gRPC services -----------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "evidenceos.v2.EvidenceOS", "evidenceos.v1.EvidenceOS"])
def test_standard_health_check_serving(fresh_daemon: DaemonProcess, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(fresh_daemon.channel())
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services(fresh_daemon: DaemonProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(fresh_daemon.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT))
    assert len(responses) == 1
    names = {service.name for service in responses[0].list_services_response.service}
    assert {
        "evidenceos.v2.EvidenceOS",
        "evidenceos.v1.EvidenceOS",
        "grpc.health.v1.Health",
    } <= names


def test_reflection_serves_the_v2_file_descriptor(fresh_daemon: DaemonProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(fresh_daemon.channel())
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="evidenceos.v2.EvidenceOS"
    )
    (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT))
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    assert response.file_descriptor_response.file_descriptor_proto


def test_metrics_endpoint_answers(fresh_daemon: DaemonProcess) -> None:
    port = fresh_daemon.metrics_port
    assert port is not None
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
        assert response.status == 200


# -- lifecycle ------------------------------------------------------------------------------


def test_fresh_data_dir_layout(fresh_daemon: DaemonProcess) -> None:
    data_dir = fresh_daemon.data_dir
    assert (data_dir / "evidenceos.db").is_file()
    assert (data_dir / "kernel.lock").is_file()
    keys = data_dir / "keys"
    active = (keys / "active_key_id").read_text(encoding="ascii").strip()
    assert active == fresh_daemon.serving_event["key_id"]
    key_file = keys / f"{active}.key"
    assert key_file.stat().st_mode & 0o077 == 0
    assert key_file.stat().st_size == 32


def test_sigterm_stops_cleanly_and_exports(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    daemon = daemons.start(data_dir)
    head = daemon.v2.GetSignedTreeHead(v2_pb2.GetSignedTreeHeadRequest(), timeout=RPC_TIMEOUT)

    assert daemon.terminate() == 0

    events = [e.get("event") for e in daemon.log_events()]
    assert "stopped" in events
    assert events.index("stopping") < events.index("stopped")
    assert (data_dir / "etl.log").is_file()
    assert (data_dir / "etl.log").stat().st_size == 0  # empty log → empty mirror
    state = json.loads((data_dir / "state.json").read_text(encoding="utf-8"))
    assert state["log"]["tree_size"] == 0
    assert state["log"]["root_hash"] == head.root_hash.hex()
    assert state["log"]["key_id"] == head.key_id.hex()


def test_one_writer_per_data_dir_and_restart_after_sigkill(
    daemons: DaemonPool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = daemons.start(data_dir)
    key_id = first.serving_event["key_id"]

    second = run_to_exit(data_dir)
    assert second.returncode != 0
    assert "another writer already holds kernel lock" in second.stderr
    # The refused start-up disturbed nothing: the first daemon still serves.
    assert first.v2.Health(v2_pb2.HealthRequest(), timeout=RPC_TIMEOUT).status == "SERVING"

    assert first.kill() == -9
    restarted = daemons.start(data_dir)  # the kernel released the flock with the dead process
    assert restarted.serving_event["key_id"] == key_id
    head = restarted.v2.GetSignedTreeHead(v2_pb2.GetSignedTreeHeadRequest(), timeout=10)
    key = restarted.v2.GetPublicKey(v2_pb2.GetPublicKeyRequest(), timeout=RPC_TIMEOUT)
    Ed25519PublicKey.from_public_bytes(key.ed25519_public_key).verify(
        head.signature, sth_digest(head.tree_size, head.root_hash)
    )
    assert restarted.terminate() == 0
