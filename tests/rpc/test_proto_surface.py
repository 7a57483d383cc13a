"""The generated protobuf/gRPC surface matches spec 20 §1.1 and §2 exactly.

Wire compatibility (DESIGN §6a) means the same package, service, RPC, message and enum
names, field numbers, types and labels. The tables below are transcribed from spec 20 §2
(message fields, in the spec's own ``name=number:type`` notation) and §1.1 / §3 (RPCs), and
are checked against the descriptors that the generated modules register at import time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

import evidenceos._proto.v1.evidenceos_pb2 as v1_pb2
import evidenceos._proto.v1.evidenceos_pb2_grpc as v1_grpc
import evidenceos._proto.v2.evidenceos_pb2 as v2_pb2
import evidenceos._proto.v2.evidenceos_pb2_grpc as v2_grpc
from evidenceos._proto import V2_PROTO_SHA256
from tests.support.paths import REPO_ROOT

FDP = descriptor_pb2.FieldDescriptorProto

# --- spec 20 §2, enums -------------------------------------------------------------------

SPEC_ENUMS: dict[str, list[tuple[str, int]]] = {
    "ClaimState": [
        ("CLAIM_STATE_UNSPECIFIED", 0),
        ("CLAIM_STATE_UNCOMMITTED", 1),
        ("CLAIM_STATE_COMMITTED", 2),
        ("CLAIM_STATE_SEALED", 3),
        ("CLAIM_STATE_EXECUTING", 4),
        ("CLAIM_STATE_SETTLED", 5),
        ("CLAIM_STATE_CERTIFIED", 6),
        ("CLAIM_STATE_REVOKED", 7),
        ("CLAIM_STATE_TAINTED", 8),
        ("CLAIM_STATE_STALE", 9),
        ("CLAIM_STATE_FROZEN", 10),
    ],
    "Decision": [
        ("DECISION_UNSPECIFIED", 0),
        ("DECISION_APPROVE", 1),
        ("DECISION_REJECT", 2),
        ("DECISION_DEFER", 3),
    ],
}

# --- spec 20 §2, messages (field name = number : type; `optional` = explicit presence) ---

_SINGLE_CLAIM_ID = "claim_id=1:bytes"
_SINGLE_STATE = "state=1:ClaimState"

SPEC_MESSAGES: dict[str, str] = {
    "HealthRequest": "",
    "HealthResponse": "status=1:string",
    "GetServerInfoRequest": "",
    "FeatureFlags": (
        "tls_enabled=1:bool, mtls_enabled=2:bool, oracle_registry_enabled=3:bool, "
        "insecure_v1_enabled=4:bool, synthetic_holdout_enabled=5:bool, "
        "offline_settlement_ingest_enabled=6:bool, disjointness_attestation_required=7:bool"
    ),
    "GetServerInfoResponse": (
        "protocol_semver=1:string, proto_hash=2:string, build_git_commit=3:string, "
        "build_time_utc=4:string, daemon_version=5:string, feature_flags=6:FeatureFlags"
    ),
    "CreateClaimRequest": (
        "topic_id=1:bytes, holdout_handle_id=2:bytes, phys_hir_hash=3:bytes, "
        "epoch_size=4:uint64, oracle_num_symbols=5:uint32, alpha=6:double, access_credit=7:uint64"
    ),
    "CreateClaimResponse": "claim_id=1:bytes, state=2:ClaimState",
    "ClaimMetadataV2": (
        "lane=1:string, alpha_micros=2:uint32, epoch_config_ref=3:string, output_schema_id=4:string"
    ),
    "TopicSignalsV2": (
        "semantic_hash=1:bytes, phys_hir_signature_hash=2:bytes, dependency_merkle_root=3:bytes"
    ),
    "CreateClaimV2Request": (
        "claim_name=1:string, metadata=2:ClaimMetadataV2, signals=3:TopicSignalsV2, "
        "holdout_ref=4:string, epoch_size=5:uint64, oracle_num_symbols=6:uint32, "
        "access_credit=7:uint64, oracle_id=8:string, nullspec_id=9:string, "
        "dp_epsilon_budget=10:optional double, dp_delta_budget=11:optional double"
    ),
    "CreateClaimV2Response": "claim_id=1:bytes, topic_id=2:bytes, state=3:ClaimState",
    "Artifact": "artifact_hash=1:bytes, kind=2:string",
    "CommitArtifactsRequest": (
        "claim_id=1:bytes, artifacts=2:repeated Artifact, wasm_module=3:bytes"
    ),
    "CommitArtifactsResponse": _SINGLE_STATE,
    "FreezeGatesRequest": _SINGLE_CLAIM_ID,
    "FreezeRequest": _SINGLE_CLAIM_ID,
    "SealClaimRequest": _SINGLE_CLAIM_ID,
    "SealRequest": _SINGLE_CLAIM_ID,
    "FreezeGatesResponse": _SINGLE_STATE,
    "FreezeResponse": _SINGLE_STATE,
    "SealClaimResponse": _SINGLE_STATE,
    "SealResponse": _SINGLE_STATE,
    "ExecuteClaimRequest": (
        "claim_id=1:bytes, decision=2:Decision, reason_codes=3:repeated uint32, "
        "canonical_output=4:bytes"
    ),
    "ExecuteClaimResponse": "state=1:ClaimState, capsule_hash=2:bytes, etl_index=3:uint64",
    "ExecuteClaimV2Request": _SINGLE_CLAIM_ID,
    "ExecuteClaimV2Response": (
        "state=1:ClaimState, decision=2:Decision, reason_codes=3:repeated uint32, "
        "canonical_output=4:bytes, e_value=5:double, certified=6:bool, capsule_hash=7:bytes, "
        "etl_index=8:uint64"
    ),
    "GetCapsuleRequest": _SINGLE_CLAIM_ID,
    "GetCapsuleResponse": "capsule_bytes=1:bytes, capsule_hash=2:bytes, etl_index=3:uint64",
    "GetPublicKeyRequest": "key_id=1:bytes",
    "GetPublicKeyResponse": "ed25519_public_key=1:bytes, key_id=2:bytes",
    "GetSignedTreeHeadRequest": "",
    "GetSignedTreeHeadResponse": (
        "tree_size=1:uint64, root_hash=2:bytes, signature=3:bytes, key_id=4:bytes"
    ),
    "GetInclusionProofRequest": "leaf_index=1:uint64",
    "GetInclusionProofResponse": (
        "leaf_hash=1:bytes, sibling_hashes=2:repeated bytes, root_hash=3:bytes"
    ),
    "GetConsistencyProofRequest": "first_tree_size=1:uint64, second_tree_size=2:uint64",
    "GetConsistencyProofResponse": (
        "consistent=1:bool, first_root_hash=2:bytes, second_root_hash=3:bytes"
    ),
    "GetRevocationFeedRequest": "",
    "GetRevocationFeedResponse": (
        "entries=1:repeated RevocationEntry, signature=2:bytes, key_id=3:bytes"
    ),
    "SignedTreeHead": "tree_size=1:uint64, root_hash=2:bytes, signature=3:bytes, key_id=4:bytes",
    "MerkleInclusionProof": (
        "leaf_hash=1:bytes, leaf_index=2:uint64, tree_size=3:uint64, audit_path=4:repeated bytes"
    ),
    "MerkleConsistencyProof": (
        "old_tree_size=1:uint64, new_tree_size=2:uint64, path=3:repeated bytes"
    ),
    "FetchCapsuleRequest": _SINGLE_CLAIM_ID,
    "FetchCapsuleResponse": (
        "capsule_bytes=1:bytes, capsule_hash=2:bytes, etl_index=3:uint64, "
        "signed_tree_head=4:SignedTreeHead, inclusion_proof=5:MerkleInclusionProof, "
        "consistency_proof=6:MerkleConsistencyProof, root_hash=7:bytes, tree_size=8:uint64"
    ),
    "RevokeClaimRequest": "claim_id=1:bytes, reason=2:string",
    "RevokeClaimResponse": "state=1:ClaimState, timestamp_unix=2:uint64",
    "GrantCreditRequest": "principal_id=1:string, amount=2:uint64, reason=3:string",
    "GrantCreditResponse": "credit_balance=1:uint64",
    "SetCreditLimitRequest": "principal_id=1:string, limit=2:uint64",
    "SetCreditLimitResponse": "credit_limit=1:uint64",
    "HoldoutPoolBudgets": (
        "holdout_id=1:string, scope=2:string, k_bits_budget=3:optional double, "
        "access_credit_budget=4:optional double"
    ),
    "SetHoldoutPoolBudgetsRequest": (
        "holdout_id=1:string, scope=2:string, new_k_bits_budget=3:optional double, "
        "new_access_credit_budget=4:optional double"
    ),
    "SetHoldoutPoolBudgetsResponse": "budgets=1:HoldoutPoolBudgets",
    "GetHoldoutPoolBudgetsRequest": "holdout_id=1:string, scope=2:string",
    "GetHoldoutPoolBudgetsResponse": "budgets=1:HoldoutPoolBudgets",
    "WatchRevocationsRequest": "",
    "RevocationEntry": "claim_id=1:bytes, timestamp_unix=2:uint64, reason=3:string",
    "WatchRevocationsResponse": (
        "entries=1:repeated RevocationEntry, signature=2:bytes, "
        "signed_tree_head=3:SignedTreeHead, key_id=4:bytes"
    ),
}

V2_ONLY_MESSAGES = frozenset(
    {
        "HoldoutPoolBudgets",
        "SetHoldoutPoolBudgetsRequest",
        "SetHoldoutPoolBudgetsResponse",
        "GetHoldoutPoolBudgetsRequest",
        "GetHoldoutPoolBudgetsResponse",
    }
)

# --- spec 20 §1.1 / §3, RPCs: name -> (request, response, server streaming) --------------

SPEC_RPCS: dict[str, tuple[str, str, bool]] = {
    "Health": ("HealthRequest", "HealthResponse", False),
    "GetServerInfo": ("GetServerInfoRequest", "GetServerInfoResponse", False),
    "CreateClaim": ("CreateClaimRequest", "CreateClaimResponse", False),
    "CreateClaimV2": ("CreateClaimV2Request", "CreateClaimV2Response", False),
    "CommitArtifacts": ("CommitArtifactsRequest", "CommitArtifactsResponse", False),
    "Freeze": ("FreezeRequest", "FreezeResponse", False),
    "FreezeGates": ("FreezeGatesRequest", "FreezeGatesResponse", False),
    "Seal": ("SealRequest", "SealResponse", False),
    "SealClaim": ("SealClaimRequest", "SealClaimResponse", False),
    "ExecuteClaim": ("ExecuteClaimRequest", "ExecuteClaimResponse", False),
    "ExecuteClaimV2": ("ExecuteClaimV2Request", "ExecuteClaimV2Response", False),
    "GetCapsule": ("GetCapsuleRequest", "GetCapsuleResponse", False),
    "GetPublicKey": ("GetPublicKeyRequest", "GetPublicKeyResponse", False),
    "GetSignedTreeHead": ("GetSignedTreeHeadRequest", "GetSignedTreeHeadResponse", False),
    "GetInclusionProof": ("GetInclusionProofRequest", "GetInclusionProofResponse", False),
    "GetConsistencyProof": ("GetConsistencyProofRequest", "GetConsistencyProofResponse", False),
    "GetRevocationFeed": ("GetRevocationFeedRequest", "GetRevocationFeedResponse", False),
    "FetchCapsule": ("FetchCapsuleRequest", "FetchCapsuleResponse", False),
    "RevokeClaim": ("RevokeClaimRequest", "RevokeClaimResponse", False),
    "GrantCredit": ("GrantCreditRequest", "GrantCreditResponse", False),
    "SetCreditLimit": ("SetCreditLimitRequest", "SetCreditLimitResponse", False),
    "SetHoldoutPoolBudgets": (
        "SetHoldoutPoolBudgetsRequest",
        "SetHoldoutPoolBudgetsResponse",
        False,
    ),
    "GetHoldoutPoolBudgets": (
        "GetHoldoutPoolBudgetsRequest",
        "GetHoldoutPoolBudgetsResponse",
        False,
    ),
    "WatchRevocations": ("WatchRevocationsRequest", "WatchRevocationsResponse", True),
}

V2_ONLY_RPCS = frozenset({"SetHoldoutPoolBudgets", "GetHoldoutPoolBudgets"})

# --- helpers -----------------------------------------------------------------------------

_SCALARS: dict[str, int] = {
    "double": FDP.TYPE_DOUBLE,
    "bool": FDP.TYPE_BOOL,
    "string": FDP.TYPE_STRING,
    "bytes": FDP.TYPE_BYTES,
    "uint32": FDP.TYPE_UINT32,
    "uint64": FDP.TYPE_UINT64,
}

# (name, number, type, label, proto3_optional, type_name)
FieldSpec = tuple[str, int, int, int, bool, str]

VERSIONS: dict[str, tuple[ModuleType, ModuleType]] = {
    "v1": (v1_pb2, v1_grpc),
    "v2": (v2_pb2, v2_grpc),
}


def parse_fields(spec: str, package: str) -> list[FieldSpec]:
    """Turn the spec's ``name=1:optional double, other=2:repeated Msg`` into field tuples."""
    fields: list[FieldSpec] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, rest = item.split("=", 1)
        number, type_text = rest.split(":", 1)
        words = type_text.split()
        label, optional = FDP.LABEL_OPTIONAL, False
        if words[0] == "repeated":
            label, words = FDP.LABEL_REPEATED, words[1:]
        elif words[0] == "optional":
            optional, words = True, words[1:]
        (type_word,) = words
        if type_word in _SCALARS:
            field_type, type_name = _SCALARS[type_word], ""
        elif type_word in SPEC_ENUMS:
            field_type, type_name = FDP.TYPE_ENUM, f".{package}.{type_word}"
        else:
            assert type_word in SPEC_MESSAGES, type_word
            field_type, type_name = FDP.TYPE_MESSAGE, f".{package}.{type_word}"
        fields.append((name, int(number), field_type, label, optional, type_name))
    return fields


