"""The request guard as a gRPC server interceptor: who is calling, may they, and how often.

For every call to ``evidenceos.v2.EvidenceOS`` and ``evidenceos.v1.EvidenceOS`` (the standard
health and reflection services stay open so that probes and ``grpcurl`` work; they expose no
data), before the servicer runs:

1. **Authenticate** (spec 60 §3, DESIGN §6): :class:`~evidenceos.core.auth.RequestGuard` checks
   the configured credential against the real method path (``handler_call_details.method``), and
   on an mTLS listener the principal comes from the *verified* peer certificate that the TLS
   layer hands to ``context.auth_context()`` — never from a header. With no credential configured
   and no client certificate, every caller holds the auditor role (docs/decisions.md D-R1).
2. **Authorize by role** (spec 60 §4.3, docs/security.md): auditor-or-operator for the proof and
   capsule reads and GetHoldoutPoolBudgets, operator for GrantCredit, SetCreditLimit and
   SetHoldoutPoolBudgets. Claim ownership is the service layer's check.
3. **Probe detection** (spec 30 §8) for CreateClaimV2 and ExecuteClaimV2: THROTTLE answers
   RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer, FREEZE PERMISSION_DENIED. It counts per
   authenticated principal, so it is off on an open listener, where every caller shares the one
   principal ``anonymous`` and a single window would throttle all local clients together
   (docs/decisions.md D-S12).

The identity reaches the servicer through a context variable that
:func:`evidenceos.rpc.identity.caller_from_context` reads; it is set only while the servicer's
code runs (for a streaming reply, around each ``next``). Nothing here logs metadata: refusals
are logged with the path, the status and the guard's message, which never holds a credential.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc

from evidenceos.config import DaemonConfig
from evidenceos.core.auth import (
    HEADER_REQUEST_ID,
    CallerIdentity,
    HmacAuth,
    IdentityPolicy,
    NoAuth,
    PeerCertificate,
    RequestGuard,
    Role,
    RoleTokenAuth,
    SingleTokenAuth,
    build_auth_config,
    headers_from_metadata,
    verify_auditor_role,
    verify_operator_role,
)
from evidenceos.core.probe import ProbeThrottled
from evidenceos.core.topicid import ClaimMetadata, TopicSignals, compute_topic_id
from evidenceos.errors import EvidenceOSError, Unauthenticated
from evidenceos.rpc._handlers import rewrap_handler
from evidenceos.rpc.errors import abort_with
from evidenceos.service.probe import ProbeService

log = logging.getLogger("evidenceos.auth")
authz_log = logging.getLogger("evidenceos.authz")

GUARDED_SERVICES = frozenset({"evidenceos.v2.EvidenceOS", "evidenceos.v1.EvidenceOS"})
#: RPCs that need the auditor or operator role before anything else is looked at.
AUDITOR_RPCS = frozenset(
    {
        "GetInclusionProof",
        "GetConsistencyProof",
        "FetchCapsule",
        "GetCapsule",
        "GetHoldoutPoolBudgets",
    }
)
#: RPCs that change governance state: the operator role only.
OPERATOR_RPCS = frozenset({"GrantCredit", "SetCreditLimit", "SetHoldoutPoolBudgets"})
RETRY_AFTER_TRAILER = "retry-after-ms"
_CREATE_SEMANTIC_DOMAIN = b"evidenceos/probe/create_semantic/v1"

_CALLER: contextvars.ContextVar[CallerIdentity | None] = contextvars.ContextVar(
    "evidenceos_caller", default=None
)

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def current_caller() -> CallerIdentity | None:
    """The identity of the call whose servicer code is running in this thread, if any."""
    return _CALLER.get()


def split_method(path: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``); anything else → ("", "")."""
    service, sep, name = path.lstrip("/").rpartition("/")
    return (service, name) if sep and path.startswith("/") else ("", "")


def build_request_guard(config: DaemonConfig, env: Mapping[str, str]) -> RequestGuard:
    """The guard for a daemon configuration; every contradiction is a ConfigError (spec 60
    §1.5.2), raised before any side effect."""
    auth = build_auth_config(
        auth_token=config.auth_token,
        auth_hmac_key=config.auth_hmac_key,
        agent_tokens=config.agent_tokens,
        auditor_tokens=config.auditor_tokens,
        env=env,
        production_mode=config.production_mode,
    )
    return RequestGuard(auth, IdentityPolicy.from_env(env))


