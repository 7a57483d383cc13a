"""The gRPC servicer: translation only (STYLE: MLServer's servicers).

One implementation serves both ``evidenceos.v2`` and ``evidenceos.v1``: their messages have the
same names and field numbers, so each instance is bound to one generated module and builds its
responses from it. Each area's RPCs live in a mixin (``servicer_<area>.py``); RPCs nobody
implements fall through to the generated base class, which answers UNIMPLEMENTED.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from evidenceos.rpc.servicer_claims import ClaimRpc
from evidenceos.rpc.servicer_credit import CreditRpc
from evidenceos.rpc.servicer_log import LogRpc
from evidenceos.rpc.servicer_revocation import RevocationRpc
from evidenceos.rpc.services import Services

MIXINS: tuple[type, ...] = (LogRpc, ClaimRpc, CreditRpc, RevocationRpc)


def make_servicer(pb: ModuleType, pb_grpc: ModuleType, services: Services) -> Any:
    """An instance answering every RPC of ``pb_grpc.EvidenceOSServicer``."""
    cls = type(f"EvidenceOS_{pb.DESCRIPTOR.package}", (*MIXINS, pb_grpc.EvidenceOSServicer), {})
    instance = cls()
    instance.pb = pb
    instance.services = services
    return instance
