"""Signed governance as a use case: stage changes, validate, apply, reload (spec 50; DESIGN §1,
§2, §6, §7, §9).

The tools (``evidenceosctl``, ``evidenceos-operator``) call the ``stage_*``/``install``/
``reset`` methods: each is **one** ``store.write`` that records the change and its governance
event, whose ``{"kind": "governance", ...}`` leaf enters the log in the same transaction.
Configuration changes (oracle records, epoch control, NullSpec activations) are only *staged*;
the daemon applies them at start-up and on SIGHUP (:meth:`GovernanceService.start`,
:meth:`GovernanceService.reload`): it re-reads its inputs (``trusted_oracle_keys.json``, the
NullSpec registry and keyring) and the staged records, validates everything (chain, signatures,
TTL expiry, production-mode provenance), applies them in one transaction and swaps an immutable
:class:`RuntimePolicy` — or keeps the old one and says why.

Canary resets take effect at once: they clear incident state rather than change configuration,
and the signed reset document is verified before anything is written.

The NullSpec registry is cached and reloaded at most every ``registry_reload_interval_s`` when
claim execution consults it (:meth:`GovernanceService.require_executable`); a failed reload
fails claim execution closed until a reload succeeds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidenceos.core.canary import CanaryState
from evidenceos.core.governance import (
    EVENT_CANARY_RESET,
    EVENT_EPOCH_ADVANCED,
    EVENT_NULLSPEC_ACTIVATE,
    EVENT_NULLSPEC_INSTALL,
    EVENT_ORACLE_CALIBRATION_ROTATED,
    EVENT_ORACLE_RECORD_SIGNED,
    EVENT_ORACLE_TTL_SET,
    DisjointnessAttestation,
    EpochControl,
    GovernanceEvent,
    JsonValue,
    OperatorKeyId,
    OracleOperatorRecord,
    TrustedKeys,
    decode_hex,
    epoch_advanced_payload,
    load_json_bytes,
    nullspec_activate_payload,
    nullspec_install_payload,
    oracle_calibration_rotated_payload,
    oracle_record_signed_payload,
    oracle_ttl_set_payload,
    parse_canary_reset_document,
    public_key_bytes,
    sign_governance_event,
    signing_key_from_seed,
    verify_canary_reset,
    verify_epoch_control,
    verify_governance_event,
    verify_oracle_record,
)
from evidenceos.core.nullspec import (
    NullSpecContract,
    verify_eprocess_pairing,
    verify_nullspec_signature,
)
from evidenceos.errors import (
    ConfigError,
    EvidenceOSError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from evidenceos.service.log_service import InclusionProof, LogService, system_clock_ms
from evidenceos.store import canary as canary_table
from evidenceos.store import epochs as epochs_table
from evidenceos.store import governance as gov_table
from evidenceos.store import nullspecs as nullspecs_table
from evidenceos.store.db import Connection, Store
from evidenceos.store.governance import STAGE_APPLIED, STAGE_STAGED, StoredEvent

__all__ = [
    "DEFAULT_REGISTRY_RELOAD_INTERVAL_S",
    "REGISTRY_UNHEALTHY",
    "GovernancePaths",
    "GovernanceService",
    "GovernanceSettings",
    "MutationResult",
    "OracleRow",
    "RegistryState",
    "ReloadOutcome",
    "RuntimePolicy",
    "Signer",
]

log = logging.getLogger("evidenceos.governance")

DEFAULT_REGISTRY_RELOAD_INTERVAL_S = 30.0
REGISTRY_UNHEALTHY = "nullspec registry reload failed; registry marked unhealthy"
_MISSING_ACTIVE = "missing active nullspec"
_NOT_IN_REGISTRY = "active nullspec id not in registry"
_UNSIGNED_IN_PRODUCTION = (
    "production mode refuses unsigned governance changes: give --signing-key and --key-id"
)


# --------------------------------------------------------------------------------------------
# Configuration of the service


@dataclass(frozen=True, slots=True)
class GovernancePaths:
    """Where the governance inputs live (spec 50 §2, OPERATIONS "Deployment checklist")."""

    data_dir: Path
    nullspec_registry_dir: Path
    nullspec_authority_keys_dir: Path

    @classmethod
    def for_data_dir(
        cls,
        data_dir: Path,
        *,
        nullspec_registry_dir: Path | None = None,
        nullspec_authority_keys_dir: Path | None = None,
    ) -> GovernancePaths:
        """Defaults ``<data-dir>/nullspec-registry`` and ``<data-dir>/trusted-nullspec-keys``."""
        return cls(
            data_dir,
            nullspec_registry_dir or data_dir / gov_table.NULLSPEC_REGISTRY_DIR,
            nullspec_authority_keys_dir or data_dir / gov_table.NULLSPEC_AUTHORITY_KEYS_DIR,
        )

    @property
    def trusted_oracle_keys(self) -> Path:
        return self.data_dir / gov_table.TRUSTED_ORACLE_KEYS_JSON


def _env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    return default if value is None else value.strip().lower() in ("1", "true")


@dataclass(frozen=True, slots=True)
class GovernanceSettings:
    """Mode switches (spec 50 §6.1 steps 1 and 5)."""

    production_mode: bool = False
    require_disjointness: bool = True
    registry_reload_interval_s: float = DEFAULT_REGISTRY_RELOAD_INTERVAL_S
    canary_reset_max_age_s: int = 86_400

    @property
    def enforce_provenance(self) -> bool:
        """Records must carry complete, fresh provenance (spec 50 §6.3)."""
        return self.production_mode and self.require_disjointness

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, production_mode: bool | None = None
    ) -> GovernanceSettings:
        """``EVIDENCEOS_PRODUCTION_MODE`` (unless given) and
        ``EVIDENCEOS_REQUIRE_DISJOINTNESS_ATTESTATION`` (default on)."""
        return cls(
            production_mode=(
                _env_flag(env, "EVIDENCEOS_PRODUCTION_MODE", False)
                if production_mode is None
                else production_mode
            ),
            require_disjointness=_env_flag(
                env, "EVIDENCEOS_REQUIRE_DISJOINTNESS_ATTESTATION", True
            ),
        )


@dataclass(frozen=True, slots=True)
class Signer:
    """An operator key: the ``--key-id`` label and the seed from ``--signing-key``."""

    key_id: OperatorKeyId
    private_key: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, key_id: str, seed: bytes) -> Signer:
        if not key_id:
            raise InvalidArgument("--key-id must be non-empty")
        return cls(OperatorKeyId(key_id), signing_key_from_seed(seed))

    @property
    def public_key(self) -> bytes:
        return public_key_bytes(self.private_key)

    def sign_event(
        self, event_type: str, epoch: int, payload: Mapping[str, JsonValue]
    ) -> GovernanceEvent:
        """A governance event signed by this key (spec 50 §3.7 signed bytes)."""
        return sign_governance_event(
            self.private_key,
            event_type=event_type,
            epoch=epoch,
            key_id=self.key_id,
            payload=payload,
        )


# --------------------------------------------------------------------------------------------
# Runtime policy: the immutable snapshot the daemon swaps


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The cached NullSpec registry (spec 50 §3.6, §6.5).

    ``status``: ``absent`` (no registry directory and none ever loaded: nothing to enforce
    outside production), ``healthy``, or ``unhealthy`` (the last load failed: claim execution
    fails closed until a load succeeds).
    """

    status: str
    contracts: Mapping[str, NullSpecContract] = field(default_factory=dict)
    authority_keys: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "contracts", MappingProxyType(dict(self.contracts)))


@dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """Everything governance decides for the claim path, validated and applied as one unit.

    Built only by :class:`GovernanceService`; never mutated (a reload builds a new one).
    """

    trusted_keys: TrustedKeys
    oracle_records: Mapping[str, OracleOperatorRecord]
    epoch_control: EpochControl | None
    activations: Mapping[tuple[str, str], bytes]
    production_mode: bool
    enforce_provenance: bool
    applied_at_ms: int
    chain_length: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "oracle_records", MappingProxyType(dict(self.oracle_records)))
        object.__setattr__(self, "activations", MappingProxyType(dict(self.activations)))

    @classmethod
    def empty(cls, settings: GovernanceSettings) -> RuntimePolicy:
        return cls(
            TrustedKeys({}), {}, None, {}, settings.production_mode,
            settings.enforce_provenance, 0, 0,
        )  # fmt: skip

    # -- what the claim path asks -----------------------------------------------------------

    @property
    def ttl_by_oracle(self) -> dict[str, int]:
        """``max(ttl_epochs, 1)`` per configured oracle (spec 50 §3.2)."""
        return {k: max(r.ttl_epochs, 1) for k, r in self.oracle_records.items()}

    @property
    def calibration_by_oracle(self) -> dict[str, str]:
        return {
            k: r.calibration_manifest_hash_hex
            for k, r in self.oracle_records.items()
            if r.calibration_manifest_hash_hex is not None
        }

    @property
    def forced_epoch(self) -> int | None:
        return None if self.epoch_control is None else self.epoch_control.forced_epoch

    def ttl_for(self, oracle_id: str) -> int:
        """The oracle TTL (logical epochs) claims freeze with; 1 when unconfigured (§6.6)."""
        record = self.oracle_records.get(oracle_id)
        return 1 if record is None else max(record.ttl_epochs, 1)

    def calibration_for(self, oracle_id: str) -> bytes | None:
        """The oracle's 32-byte calibration manifest hash, or ``None``."""
        record = self.oracle_records.get(oracle_id)
        if record is None or record.calibration_manifest_hash_hex is None:
            return None
        return decode_hex(record.calibration_manifest_hash_hex)

    def check_oracle_id(self, oracle_id: str) -> None:
        """Claim creation: once any record exists, an unconfigured oracle id is refused."""
        if self.oracle_records and oracle_id not in self.oracle_records:
            raise InvalidArgument("unknown oracle_id")

    def require_calibration(self, oracle_id: str) -> bytes | None:
        """Freeze: production refuses an oracle without a calibration hash (spec 50 §6.3)."""
        calibration = self.calibration_for(oracle_id)
        if calibration is None and self.enforce_provenance:
            raise FailedPrecondition("missing oracle calibration manifest hash")
        return calibration

    def summary(self) -> dict[str, Any]:
        return {
            "trusted_keys": len(self.trusted_keys),
            "oracle_ttls": len(self.oracle_records),
            "calibrations": len(self.calibration_by_oracle),
            "nullspec_mappings": len(self.activations),
            "forced_epoch": self.forced_epoch,
        }


