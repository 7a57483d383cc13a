"""Client SDK: a typed wrapper over the gRPC stubs, with TLS and request authentication.

::

    from evidenceos.client import Client, TlsOptions, BearerAuth
    from evidenceos.client.verify import verify_capsule

    with Client("127.0.0.1:50051") as client:
        head = client.signed_tree_head()
        response = client.fetch_capsule(claim_id)
        capsule = verify_capsule(response, trusted_public_key, claim_id=claim_id)

Authentication follows spec 60 §3: :class:`BearerAuth` sends ``authorization: Bearer <token>``;
:class:`HmacAuth` signs ``<request id>:<method path>:<unix seconds>`` with HMAC-SHA256 and sends
``x-request-id``, ``x-evidenceos-key-id``, ``x-evidenceos-timestamp`` and
``x-evidenceos-signature``. Mutating calls take a ``request_id``; reuse it to retry safely (the
daemon answers a retry from its idempotency record); without one a fresh id is generated.

Only ``grpc``, the generated stubs and the pure ``evidenceos.core`` are used, so the SDK runs
anywhere the protocol files do. Offline verification lives in :mod:`evidenceos.client.verify`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from evidenceos._proto.v1 import evidenceos_pb2_grpc as v1_grpc
from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as v2_grpc
from evidenceos.client.verify import (
    SignedTreeHead,
    VerificationError,
    VerifiedCapsule,
    head_from_proto,
    key_id_of,
    verify_capsule,
)
from evidenceos.core.auth import (
    HEADER_AUTHORIZATION,
    HEADER_KEY_ID,
    HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    compute_signature_header,
    compute_signing_material,
)

__all__ = [
    "BearerAuth",
    "Client",
    "HmacAuth",
    "InclusionProof",
    "SignedTreeHead",
    "TlsOptions",
    "VerificationError",
    "VerifiedCapsule",
    "pb",
]

Metadata = tuple[tuple[str, str | bytes], ...]
DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Channel TLS: the CA that signs the server certificate (None: system roots), and a client
    certificate and key for mTLS."""

    root_certificates: bytes | None = None
    client_certificate: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    @classmethod
    def from_files(
        cls,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        server_name: str | None = None,
    ) -> TlsOptions:
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key (and the other way round)")
        return cls(
            root_certificates=ca.read_bytes() if ca else None,
            client_certificate=cert.read_bytes() if cert else None,
            client_key=key.read_bytes() if key else None,
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.client_key,
            certificate_chain=self.client_certificate,
        )


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """``authorization: Bearer <token>`` on every call (spec 60 §3.2-3.3)."""

    token: str = field(repr=False)

    def headers(self, method: str, request_id: str) -> list[tuple[str, str]]:
        return [(HEADER_AUTHORIZATION, f"Bearer {self.token}")]


@dataclass(frozen=True, slots=True)
class HmacAuth:
    """HMAC request signing (spec 60 §3.4) with a timestamp, as production mode requires."""

    secret: bytes = field(repr=False)
    key_id: str = "default"
    clock: Callable[[], float] = time.time

    def headers(self, method: str, request_id: str) -> list[tuple[str, str]]:
        timestamp = str(int(self.clock()))
        material = compute_signing_material(request_id, method, timestamp)
        return [
            (HEADER_KEY_ID, self.key_id),
            (HEADER_TIMESTAMP, timestamp),
            (HEADER_SIGNATURE, compute_signature_header(self.secret, material)),
        ]


