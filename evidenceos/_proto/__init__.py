"""Generated protobuf and gRPC modules for the EvidenceOS API.

Do not edit: produced by ``scripts/gen_proto.py`` from ``proto/``.
"""

from typing import Final

__all__ = ["V2_PROTO_SHA256"]

#: Hex SHA-256 of the exact bytes of proto/evidenceos/v2/evidenceos.proto
#: (reported as GetServerInfo.proto_hash).
V2_PROTO_SHA256: Final[str] = "02f6c1abfa096d467d87bd8be44479b949066af99df67d8f341de8c68e63f161"
