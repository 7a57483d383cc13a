"""The canary drift breaker: a sticky per-stream e-process over known-null pulses.

Source: spec 30 §4 (config, state, update rule, reset, vectors) and spec 50 §3.8 (the stored
shape), as changed by DESIGN §5/§9: only CANARY-lane executions (known-null pulses) feed it, the
stream key is ``(oracle_id, holdout_ref)``, and once it trips the stream's certifications become
REJECT with reason 91 until a signature-verified reset.

Why it works: a pulse is built so that the null holds. If the oracle (or its holdout) drifts, the
pulses' buckets stop looking null and the drift e-value grows; by Ville's inequality a healthy
stream reaches ``barrier = 1 / alpha_drift`` with probability at most ``alpha_drift``. Tripping
is sticky: evidence of drift does not expire, only an operator's signed reset clears it. A stream
whose pulses stop arriving for longer than ``max_staleness_epochs`` also trips, since silence is
not evidence of health.

Checking the reset's signature is the governance layer's job; :meth:`CanaryState.reset` is the
pure state change it performs afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from evidenceos.core.evalue import EProcessState, EValueError, NullModel, update_eprocess
from evidenceos.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "DEFAULT_ALPHA_DRIFT_MICROS",
    "DEFAULT_CHECK_EVERY_EPOCHS",
    "DEFAULT_MAX_STALENESS_EPOCHS",
    "CanaryConfig",
    "CanaryState",
    "compute_canary_stream_key",
]

DEFAULT_ALPHA_DRIFT_MICROS = 50_000
"""alpha_drift = 0.05, barrier 20 (``EVIDENCEOS_CANARY_ALPHA_DRIFT_MICROS``)."""

DEFAULT_CHECK_EVERY_EPOCHS = 1
"""Update at most once per this many epochs (same-epoch updates are never skipped)."""

DEFAULT_MAX_STALENESS_EPOCHS = 100
"""Trip if a stream goes this many epochs without an update."""

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


def _is_uint(value: Any, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def compute_canary_stream_key(oracle_id: str, holdout_ref: str) -> str:
    """``"<oracle_id>::<holdout_ref>"``, shared by a stream's pulses and claims (DESIGN §9).

    Unambiguous because a holdout ref never contains ``:`` (1-128 of ``[A-Za-z0-9_-]``), so the
    last ``::`` splits the key.
    """
    if not oracle_id or not holdout_ref or ":" in holdout_ref:
        raise InvalidArgument("canary stream key needs an oracle id and a holdout ref without ':'")
    return f"{oracle_id}::{holdout_ref}"


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """Canary settings; invalid values are refused (the daemon refuses to start, spec 30 §4)."""

    alpha_drift_micros: int = DEFAULT_ALPHA_DRIFT_MICROS
    check_every_epochs: int = DEFAULT_CHECK_EVERY_EPOCHS
    max_staleness_epochs: int = DEFAULT_MAX_STALENESS_EPOCHS

    def __post_init__(self) -> None:
        if not (_is_uint(self.alpha_drift_micros, 1_000_000) and self.alpha_drift_micros >= 1):
            raise InvalidArgument("alpha_drift_micros must be in [1, 1000000]")
        if not (_is_uint(self.check_every_epochs, _U64_MAX) and self.check_every_epochs >= 1):
            raise InvalidArgument("check_every_epochs must be >= 1")
        if not _is_uint(self.max_staleness_epochs, _U64_MAX):
            raise InvalidArgument("max_staleness_epochs must be a u64")

    @property
    def barrier(self) -> float:
        """``1 / (micros / 1e6)`` — the reference's form, not ``1e6 / micros`` (spec 50 §3.8)."""
        return 1.0 / (self.alpha_drift_micros / 1_000_000.0)

    def to_json(self) -> dict[str, Any]:
        """The stored ``config`` object."""
        return {
            "alpha_drift_micros": self.alpha_drift_micros,
            "check_every_epochs": self.check_every_epochs,
            "max_staleness_epochs": self.max_staleness_epochs,
        }

    @classmethod
    def from_json(cls, data: Any) -> CanaryConfig:
        """Parse :meth:`to_json` output."""
        if not isinstance(data, Mapping) or set(data) != {
            "alpha_drift_micros",
            "check_every_epochs",
            "max_staleness_epochs",
        }:
            raise InvalidArgument("canary config must have exactly its three fields")
        return cls(
            alpha_drift_micros=data["alpha_drift_micros"],
            check_every_epochs=data["check_every_epochs"],
            max_staleness_epochs=data["max_staleness_epochs"],
        )


