"""Domain error → gRPC status, in one table (spec 20 §1.3).

Unexpected exceptions become INTERNAL with a generic message and a correlation id; the traceback
goes to the log only. Messages of domain errors are written for clients and never hold secrets.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from evidenceos.errors import Code, EvidenceOSError

log = logging.getLogger("evidenceos.rpc")

STATUS_FOR_CODE: dict[Code, grpc.StatusCode] = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.ABORTED: grpc.StatusCode.ABORTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

F = TypeVar("F", bound=Callable[..., Any])


def abort_with(context: grpc.ServicerContext, error: EvidenceOSError) -> NoReturn:
    context.abort(STATUS_FOR_CODE[error.code], error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def handle_errors(method: F) -> F:
    """Decorator for servicer methods: every failure leaves as a precise gRPC status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except EvidenceOSError as exc:
            abort_with(context, exc)
        except Exception:
            incident = uuid.uuid4().hex[:16]
            log.exception("unexpected error in %s (incident %s)", method.__name__, incident)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")

    return wrapper  # type: ignore[return-value]
