"""A spawned server process (the daemon, the echo server) watched through its JSON log lines."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_LINES = 10_000


class ServerProcess:
    """Spawns ``args``; ``serving`` is the first ``"event": "serving"`` line that names a
    ``listen`` address. ``stop`` sends SIGTERM and insists on exit status 0."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        *,
        serving_timeout_s: float,
        stop_timeout_s: float,
    ) -> None:
        self.lines: list[str] = []
        self.serving: dict[str, Any] | None = None
        self._serving_timeout_s = serving_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.lines) < MAX_LINES:
                self.lines.append(line.rstrip("\n"))
            if self._ready.is_set():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == "serving" and "listen" in doc:
                self.serving = doc
                self._ready.set()
        self._ready.set()  # EOF: the process exited; wait_serving() reports why

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_serving(self) -> str:
        if not self._ready.wait(self._serving_timeout_s) or self.serving is None:
            self.kill()
            raise RuntimeError(f"{self.proc.args!r} never served; stderr tail:\n{self.tail()}")
        return str(self.serving["listen"])

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.lines[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.proc.args!r} did not stop after SIGTERM") from None
        self._reader.join(5)
        if code != 0:
            raise RuntimeError(f"{self.proc.args!r} exited with {code}; stderr:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
