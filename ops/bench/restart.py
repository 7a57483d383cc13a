"""Restart of a large data dir to a serving daemon, and the daemon's resident memory.

For a data dir built by :mod:`ops.bench._build` this spawns the real ``evidenceosd`` (``--listen
127.0.0.1:0``), reads the port from its JSON ``"event": "serving"`` log line and calls the v2
``Health`` RPC until it answers. Restart time is wall time from spawn to that first successful
Health reply: interpreter start, imports, lock, migrations check, start-up verification, keyring,
gRPC bind. The median of ``runs`` restarts is judged against a 2 s budget. To show where that
time goes, the bare interpreter start, the interpreter plus the daemon's imports, and the
in-process start-up log check (``LogService.verify_on_start``) are timed as well.

Memory is ``VmRSS`` from ``/proc/<pid>/status`` right after Health answers and again after a batch
of inclusion and consistency proof RPCs; the larger is judged against 150 MB. ``VmHWM`` (the
peak) is reported too, read once the start-up export of ``state.json`` has happened.

Before the timed runs each data dir gets one untimed first start: a freshly built dir has no
``etl.log`` yet, and a restarted daemon finds the one its previous run exported (what a restart
means in production). That first start is reported separately. The same is done for the small
log, whose restart time is the in-run baseline showing what the large log adds over process
start-up.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc
from evidenceos.service.log_service import LogService
from evidenceos.store.db import Store
from ops.bench import BenchResult, Check, fmt_leaves, median
from ops.bench._build import BuildCache
from ops.bench._server import ServerProcess

RESTART_BUDGET_S = 2.0
RSS_BUDGET_MB = 150.0
SERVING_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class RestartParams:
    small: int
    large: int
    runs: int
    proof_calls: int


@dataclass(slots=True)
class StartSample:
    seconds_to_health: float
    rss_at_health_mb: float
    rss_after_proofs_mb: float
    hwm_mb: float
    proof_rpc_us: list[float] = field(default_factory=list)
    stop_seconds: float = 0.0


def daemon_command(data_dir: Path) -> list[str]:
    """``evidenceosd`` from the running interpreter's environment (the venv's console script)."""
    script = Path(sys.executable).parent / "evidenceosd"
    head = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from evidenceos.cli.daemon import main; main()"]
    )
    return [
        *head,
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log",
        "info",
    ]


def _proc_status_mb(pid: int, field_name: str) -> float:
    """``VmRSS``/``VmHWM`` of ``pid`` in MB (10^6 bytes) from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field_name} missing from /proc/{pid}/status")


class _Daemon(ServerProcess):
    """One spawned ``evidenceosd``, timed from spawn; ``stop`` returns the seconds it took."""

    def __init__(self, data_dir: Path) -> None:
        self.started_at = time.perf_counter()
        self.spawned_ns = time.time_ns()
        super().__init__(
            daemon_command(data_dir),
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            serving_timeout_s=SERVING_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
        )

    @property
    def tree_size(self) -> int | None:
        size = (self.serving or {}).get("tree_size")
        return size if isinstance(size, int) else None

    def stop(self) -> float:  # type: ignore[override]
        started = time.perf_counter()
        super().stop()
        return time.perf_counter() - started


def _first_health(listen: str, started_at: float) -> tuple[grpc.Channel, float]:
    channel = grpc.insecure_channel(listen)
    stub = pb_grpc.EvidenceOSStub(channel)
    deadline = started_at + SERVING_TIMEOUT_S
    while True:
        try:
            reply = stub.Health(pb.HealthRequest(), timeout=2.0)
        except grpc.RpcError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.005)
            continue
        if reply.status == "SERVING":
            return channel, time.perf_counter() - started_at


def _wait_for_export(data_dir: Path, since_ns: int) -> None:
    """Wait until the start-up export (etl.log, then state.json) has run, so VmHWM covers it."""
    deadline = time.perf_counter() + SERVING_TIMEOUT_S
    path = data_dir / "state.json"
    while time.perf_counter() < deadline:
        try:
            if path.stat().st_mtime_ns >= since_ns:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"evidenceosd did not export {path} within {SERVING_TIMEOUT_S:.0f} s")