def describe_auth_mode(guard: RequestGuard, *, mtls: bool) -> str:
    """A one-word description for the start-up log (never a credential)."""
    config = guard.config
    if isinstance(config, SingleTokenAuth):
        mode = "bearer"
    elif isinstance(config, RoleTokenAuth):
        mode = "role_tokens"
    elif isinstance(config, HmacAuth):
        mode = "hmac"
    else:
        mode = "none"
    return f"{mode}+mtls" if mtls else mode


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates, authorizes and probe-checks every call to the EvidenceOS services."""

    def __init__(
        self,
        guard: RequestGuard,
        *,
        trust_peer_certificates: bool,
        probe: ProbeService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._guard = guard
        self._trust_peer = trust_peer_certificates
        self._probe = probe
        self._clock = clock
        # Without any credential configured and without client certificates, the listener is
        # trusted as a whole (loopback unless TLS): every caller is an auditor (D-R1).
        self._open = isinstance(guard.config, NoAuth) and not trust_peer_certificates
        # gRPC hands every call of a method the same registered handler: wrap it once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    # -- grpc.ServerInterceptor ---------------------------------------------------------------

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:
            service, _ = split_method(method)
            if service not in GUARDED_SERVICES:
                return handler
            wrapped = (
                handler,
                rewrap_handler(
                    handler,
                    lambda behavior, streamed: self._unary(
                        method, behavior, streaming_request=streamed
                    ),
                    lambda behavior, streamed: self._stream(
                        method, behavior, streaming_request=streamed
                    ),
                ),
            )
            self._wrapped[method] = wrapped
        result: grpc.RpcMethodHandler[Any, Any] = wrapped[1]
        return result

    def _unary(self, method: str, behavior: Behavior, *, streaming_request: bool = False) -> Any:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            caller = self._admit(method, None if streaming_request else request, context)
            token = _CALLER.set(caller)
            try:
                return behavior(request, context)
            finally:
                _CALLER.reset(token)

        return wrapper

    def _stream(self, method: str, behavior: Behavior, *, streaming_request: bool = False) -> Any:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self._admit(method, None if streaming_request else request, context)
            token = _CALLER.set(caller)
            try:
                responses = iter(behavior(request, context))
            finally:
                _CALLER.reset(token)
            while True:
                token = _CALLER.set(caller)
                try:
                    item = next(responses)
                except StopIteration:
                    return
                finally:
                    _CALLER.reset(token)
                yield item

        return wrapper

    # -- the checks ---------------------------------------------------------------------------

    def _admit(self, method: str, request: Any, context: grpc.ServicerContext) -> CallerIdentity:
        """Run guard, role table and probe detector; abort the call on the first refusal."""
        try:
            headers = headers_from_metadata(context.invocation_metadata() or ())
            caller = self._guard.authenticate(
                headers, method, now=int(self._clock()), peer=self._peer(context)
            )
            if self._open and caller.role is Role.AGENT:
                caller = CallerIdentity(caller.principal_id, Role.AUDITOR)
            self._authorize(method, caller)
            if self._probe is not None and not self._open and request is not None:
                self._observe(method, caller, request)
        except ProbeThrottled as exc:
            self._refused(method, context, exc)
            context.set_trailing_metadata(((RETRY_AFTER_TRAILER, str(exc.retry_after_ms)),))
            abort_with(context, exc)
        except EvidenceOSError as exc:
            self._refused(method, context, exc)
            abort_with(context, exc)
        except Exception:  # a bug must not answer with its text (grpc's UNKNOWN would)
            incident = uuid.uuid4().hex[:16]
            log.exception("request guard failed (incident %s)", incident)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "accepted rpc request",
                extra={
                    "event": "rpc_accepted",
                    "path": method,
                    "request_id": headers.get(HEADER_REQUEST_ID),
                    "principal_id": caller.principal_id,
                    "role": caller.role.value,
                },
            )
        return caller

    def _peer(self, context: grpc.ServicerContext) -> PeerCertificate | None:
        """The client certificate the TLS handshake verified (mTLS listeners only)."""
        if not self._trust_peer:
            return None
        # grpc reports a list of values per key (the stubs say bytes).
        pems: Any = context.auth_context().get("x509_pem_cert")
        if not pems:
            # require_client_auth makes the handshake fail first; refuse rather than guess.
            raise Unauthenticated("client certificate required")
        pem = pems[0] if isinstance(pems, list | tuple) else pems
        return PeerCertificate.from_pem(bytes(pem))

    @staticmethod
    def _authorize(method: str, caller: CallerIdentity) -> None:
        _, name = split_method(method)
        try:
            if name in OPERATOR_RPCS:
                verify_operator_role(caller)
            elif name in AUDITOR_RPCS:
                verify_auditor_role(caller)
        except EvidenceOSError:
            authz_log.warning(
                "AUTHZ_%s_ROLE_REQUIRED",
                "OPERATOR" if name in OPERATOR_RPCS else "AUDITOR",
                extra={
                    "event": "authz_denied",
                    "rpc": name,
                    "caller_principal_id": caller.principal_id,
                    "caller_role": caller.role.value,
                },
            )
            raise

    def _observe(self, method: str, caller: CallerIdentity, request: Any) -> None:
        assert self._probe is not None  # noqa: S101 - checked by the caller
        _, name = split_method(method)
        if name == "CreateClaimV2":
            observed = _create_probe_values(request)
            if observed is not None:
                self._probe.observe_create(caller.principal_id, *observed)
        elif name == "ExecuteClaimV2":
            claim_id = bytes(request.claim_id)
            if len(claim_id) == 32:
                self._probe.observe_execute(caller.principal_id, claim_id)

    @staticmethod
    def _refused(method: str, context: grpc.ServicerContext, exc: EvidenceOSError) -> None:
        log.info(
            "rpc refused: %s",
            exc.message,
            extra={
                "event": "rpc_refused",
                "path": method,
                "code": exc.code.name,
                "peer": context.peer(),
            },
        )


def _create_probe_values(request: Any) -> tuple[bytes, bytes] | None:
    """(topic id, semantic value) of a CreateClaimV2 request, or None if it cannot have one
    (the handler will refuse it). The semantic value is what was asked: the request's
    deterministic bytes without ``access_credit`` (the one field that is not the question)."""
    meta = request.metadata
    signals = request.signals
    try:
        topic = compute_topic_id(
            ClaimMetadata(
                lane=meta.lane,
                alpha_micros=int(meta.alpha_micros),
                epoch_config_ref=meta.epoch_config_ref,
                output_schema_id=meta.output_schema_id,
            ),
            TopicSignals.from_wire(
                bytes(signals.semantic_hash),
                bytes(signals.phys_hir_signature_hash),
                bytes(signals.dependency_merkle_root),
            ),
        )
    except EvidenceOSError:
        return None
    question = type(request)()
    question.CopyFrom(request)
    question.access_credit = 0
    semantic = hashlib.sha256(
        _CREATE_SEMANTIC_DOMAIN + question.SerializeToString(deterministic=True)
    ).digest()
    return topic.topic_id, semantic
