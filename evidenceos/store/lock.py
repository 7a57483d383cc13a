"""One daemon per data dir: an ``flock`` on ``kernel.lock`` held for the process lifetime.

The kernel releases an ``flock`` when its holder dies, so a SIGKILL never leaves the data dir
stuck (the reference's exclusive-create file does; spec 40 §6.5).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from evidenceos.errors import FailedPrecondition

LOCK_FILE = "kernel.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise FailedPrecondition(
                f"another writer already holds kernel lock ({self.path}); "
                "is another evidenceosd running on this data dir?"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