def start_once(data_dir: Path, leaves: int, proof_calls: int, rng: random.Random) -> StartSample:
    daemon = _Daemon(data_dir)
    try:
        listen = daemon.wait_serving()
        channel, seconds = _first_health(listen, daemon.started_at)
        pid = daemon.proc.pid
        rss_at_health = _proc_status_mb(pid, "VmRSS")
        if daemon.tree_size is not None and daemon.tree_size != leaves:
            raise RuntimeError(f"daemon serves a log of {daemon.tree_size}, expected {leaves}")
        stub = pb_grpc.EvidenceOSStub(channel)
        timings: list[float] = []
        for _ in range(proof_calls):
            index = rng.randrange(leaves)
            t0 = time.perf_counter()
            stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=index), timeout=10)
            timings.append((time.perf_counter() - t0) * 1e6)
            second = rng.randint(2, leaves)
            first = rng.randint(1, second - 1)
            t0 = time.perf_counter()
            reply = stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
                timeout=10,
            )
            timings.append((time.perf_counter() - t0) * 1e6)
            if not reply.consistent:
                raise RuntimeError(f"daemon says {first}->{second} is inconsistent")
        rss_after = _proc_status_mb(pid, "VmRSS")
        _wait_for_export(data_dir, daemon.spawned_ns)
        hwm = _proc_status_mb(pid, "VmHWM")
        channel.close()
        sample = StartSample(seconds, rss_at_health, rss_after, hwm, timings)
        sample.stop_seconds = daemon.stop()
        return sample
    finally:
        daemon.kill()


def _python_wall(code: str, runs: int = 3) -> float:
    """Median wall time of ``python -c code`` in this interpreter (process start to exit)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return median(times)


_TIME_IMPORT = (
    "import time; t = time.perf_counter(); import evidenceos.cli.daemon; "
    "print(time.perf_counter() - t)"
)


def _daemon_import_seconds(runs: int = 3) -> float:
    """Median time a fresh interpreter spends importing ``evidenceos.cli.daemon``."""
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _TIME_IMPORT], check=True, capture_output=True, text=True
        ).stdout
        times.append(float(out.strip()))
    return median(times)


def _verify_on_start_seconds(data_dir: Path, runs: int = 3) -> float:
    """Median in-process time of the daemon's start-up log check on ``data_dir``."""
    times = []
    with Store(data_dir) as store:
        service = LogService(store, None)
        for _ in range(runs):
            started = time.perf_counter()
            service.verify_on_start()
            times.append(time.perf_counter() - started)
    return median(times)


def _series(
    cache: BuildCache,
    leaves: int,
    params: RestartParams,
    rng: random.Random,
    progress: Callable[[str], None],
) -> tuple[StartSample, list[StartSample]]:
    data_dir = cache.get(leaves).data_dir
    first = start_once(data_dir, leaves, params.proof_calls, rng)
    progress(
        f"restart {fmt_leaves(leaves)}: first start {first.seconds_to_health:.2f} s "
        f"(RSS {first.rss_at_health_mb:.0f}->{first.rss_after_proofs_mb:.0f} MB, "
        f"peak {first.hwm_mb:.0f} MB, stop {first.stop_seconds:.1f} s)"
    )
    samples = []
    for run in range(params.runs):
        sample = start_once(data_dir, leaves, params.proof_calls, rng)
        samples.append(sample)
        progress(
            f"restart {fmt_leaves(leaves)} run {run + 1}/{params.runs}: "
            f"{sample.seconds_to_health:.2f} s to Health, RSS {sample.rss_at_health_mb:.0f}->"
            f"{sample.rss_after_proofs_mb:.0f} MB (peak {sample.hwm_mb:.0f} MB), "
            f"stop {sample.stop_seconds:.1f} s"
        )
    return first, samples