Auth = BearerAuth | HmacAuth


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str | bytes]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _AuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds ``x-request-id`` (when missing) and the auth headers to every call."""

    def __init__(self, auth: Auth | None) -> None:
        self._auth = auth

    def _details(self, details: Any) -> _CallDetails:
        metadata = list(details.metadata or ())
        request_id = next((str(v) for k, v in metadata if k == HEADER_REQUEST_ID), None)
        if request_id is None:
            request_id = uuid.uuid4().hex
            metadata.append((HEADER_REQUEST_ID, request_id))
        if self._auth is not None:
            method = details.method
            method = method.decode() if isinstance(method, bytes) else str(method)
            metadata.extend(self._auth.headers(method, request_id))
        return _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """``GetInclusionProof``: the audit path is against the daemon's latest signed head, whose
    root is ``root_hash`` (the response carries no size: pair it with a head)."""

    leaf_index: int
    leaf_hash: bytes
    audit_path: tuple[bytes, ...]
    root_hash: bytes


def _request_metadata(request_id: str | None) -> Metadata:
    return ((HEADER_REQUEST_ID, request_id),) if request_id else ()


class Client:
    """One channel to a daemon, with typed calls for the common RPCs.

    ``v2`` and ``v1`` expose the raw stubs for everything else (the interceptor adds the auth
    headers to those calls too). ``timeout`` is the per-call deadline in seconds.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: TlsOptions | None = None,
        auth: Auth | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = list(options)
        if tls is not None and tls.server_name:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        raw = (
            grpc.secure_channel(target, tls.credentials(), options=opts)
            if tls is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self.target = target
        self.timeout = timeout
        self._raw = raw
        self.channel = grpc.intercept_channel(raw, _AuthInterceptor(auth))
        self.v2 = v2_grpc.EvidenceOSStub(self.channel)
        self.v1 = v1_grpc.EvidenceOSStub(self.channel)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (raises ``grpc.FutureTimeoutError``)."""
        grpc.channel_ready_future(self._raw).result(timeout=timeout)

    # -- server and log -----------------------------------------------------------------------

    def health(self) -> str:
        return str(self.v2.Health(pb.HealthRequest(), timeout=self.timeout).status)

    def server_info(self) -> Any:
        return self.v2.GetServerInfo(pb.GetServerInfoRequest(), timeout=self.timeout)

    def public_key(self, key_id: bytes = b"") -> bytes:
        """The Ed25519 key for ``key_id`` (empty: the active one); checks it hashes to the id."""
        response = self.v2.GetPublicKey(pb.GetPublicKeyRequest(key_id=key_id), timeout=self.timeout)
        public = bytes(response.ed25519_public_key)
        if key_id_of(public) != bytes(response.key_id) or (key_id and key_id != response.key_id):
            raise VerificationError("GetPublicKey returned a key that does not match its key id")
        return public

    def signed_tree_head(self) -> SignedTreeHead:
        return head_from_proto(
            self.v2.GetSignedTreeHead(pb.GetSignedTreeHeadRequest(), timeout=self.timeout)
        )

    def inclusion_proof(self, leaf_index: int) -> InclusionProof:
        response = self.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_index=leaf_index), timeout=self.timeout
        )
        return InclusionProof(
            leaf_index=leaf_index,
            leaf_hash=bytes(response.leaf_hash),
            audit_path=tuple(bytes(p) for p in response.sibling_hashes),
            root_hash=bytes(response.root_hash),
        )

    def consistency(self, first_tree_size: int, second_tree_size: int) -> Any:
        """``GetConsistencyProof``: the server's verdict and the two roots (no path)."""
        return self.v2.GetConsistencyProof(
            pb.GetConsistencyProofRequest(
                first_tree_size=first_tree_size, second_tree_size=second_tree_size
            ),
            timeout=self.timeout,
        )

    # -- claims -------------------------------------------------------------------------------

    def create_claim_v2(self, request: Any, *, request_id: str | None = None) -> Any:
        return self.v2.CreateClaimV2(
            request, metadata=_request_metadata(request_id), timeout=self.timeout
        )

    def commit_artifacts(
        self, claim_id: bytes, artifacts: Sequence[tuple[bytes, str]], wasm_module: bytes
    ) -> Any:
        return self.v2.CommitArtifacts(
            pb.CommitArtifactsRequest(
                claim_id=claim_id,
                artifacts=[pb.Artifact(artifact_hash=h, kind=k) for h, k in artifacts],
                wasm_module=wasm_module,
            ),
            timeout=self.timeout,
        )

    def freeze_gates(self, claim_id: bytes) -> Any:
        return self.v2.FreezeGates(pb.FreezeGatesRequest(claim_id=claim_id), timeout=self.timeout)

    def execute_claim_v2(self, claim_id: bytes, *, request_id: str | None = None) -> Any:
        return self.v2.ExecuteClaimV2(
            pb.ExecuteClaimV2Request(claim_id=claim_id),
            metadata=_request_metadata(request_id),
            timeout=self.timeout,
        )

    def get_capsule(self, claim_id: bytes) -> Any:
        return self.v2.GetCapsule(pb.GetCapsuleRequest(claim_id=claim_id), timeout=self.timeout)

    def fetch_capsule(self, claim_id: bytes) -> Any:
        """``FetchCapsule``: capsule, current head, inclusion and consistency proofs."""
        return self.v2.FetchCapsule(pb.FetchCapsuleRequest(claim_id=claim_id), timeout=self.timeout)

    def fetch_verified_capsule(
        self, claim_id: bytes, public_key: bytes | None = None
    ) -> VerifiedCapsule:
        """Fetch and verify; without ``public_key`` the daemon's key for the head is used
        (that only proves self-consistency: pin the key you trust)."""
        response = self.fetch_capsule(claim_id)
        key = public_key or self.public_key(bytes(response.signed_tree_head.key_id))
        return verify_capsule(response, key, claim_id=claim_id)

    def revoke_claim(self, claim_id: bytes, reason: str, *, request_id: str | None = None) -> Any:
        return self.v2.RevokeClaim(
            pb.RevokeClaimRequest(claim_id=claim_id, reason=reason),
            metadata=_request_metadata(request_id),
            timeout=self.timeout,
        )

    def revocation_feed(self) -> Any:
        return self.v2.GetRevocationFeed(pb.GetRevocationFeedRequest(), timeout=self.timeout)

    # -- credit (operator) --------------------------------------------------------------------

    def grant_credit(self, principal_id: str, amount: int, reason: str) -> Any:
        return self.v2.GrantCredit(
            pb.GrantCreditRequest(principal_id=principal_id, amount=amount, reason=reason),
            timeout=self.timeout,
        )

    def set_credit_limit(self, principal_id: str, limit: int) -> Any:
        return self.v2.SetCreditLimit(
            pb.SetCreditLimitRequest(principal_id=principal_id, limit=limit),
            timeout=self.timeout,
        )
