"""The daemon's one wasmtime engine: configuration, compiled-module cache, PLN burn.

Spec 30 §5.1 (engine configuration), §5.5 (PLN padding and burn) and DESIGN §7 (modules are
compiled once per module hash and cached in memory; the caller keeps serialized artefacts in the
database, keyed by module hash and :meth:`Sandbox.engine_fingerprint`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import wasmtime

from evidenceos.errors import FailedPrecondition, InvalidArgument
from evidenceos.sandbox import ffi_gil
from evidenceos.sandbox.errors import ArtefactRejected, BurnFailed, InvalidModule
from evidenceos.sandbox.vault import (
    IMPORT_EMIT_STRUCTURED_CLAIM,
    IMPORT_MODULES,
    IMPORT_ORACLE_BUCKET,
    IMPORT_ORACLE_QUERY,
    U64_MAX,
    WASM_PAGE_BYTES,
    ExecutionResult,
    OracleCallback,
    OutputValidator,
    VaultLimits,
    build_linker,
    execute_module,
    has_unit_run_export,
)

ffi_gil.install()  # keep the GIL across wasmtime's short foreign calls (D-A5)

#: Settings the reference applies (``wasm_config.rs``), spec 30 §5.1: all must exist.
REQUIRED_ENGINE_SETTINGS: Final[tuple[tuple[str, bool | str], ...]] = (
    ("consume_fuel", True),
    ("cranelift_nan_canonicalization", True),
    ("cranelift_opt_level", "none"),
    ("wasm_simd", False),
    ("wasm_relaxed_simd", False),
    ("wasm_multi_memory", False),
    ("wasm_memory64", False),
)

#: Proposals newer wasmtime versions enable by default and the reference (wasmtime 25) did not
#: have on: switched off where the installed wasmtime knows them (spec 30 §5.1, recommended).
OPTIONAL_ENGINE_SETTINGS: Final[tuple[tuple[str, bool | str], ...]] = (
    ("wasm_threads", False),
    ("wasm_gc", False),
    ("wasm_function_references", False),
    ("wasm_exceptions", False),
    ("wasm_stack_switching", False),
    ("wasm_wide_arithmetic", False),
    ("wasm_custom_page_sizes", False),
    ("wasm_component_model", False),
)

#: ``(module (func (export "run") (loop (br 0))))``, the reference's ``BURN_WASM_MODULE``.
BURN_WASM_MODULE: Final = bytes.fromhex(
    "0061736d01000000 0104016000000302 0100070701037275 6e00000a09010700 03400c000b0b"
)

_WASM_MAGIC: Final = b"\x00asm"
_ARTEFACT_MAGIC: Final = b"EOSCWASM"  # then engine fingerprint, module sha256, payload sha256
_ARTEFACT_HEADER_LEN: Final = len(_ARTEFACT_MAGIC) + 3 * 32
_FINGERPRINT_DOMAIN: Final = "evidenceos:sandbox_engine:v1"


def _has_setting(config: wasmtime.Config, name: str) -> bool:
    return isinstance(getattr(type(config), name, None), property)


def _build_config() -> tuple[wasmtime.Config, tuple[tuple[str, bool | str], ...]]:
    """The engine configuration and the settings actually applied (for the fingerprint)."""
    config = wasmtime.Config()
    applied: list[tuple[str, bool | str]] = []
    for name, value in REQUIRED_ENGINE_SETTINGS:
        if not _has_setting(config, name):
            raise RuntimeError(f"installed wasmtime lacks the required setting {name}")
        setattr(config, name, value)
        applied.append((name, value))
    for name, value in OPTIONAL_ENGINE_SETTINGS:
        if _has_setting(config, name):
            setattr(config, name, value)
            applied.append((name, value))
    return config, tuple(applied)


def _compute_engine_fingerprint(settings: tuple[tuple[str, bool | str], ...]) -> str:
    lines = [
        _FINGERPRINT_DOMAIN,
        f"wasmtime={importlib.metadata.version('wasmtime')}",
        f"platform={sys.platform}/{platform.machine()}",
        *(f"{name}={value}" for name, value in settings),
    ]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledModule:
    """A module compiled by one :class:`Sandbox`; opaque to callers apart from ``sha256``.

    ``unit_run`` caches whether the module exports ``run: () -> ()`` (None: not looked up)."""

    sha256: bytes
    engine_fingerprint: str
    module: wasmtime.Module = field(repr=False)
    unit_run: bool | None = None


@dataclass(frozen=True, slots=True)
class SandboxStats:
    """Counters for metrics and tests: real compilations, artefact loads, cache hits."""

    compiles: int
    loads: int
    cache_hits: int
    cached_modules: int


class _BurnRig(threading.local):
    """Per thread: a store holding one instance of the burn module. The loop has no memory and
    no globals, so a run leaves nothing behind but an empty tank, which :meth:`Sandbox.burn`
    refills with exactly the padding before each run (spec 30 §5.5: run the loop module with
    ``max_fuel = padding``, expect fuel exhaustion)."""

    store: wasmtime.Store | None = None
    run: wasmtime.Func | None = None


class Sandbox:
    """One per daemon: the wasmtime engine, the host linker and an LRU of compiled modules.

    Thread-safe: executions run concurrently, each in its own store.
    """

    def __init__(self, *, max_cached_modules: int = 256) -> None:
        if max_cached_modules < 1:
            raise ValueError("max_cached_modules must be >= 1")
        config, settings = _build_config()
        self._engine = wasmtime.Engine(config)
        self._fingerprint = _compute_engine_fingerprint(settings)
        self._linker = build_linker(self._engine)
        self._burn_module = wasmtime.Module(self._engine, BURN_WASM_MODULE)
        self._burn_rig = _BurnRig()
        self._max_cached = max_cached_modules
        self._cache: OrderedDict[bytes, CompiledModule] = OrderedDict()
        self._lock = threading.Lock()
        self._compile_locks: dict[bytes, threading.Lock] = {}
        self._compiles = 0
        self._loads = 0
        self._cache_hits = 0

    def engine_fingerprint(self) -> str:
        """Hex SHA-256 of the wasmtime version, platform and engine settings.

        Serialized artefacts are valid only for the fingerprint they were made under; store them
        keyed by (module sha256, fingerprint).
        """
        return self._fingerprint

    @property
    def stats(self) -> SandboxStats:
        with self._lock:
            return SandboxStats(self._compiles, self._loads, self._cache_hits, len(self._cache))

    def lookup(self, module_sha256: bytes) -> CompiledModule | None:
        """The cached module for this hash, if any (counts as a cache hit)."""
        with self._lock:
            compiled = self._cache.get(module_sha256)
            if compiled is not None:
                self._cache.move_to_end(module_sha256)
                self._cache_hits += 1
            return compiled

    def _remember(self, compiled: CompiledModule) -> CompiledModule:
        with self._lock:
            existing = self._cache.get(compiled.sha256)
            if existing is not None:  # another thread compiled it meanwhile: keep one
                self._cache.move_to_end(compiled.sha256)
                return existing
            self._cache[compiled.sha256] = compiled
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
            return compiled

    def compile(self, wasm: bytes) -> CompiledModule:
        """Compile a wasm binary, or return the cached compilation of the same bytes.

        Only the binary format is accepted (wasmtime would otherwise parse text as WAT).
        """
        if not wasm:
            raise InvalidModule("wasm module is empty")
        if not wasm.startswith(_WASM_MAGIC):
            raise InvalidModule("not a wasm binary")
        sha256 = hashlib.sha256(wasm).digest()
        cached = self.lookup(sha256)
        if cached is not None:
            return cached
        with self._lock:
            module_lock = self._compile_locks.setdefault(sha256, threading.Lock())
        with module_lock:  # one compile per module even when many commits race
            cached = self.lookup(sha256)
            if cached is not None:
                return cached
            try:
                module = wasmtime.Module(self._engine, bytes(wasm))
            except wasmtime.WasmtimeError as exc:
                raise InvalidModule(str(exc)) from exc
            with self._lock:
                self._compiles += 1
            compiled = self._remember(
                CompiledModule(sha256, self._fingerprint, module, has_unit_run_export(module))
            )
        with self._lock:
            self._compile_locks.pop(sha256, None)
        return compiled

    def serialize(self, module: CompiledModule) -> bytes:
        """The artefact to persist: a header binding engine and module, then wasmtime's bytes."""
        self._check_own(module)
        payload = bytes(module.module.serialize())
        return b"".join(
            (
                _ARTEFACT_MAGIC,
                bytes.fromhex(self._fingerprint),
                module.sha256,
                hashlib.sha256(payload).digest(),
                payload,
            )
        )

    def load_serialized(self, module_sha256: bytes, artefact: bytes) -> CompiledModule:
        """Rebuild a module from an artefact made by :meth:`serialize` under this fingerprint.

        Raises :class:`ArtefactRejected` for another engine, another module, a damaged artefact or
        a wasmtime refusal; the caller then compiles the wasm instead. Artefacts are native code:
        load only what this daemon wrote to its own database.
        """
        cached = self.lookup(module_sha256)
        if cached is not None:
            return cached
        header, payload = artefact[:_ARTEFACT_HEADER_LEN], artefact[_ARTEFACT_HEADER_LEN:]
        if len(header) != _ARTEFACT_HEADER_LEN or not header.startswith(_ARTEFACT_MAGIC):
            raise ArtefactRejected("not a sandbox artefact")
        body = header[len(_ARTEFACT_MAGIC) :]
        fingerprint, sha256, payload_sha256 = body[:32], body[32:64], body[64:96]
        if fingerprint != bytes.fromhex(self._fingerprint):
            raise ArtefactRejected("artefact made by another engine")
        if sha256 != module_sha256:
            raise ArtefactRejected("artefact belongs to another module")
        if hashlib.sha256(payload).digest() != payload_sha256:
            raise ArtefactRejected("artefact damaged")
        try:
            module = wasmtime.Module.deserialize(self._engine, payload)
        except wasmtime.WasmtimeError as exc:
            raise ArtefactRejected(f"wasmtime refused the artefact: {exc}") from exc
        with self._lock:
            self._loads += 1
        return self._remember(
            CompiledModule(module_sha256, self._fingerprint, module, has_unit_run_export(module))
        )

    def execute(
        self,
        module: CompiledModule,
        *,
        limits: VaultLimits,
        holdout_len: int,
        oracle: OracleCallback,
        validate_output: OutputValidator,
    ) -> ExecutionResult:
        """Run the guest once in a fresh store (spec 30 §5.3); see :mod:`evidenceos.sandbox.vault`.

        ``oracle(predictions) -> bucket`` receives validated predictions (``holdout_len`` bytes,
        each 0 or 1) and applies accuracy, quantisation and hysteresis; ``validate_output(raw)``
        returns ``(canonical, kout_bits)`` or raises the caller's domain error. Any
        :class:`~evidenceos.sandbox.errors.VaultError` carries ``fuel_used`` and ``oracle_calls``.
        """
        self._check_own(module)
        return execute_module(
            engine=self._engine,
            linker=self._linker,
            module=module.module,
            module_sha256=module.sha256,
            limits=limits,
            holdout_len=holdout_len,
            oracle=oracle,
            validate_output=validate_output,
            unit_run=module.unit_run,
        )

    def verify_guest_abi(self, module: CompiledModule, max_memory_bytes: int) -> None:
        """Refuse at commit what could only fail at link time (DESIGN §3: a failure after the
        guest ran is an incident, so a module that cannot even link is refused up front).

        Every import must be one of the ABI's functions with signature ``(i32, i32) -> i32``;
        a declared memory must fit the lane's limit.
        """
        i32 = wasmtime.ValType.i32()
        for imp in module.module.imports:
            kind = imp.type
            if (
                imp.module not in IMPORT_MODULES
                or imp.name
                not in (IMPORT_ORACLE_QUERY, IMPORT_ORACLE_BUCKET, IMPORT_EMIT_STRUCTURED_CLAIM)
                or not isinstance(kind, wasmtime.FuncType)
                or list(kind.params) != [i32, i32]
                or list(kind.results) != [i32]
            ):
                raise InvalidModule(
                    f"import {imp.module}.{imp.name} does not match the guest ABI (i32, i32) -> i32"
                )
        for exp in module.module.exports:
            kind = exp.type
            if isinstance(kind, wasmtime.MemoryType) and kind.limits.min * 65536 > max_memory_bytes:
                raise InvalidModule(
                    f"memory declares {kind.limits.min} pages, above the lane limit of "
                    f"{max_memory_bytes // 65536}"
                )

    def burn(self, padding_fuel: int) -> None:
        """Burn exactly ``padding_fuel`` fuel in the PLN loop module (spec 30 §5.5).

        Padding 0 does nothing. The loop must end by fuel exhaustion with an empty tank; any other
        outcome raises :class:`BurnFailed`.
        """
        if not 0 <= padding_fuel <= U64_MAX:
            raise InvalidArgument("padding fuel must be in [0, 2^64)")
        if padding_fuel == 0:
            return
        rig = self._burn_rig
        if rig.store is None or rig.run is None:
            store = wasmtime.Store(self._engine)
            store.set_limits(memory_size=WASM_PAGE_BYTES)
            run = wasmtime.Instance(store, self._burn_module, []).exports(store)["run"]
            assert isinstance(run, wasmtime.Func)  # noqa: S101 — the constant module exports it
            rig.store, rig.run = store, run
        store, run = rig.store, rig.run
        store.set_fuel(padding_fuel)
        try:
            with ffi_gil.ShortRun(padding_fuel):
                run(store)
        except wasmtime.Trap as exc:
            if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL and store.get_fuel() == 0:
                # The expected end. wasmtime-py raises the trap from a frame that holds it, a
                # cycle that would keep this call's frames (and the caller's) alive until the
                # cyclic GC runs: drop the traceback.
                exc.__traceback__ = None
                return
            rig.store = rig.run = None  # never reuse a store after an unexpected outcome
            raise BurnFailed(exc.message, fuel_used=padding_fuel - store.get_fuel()) from exc
        except BaseException:
            rig.store = rig.run = None
            raise
        rig.store = rig.run = None
        raise BurnFailed("burn loop returned", fuel_used=padding_fuel - store.get_fuel())

    def _check_own(self, module: CompiledModule) -> None:
        if module.engine_fingerprint != self._fingerprint:
            raise InvalidModule("module was compiled by another engine")


def padded_fuel_total(
    epoch_size: int, fuel_used: int, target_fuel: int | None, max_fuel: int | None
) -> int:
    """Fuel charged after PLN normalisation: at least the target, rounded up to the epoch size.

    Spec 30 §5.5. Without PLN (both None) the raw fuel is only rounded up. The padding
    ``total - fuel_used`` is then burned with :meth:`Sandbox.burn`. Saturates at 2^64 - 1 like
    the reference's ``u64`` arithmetic.
    """
    if epoch_size <= 0:
        raise InvalidArgument("epoch_size must be > 0")
    if fuel_used < 0:
        raise InvalidArgument("fuel_used must be >= 0")
    if target_fuel is None and max_fuel is None:
        normalized = fuel_used
    else:
        if not target_fuel or not max_fuel or target_fuel < 0 or max_fuel < 0:
            raise FailedPrecondition("PLN config invalid")
        if target_fuel > max_fuel:
            raise FailedPrecondition("PLN target exceeds max fuel")
        if fuel_used > max_fuel:
            raise FailedPrecondition("PLN max fuel exceeded")
        normalized = max(fuel_used, target_fuel)
    padding = -normalized % epoch_size
    return min(normalized + padding, U64_MAX)
