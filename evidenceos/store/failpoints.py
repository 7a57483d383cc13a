"""Crash failpoints for process-level tests (DESIGN §3, spec 40 §6.4).

When ``EVIDENCEOS_CRASH_FAILPOINT`` names the point being passed, the process is killed at once
with SIGKILL: no cleanup, no flush, no reply — as close to a power cut as a process can get.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "EVIDENCEOS_CRASH_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
