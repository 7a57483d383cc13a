"""The service objects one daemon serves over gRPC, handed to every servicer mixin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evidenceos.service.claims import ClaimService
from evidenceos.service.execution import ExecutionService
from evidenceos.service.info import ServerInfo
from evidenceos.service.log_service import LogService


@dataclass
class Services:
    log: LogService
    info: ServerInfo
    claims: ClaimService
    execution: ExecutionService
    revocations: Any = None
    governance: Any = None
    credit: Any = None
