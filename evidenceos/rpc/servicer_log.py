"""RPCs of the transparency log and server facts (spec 20 §3.1-3.2, §3.11-3.14)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import grpc

from evidenceos.rpc.errors import handle_errors
from evidenceos.rpc.services import Services


class LogRpc:
    pb: ModuleType
    services: Services

    @handle_errors
    def Health(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.HealthResponse(status="SERVING")

    @handle_errors
    def GetServerInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self.services.info
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
        public, key_id = self.services.log.public_key(bytes(request.key_id))
        return self.pb.GetPublicKeyResponse(ed25519_public_key=public, key_id=key_id)

    @handle_errors
    def GetSignedTreeHead(self, request: Any, context: grpc.ServicerContext) -> Any:
        head = self.services.log.signed_tree_head()
        return self.pb.GetSignedTreeHeadResponse(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            signature=head.signature,
            key_id=head.key_id,
        )

    @handle_errors
    def GetInclusionProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        proof = self.services.log.inclusion_proof(int(request.leaf_index))
        return self.pb.GetInclusionProofResponse(
            leaf_hash=proof.leaf_hash, sibling_hashes=proof.audit_path, root_hash=proof.root_hash
        )

    @handle_errors
    def GetConsistencyProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        result = self.services.log.consistency(
            int(request.first_tree_size), int(request.second_tree_size)
        )
        return self.pb.GetConsistencyProofResponse(
            consistent=result.consistent,
            first_root_hash=result.first_root_hash,
            second_root_hash=result.second_root_hash,
        )
