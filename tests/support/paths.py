"""Locations the tests read from: the shared vectors live beside the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_DIR = (REPO_ROOT / ".." / "shared" / "vectors").resolve()
