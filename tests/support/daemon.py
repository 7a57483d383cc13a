"""Run the real ``evidenceosd`` as a subprocess and talk to it over real gRPC on loopback.

``DaemonProcess`` starts the installed console script (``<venv>/bin/evidenceosd``) on ephemeral
ports (``--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0``), reads its JSON-lines stderr on a
background thread, and waits (bounded) for the ``"event": "serving"`` line that carries the
ports it actually bound. It hands out a channel and stubs for both API versions, and makes sure no
daemon outlives the test that started it: :meth:`terminate` (SIGTERM, then SIGKILL after a
timeout), :meth:`kill` (SIGKILL), the context-manager exit, an ``atexit`` hook for anything left
over, and the pytest fixtures in ``tests/process/conftest.py``.

:func:`run_to_exit` is the counterpart for start-ups that must fail: it starts the daemon, waits
for the process to end, and fails the test (after stopping it) if it started serving instead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from evidenceos._proto.v1 import evidenceos_pb2_grpc as v1_grpc
from evidenceos._proto.v2 import evidenceos_pb2_grpc as v2_grpc

BIN_DIR = Path(sys.executable).parent
EVIDENCEOSD = BIN_DIR / "evidenceosd"
EVIDENCEOSCTL = BIN_DIR / "evidenceosctl"

#: Upper bound for a daemon to print its serving line (or to exit when it must refuse).
STARTUP_TIMEOUT_S = 20.0
#: How long SIGTERM may take (the daemon drains, exports and closes the database).
STOP_TIMEOUT_S = 15.0

#: Inherited variables that change the daemon's behaviour; tests opt in through ``env=``.
_SCRUBBED_ENV_PREFIXES = ("EVIDENCEOS_",)
_SCRUBBED_ENV = ("NOTIFY_SOCKET",)

_live: set[DaemonProcess] = set()
_live_lock = threading.Lock()


class DaemonStartError(AssertionError):
    """The daemon exited or stayed silent instead of serving; carries its stderr."""


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours minus EVIDENCEOS_* settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_ENV_PREFIXES) and k not in _SCRUBBED_ENV
    }
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def parse_json_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every line that is a JSON object (the daemon's log lines); other lines are skipped."""
    events: list[dict[str, Any]] = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            events.append(doc)
    return events


