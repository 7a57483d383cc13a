"""The WASM vault: the only package code that imports wasmtime (STYLE.md module map).

Public surface: :class:`Sandbox` (engine, module cache, execution, PLN burn), the value types
:class:`VaultLimits`, :class:`ExecutionResult`, :class:`CompiledModule`, :class:`SandboxStats`,
:func:`padded_fuel_total`, the ABI fingerprint, the errors of :mod:`evidenceos.sandbox.errors`,
and :func:`gil_fast_path` (whether wasmtime's short foreign calls keep the GIL, D-A5). Spec 30 §5.
"""

from evidenceos.sandbox.engine import (
    BURN_WASM_MODULE,
    CompiledModule,
    Sandbox,
    SandboxStats,
    padded_fuel_total,
)
from evidenceos.sandbox.errors import (
    ArtefactRejected,
    BurnFailed,
    FuelExhausted,
    GuestTrap,
    HostCallbackFailure,
    InvalidModule,
    InvalidOracleInput,
    InvalidStructuredClaim,
    InvalidVaultConfig,
    MemoryOutOfBounds,
    MissingRunExport,
    OracleCallLimitExceeded,
    OutputAlreadyEmitted,
    OutputMissing,
    OutputTooLarge,
    VaultError,
)
from evidenceos.sandbox.ffi_gil import SHORT_RUN_MAX_FUEL, GilStatus
from evidenceos.sandbox.ffi_gil import status as gil_fast_path
from evidenceos.sandbox.vault import (
    ABI_FINGERPRINT,
    ExecutionResult,
    OracleCallback,
    OutputValidator,
    VaultLimits,
)

__all__ = [
    "ABI_FINGERPRINT",
    "BURN_WASM_MODULE",
    "SHORT_RUN_MAX_FUEL",
    "ArtefactRejected",
    "BurnFailed",
    "CompiledModule",
    "ExecutionResult",
    "FuelExhausted",
    "GilStatus",
    "GuestTrap",
    "HostCallbackFailure",
    "InvalidModule",
    "InvalidOracleInput",
    "InvalidStructuredClaim",
    "InvalidVaultConfig",
    "MemoryOutOfBounds",
    "MissingRunExport",
    "OracleCallLimitExceeded",
    "OracleCallback",
    "OutputAlreadyEmitted",
    "OutputMissing",
    "OutputTooLarge",
    "OutputValidator",
    "Sandbox",
    "SandboxStats",
    "VaultError",
    "VaultLimits",
    "gil_fast_path",
    "padded_fuel_total",
]
