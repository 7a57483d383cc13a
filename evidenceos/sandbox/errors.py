"""Vault errors: one class per row of the vault error table (spec 30 §5.3).

Each class inherits the :mod:`evidenceos.errors` class whose ``code`` gives the gRPC status of the
table, and its ``message`` is the table's public message, so ``rpc/errors.py`` needs no special
case. What went wrong in detail (a wasmtime trap text, a schema defect) is kept in ``detail`` for
the log and never sent to clients.

Every instance carries what the guest had consumed when it failed: ``fuel_used`` and
``oracle_calls``. A failure after the guest ran is an incident that is charged (DESIGN §3), so the
caller needs both numbers on the error path too. Errors raised before the guest could run (limits,
module validation) carry zeros.
"""

from __future__ import annotations

from typing import ClassVar

from evidenceos.errors import (
    EvidenceOSError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
)


class VaultError(EvidenceOSError):
    """Base of the vault errors; subclasses fix the code and the public message."""

    public_message: ClassVar[str] = "vault failure"

    def __init__(self, detail: str = "", *, fuel_used: int = 0, oracle_calls: int = 0) -> None:
        super().__init__(self.public_message)
        self.detail = detail
        self.fuel_used = fuel_used
        self.oracle_calls = oracle_calls

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(detail={self.detail!r}, fuel_used={self.fuel_used}, "
            f"oracle_calls={self.oracle_calls})"
        )


class InvalidVaultConfig(VaultError, InvalidArgument):
    """A vault limit or the holdout length is out of range (spec 30 §5.3 ``InvalidConfig``)."""

    public_message = "invalid vault configuration"


class InvalidModule(VaultError, FailedPrecondition):
    """The bytes are not a WebAssembly binary this engine accepts."""

    public_message = "invalid wasm module"


class GuestTrap(VaultError, FailedPrecondition):
    """A wasm trap, a link failure or a memory-limit failure at instantiation (``Trap``)."""

    public_message = "wasm trap"


class FuelExhausted(VaultError, ResourceExhausted):
    """The guest used all the fuel of its limits."""

    public_message = "fuel exhausted"


class MemoryOutOfBounds(VaultError, FailedPrecondition):
    """A host call's pointer/length is outside the exported memory, or none (``MemoryOob``)."""

    public_message = "guest memory out-of-bounds"


class OutputTooLarge(VaultError, FailedPrecondition):
    """The emitted claim, raw or canonical, is longer than ``max_output_bytes``."""

    public_message = "structured output too large"


class OutputAlreadyEmitted(VaultError, FailedPrecondition):
    """``emit_structured_claim`` was called again after a successful emission."""

    public_message = "too many structured outputs"


class OutputMissing(VaultError, FailedPrecondition):
    """``run`` returned without a successful emission."""

    public_message = "structured output missing"


class OracleCallLimitExceeded(VaultError, ResourceExhausted):
    """The guest called the oracle more than ``max_oracle_calls`` times."""

    public_message = "oracle call limit exceeded"


class InvalidOracleInput(VaultError, InvalidArgument):
    """Predictions of the wrong length, a byte other than 0/1, or an oracle domain error."""

    public_message = "invalid oracle input"


class MissingRunExport(VaultError, FailedPrecondition):
    """The module has no ``run`` function export of type ``() -> ()``."""

    public_message = "missing run export"


class InvalidStructuredClaim(VaultError, FailedPrecondition):
    """The output failed the claim's schema; the public message is the generic one.

    The caller's domain error is kept as ``__cause__`` (spec 30 §5.3: only a generic public
    message reaches the client, spec 20's "operation blocked by policy").
    """

    public_message = "operation blocked by policy"


class HostCallbackFailure(VaultError, Internal):
    """A caller-supplied callback (oracle, output validator) failed with a non-domain error.

    Not in the reference table: it is a bug on our side, reported as INTERNAL, but it still happens
    after the guest ran, so it carries the consumption like every other vault error.
    """

    public_message = "internal error"


class BurnFailed(VaultError, Internal):
    """The PLN burn module ended any other way than by fuel exhaustion (spec 30 §5.5)."""

    public_message = "burn module terminated unexpectedly"


class ArtefactRejected(Internal):
    """A serialized module from the database does not belong to this engine or module.

    The caller drops the artefact and compiles the wasm again (DESIGN §7).
    """