class DaemonProcess:
    """One ``evidenceosd`` subprocess.

    ``DaemonProcess(data_dir).start()`` returns once the daemon serves; ``port``,
    ``metrics_port``, ``address``, ``channel()``, ``v2``/``v1`` stubs are then available.
    ``extra_args`` are appended to the command line, ``env`` is added to a scrubbed copy of the
    test runner's environment. ``listen``/``metrics_listen`` may be set to ``None`` to leave the
    flag out (e.g. when ``extra_args`` supplies it).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        listen: str | None = "127.0.0.1:0",
        metrics_listen: str | None = "127.0.0.1:0",
        executable: Path = EVIDENCEOSD,
    ) -> None:
        self.data_dir = data_dir
        args: list[str] = [str(executable), "--data-dir", str(data_dir)]
        if listen is not None:
            args += ["--listen", listen]
        if metrics_listen is not None:
            args += ["--metrics-listen", metrics_listen]
        args += list(extra_args)
        self.args = args
        self.env = daemon_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []
        self._serving: dict[str, Any] | None = None
        self._channel: grpc.Channel | None = None

    # -- process ------------------------------------------------------------------------------

    def spawn(self) -> DaemonProcess:
        """Start the process without waiting for anything."""
        if self.proc is not None:
            raise RuntimeError("daemon already started")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # a Ctrl-C on the test run reaches us, not the daemon
        )
        with _live_lock:
            _live.add(self)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, sink, name in (
            (self.proc.stderr, self._stderr, "stderr"),
            (self.proc.stdout, self._stdout, "stdout"),
        ):
            reader = threading.Thread(
                target=self._pump,
                args=(stream, sink),
                name=f"evidenceosd-{self.proc.pid}-{name}",
                daemon=True,
            )
            reader.start()
            self._readers.append(reader)
        return self

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._cond:
                sink.append(line)
                if self._serving is None and sink is self._stderr:
                    for doc in parse_json_lines([line]):
                        if doc.get("event") == "serving":
                            self._serving = doc
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> DaemonProcess:
        """Spawn and wait until the daemon serves; on failure stop it and raise with stderr."""
        if self.proc is None:
            self.spawn()
        try:
            self.wait_serving(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_serving(self, timeout: float = STARTUP_TIMEOUT_S) -> dict[str, Any]:
        """Block until the serving line appears; raise DaemonStartError if the process exits."""
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._serving is None:
                if proc.poll() is not None and not self._readers_alive():
                    raise DaemonStartError(
                        f"evidenceosd exited with {proc.returncode} before serving; stderr:\n"
                        + self.stderr_text()
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DaemonStartError(
                        f"evidenceosd did not serve within {timeout:.0f} s; stderr:\n"
                        + self.stderr_text()
                    )
                self._cond.wait(min(remaining, 0.1))
            return self._serving

    def _readers_alive(self) -> bool:
        return any(t.is_alive() for t in self._readers)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("daemon not started")
        return self.proc

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def returncode(self) -> int | None:
        return self._require_proc().poll()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end (no signal sent); returns its exit code."""
        proc = self._require_proc()
        code = proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        self._forget()
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in ``timeout``. Returns the exit code
        (negative signal number when killed, as subprocess reports it)."""
        proc = self._require_proc()
        self._close_channel()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                for reader in self._readers:
                    reader.join(5)
                self._forget()
                raise AssertionError(
                    f"evidenceosd did not stop within {timeout:.0f} s of SIGTERM; killed. "
                    "stderr:\n" + self.stderr_text()
                ) from None
        for reader in self._readers:
            reader.join(5)
        self._forget()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (no clean shutdown) and reap; returns the exit code, None if never started."""
        self._close_channel()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        self._forget()
        return self.proc.returncode

    def send_signal(self, signum: int) -> None:
        self._require_proc().send_signal(signum)

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    # -- output -------------------------------------------------------------------------------

    def stderr_lines(self) -> list[str]:
        with self._cond:
            return list(self._stderr)

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines())

    def stdout_lines(self) -> list[str]:
        with self._cond:
            return list(self._stdout)

    def log_events(self) -> list[dict[str, Any]]:
        """The parsed JSON log lines so far."""
        return parse_json_lines(self.stderr_lines())

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e.get("event") == name]

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first log line matching ``predicate``, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for doc in parse_json_lines(self._stderr[seen:]):
                    if predicate(doc):
                        return doc
                seen = len(self._stderr)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        "no matching log line within the timeout; stderr:\n"
                        + "\n".join(self._stderr)
                    )
                self._cond.wait(min(remaining, 0.1))

    # -- endpoints ----------------------------------------------------------------------------

    @property
    def serving_event(self) -> dict[str, Any]:
        if self._serving is None:
            raise RuntimeError("daemon is not serving (call start())")
        return self._serving

    @property
    def address(self) -> str:
        return str(self.serving_event["listen"])

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def metrics_port(self) -> int | None:
        value = self.serving_event.get("metrics_port")
        return None if value is None else int(value)

    def channel(self) -> grpc.Channel:
        """A plaintext channel to the daemon (one per process, closed on stop)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
            grpc.channel_ready_future(self._channel).result(timeout=STARTUP_TIMEOUT_S)
        return self._channel

    def new_channel(self) -> grpc.Channel:
        """An extra channel the caller owns and closes."""
        return grpc.insecure_channel(self.address)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def v2(self) -> v2_grpc.EvidenceOSStub:
        return v2_grpc.EvidenceOSStub(self.channel())

    @property
    def v1(self) -> v1_grpc.EvidenceOSStub:
        return v1_grpc.EvidenceOSStub(self.channel())


@dataclass(frozen=True)
class ExitedDaemon:
    """Outcome of a daemon start-up that was expected to fail."""

    returncode: int
    stderr: str
    events: list[dict[str, Any]]


def run_to_exit(
    data_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = STARTUP_TIMEOUT_S,
) -> ExitedDaemon:
    """Start a daemon that must refuse to start; wait for it to exit and return what it said.

    If it serves instead, it is stopped and the test fails with its stderr.
    """
    daemon = DaemonProcess(data_dir, extra_args=extra_args, env=env).spawn()
    try:
        try:
            daemon.wait_serving(timeout)
        except DaemonStartError:
            if daemon.returncode is None:
                raise  # silent and still running: wait_serving's message says so
            code = daemon.wait_exit(STOP_TIMEOUT_S)
            return ExitedDaemon(code, daemon.stderr_text(), daemon.log_events())
        raise AssertionError(
            "evidenceosd started serving but was expected to refuse; stderr:\n"
            + daemon.stderr_text()
        )
    finally:
        daemon.kill()


def run_ctl(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the real ``evidenceosctl`` console script; never raises on a non-zero exit."""
    return subprocess.run(
        [str(EVIDENCEOSCTL), *args],
        capture_output=True,
        text=True,
        env=daemon_env(env),
        timeout=timeout,
        check=False,
    )


class DaemonPool:
    """Starts daemons and stops every one of them on :meth:`close` (used by the fixtures)."""

    def __init__(self, default_data_dir: Callable[[], Path]) -> None:
        self._default_data_dir = default_data_dir
        self._started: list[DaemonProcess] = []

    def start(
        self,
        data_dir: Path | None = None,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = STARTUP_TIMEOUT_S,
    ) -> DaemonProcess:
        daemon = DaemonProcess(
            data_dir if data_dir is not None else self._default_data_dir(),
            extra_args=extra_args,
            env=env,
        )
        self._started.append(daemon)
        return daemon.start(timeout)

    def close(self) -> None:
        for daemon in reversed(self._started):
            daemon.kill()
        self._started.clear()


def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for daemon in leftovers:
        with contextlib.suppress(Exception):
            daemon.kill()


atexit.register(_kill_leftovers)


def rpc_status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run ``call`` (an RPC that must fail) and return its status code and details."""
    try:
        call()
    except grpc.RpcError as exc:
        failed: Any = exc  # a grpc.Call as well; the stubs do not say so
        return failed.code(), str(failed.details())
    raise AssertionError("the RPC succeeded but was expected to fail")
