"""The gRPC servicer: translation only (STYLE: MLServer's servicers).

One implementation serves both ``evidenceos.v2`` and ``evidenceos.v1``: their messages have the
same names and field numbers, so each instance is bound to one generated module and builds its
responses from it. RPCs that later work implements fall through to the generated base class,
which answers UNIMPLEMENTED.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import grpc

from evidenceos.errors import InvalidArgument
from evidenceos.rpc.errors import handle_errors
from evidenceos.service.info import ServerInfo
from evidenceos.service.log_service import LogService


def _hash32(value: bytes, field: str) -> bytes:
    if len(value) != 32:
        raise InvalidArgument("invalid request")
    return value


class EvidenceOSImpl:
    """Implemented RPCs; mixed in front of a generated ``EvidenceOSServicer`` base."""

    def __init__(self, pb: ModuleType, log_service: LogService, info: ServerInfo) -> None:
        self.pb = pb
        self.log = log_service
        self.info = info

    @handle_errors
    def Health(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.HealthResponse(status="SERVING")

    @handle_errors
    def GetServerInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self.info
        return self.pb.GetServerInfoResponse(
            protocol_semver=info.protocol_semver,
            proto_hash=info.proto_hash,
            build_git_commit=info.build_git_commit,
            build_time_utc=info.build_time_utc,
            daemon_version=info.daemon_version,
            feature_flags=self.pb.FeatureFlags(
                tls_enabled=info.tls_enabled,
                mtls_enabled=info.mtls_enabled,
                oracle_registry_enabled=info.oracle_registry_enabled,
                insecure_v1_enabled=info.insecure_v1_enabled,
                synthetic_holdout_enabled=info.synthetic_holdout_enabled,
                offline_settlement_ingest_enabled=False,
                disjointness_attestation_required=info.disjointness_attestation_required,
            ),
        )

    @handle_errors
    def GetPublicKey(self, request: Any, context: grpc.ServicerContext) -> Any:
        public, key_id = self.log.public_key(bytes(request.key_id))
        return self.pb.GetPublicKeyResponse(ed25519_public_key=public, key_id=key_id)

    @handle_errors
    def GetSignedTreeHead(self, request: Any, context: grpc.ServicerContext) -> Any:
        head = self.log.signed_tree_head()
        return self.pb.GetSignedTreeHeadResponse(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            signature=head.signature,
            key_id=head.key_id,
        )

    @handle_errors
    def GetInclusionProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        proof = self.log.inclusion_proof(int(request.leaf_index))
        return self.pb.GetInclusionProofResponse(
            leaf_hash=proof.leaf_hash, sibling_hashes=proof.audit_path, root_hash=proof.root_hash
        )

    @handle_errors
    def GetConsistencyProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        result = self.log.consistency(int(request.first_tree_size), int(request.second_tree_size))
        return self.pb.GetConsistencyProofResponse(
            consistent=result.consistent,
            first_root_hash=result.first_root_hash,
            second_root_hash=result.second_root_hash,
        )


def make_servicer(
    pb: ModuleType, pb_grpc: ModuleType, log_service: LogService, info: ServerInfo
) -> Any:
    """An instance answering every RPC of ``pb_grpc.EvidenceOSServicer``."""
    cls = type(
        f"EvidenceOS_{pb.DESCRIPTOR.package}", (EvidenceOSImpl, pb_grpc.EvidenceOSServicer), {}
    )
    return cls(pb, log_service, info)
