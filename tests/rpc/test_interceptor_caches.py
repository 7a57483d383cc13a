"""The interceptors wrap a method's handler once and reuse it for every call that gRPC serves
with that same handler; the metrics interceptor keeps its labelled children. Neither may change
what a call sees or what is counted."""

from __future__ import annotations

from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from evidenceos.core.auth import IdentityPolicy, NoAuth, RequestGuard
from evidenceos.rpc.auth_interceptor import AuthInterceptor, current_caller
from evidenceos.rpc.metrics_interceptor import MetricsInterceptor

SEAL = "/evidenceos.v2.EvidenceOS/SealClaim"
FREEZE = "/evidenceos.v2.EvidenceOS/FreezeGates"
HEALTH = "/grpc.health.v1.Health/Check"


class _CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _details(method: str) -> Any:
    """Stands in for grpc's HandlerCallDetails."""
    return _CallDetails(method)


class _FakeContext:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "test"),)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def is_active(self) -> bool:
        return True

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def _context(code: grpc.StatusCode | None = None) -> Any:
    """Stands in for a ServicerContext."""
    return _FakeContext(code)


def _handler(reply: str) -> grpc.RpcMethodHandler[Any, Any]:
    def behavior(request: Any, context: Any) -> Any:
        caller = current_caller()
        return (reply, request, None if caller is None else caller.principal_id)

    return grpc.unary_unary_rpc_method_handler(behavior)


def _auth() -> AuthInterceptor:
    guard = RequestGuard(NoAuth(), IdentityPolicy.from_env({}))
    return AuthInterceptor(guard, trust_peer_certificates=False)


def test_a_method_handler_is_wrapped_once_per_handler() -> None:
    seal, freeze, replaced = _handler("seal"), _handler("freeze"), _handler("seal again")
    for interceptor in (_auth(), MetricsInterceptor(CollectorRegistry())):
        first = interceptor.intercept_service(lambda _: seal, _details(SEAL))
        assert interceptor.intercept_service(lambda _: seal, _details(SEAL)) is first
        assert interceptor.intercept_service(lambda _: freeze, _details(FREEZE)) is not first
        # a new handler for the method is wrapped anew
        again = interceptor.intercept_service(lambda _: replaced, _details(SEAL))
        assert again is not first
        assert again is not None and again.unary_unary is not None
        assert again.unary_unary("req", _context())[0] == "seal again"
        assert interceptor.intercept_service(lambda _: None, _details(SEAL)) is None


def test_unguarded_services_pass_through_and_guarded_calls_see_their_caller() -> None:
    auth = _auth()
    health = _handler("health")
    assert auth.intercept_service(lambda _: health, _details(HEALTH)) is health
    wrapped = auth.intercept_service(lambda _: _handler("seal"), _details(SEAL))
    assert wrapped is not None and wrapped.unary_unary is not None
    for _ in range(2):
        assert wrapped.unary_unary("req", _context()) == ("seal", "req", "anonymous")
        assert current_caller() is None


def test_counts_and_latencies_by_method_and_code() -> None:
    registry = CollectorRegistry()
    metrics = MetricsInterceptor(registry)
    seal = metrics.intercept_service(lambda _: _handler("seal"), _details(SEAL))
    freeze = metrics.intercept_service(lambda _: _handler("freeze"), _details(FREEZE))
    assert seal is not None and seal.unary_unary is not None
    assert freeze is not None and freeze.unary_unary is not None
    for _ in range(3):
        seal.unary_unary("req", _context())
    freeze.unary_unary("req", _context())
    freeze.unary_unary("req", _context(grpc.StatusCode.NOT_FOUND))

    def value(name: str, method: str, code: str) -> float | None:
        return registry.get_sample_value(name, {"method": method, "code": code})

    assert value("evidenceos_rpc_requests_total", SEAL, "OK") == 3
    assert value("evidenceos_rpc_requests_total", FREEZE, "OK") == 1
    assert value("evidenceos_rpc_requests_total", FREEZE, "NOT_FOUND") == 1
    assert value("evidenceos_rpc_duration_seconds_count", SEAL, "OK") == 3
    assert value("evidenceos_rpc_duration_seconds_count", FREEZE, "NOT_FOUND") == 1