_STATE_KEYS = frozenset(
    ("e_drift", "barrier", "last_epoch_checked", "config", "drift_frozen", "counts", "total")
)


@dataclass(frozen=True, slots=True)
class CanaryState:
    """One stream's drift state (spec 50 §3.8 shape); every operation returns a new state.

    ``barrier`` is stored, not derived: an existing state keeps the barrier and config it was
    created with even if the daemon's configuration changes later.
    """

    config: CanaryConfig
    barrier: float
    e_drift: float = 1.0
    last_epoch_checked: int = 0
    drift_frozen: bool = False
    counts: tuple[int, ...] = ()
    total: int = 0

    @classmethod
    def create(cls, config: CanaryConfig) -> CanaryState:
        """A fresh stream: ``e_drift = 1``, not frozen, barrier from the config."""
        return cls(config=config, barrier=config.barrier)

    def update_with_bucket(self, model: NullModel, bucket: int, epoch: int) -> CanaryState:
        """Feed one pulse bucket observed at ``epoch`` (spec 30 §4 steps 1-5).

        Frozen stays frozen; a stale stream (``epoch - last > max_staleness``) trips; an update
        sooner than ``check_every_epochs`` after the last one (but in a later epoch) is skipped;
        otherwise ``e_drift`` takes one e-process step and trips at ``e_drift >= barrier``.
        ``last_epoch_checked = 0`` means "never updated": it never skips and never goes stale.
        Any e-process error raises FailedPrecondition "canary drift update failed".
        """
        if not _is_uint(epoch, _U64_MAX):
            raise InvalidArgument("epoch must be a u64")
        if self.drift_frozen:
            return self
        last = self.last_epoch_checked
        if last > 0 and max(0, epoch - last) > self.config.max_staleness_epochs:
            return replace(self, drift_frozen=True)
        if last > 0 and epoch > last and epoch - last < self.config.check_every_epochs:
            return self
        try:
            step = update_eprocess(
                EProcessState(e=self.e_drift, counts=self.counts, total=self.total), model, bucket
            )
        except EValueError as exc:
            raise FailedPrecondition(f"canary drift update failed: {exc.message}") from exc
        return replace(
            self,
            e_drift=step.e,
            counts=step.counts,
            total=step.total,
            last_epoch_checked=epoch,
            drift_frozen=step.e >= self.barrier,
        )

    def update_with_buckets(
        self, model: NullModel, buckets: Iterable[int], epoch: int
    ) -> CanaryState:
        """Feed every bucket of one pulse execution, in order, at the pulse's epoch."""
        state = self
        for bucket in buckets:
            state = state.update_with_bucket(model, bucket, epoch)
        return state

    def reset(self) -> CanaryState:
        """Clear the drift evidence; barrier and config are kept (call only after the signature
        of the ``canary_reset`` governance record has been verified)."""
        return replace(
            self, e_drift=1.0, last_epoch_checked=0, drift_frozen=False, counts=(), total=0
        )

    def to_json(self) -> dict[str, Any]:
        """The stored shape of spec 50 §3.8."""
        return {
            "e_drift": self.e_drift,
            "barrier": self.barrier,
            "last_epoch_checked": self.last_epoch_checked,
            "config": self.config.to_json(),
            "drift_frozen": self.drift_frozen,
            "counts": list(self.counts),
            "total": self.total,
        }

    @classmethod
    def from_json(cls, data: Any) -> CanaryState:
        """Parse the stored shape; ``counts``/``total`` may be absent (defaults ``[]``/``0``)."""
        required = _STATE_KEYS - {"counts", "total"}
        if not isinstance(data, Mapping) or not (required <= set(data) <= _STATE_KEYS):
            raise InvalidArgument("canary state JSON has missing or unknown fields")
        e_drift, barrier = data["e_drift"], data["barrier"]
        counts, total = data.get("counts", []), data.get("total", 0)
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (e_drift, barrier)
        ):
            raise InvalidArgument("canary e_drift and barrier must be numbers")
        if not (
            _is_uint(data["last_epoch_checked"], _U64_MAX)
            and isinstance(data["drift_frozen"], bool)
            and isinstance(counts, list)
            and all(_is_uint(c, _U64_MAX) for c in counts)
            and _is_uint(total, _U64_MAX)
        ):
            raise InvalidArgument("canary state fields have the wrong types")
        return cls(
            config=CanaryConfig.from_json(data["config"]),
            barrier=float(barrier),
            e_drift=float(e_drift),
            last_epoch_checked=data["last_epoch_checked"],
            drift_frozen=data["drift_frozen"],
            counts=tuple(counts),
            total=total,
        )