def run(params: RestartParams, cache: BuildCache, progress: Callable[[str], None]) -> BenchResult:
    result = BenchResult(
        "restart",
        params={
            "small_leaves": params.small,
            "large_leaves": params.large,
            "runs": params.runs,
            "proof_rpcs_per_kind": params.proof_calls,
            "command": " ".join(daemon_command(Path("<data-dir>"))),
        },
    )
    rng = random.Random(7)
    _, small_runs = _series(cache, params.small, params, rng, progress)
    first, large_runs = _series(cache, params.large, params, rng, progress)
    interpreter_s = _python_wall("pass")
    import_s = _daemon_import_seconds()
    verify_small_s = _verify_on_start_seconds(cache.get(params.small).data_dir)
    verify_large_s = _verify_on_start_seconds(cache.get(params.large).data_dir)
    large_label = fmt_leaves(params.large)
    restart_s = median([s.seconds_to_health for s in large_runs])
    rss_mb = max(max(s.rss_at_health_mb, s.rss_after_proofs_mb) for s in large_runs)
    result.checks.append(
        Check(
            name="restart.seconds_to_health",
            description=(
                f"median spawn-to-first-Health of evidenceosd on a {large_label}-leaf data dir "
                f"÷ {RESTART_BUDGET_S:g} s budget"
            ),
            value=restart_s,
            baseline=RESTART_BUDGET_S,
            unit="s",
            value_label=f"restart @ {large_label} (median of {params.runs})",
            baseline_label="budget",
            op="<=",
            threshold=1.0,
        )
    )
    result.checks.append(
        Check(
            name="restart.rss",
            description=(
                f"max VmRSS (after start, after {2 * params.proof_calls} proof RPCs) on a "
                f"{large_label}-leaf data dir ÷ {RSS_BUDGET_MB:g} MB budget"
            ),
            value=rss_mb,
            baseline=RSS_BUDGET_MB,
            unit="MB",
            value_label=f"VmRSS @ {large_label}",
            baseline_label="budget",
            op="<=",
            threshold=1.0,
        )
    )
    small_s = median([s.seconds_to_health for s in small_runs])
    small_label = fmt_leaves(params.small)
    result.add_info(f"restart.{large_label}_median_s", restart_s, "s")
    result.add_info(
        f"restart.{large_label}_max_s", max(s.seconds_to_health for s in large_runs), "s"
    )
    result.add_info(f"restart.{small_label}_median_s", small_s, "s")
    result.add_info(f"restart.{large_label}_vs_{small_label}", restart_s / small_s, "ratio")
    result.add_info(
        f"restart.{large_label}_rss_at_health_mb",
        median([s.rss_at_health_mb for s in large_runs]),
        "MB",
    )
    result.add_info(
        f"restart.{large_label}_rss_after_proofs_mb",
        median([s.rss_after_proofs_mb for s in large_runs]),
        "MB",
    )
    result.add_info(f"restart.{large_label}_peak_hwm_mb", max(s.hwm_mb for s in large_runs), "MB")
    result.add_info(
        f"restart.{small_label}_rss_after_proofs_mb",
        median([s.rss_after_proofs_mb for s in small_runs]),
        "MB",
    )
    result.add_info(
        f"restart.{large_label}_proof_rpc_median_us",
        median([t for s in large_runs for t in s.proof_rpc_us]),
        "us",
    )
    result.add_info(
        f"restart.{large_label}_stop_median_s", median([s.stop_seconds for s in large_runs]), "s"
    )
    result.add_info("restart.python_startup_s", interpreter_s, "s")
    result.add_info("restart.daemon_imports_s", import_s, "s")
    result.add_info(f"restart.verify_on_start_{small_label}_s", verify_small_s, "s")
    result.add_info(f"restart.verify_on_start_{large_label}_s", verify_large_s, "s")
    result.add_info(f"first_start.{large_label}_seconds_to_health", first.seconds_to_health, "s")
    result.add_info(
        f"first_start.{large_label}_rss_after_proofs_mb", first.rss_after_proofs_mb, "MB"
    )
    result.add_info(f"first_start.{large_label}_peak_hwm_mb", first.hwm_mb, "MB")
    result.add_info(f"first_start.{large_label}_stop_s", first.stop_seconds, "s")
    return result
