"""Who is calling: the caller identity handed to the service layer.

The identity is the one :class:`evidenceos.rpc.auth_interceptor.AuthInterceptor` derived for
this call (spec 60 §3, §4; DESIGN §6): from the verified credential and client certificate, never
from a header the client chooses. With no credential configured every caller is an auditor, so
the whole lifecycle works for a local operator (docs/decisions.md D-R1). A servicer reached
without the interceptor refuses the call rather than guess who is calling.
"""

from __future__ import annotations

import grpc

from evidenceos.core.auth import ANONYMOUS, CallerIdentity, Role
from evidenceos.errors import InvalidArgument, Unauthenticated
from evidenceos.rpc.auth_interceptor import current_caller

LOCAL_CALLER = CallerIdentity(principal_id=ANONYMOUS, role=Role.AUDITOR)
MAX_REQUEST_ID_BYTES = 128


def caller_from_context(context: grpc.ServicerContext) -> CallerIdentity:
    caller = current_caller()
    if caller is None:
        raise Unauthenticated("no authenticated caller for this call")
    return caller


def metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None


def request_id(context: grpc.ServicerContext) -> str:
    """``x-request-id``: trimmed, 1..128 bytes of printable ASCII (spec 20 §1.2)."""
    raw = metadata_value(context, "x-request-id")
    if raw is None:
        raise InvalidArgument("missing x-request-id")
    value = raw.strip()
    if not value:
        raise InvalidArgument("missing x-request-id")
    if len(value.encode()) > MAX_REQUEST_ID_BYTES or not value.isascii() or not value.isprintable():
        raise InvalidArgument("invalid x-request-id")
    return value