def _describe_changes(
    old: RuntimePolicy, new: RuntimePolicy, old_reg: RegistryState, new_reg: RegistryState
) -> list[str]:
    changes: list[str] = []
    for key_id in sorted(set(old.trusted_keys.keys) | set(new.trusted_keys.keys)):
        before, after = old.trusted_keys.get(key_id), new.trusted_keys.get(key_id)
        if before != after:
            what = "added" if before is None else "removed" if after is None else "replaced"
            changes.append(f"trusted key {key_id} {what}")
    for oracle_id in sorted(set(old.oracle_records) | set(new.oracle_records)):
        before_r, after_r = old.oracle_records.get(oracle_id), new.oracle_records.get(oracle_id)
        if before_r == after_r:
            continue
        if before_r is None or after_r is None:
            what = "added" if before_r is None else "removed"
            ttl = (after_r or before_r).ttl_epochs  # type: ignore[union-attr]
            changes.append(f"oracle {oracle_id} {what} (ttl_epochs {ttl})")
            continue
        parts: list[str] = []
        if before_r.ttl_epochs != after_r.ttl_epochs:
            parts.append(f"ttl_epochs {before_r.ttl_epochs} -> {after_r.ttl_epochs}")
        if before_r.calibration_manifest_hash_hex != after_r.calibration_manifest_hash_hex:
            parts.append("calibration rotated")
        if before_r.disjointness_attestation != after_r.disjointness_attestation:
            parts.append("disjointness attestation changed")
        changes.append(f"oracle {oracle_id} " + (", ".join(parts) or "record re-signed"))
    if old.forced_epoch != new.forced_epoch:
        changes.append(f"forced_epoch {old.forced_epoch} -> {new.forced_epoch}")
    for key in sorted(set(old.activations) | set(new.activations)):
        before_a, after_a = old.activations.get(key), new.activations.get(key)
        if before_a != after_a:
            old_id = before_a.hex() if before_a else "none"
            new_id = after_a.hex() if after_a else "none"
            changes.append(f"nullspec for ({key[0]}, {key[1]}) {old_id} -> {new_id}")
    if old_reg.status != new_reg.status or set(old_reg.contracts) != set(new_reg.contracts):
        changes.append(f"nullspec registry {new_reg.status}, {len(new_reg.contracts)} contracts")
    return changes


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class MutationResult:
    """What a tool command did: the event it logged and whether the change awaits a reload."""

    status: str  # "staged" (applied at the daemon's next start or SIGHUP) or "applied"
    event: StoredEvent
    details: Mapping[str, JsonValue] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "event_id": self.event.event.event_id,
            "event_type": self.event.event.event_type,
            "seq": self.event.seq,
            "leaf_index": self.event.leaf_index,
            "event_hash": self.event.stored_event_hash.hex(),
            "key_id": self.event.event.key_id,
            "details": dict(self.details),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    changes: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OracleRow:
    """One oracle as ``oracle list`` shows it: the record in effect and a pending one."""

    oracle_id: str
    applied: OracleOperatorRecord | None
    staged: OracleOperatorRecord | None


# --------------------------------------------------------------------------------------------
# The service


def _hex32(text: str, what: str) -> bytes:
    value = decode_hex(text)
    if value is None or len(value) != 32:
        raise InvalidArgument(f"{what}: expected 32-byte hex (64 hex characters), got {text!r}")
    return value


