"""Epoch configuration files: ``<data>/epoch_configs/<ref>.json`` (spec 20 §3.4 step 10).

An operator input the daemon only reads. A ref ``a/b`` names a subdirectory; the ref's last
extension is replaced by ``.json`` (``v1.2`` reads ``v1.json``), as the reference does. Refs that
would leave the directory (absolute, ``..``) are refused.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import threading
import time
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


@functools.lru_cache(maxsize=256)
def epoch_config_path(data_dir: Path, ref: str) -> Path:
    """``<data>/epoch_configs/<ref>.json``; a pure function of its arguments (memoised)."""
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


#: ``Path.exists`` treats these as "no such file" (and raises on any other error).
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})

#: A file changed less than this long ago is re-read on every call: timestamps are only as fine
#: as the file system's clock tick, so two writes of the same size within one tick could
#: otherwise leave the same (inode, size, mtime, ctime) key (the "racy git" problem).
RACY_WINDOW_NS = 2_000_000_000

_FileKey = tuple[int, int, int, int, int]
_parsed: dict[Path, tuple[_FileKey, EpochConfig]] = {}
_parsed_lock = threading.Lock()
_PARSED_MAX = 256


def _file_key(path: Path) -> _FileKey | None:
    """(device, inode, size, mtime_ns, ctime_ns), or None when the file does not exist."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            return None
        raise
    except ValueError:  # as Path.exists: e.g. an embedded NUL byte
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_epoch_config(data_dir: Path, ref: str) -> EpochConfig | None:
    """The config for ``ref``, or None when no file exists (no PLN: creation then fails).

    Parsed configs are kept by path and the file's (device, inode, size, mtime, ctime): an
    edited, replaced or removed file is read again, and so is one changed within the last
    :data:`RACY_WINDOW_NS`. Errors are never kept."""
    path = epoch_config_path(data_dir, ref)
    key = _file_key(path)
    if key is None:
        return None
    with _parsed_lock:
        hit = _parsed.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"epoch config {ref!r} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"epoch config {ref!r} must be a JSON object")
    config = EpochConfig(_positive_int(data, "epoch_size"), _parse_pln(data))
    # Keep it only if the file is settled and still the one stat saw before the read.
    settled = max(key[3], key[4]) < time.time_ns() - RACY_WINDOW_NS
    if settled and _file_key(path) == key:
        with _parsed_lock:
            if len(_parsed) >= _PARSED_MAX and path not in _parsed:
                _parsed.clear()
            _parsed[path] = (key, config)
    return config
