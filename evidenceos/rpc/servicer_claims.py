"""RPCs of the claim lifecycle (spec 20 §3.3-3.10, §3.15): translation only."""

from __future__ import annotations

import hashlib
from types import ModuleType
from typing import Any

import grpc

from evidenceos.errors import InvalidArgument
from evidenceos.rpc.errors import handle_errors
from evidenceos.rpc.identity import caller_from_context, request_id
from evidenceos.rpc.services import Services
from evidenceos.service.claims import CREATE_V2_METHOD, CreateClaimV2Input, IdempotencyKey
from evidenceos.service.execution import EXECUTE_V2_METHOD

IDEMPOTENCY_DOMAIN = b"evidenceos:idempotency:request:v1"


def idempotency_key(
    context: grpc.ServicerContext, principal_id: str, method: str, request: Any
) -> IdempotencyKey:
    """Spec 20 §9: keyed by (principal, v2 method, x-request-id); v1 and v2 share records."""
    body = request.SerializeToString(deterministic=True)
    digest = hashlib.sha256(IDEMPOTENCY_DOMAIN + method.encode() + b"\x00" + body).digest()
    return IdempotencyKey(principal_id, method, request_id(context), digest)


class ClaimRpc:
    pb: ModuleType
    services: Services

    @handle_errors
    def CreateClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        result = self.services.claims.create_claim_v1(
            caller_from_context(context),
            topic_id=bytes(request.topic_id),
            holdout_handle_id=bytes(request.holdout_handle_id),
            phys_hir_hash=bytes(request.phys_hir_hash),
            epoch_size=int(request.epoch_size),
            oracle_num_symbols=int(request.oracle_num_symbols),
            alpha=float(request.alpha),
            access_credit=int(request.access_credit),
        )
        return self.pb.CreateClaimResponse(claim_id=result.claim_id, state=result.state.value)

    @handle_errors
    def CreateClaimV2(self, request: Any, context: grpc.ServicerContext) -> Any:
        caller = caller_from_context(context)
        key = idempotency_key(context, caller.principal_id, CREATE_V2_METHOD, request)
        meta = request.metadata
        signals = request.signals
        result = self.services.claims.create_claim_v2(
            caller,
            CreateClaimV2Input(
                claim_name=request.claim_name,
                lane=meta.lane,
                alpha_micros=int(meta.alpha_micros),
                epoch_config_ref=meta.epoch_config_ref,
                output_schema_id=meta.output_schema_id,
                has_metadata=request.HasField("metadata"),
                semantic_hash=bytes(signals.semantic_hash),
                phys_hir_signature_hash=bytes(signals.phys_hir_signature_hash),
                dependency_merkle_root=bytes(signals.dependency_merkle_root),
                holdout_ref=request.holdout_ref,
                epoch_size=int(request.epoch_size),
                oracle_num_symbols=int(request.oracle_num_symbols),
                access_credit=int(request.access_credit),
                oracle_id=request.oracle_id,
                nullspec_id=request.nullspec_id,
                dp_epsilon_budget=(
                    request.dp_epsilon_budget if request.HasField("dp_epsilon_budget") else None
                ),
                dp_delta_budget=(
                    request.dp_delta_budget if request.HasField("dp_delta_budget") else None
                ),
            ),
            key,
        )
        return self.pb.CreateClaimV2Response(
            claim_id=result.claim_id, topic_id=result.topic_id, state=result.state.value
        )

    @handle_errors
    def CommitArtifacts(self, request: Any, context: grpc.ServicerContext) -> Any:
        state = self.services.claims.commit_artifacts(
            caller_from_context(context),
            bytes(request.claim_id),
            [(bytes(a.artifact_hash), a.kind) for a in request.artifacts],
            bytes(request.wasm_module),
        )
        return self.pb.CommitArtifactsResponse(state=state.value)

    def _freeze(self, request: Any, context: grpc.ServicerContext, op: str) -> int:
        return self.services.claims.freeze(
            caller_from_context(context), bytes(request.claim_id), op
        ).value

    @handle_errors
    def FreezeGates(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.FreezeGatesResponse(state=self._freeze(request, context, "freeze_gates"))

    @handle_errors
    def Freeze(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.FreezeResponse(state=self._freeze(request, context, "freeze"))

    @handle_errors
    def SealClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.SealClaimResponse(state=self._freeze(request, context, "seal_claim"))

    @handle_errors
    def Seal(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.SealResponse(state=self._freeze(request, context, "seal"))

    @handle_errors
    def ExecuteClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.services.info.insecure_v1_enabled:
            raise InvalidArgument("v1 ExecuteClaim disabled; use ExecuteClaimV2")
        raise InvalidArgument(
            "v1 ExecuteClaim lets the caller choose the decision and is not served by this "
            "daemon; use ExecuteClaimV2"
        )

    @handle_errors
    def ExecuteClaimV2(self, request: Any, context: grpc.ServicerContext) -> Any:
        caller = caller_from_context(context)
        key = idempotency_key(context, caller.principal_id, EXECUTE_V2_METHOD, request)
        out = self.services.execution.execute_claim_v2(caller, bytes(request.claim_id), key)
        return self.pb.ExecuteClaimV2Response(
            state=out.state.value,
            decision=out.decision,
            reason_codes=list(out.reason_codes),
            canonical_output=out.canonical_output,
            e_value=out.e_value,
            certified=out.certified,
            capsule_hash=out.capsule_hash,
            etl_index=out.etl_index,
        )

    @handle_errors
    def GetCapsule(self, request: Any, context: grpc.ServicerContext) -> Any:
        view = self.services.claims.get_capsule(
            caller_from_context(context), bytes(request.claim_id)
        )
        return self.pb.GetCapsuleResponse(
            capsule_bytes=view.capsule_bytes,
            capsule_hash=view.capsule_hash,
            etl_index=view.etl_index,
        )

    @handle_errors
    def FetchCapsule(self, request: Any, context: grpc.ServicerContext) -> Any:
        fetched = self.services.claims.fetch_capsule(
            caller_from_context(context), bytes(request.claim_id)
        )
        view, proofs = fetched.capsule, fetched.proofs
        head = proofs.head
        return self.pb.FetchCapsuleResponse(
            capsule_bytes=view.capsule_bytes,
            capsule_hash=view.capsule_hash,
            etl_index=view.etl_index,
            signed_tree_head=self.pb.SignedTreeHead(
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                signature=head.signature,
                key_id=head.key_id,
            ),
            inclusion_proof=self.pb.MerkleInclusionProof(
                leaf_hash=proofs.leaf_hash,
                leaf_index=proofs.leaf_index,
                tree_size=head.tree_size,
                audit_path=proofs.audit_path,
            ),
            consistency_proof=self.pb.MerkleConsistencyProof(
                old_tree_size=proofs.leaf_index + 1,
                new_tree_size=head.tree_size,
                path=proofs.consistency_path,
            ),
            root_hash=head.root_hash,
            tree_size=head.tree_size,
        )
