"""Fixtures for process-level tests: real ``evidenceosd`` subprocesses on ephemeral ports.

``daemons`` starts any number of daemons for one test and stops all of them afterwards, whatever
the outcome; ``daemon`` is a single daemon on a fresh data dir. Each test gets its own data dir
(``tmp_path``), so tests never share state or ports and can run in any order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonPool, DaemonProcess


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonPool]:
    """``daemons.start(data_dir=None, extra_args=(), env=None)``; all are killed at teardown.

    Without ``data_dir`` each call gets a new empty directory under ``tmp_path``."""
    counter = itertools.count()

    def fresh() -> Path:
        return tmp_path / f"daemon-data-{next(counter)}"

    pool = DaemonPool(fresh)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def daemon(daemons: DaemonPool) -> DaemonProcess:
    """One daemon serving on a fresh data dir."""
    return daemons.start()