def file_proto(module: ModuleType) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)


def expected_messages(version: str) -> dict[str, str]:
    if version == "v2":
        return dict(SPEC_MESSAGES)
    return {k: v for k, v in SPEC_MESSAGES.items() if k not in V2_ONLY_MESSAGES}


def expected_rpcs(version: str) -> dict[str, tuple[str, str, bool]]:
    if version == "v2":
        return dict(SPEC_RPCS)
    return {k: v for k, v in SPEC_RPCS.items() if k not in V2_ONLY_RPCS}


# --- tests -------------------------------------------------------------------------------


def test_spec_tables_have_the_documented_sizes() -> None:
    assert len(expected_rpcs("v2")) == 24
    assert len(expected_rpcs("v1")) == 22
    assert len(SPEC_MESSAGES) - len(expected_messages("v1")) == 5


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_file_header_has_no_wire_affecting_extras(version: str) -> None:
    fdp = file_proto(VERSIONS[version][0])
    assert fdp.name == f"evidenceos/{version}/evidenceos.proto"
    assert fdp.package == f"evidenceos.{version}"
    assert fdp.syntax == "proto3"
    assert list(fdp.dependency) == []
    assert not fdp.HasField("options")
    assert list(fdp.extension) == []
    assert [s.name for s in fdp.service] == ["EvidenceOS"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_enums_match_spec(version: str) -> None:
    fdp = file_proto(VERSIONS[version][0])
    got = {e.name: [(v.name, v.number) for v in e.value] for e in fdp.enum_type}
    assert got == SPEC_ENUMS
    for enum in fdp.enum_type:
        assert not enum.HasField("options")
        assert list(enum.reserved_range) == []
        assert list(enum.reserved_name) == []
        for value in enum.value:
            assert not value.HasField("options")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_message_set_matches_spec(version: str) -> None:
    fdp = file_proto(VERSIONS[version][0])
    assert sorted(m.name for m in fdp.message_type) == sorted(expected_messages(version))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_message_fields_match_spec(version: str) -> None:
    package = f"evidenceos.{version}"
    fdp = file_proto(VERSIONS[version][0])
    by_name = {m.name: m for m in fdp.message_type}
    for msg_name, spec in expected_messages(version).items():
        msg = by_name[msg_name]
        want = sorted(parse_fields(spec, package), key=lambda f: f[1])
        got = sorted(
            (
                (f.name, f.number, f.type, f.label, f.proto3_optional, f.type_name)
                for f in msg.field
            ),
            key=lambda f: f[1],
        )
        assert got == want, msg_name
        # Nothing beyond the table: no nested types, reservations, options or real oneofs.
        assert list(msg.nested_type) == [], msg_name
        assert list(msg.enum_type) == [], msg_name
        assert list(msg.reserved_range) == [], msg_name
        assert list(msg.reserved_name) == [], msg_name
        assert list(msg.extension_range) == [], msg_name
        assert not msg.HasField("options"), msg_name
        oneof_names = [o.name for o in msg.oneof_decl]
        for field in msg.field:
            assert not field.HasField("options"), (msg_name, field.name)
            assert not field.HasField("default_value"), (msg_name, field.name)
            if field.proto3_optional:
                # explicit presence is a synthetic oneof holding just this field
                assert oneof_names[field.oneof_index] == f"_{field.name}"
            else:
                assert not field.HasField("oneof_index"), (msg_name, field.name)
        assert len(oneof_names) == sum(f.proto3_optional for f in msg.field), msg_name


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_optional_fields_track_presence_at_runtime(version: str) -> None:
    pb2 = VERSIONS[version][0]
    for msg_name, spec in expected_messages(version).items():
        cls = getattr(pb2, msg_name)
        for name, _num, ftype, label, optional, _tn in parse_fields(spec, f"evidenceos.{version}"):
            field = cls.DESCRIPTOR.fields_by_name[name]
            if label == FDP.LABEL_REPEATED:
                assert not field.has_presence, (msg_name, name)
                continue
            if ftype == FDP.TYPE_MESSAGE:
                assert field.has_presence, (msg_name, name)
                continue
            assert field.has_presence is optional, (msg_name, name)
            if optional:
                msg = cls(**{name: 0.0})
                assert msg.HasField(name)
                assert cls.FromString(msg.SerializeToString()).HasField(name)
                assert not cls().HasField(name)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_service_rpcs_match_spec(version: str) -> None:
    package = f"evidenceos.{version}"
    (service,) = file_proto(VERSIONS[version][0]).service
    got = {
        m.name: (m.input_type, m.output_type, m.server_streaming, m.client_streaming)
        for m in service.method
    }
    want = {
        name: (f".{package}.{req}", f".{package}.{resp}", streaming, False)
        for name, (req, resp, streaming) in expected_rpcs(version).items()
    }
    assert got == want
    assert not service.HasField("options")
    assert all(not m.HasField("options") for m in service.method)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_runtime_descriptors_and_grpc_module(version: str) -> None:
    pb2, grpc_mod = VERSIONS[version]
    service = pb2.DESCRIPTOR.services_by_name["EvidenceOS"]
    assert service.full_name == f"evidenceos.{version}.EvidenceOS"
    rpcs = expected_rpcs(version)
    assert {m.name for m in service.methods} == set(rpcs)
    for method in service.methods:
        req, resp, streaming = rpcs[method.name]
        assert method.input_type.full_name == f"evidenceos.{version}.{req}"
        assert method.output_type.full_name == f"evidenceos.{version}.{resp}"
        assert method.server_streaming is streaming
        assert method.client_streaming is False
    for enum_name, values in SPEC_ENUMS.items():
        enum = getattr(pb2, enum_name)
        assert [(v, enum.Value(v)) for v, _ in values] == values
    # generated gRPC glue covers exactly the same RPCs
    servicer_methods = {
        n for n in vars(grpc_mod.EvidenceOSServicer) if not n.startswith("_") and n[0].isupper()
    }
    assert servicer_methods == set(rpcs)
    assert callable(grpc_mod.add_EvidenceOSServicer_to_server)
    assert pb2.HealthRequest.__module__ == f"evidenceos._proto.{version}.evidenceos_pb2"


def test_v1_lacks_holdout_pool_rpcs_and_messages() -> None:
    v1_service = v1_pb2.DESCRIPTOR.services_by_name["EvidenceOS"]
    v1_methods = {m.name for m in v1_service.methods}
    assert not (V2_ONLY_RPCS & v1_methods)
    assert not (V2_ONLY_MESSAGES & set(v1_pb2.DESCRIPTOR.message_types_by_name))
    assert not hasattr(v1_grpc.EvidenceOSServicer, "SetHoldoutPoolBudgets")
    assert not hasattr(v1_grpc.EvidenceOSServicer, "GetHoldoutPoolBudgets")


def test_v1_messages_are_v2_messages_under_another_package() -> None:
    v2_by_name = {m.name: m for m in file_proto(v2_pb2).message_type}
    for v1_msg in file_proto(v1_pb2).message_type:
        renamed = descriptor_pb2.DescriptorProto()
        renamed.CopyFrom(v1_msg)
        for field in renamed.field:
            if field.type_name:
                field.type_name = field.type_name.replace(".evidenceos.v1.", ".evidenceos.v2.")
        assert renamed == v2_by_name[v1_msg.name], v1_msg.name


def test_v1_request_bytes_decode_as_v2() -> None:
    v1_req = v1_pb2.CreateClaimV2Request(
        claim_name="c",
        metadata=v1_pb2.ClaimMetadataV2(lane="fast", alpha_micros=50_000),
        signals=v1_pb2.TopicSignalsV2(semantic_hash=b"\x01" * 32),
        holdout_ref="h",
        epoch_size=7,
        oracle_num_symbols=2,
        access_credit=9,
        oracle_id="o",
        nullspec_id="n",
        dp_epsilon_budget=0.0,
    )
    v2_req = v2_pb2.CreateClaimV2Request.FromString(v1_req.SerializeToString())
    assert v2_req.HasField("dp_epsilon_budget")
    assert not v2_req.HasField("dp_delta_budget")
    assert v2_req.metadata.alpha_micros == 50_000
    assert v2_req.SerializeToString() == v1_req.SerializeToString()


def test_v2_proto_sha256_is_hash_of_our_v2_file() -> None:
    path = REPO_ROOT / "proto" / "evidenceos" / "v2" / "evidenceos.proto"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == V2_PROTO_SHA256


def test_generated_modules_import_without_warnings() -> None:
    code = (
        "import evidenceos._proto.v1.evidenceos_pb2_grpc\n"
        "from evidenceos._proto.v2 import evidenceos_pb2_grpc\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_generated_code_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_proto.py"), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
