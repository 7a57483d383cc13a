"""Epoch configuration files: ``<data>/epoch_configs/<ref>.json`` (spec 20 §3.4 step 10).

An operator input the daemon only reads. A ref ``a/b`` names a subdirectory; the ref's last
extension is replaced by ``.json`` (``v1.2`` reads ``v1.json``), as the reference does. Refs that
would leave the directory (absolute, ``..``) are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from evidenceos.core.claim import PlnConfig
from evidenceos.errors import FailedPrecondition, InvalidArgument

EPOCH_CONFIGS_DIR = "epoch_configs"


@dataclass(frozen=True, slots=True)
class EpochConfig:
    epoch_size: int
    pln: PlnConfig | None


def epoch_config_path(data_dir: Path, ref: str) -> Path:
    rel = PurePosixPath(ref)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or "\\" in ref:
        raise InvalidArgument(
            "metadata.epoch_config_ref must be a relative path inside epoch_configs"
        )
    return data_dir / EPOCH_CONFIGS_DIR / rel.with_suffix(".json")


def _positive_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"epoch config {key} must be a positive integer")
    return value


def _parse_pln(data: dict[str, Any]) -> PlnConfig | None:
    block = data.get("pln")
    if isinstance(block, dict):
        lanes = block.get("lanes") or {}
        if not isinstance(lanes, dict):
            raise InvalidArgument("epoch config pln.lanes must be an object")
        cfg = PlnConfig(
            _positive_int(block, "target_fuel"),
            _positive_int(block, "max_fuel"),
            bool(lanes.get("fast", True)),
            bool(lanes.get("heavy", True)),
        )
    elif "pln_target_fuel" in data or "pln_max_fuel" in data:
        cfg = PlnConfig(
            _positive_int(data, "pln_target_fuel"),
            _positive_int(data, "pln_max_fuel"),
            bool(data.get("pln_fast_enabled", True)),
            bool(data.get("pln_heavy_enabled", True)),
        )
    else:
        return None
    if cfg.target_fuel > cfg.max_fuel:
        raise InvalidArgument("PLN target exceeds max fuel")
    if not (cfg.fast or cfg.heavy):
        raise InvalidArgument("PLN must enable at least one lane")
    return cfg


def load_epoch_config(data_dir: Path, ref: str) -> EpochConfig | None:
    """The config for ``ref``, or None when no file exists (no PLN: creation then fails)."""
    path = epoch_config_path(data_dir, ref)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"epoch config {ref!r} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"epoch config {ref!r} must be a JSON object")
    return EpochConfig(_positive_int(data, "epoch_size"), _parse_pln(data))
