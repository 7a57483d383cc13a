"""The writer survives a full disk: a job that fills it mid-transaction (SQLite then rolls the
whole transaction back, savepoint included) fails with StorageFull naming ENOSPC, the rest of its
group fails with it, nothing is committed, reads keep working, and writes work again once space
returns. Uses a small tmpfs (root only; skipped otherwise)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from evidenceos.errors import StorageFull
from evidenceos.store.db import Connection, Store


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _big_job(conn: Connection) -> None:
    for _ in range(400):  # ~4 MB: more than SQLite's page cache, so it spills before COMMIT
        conn.execute("INSERT INTO t VALUES (randomblob(10000))")


def _count(store: Store) -> int:
    with store.read() as conn:
        value = conn.execute("SELECT count(*) FROM t").get
    assert isinstance(value, int)
    return value


def _fill(path: Path) -> None:
    with path.open("wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def test_a_job_that_fills_the_disk_fails_cleanly_and_the_writer_recovers(small_fs: Path) -> None:
    with Store(small_fs / "data") as store:
        store.write(lambda conn: conn.execute("CREATE TABLE t(x BLOB)"))
        store.write(lambda conn: conn.execute("INSERT INTO t VALUES (x'00')"))
        filler = small_fs / "filler"
        _fill(filler)

        with pytest.raises(StorageFull, match="ENOSPC") as full:
            store.write(_big_job)
        assert "nothing was changed" in full.value.message
        assert _count(store) == 1  # reads keep working, nothing of the job committed

        filler.unlink()  # space returns: the same writer commits again
        store.write(_big_job)
        assert _count(store) == 401
