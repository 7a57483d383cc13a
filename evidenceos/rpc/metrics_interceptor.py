"""RPC count and latency by method and status, as Prometheus collectors (docs/metrics.md).

:class:`MetricsInterceptor` is the outermost server interceptor, so what it records is what the
client saw: requests refused by the auth guard count with their ``UNAUTHENTICATED`` status, and
the latency includes every interceptor below it. The ``method`` label is the full gRPC method path
of a registered handler (a bounded set); calls to unknown methods are left to gRPC's own
``UNIMPLEMENTED`` reply and not counted, so a client cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from evidenceos.rpc._handlers import rewrap_handler

#: Seconds; RPCs range from sub-millisecond reads to executions that run a guest.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def _status(context: grpc.ServicerContext, failed: bool) -> str:
    """The status the call ended with: what the servicer set; CANCELLED when the client went
    away (cancel, deadline, disconnect) before the handler finished; else OK or UNKNOWN."""
    code_of = getattr(context, "code", None)
    code = code_of() if callable(code_of) else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if not context.is_active():
        return grpc.StatusCode.CANCELLED.name
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call to a registered method; registers its collectors on
    ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "evidenceos_rpc_requests",
            "gRPC calls handled, by full method path and final status code.",
            ("method", "code"),
            registry=registry,
        )
        self.latency = Histogram(
            "evidenceos_rpc_duration_seconds",
            "gRPC call latency in seconds (streams: until the stream ends), by method and status.",
            ("method", "code"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Per call, the labelled children and the wrapped handler are looked up here rather
        # than built again: methods and codes are bounded sets, and gRPC hands every call of a
        # method the same registered handler.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    def _observe(self, method: str, code: str, started: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = (self.requests.labels(method, code), self.latency.labels(method, code))
            self._children[(method, code)] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

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
            wrapped = (
                handler,
                rewrap_handler(
                    handler,
                    lambda behavior, _streamed: self._unary(method, behavior),
                    lambda behavior, _streamed: self._stream(method, behavior),
                ),
            )
            self._wrapped[method] = wrapped
        result: grpc.RpcMethodHandler[Any, Any] = wrapped[1]
        return result

    def _unary(
        self, method: str, behavior: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._observe(method, _status(context, failed), started)

        return wrapper

    def _stream(
        self, method: str, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            try:
                yield from behavior(request, context)
            except GeneratorExit:  # the client went away mid-stream
                self._observe(method, grpc.StatusCode.CANCELLED.name, started)
                raise
            except BaseException:
                self._observe(method, _status(context, True), started)
                raise
            self._observe(method, _status(context, False), started)

        return wrapper