class GovernanceService:
    def __init__(
        self,
        store: Store,
        log_service: LogService,
        paths: GovernancePaths,
        settings: GovernanceSettings | None = None,
        *,
        clock_ms: Callable[[], int] = system_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.log = log_service
        self.paths = paths
        self.settings = settings or GovernanceSettings()
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._policy = RuntimePolicy.empty(self.settings)
        self._registry = RegistryState("absent")
        self._registry_ever_loaded = False
        self._registry_attempt = -math.inf
        self._registry_lock = threading.Lock()
        self._reload_lock = threading.Lock()

    # -- small helpers ------------------------------------------------------------------------

    def now_s(self) -> int:
        return self._clock_ms() // 1000

    def trusted_keys(self) -> TrustedKeys:
        return gov_table.load_trusted_oracle_keys(self.paths.trusted_oracle_keys)

    def authority_keys(self) -> TrustedKeys:
        return gov_table.load_authority_keys(self.paths.nullspec_authority_keys_dir)

    def check_signer(self, signer: Signer, trusted: TrustedKeys | None = None) -> None:
        """The key id must be trusted and the seed must be that key (fail before writing)."""
        trusted = self.trusted_keys() if trusted is None else trusted
        known = trusted.get(signer.key_id)
        where = self.paths.trusted_oracle_keys
        if known is None:
            raise FailedPrecondition(
                f"unknown signing key id {signer.key_id!r}: it is not in {where}; add "
                f'"{signer.key_id}": "{signer.public_key.hex()}" under "keys" (then SIGHUP the '
                "daemon) or use a trusted key id"
            )
        if known != signer.public_key:
            raise FailedPrecondition(
                f"--signing-key does not match key id {signer.key_id!r}: the seed's public key "
                f"is {signer.public_key.hex()}, {where} trusts {known.hex()} under that id"
            )

    def _event(
        self, signer: Signer | None, event_type: str, payload: Mapping[str, JsonValue]
    ) -> GovernanceEvent:
        now = self.now_s()
        if signer is None:
            if self.settings.production_mode:
                raise FailedPrecondition(_UNSIGNED_IN_PRODUCTION)
            return GovernanceEvent(event_type, now, OperatorKeyId(""), payload)
        return signer.sign_event(event_type, now, payload)

    def _current_record(self, conn: Connection, oracle_id: str) -> OracleOperatorRecord | None:
        for stage in (STAGE_STAGED, STAGE_APPLIED):
            for stored in gov_table.iter_oracle_records(conn, stage):
                if stored.record.oracle_id == oracle_id:
                    return stored.record
        return None

    # -- NullSpec contracts ---------------------------------------------------------------------

    def install_nullspec(self, contract: NullSpecContract, signer: Signer | None) -> MutationResult:
        """Verify and store a contract (inert until activated) and log ``nullspec_install``.

        Checked here (safer than the reference, which checked nothing): schema, content id,
        the (kind, e-process) pairing and — when the authority keyring knows ``created_by`` —
        the embedded signature. Production mode requires the keyring to know the author.
        """
        warnings: list[str] = []
        if signer is not None:
            self.check_signer(signer)
        if contract.nullspec_id != contract.compute_id():
            raise FailedPrecondition(
                f"nullspec id mismatch: the contract says {contract.id_hex} but its content "
                f"hashes to {contract.compute_id().hex()} (edited after signing?)"
            )
        verify_eprocess_pairing(contract)
        authorities = self.authority_keys()
        keys_dir = self.paths.nullspec_authority_keys_dir
        if authorities.get(contract.created_by) is not None:
            verify_nullspec_signature(contract, authorities)
        elif self.settings.production_mode:
            raise FailedPrecondition(
                f"nullspec author {contract.created_by!r} is not in the authority keyring "
                f"{keys_dir}; production mode installs only verifiable contracts"
            )
        else:
            warnings.append(
                f"signature not verified: author {contract.created_by!r} is not in {keys_dir}"
            )
        event = self._event(
            signer,
            EVENT_NULLSPEC_INSTALL,
            nullspec_install_payload(
                contract.id_hex, contract.oracle_id, contract.oracle_resolution_hash.hex()
            ),
        )

        def write(conn: Connection) -> StoredEvent:
            now_ms = self._clock_ms()
            nullspecs_table.put_nullspec(
                conn, contract.nullspec_id, contract.oracle_id, contract.to_json(), now_ms
            )
            return gov_table.append_event(conn, self.log, event, now_ms)

        stored = self.store.write(write)
        return MutationResult(
            "applied",
            stored,
            {"nullspec_id": contract.id_hex, "oracle_id": contract.oracle_id},
            tuple(warnings),
        )

    def stage_activation(
        self, oracle_id: str, holdout: str, nullspec_id_hex: str, signer: Signer | None
    ) -> MutationResult:
        """Stage the active contract for ``(oracle_id, holdout)`` (DESIGN §5).

        Refused: a contract that is not installed, was made for another oracle or holdout, or
        has expired at the current epoch.
        """
        nullspec_id = _hex32(nullspec_id_hex, "--nullspec-id")
        if not oracle_id or not holdout:
            raise InvalidArgument("--oracle-id and --holdout must be non-empty")
        if signer is not None:
            self.check_signer(signer)

        def write(conn: Connection) -> tuple[StoredEvent, dict[str, JsonValue]]:
            stored = nullspecs_table.find_nullspec(conn, nullspec_id)
            if stored is None:
                raise NotFound(
                    f"nullspec not found: {nullspec_id.hex()} is not installed; run "
                    "`evidenceosctl nullspec install --contract FILE` first"
                )
            contract = NullSpecContract.from_json(stored)
            if contract.oracle_id != oracle_id or contract.holdout_handle != holdout:
                raise FailedPrecondition(
                    f"nullspec {contract.id_hex} was created for oracle "
                    f"{contract.oracle_id!r} and holdout {contract.holdout_handle!r}, not "
                    f"({oracle_id!r}, {holdout!r})"
                )
            epoch = epochs_table.find_forced_epoch(conn) or 0
            if contract.is_expired(epoch):
                raise FailedPrecondition(
                    f"nullspec {contract.id_hex} expired: valid through epoch "
                    f"{contract.epoch_created + contract.ttl_epochs}, current epoch is {epoch}; "
                    "create, sign and install a fresh contract"
                )
            event = self._event(
                signer,
                EVENT_NULLSPEC_ACTIVATE,
                nullspec_activate_payload(
                    contract.id_hex, oracle_id, holdout, contract.oracle_resolution_hash.hex()
                ),
            )
            now_ms = self._clock_ms()
            stored_event = gov_table.append_event(conn, self.log, event, now_ms)
            gov_table.put_staged_activation(
                conn, oracle_id, holdout, nullspec_id, stored_event.seq, now_ms
            )
            return stored_event, {
                "nullspec_id": contract.id_hex,
                "oracle_id": oracle_id,
                "holdout": holdout,
            }

        stored_event, details = self.store.write(write)
        return MutationResult("staged", stored_event, details)

    # -- oracle records -------------------------------------------------------------------------

    def _stage_record(
        self,
        build: Callable[[OracleOperatorRecord | None, int], OracleOperatorRecord],
        oracle_id: str,
        signer: Signer,
        event_for: Callable[[OracleOperatorRecord], tuple[str, dict[str, JsonValue]]],
    ) -> MutationResult:
        trusted = self.trusted_keys()
        self.check_signer(signer, trusted)

        def write(conn: Connection) -> tuple[StoredEvent, OracleOperatorRecord]:
            now = self.now_s()
            record = build(self._current_record(conn, oracle_id), now).signed(signer.private_key)
            try:
                verify_oracle_record(
                    record,
                    trusted,
                    now_unix_secs=now,
                    enforce_provenance=self.settings.enforce_provenance,
                )
            except EvidenceOSError as exc:
                hint = (
                    "; production mode needs calibration and disjointness provenance: use "
                    "`evidenceos-operator sign-oracle-record`"
                    if self.settings.enforce_provenance
                    else ""
                )
                raise FailedPrecondition(
                    f"the daemon would refuse this record: {exc.message}{hint}"
                ) from exc
            event_type, payload = event_for(record)
            event = signer.sign_event(event_type, now, payload)
            now_ms = self._clock_ms()
            stored = gov_table.append_event(conn, self.log, event, now_ms)
            gov_table.put_oracle_record(conn, record, STAGE_STAGED, stored.seq, now_ms)
            return stored, record

        stored, record = self.store.write(write)
        return MutationResult(
            "staged", stored, {"oracle_id": oracle_id, "record": record.to_json()}
        )

    def stage_ttl(self, oracle_id: str, ttl_epochs: int, signer: Signer) -> MutationResult:
        """``oracle set-ttl`` (spec 50 §4.6, D1): keep calibration and attestation, re-sign."""
        if ttl_epochs <= 0:
            raise InvalidArgument("ttl_epochs must be > 0")
        _check_oracle_id(oracle_id)

        def build(base: OracleOperatorRecord | None, now: int) -> OracleOperatorRecord:
            if base is None:
                return OracleOperatorRecord(oracle_id, ttl_epochs, now, signer.key_id)
            return replace(
                base,
                ttl_epochs=ttl_epochs,
                updated_at_epoch=now,
                key_id=signer.key_id,
                schema_version=1,
                signature_ed25519="",
            )

        return self._stage_record(
            build,
            oracle_id,
            signer,
            lambda _r: (EVENT_ORACLE_TTL_SET, oracle_ttl_set_payload(oracle_id, ttl_epochs)),
        )

    def stage_calibration(
        self, oracle_id: str, calibration_hash: str, signer: Signer
    ) -> MutationResult:
        """``oracle rotate-calibration`` (spec 50 §4.7, D1); a new oracle gets ttl 1."""
        calib = _hex32(calibration_hash, "--calib-hash").hex()
        _check_oracle_id(oracle_id)

        def build(base: OracleOperatorRecord | None, now: int) -> OracleOperatorRecord:
            if base is None:
                base = OracleOperatorRecord(oracle_id, 1, now, signer.key_id)
            return replace(
                base,
                calibration_manifest_hash_hex=calib,
                calibration_epoch=now,
                updated_at_epoch=now,
                key_id=signer.key_id,
                schema_version=1,
                signature_ed25519="",
            )

        return self._stage_record(
            build,
            oracle_id,
            signer,
            lambda _r: (
                EVENT_ORACLE_CALIBRATION_ROTATED,
                oracle_calibration_rotated_payload(oracle_id, calib),
            ),
        )

    def stage_signed_record(
        self,
        oracle_id: str,
        ttl_epochs: int,
        signer: Signer,
        *,
        calibration_manifest: bytes,
        disjointness_proof: bytes,
        disjointness_scope: str,
    ) -> MutationResult:
        """``evidenceos-operator sign-oracle-record`` (spec 50 §5.1): a provenance-complete
        record hashing the exact bytes of the manifest and the proof."""
        if ttl_epochs <= 0:
            raise InvalidArgument("ttl_epochs must be > 0")
        if not disjointness_scope.strip():
            raise InvalidArgument("disjointness_scope must be non-empty")
        if not calibration_manifest:
            raise InvalidArgument("calibration manifest must be non-empty")
        if not disjointness_proof:
            raise InvalidArgument("disjointness proof must be non-empty")
        _check_oracle_id(oracle_id)
        attestation = DisjointnessAttestation.from_proof(disjointness_scope, disjointness_proof)
        manifest_hash = hashlib.sha256(calibration_manifest).hexdigest()

        def build(base: OracleOperatorRecord | None, now: int) -> OracleOperatorRecord:
            return OracleOperatorRecord(
                oracle_id=oracle_id,
                ttl_epochs=ttl_epochs,
                updated_at_epoch=now,
                key_id=signer.key_id,
                calibration_manifest_hash_hex=manifest_hash,
                calibration_epoch=None if base is None else base.calibration_epoch,
                disjointness_attestation=attestation,
                nonoverlap_proof_uri=None if base is None else base.nonoverlap_proof_uri,
            )

        return self._stage_record(
            build,
            oracle_id,
            signer,
            lambda record: (EVENT_ORACLE_RECORD_SIGNED, oracle_record_signed_payload(record)),
        )

    # -- epoch control --------------------------------------------------------------------------

    def stage_epoch(self, forced_epoch: int, signer: Signer) -> MutationResult:
        """``epoch advance`` / ``sign-epoch-control`` (spec 50 §4.9, §5.2); backwards allowed."""
        if forced_epoch < 0:
            raise InvalidArgument("forced epoch must be >= 0")
        trusted = self.trusted_keys()
        self.check_signer(signer, trusted)

        def write(conn: Connection) -> tuple[StoredEvent, EpochControl]:
            now = self.now_s()
            event = signer.sign_event(
                EVENT_EPOCH_ADVANCED, now, epoch_advanced_payload(forced_epoch)
            )
            control = EpochControl.sign(
                signer.private_key,
                forced_epoch=forced_epoch,
                updated_at_epoch=now,
                key_id=signer.key_id,
                event_id=event.event_id,
            )
            verify_epoch_control(control, trusted)
            now_ms = self._clock_ms()
            stored = gov_table.append_event(conn, self.log, event, now_ms)
            gov_table.put_epoch_control(conn, control, STAGE_STAGED, stored.seq, now_ms)
            return stored, control

        stored, control = self.store.write(write)
        return MutationResult("staged", stored, {"epoch_control": control.to_json()})

    # -- canary -------------------------------------------------------------------------------

    def reset_canary(self, oracle_id: str, holdout: str, document: bytes) -> MutationResult:
        """Reset a tripped stream with a signed ``canary_reset`` document (DESIGN §5, §6).

        The document must be signed by a key of ``trusted_oracle_keys.json``, name exactly this
        stream, be at most ``canary_reset_max_age_s`` old and never have been used before.
        Takes effect at once (it clears incident state; it does not change configuration).
        """
        try:
            event = parse_canary_reset_document(load_json_bytes(document, "governance event"))
        except EvidenceOSError as exc:
            raise FailedPrecondition(f"canary reset refused: {exc.message}") from exc
        try:
            verify_canary_reset(
                event,
                self.trusted_keys(),
                oracle_id=oracle_id,
                holdout=holdout,
                now_unix_secs=self.now_s(),
                max_age_secs=self.settings.canary_reset_max_age_s,
            )
        except EvidenceOSError as exc:
            raise FailedPrecondition(f"canary reset refused: {exc.message}") from exc

        def write(conn: Connection) -> tuple[StoredEvent, CanaryState]:
            used = gov_table.find_events_by_id(conn, bytes.fromhex(event.event_id))
            if any(e.event.event_type == EVENT_CANARY_RESET for e in used):
                raise FailedPrecondition(
                    f"canary reset refused: this document was already used (governance event "
                    f"#{used[0].seq}); sign a new one"
                )
            state = canary_table.find_canary_state(conn, oracle_id, holdout)
            if state is None:
                raise NotFound(f"canary state not found for ({oracle_id}, {holdout})")
            reset = state.reset()
            now_ms = self._clock_ms()
            stored = gov_table.append_event(conn, self.log, event, now_ms)
            canary_table.put_canary_state(conn, oracle_id, holdout, reset)
            return stored, reset

        stored, state = self.store.write(write)
        return MutationResult(
            "applied",
            stored,
            {"oracle_id": oracle_id, "holdout": holdout, "state": state.to_json()},
        )

    # -- reads ----------------------------------------------------------------------------------

    def oracle_rows(self) -> list[OracleRow]:
        with self.store.read() as conn:
            applied = {s.record.oracle_id: s.record for s in gov_table.iter_oracle_records(
                conn, STAGE_APPLIED)}  # fmt: skip
            staged = {s.record.oracle_id: s.record for s in gov_table.iter_oracle_records(
                conn, STAGE_STAGED)}  # fmt: skip
        return [
            OracleRow(oracle_id, applied.get(oracle_id), staged.get(oracle_id))
            for oracle_id in sorted(set(applied) | set(staged))
        ]

    def events(self) -> list[StoredEvent]:
        with self.store.read() as conn:
            return list(gov_table.iter_events(conn))

    def event_with_proof(self, event_id_hex: str) -> tuple[StoredEvent, int, InclusionProof]:
        """The first event with this id, how many share it, and its log inclusion proof."""
        event_id = _hex32(event_id_hex, "--event-id")
        with self.store.read() as conn:
            found = gov_table.find_events_by_id(conn, event_id)
        if not found:
            raise NotFound(
                f"governance event not found: {event_id_hex}; `evidenceosctl governance events "
                "list` shows the stored ones"
            )
        return found[0], len(found), self.log.inclusion_proof(found[0].leaf_index)

    def chain_problems(self) -> list[str]:
        with self.store.read() as conn:
            return gov_table.chain_problems(conn)

    def export(self) -> list[Path]:
        """Write the governance views now (the tools call this after a change)."""
        with gov_table.export_lock(self.paths.data_dir), self.store.read() as conn:
            return gov_table.export_governance(conn, self.paths.data_dir)

    # -- the daemon: registry -------------------------------------------------------------------

    @property
    def registry(self) -> RegistryState:
        return self._registry

    def reload_registry(self) -> RegistryState:
        """Load keyring + registry now; on failure keep nothing and mark unhealthy (§6.5)."""
        with self._registry_lock:
            return self._reload_registry_locked()

    def _reload_registry_locked(self) -> RegistryState:
        self._registry_attempt = self._monotonic()
        registry_dir = self.paths.nullspec_registry_dir
        dirs = {
            "registry_dir": str(registry_dir),
            "authority_keys_dir": str(self.paths.nullspec_authority_keys_dir),
        }
        if (
            not registry_dir.exists()
            and not self._registry_ever_loaded
            and not self.settings.production_mode
        ):
            self._registry = RegistryState("absent")
            return self._registry
        try:
            keys = self.authority_keys()
            contracts = gov_table.load_nullspec_registry(registry_dir, keys)
        except EvidenceOSError as exc:
            self._registry = RegistryState("unhealthy", error=exc.message)
            log.error(
                "nullspec registry reload failed; failing closed: %s",
                exc.message,
                extra={"event": "nullspec_registry_reload_failed", "error": exc.message, **dirs},
            )
            return self._registry
        self._registry_ever_loaded = True
        self._registry = RegistryState("healthy", contracts, len(keys))
        log.info(
            "nullspec registry loaded",
            extra={"event": "nullspec_registry_reload", "contracts": len(contracts), **dirs},
        )
        return self._registry

    def current_registry(self) -> RegistryState:
        """The cached registry, reloaded first when the reload interval has passed."""
        with self._registry_lock:
            if (
                self._monotonic() - self._registry_attempt
                >= self.settings.registry_reload_interval_s
            ):
                self._reload_registry_locked()
            return self._registry

    # -- the daemon: what the claim path consults -----------------------------------------------

    @property
    def policy(self) -> RuntimePolicy:
        """The configuration in effect (an immutable snapshot; swapped whole on reload)."""
        return self._policy

    def policy_ok(self) -> bool:
        """False while claim execution must fail closed (unhealthy or, in production, absent
        NullSpec registry)."""
        status = self.current_registry().status
        return status == "healthy" or (status == "absent" and not self.settings.production_mode)

    def require_executable(self, nullspec_id: bytes | None) -> None:
        """The execution gate (spec 50 §6.3, §6.5): call with the selected NullSpec id (``None``
        when the fallback would be used). Raises FailedPrecondition when execution must not
        proceed."""
        if not self.policy_ok():
            raise FailedPrecondition(REGISTRY_UNHEALTHY)
        if not self.settings.production_mode:
            return
        if nullspec_id is None:
            raise FailedPrecondition(_MISSING_ACTIVE)
        if nullspec_id.hex() not in self._registry.contracts:
            raise FailedPrecondition(_NOT_IN_REGISTRY)

    # -- the daemon: start and reload ---------------------------------------------------------

    def start(self) -> RuntimePolicy:
        """Start-up: load the registry (a failure only marks it unhealthy, spec 50 §6.1 step 7),
        then validate and apply the configuration; an invalid one refuses to start."""
        with self._reload_lock:
            self.reload_registry()
            try:
                policy = self._load_and_apply()
            except EvidenceOSError as exc:
                raise ConfigError(f"invalid governance configuration: {exc.message}") from exc
            old = self._policy
            self._policy = policy
        self._log_applied(
            "startup", _describe_changes(old, policy, self._registry, self._registry), old
        )
        return policy

    def reload(self, trigger: str = "sighup") -> ReloadOutcome:
        """SIGHUP: re-read inputs and staged records, validate all, apply atomically, log one
        ``config_reload`` line — or ``config_reload_rejected`` keeping the old configuration."""
        with self._reload_lock:
            old_policy, old_registry = self._policy, self._registry
            registry = self.reload_registry()
            try:
                if registry.status == "unhealthy":
                    raise FailedPrecondition(f"{REGISTRY_UNHEALTHY}: {registry.error}")
                policy = self._load_and_apply()
            except EvidenceOSError as exc:
                log.error(
                    "config reload rejected: %s",
                    exc.message,
                    extra={
                        "event": "config_reload_rejected",
                        "severity": "high",
                        "error": exc.message,
                        "trigger": trigger,
                    },
                )
                return ReloadOutcome(False, (), exc.message)
            self._policy = policy
        changes = _describe_changes(old_policy, policy, old_registry, registry)
        self._log_applied(trigger, changes, old_policy)
        return ReloadOutcome(True, tuple(changes))

    def _log_applied(self, trigger: str, changes: list[str], old: RuntimePolicy) -> None:
        new = self._policy
        before, after = old.summary(), new.summary()
        log.info(
            "config reload applied: %s",
            "; ".join(changes) if changes else "no changes",
            extra={
                "event": "config_reload",
                "trigger": trigger,
                "changed": changes,
                "trusted_keys_before": before["trusted_keys"],
                "trusted_keys_after": after["trusted_keys"],
                "oracle_ttls_before": before["oracle_ttls"],
                "oracle_ttls_after": after["oracle_ttls"],
                "calibrations_before": before["calibrations"],
                "calibrations_after": after["calibrations"],
                "nullspec_mappings": after["nullspec_mappings"],
                "forced_epoch": after["forced_epoch"],
                "nullspec_registry": self._registry.status,
                "production_mode": self.settings.production_mode,
            },
        )

    def _load_and_apply(self) -> RuntimePolicy:
        """Validate inputs + applied + staged records; apply staged ones; one transaction."""
        trusted = self.trusted_keys()
        enforce = self.settings.enforce_provenance
        production = self.settings.production_mode

        def write(conn: Connection) -> RuntimePolicy:
            now = self.now_s()
            gov_table.check_chain(conn)
            records = {s.record.oracle_id: s for s in gov_table.iter_oracle_records(
                conn, STAGE_APPLIED)}  # fmt: skip
            staged_records = gov_table.iter_oracle_records(conn, STAGE_STAGED)
            records.update({s.record.oracle_id: s for s in staged_records})
            for oracle_id in sorted(records):
                stored = records[oracle_id]
                try:
                    verify_oracle_record(
                        stored.record, trusted, now_unix_secs=now, enforce_provenance=enforce
                    )
                except EvidenceOSError as exc:
                    raise FailedPrecondition(
                        f"{exc.message} ({stored.stage} record, governance event "
                        f"#{stored.event_seq})"
                    ) from exc
            staged_control = gov_table.find_epoch_control(conn, STAGE_STAGED)
            control = staged_control or gov_table.find_epoch_control(conn, STAGE_APPLIED)
            if control is not None:
                try:
                    verify_epoch_control(control[0], trusted)
                except EvidenceOSError as exc:
                    raise FailedPrecondition(
                        f"{exc.message} (epoch control, governance event #{control[1]})"
                    ) from exc
            activations = {(o, h): n for o, h, n in gov_table.iter_applied_activations(conn)}
            staged_activations = gov_table.iter_staged_activations(conn)
            for staged in staged_activations:
                if production:
                    event = gov_table.get_event(conn, staged.event_seq).event
                    try:
                        verify_governance_event(event, trusted)
                    except EvidenceOSError as exc:
                        raise FailedPrecondition(
                            f"{exc.message} (nullspec activation for ({staged.oracle_id}, "
                            f"{staged.holdout_ref}), governance event #{staged.event_seq})"
                        ) from exc
                activations[(staged.oracle_id, staged.holdout_ref)] = staged.nullspec_id
            # Everything validated: apply.
            now_ms = self._clock_ms()
            for stored in staged_records:
                gov_table.put_oracle_record(
                    conn, stored.record, STAGE_APPLIED, stored.event_seq, now_ms
                )
                gov_table.delete_staged_oracle_record(conn, stored.record.oracle_id)
            if staged_control is not None:
                gov_table.put_epoch_control(
                    conn, staged_control[0], STAGE_APPLIED, staged_control[1], now_ms
                )
                gov_table.delete_staged_epoch_control(conn)
            if control is not None:
                gov_table.set_forced_epoch(conn, control[0].forced_epoch)
            for staged in staged_activations:
                nullspecs_table.activate(
                    conn, staged.oracle_id, staged.holdout_ref, staged.nullspec_id, now_ms
                )
                gov_table.delete_staged_activation(conn, staged.oracle_id, staged.holdout_ref)
            last = gov_table.last_event(conn)
            return RuntimePolicy(
                trusted_keys=trusted,
                oracle_records={k: v.record for k, v in records.items()},
                epoch_control=None if control is None else control[0],
                activations=activations,
                production_mode=production,
                enforce_provenance=enforce,
                applied_at_ms=now_ms,
                chain_length=0 if last is None else last.seq + 1,
            )

        policy: RuntimePolicy = self.store.write(write)
        return policy


def _check_oracle_id(oracle_id: str) -> None:
    if not 1 <= len(oracle_id) <= 128:
        raise InvalidArgument("--oracle-id must be 1..128 characters")
