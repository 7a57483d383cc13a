"""One exception tree for the whole package.

Every error carries a transport-neutral :class:`Code`; the gRPC layer maps codes to status codes in
one table (``evidenceos.rpc.errors``) and the CLI maps them to exit codes. Messages are meant for
operators and clients: they say what is wrong and, where it helps, what to do. They never contain
secrets.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Transport-neutral error classes (mirrors the gRPC codes the daemon uses, spec 20 §1.3)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    ABORTED = "aborted"
    UNAVAILABLE = "unavailable"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


class EvidenceOSError(Exception):
    """Base class; ``code`` decides the gRPC status and CLI exit code."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(EvidenceOSError):
    code = Code.INVALID_ARGUMENT


class NotFound(EvidenceOSError):
    code = Code.NOT_FOUND


class AlreadyExists(EvidenceOSError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(EvidenceOSError):
    code = Code.FAILED_PRECONDITION


class PermissionDenied(EvidenceOSError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(EvidenceOSError):
    code = Code.UNAUTHENTICATED


class ResourceExhausted(EvidenceOSError):
    code = Code.RESOURCE_EXHAUSTED


class Aborted(EvidenceOSError):
    code = Code.ABORTED


class Unavailable(EvidenceOSError):
    code = Code.UNAVAILABLE


class Unimplemented(EvidenceOSError):
    code = Code.UNIMPLEMENTED


class Internal(EvidenceOSError):
    code = Code.INTERNAL


class ProofError(InvalidArgument):
    """A Merkle inclusion or consistency proof does not verify."""


class InclusionProofError(ProofError):
    """An inclusion proof does not lead from the leaf to the root."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not link the old root to the new root."""


class SignatureError(InvalidArgument):
    """An Ed25519 signature (tree head, record, request) does not verify."""


class StorageError(Internal):
    """The database failed in a way the caller cannot fix (I/O error, corruption)."""


class StorageFull(Unavailable):
    """The disk is full or the data directory is read-only; reads keep working."""


class LogIntegrityError(Internal):
    """The stored transparency log is damaged; the daemon must not start on it."""


class ConfigError(EvidenceOSError):
    """A configuration or input file is invalid; start-up or reload refuses it."""

    code = Code.FAILED_PRECONDITION


class KeyFileError(ConfigError):
    """A signing key file is missing, malformed or unsafe (mode, length, name)."""
