"""Shared fixtures: real files in tmp_path, the shared vectors, a fixed signing seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import VECTORS_DIR


@pytest.fixture
def vectors() -> Callable[[str], Any]:
    """Parse a file under ``../shared/vectors`` (relative to the repo root)."""

    def load(name: str) -> Any:
        return json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))

    return load


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
