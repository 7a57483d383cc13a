"""ExecuteClaimV2 throughput and claim-lifecycle latency of the real daemon, over gRPC.

Processes: the real ``evidenceosd`` from the running interpreter's environment (``--listen
127.0.0.1:0 --metrics-listen 127.0.0.1:0 --insecure-synthetic-holdout`` on a fresh data dir with
``epoch_configs/epoch/default.json`` = PLN 100/500, epoch 16); a bare grpcio echo server
(:func:`echo_server_main`: one unary method returning the request bytes, a thread pool of the
daemon's size, no interceptors); and one client process (:func:`client_main`) that talks to both.
The benchmark process only starts them, hands the client JSON commands on stdin and reads the
daemon's and echo server's CPU time from ``/proc``.

Throughput. Each trial starts a fresh daemon on a fresh data dir (the ``state.json`` export grows
with every stored claim, so a long-lived daemon would slow down from trial to trial). After an
untimed warm-up the client creates, commits, freezes and seals ``claims_per_trial`` claims
(distinct claim names and topics, one legacy guest: ``oracle_query`` on 128 bytes, then emit one
byte), untimed; once the daemon is idle again, 32 client threads on one channel execute them all
(``ExecuteClaimV2``, each call with its own ``x-request-id``) and the rate is executions over
the wall time from the start barrier to the last reply. In the same trial the same 32 threads
make ``echo_calls_per_trial`` unary calls of :data:`ECHO_PAYLOAD_BYTES` bytes (also with an
``x-request-id``) to the echo server. Trials alternate which goes first; the judged ratio is the
median of the per-trial ratios ``execute/s ÷ echo calls/s`` (target ≥ 0.4).

Lifecycle. On another fresh daemon one caller runs ``lifecycles`` complete lifecycles
(CreateClaimV2, CommitArtifacts, FreezeGates, SealClaim, ExecuteClaimV2) back to back, each RPC
timed; the p99 of the five-RPC total is judged against a 10 ms budget.

Compiles. Before it stops, every daemon's Prometheus endpoint gives ``evidenceos_sandbox_compiles``
(wasmtime compilations), artefact loads and cache hits, and afterwards its ``compiled_modules``
table the stored artefacts; every claim uses the same module, so the most compiles in any one
daemon ÷ 1 distinct module must be ≤ 1. The cost of one ``state.json`` rewrite is then timed
in-process on the last trial's data dir.

Profile. ``python -m cProfile`` cannot profile the daemon usefully: it only sees the main
thread, and every RPC runs on the gRPC thread pool. Instead a last, short run starts the daemon
through :func:`profiled_daemon_main`, which wraps the service's functions with wall-clock and
thread-CPU timers before calling the daemon's own ``main`` (and, with ``--cprofile``, installs a
per-thread ``cProfile`` in every thread), executes ``profile_claims`` claims with 32 callers and a
few lifecycles, and prints per-ExecuteClaimV2 microseconds per stage: interceptors, reads, the
guest run, PLN burn, the writer thread's capsule/log/SQL work, signing, COMMIT, exports, plus the
writer thread's scheduler statistics. ``python -m ops.bench.execute --profile [--cprofile]
[--what-if NAME]`` runs only that; :data:`WHAT_IF` experiments price suggested fixes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ops.bench import BenchResult, Check, median, percentile
from ops.bench._server import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]

CALLERS = 32
#: The daemon's gRPC thread pool (``evidenceos.rpc.server.MAX_WORKERS``); the echo server's too.
SERVER_WORKERS = 32
QUERY_BYTES = 128
ECHO_PAYLOAD_BYTES = 64
HOLDOUT_REF = "synthetic-bench"
EPOCH_REF = "epoch/default"
EPOCH_CONFIG: dict[str, Any] = {"epoch_size": 16, "pln": {"target_fuel": 100, "max_fuel": 500}}
THROUGHPUT_TARGET = 0.4
LIFECYCLE_P99_BUDGET_MS = 10.0
RPC_TIMEOUT_S = 60.0
SERVING_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 120.0
PREPARE_THREADS = 16
LIFECYCLE_WARM_UP = 5
IDLE_WINDOW_S = 2.0
ECHO_METHOD = "/bench.Echo/Echo"

#: Daemon environment on top of ours minus EVIDENCEOS_*: the probe detector (which throttles a
#: principal after a few distinct topics, as it should) out of the way, holdout-pool budgets
#: large enough for thousands of claims on one synthetic holdout (each reserves 128 bits) and a
#: credit limit no run exhausts.
DAEMON_ENV: dict[str, str] = {
    **{
        f"EVIDENCEOS_PROBE_{verdict}_{metric}": str(limit)
        for verdict, limit in (("THROTTLE", 10**9), ("ESCALATE", 2 * 10**9), ("FREEZE", 3 * 10**9))
        for metric in ("TOTAL", "UNIQUE_SEMANTIC", "DISTINCT_TOPICS")
    },
    "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "1e12",
    "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "1e12",
    "EVIDENCEOS_DEFAULT_CREDIT_LIMIT": str(10**15),
}

LIFECYCLE_RPCS = ("CreateClaimV2", "CommitArtifacts", "FreezeGates", "SealClaim", "ExecuteClaimV2")


@dataclass(frozen=True, slots=True)
class ExecuteParams:
    trials: int
    claims_per_trial: int
    echo_calls_per_trial: int
    lifecycles: int
    profile_claims: int
    callers: int = CALLERS


# =============================================================================================
# Processes


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVIDENCEOS_")}
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def daemon_args(data_dir: Path) -> list[str]:
    return [
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--insecure-synthetic-holdout",
        "--log",
        "info",
    ]


def daemon_command(data_dir: Path) -> list[str]:
    """``evidenceosd`` from the running interpreter's environment (the venv's console script)."""
    script = Path(sys.executable).parent / "evidenceosd"
    head = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from evidenceos.cli.daemon import main; main()"]
    )
    return [*head, *daemon_args(data_dir)]


def prepare_data_dir(data_dir: Path) -> None:
    path = data_dir / "epoch_configs" / f"{EPOCH_REF}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(EPOCH_CONFIG), encoding="utf-8")


class _Server(ServerProcess):
    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None):
        super().__init__(
            args, env, cwd, serving_timeout_s=SERVING_TIMEOUT_S, stop_timeout_s=STOP_TIMEOUT_S
        )


def stop_all(*servers: _Server) -> None:
    """SIGTERM each and wait; a server that fails to stop cleanly is killed, the others are still
    stopped, and the first failure is raised at the end."""
    failure: BaseException | None = None
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:  # noqa: BLE001 - re-raised once all are down
            server.kill()
            failure = failure or exc
    if failure is not None:
        raise failure


def _module_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ops.bench.execute", *args]


def start_daemon(
    data_dir: Path,
    *,
    profile_out: Path | None = None,
    cprofile: bool = False,
    what_if: Sequence[str] = (),
) -> _Server:
    """The daemon on ``data_dir``; with ``profile_out``, under :func:`profiled_daemon_main`."""
    prepare_data_dir(data_dir)
    if profile_out is None:
        command = daemon_command(data_dir)
    else:
        command = _module_command(
            "profiled-daemon",
            "--stages-out",
            str(profile_out),
            *(["--cprofile"] if cprofile else []),
            *(f"--what-if={name}" for name in what_if),
            "--",
            *daemon_args(data_dir),
        )
    return _Server(command, _child_env(DAEMON_ENV), cwd=REPO_ROOT)


def start_echo_server(workers: int = SERVER_WORKERS) -> _Server:
    return _Server(
        _module_command("echo-server", "--workers", str(workers)), _child_env(), cwd=REPO_ROOT
    )


class ClientProcess:
    """The client in its own process: one JSON command per line in, one JSON reply per line out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            _module_command("client"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
            cwd=REPO_ROOT,
        )
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            tail = "\n".join(self._stderr[-30:])
            raise RuntimeError(f"bench client exited ({self.proc.returncode}); stderr:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"bench client: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self.call(op="quit")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU) of thread ``tid`` of ``pid``,
    or summed over all of its threads (``/proc/.../schedstat``)."""
    tids = [tid] if tid is not None else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    cpu = wait = 0
    for one in tids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/task/{one}/schedstat", encoding="ascii") as fh:
                fields = fh.read().split()
            cpu += int(fields[0])
            wait += int(fields[1])
    return cpu / 1e9, wait / 1e9


def wait_idle(pid: int, *, window_s: float = 0.2, busy_fraction: float = 0.05) -> float:
    """Wait (≤ 15 s) until ``pid`` uses < ``busy_fraction`` of a CPU over ``window_s`` (the
    daemon's background exports after a burst); seconds waited."""
    started = time.perf_counter()
    before = process_cpu_s(pid)
    while time.perf_counter() - started < 15.0:
        time.sleep(window_s)
        after = process_cpu_s(pid)
        if after - before < busy_fraction * window_s:
            break
        before = after
    return time.perf_counter() - started


def scrape_metrics(port: int) -> dict[str, float]:
    """Unlabelled samples and ``name{labels}`` keys from the daemon's ``/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode("utf-8")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[name] = float(value)
    return samples


def compiled_module_rows(data_dir: Path) -> int:
    import apsw

    conn = apsw.Connection(
        str(data_dir / "evidenceos.db"), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    )
    try:
        return int(conn.execute("SELECT count(*) FROM compiled_modules").get)
    finally:
        conn.close()


# =============================================================================================
# The client process


def guest_wasm() -> bytes:
    """Legacy guest (ABI v2): ``oracle_query`` on 128 prediction bytes, then emit symbol 1."""
    import wasmtime

    predictions = bytes(i % 2 for i in range(QUERY_BYTES))
    data = "".join(f"\\{b:02x}" for b in predictions)
    wat = (
        '(module (import "env" "oracle_query" (func $query (param i32 i32) (result i32)))'
        ' (import "env" "emit_structured_claim" (func $emit (param i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (data (i32.const 0) "\\01")'
        f' (data (i32.const 16) "{data}")'
        f' (func (export "run") i32.const 16 i32.const {QUERY_BYTES} call $query drop'
        " i32.const 0 i32.const 1 call $emit drop))"
    )
    return bytes(wasmtime.wat2wasm(wat))


class _Client:
    def __init__(self) -> None:
        import grpc

        from evidenceos._proto.v2 import evidenceos_pb2 as pb
        from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc

        self.grpc = grpc
        self.pb = pb
        self.pb_grpc = pb_grpc
        self.module = guest_wasm()
        self.module_sha256 = hashlib.sha256(self.module).digest()
        self._channels: dict[str, Any] = {}
        self.prepared: list[bytes] = []
        self._rid = 0
        self._rid_lock = threading.Lock()
        self.sizes: dict[str, int] = {}

    def channel(self, target: str) -> Any:
        channel = self._channels.get(target)
        if channel is None:
            channel = self.grpc.insecure_channel(target)
            self.grpc.channel_ready_future(channel).result(timeout=SERVING_TIMEOUT_S)
            self._channels[target] = channel
        return channel

    def stub(self, target: str) -> Any:
        return self.pb_grpc.EvidenceOSStub(self.channel(target))

    def request_id(self, what: str) -> tuple[tuple[str, str]]:
        with self._rid_lock:
            self._rid += 1
            return (("x-request-id", f"bench-{os.getpid()}-{what}-{self._rid}"),)

    def create_request(self, name: str) -> Any:
        pb = self.pb
        return pb.CreateClaimV2Request(
            claim_name=name,
            holdout_ref=HOLDOUT_REF,
            epoch_size=16,
            oracle_num_symbols=4,
            access_credit=1024,
            oracle_id="builtin.accuracy",
            # A semantic hash of its own gives every claim its own topic (and topic pool): the
            # topic pool starts at one claim's access credit, room for 8 worst-case claims.
            signals=pb.TopicSignalsV2(semantic_hash=hashlib.sha256(name.encode()).digest()),
            metadata=pb.ClaimMetadataV2(
                lane="fast",
                alpha_micros=50_000,
                epoch_config_ref=EPOCH_REF,
                output_schema_id="legacy/v1",
            ),
        )

    def commit_request(self, claim_id: bytes) -> Any:
        pb = self.pb
        return pb.CommitArtifactsRequest(
            claim_id=claim_id,
            artifacts=[pb.Artifact(artifact_hash=self.module_sha256, kind="wasm")],
            wasm_module=self.module,
        )

    def _sealed(self, stub: Any, name: str) -> bytes:
        pb = self.pb
        created = stub.CreateClaimV2(
            self.create_request(name), metadata=self.request_id("create"), timeout=RPC_TIMEOUT_S
        )
        claim_id = bytes(created.claim_id)
        stub.CommitArtifacts(self.commit_request(claim_id), timeout=RPC_TIMEOUT_S)
        stub.FreezeGates(pb.FreezeGatesRequest(claim_id=claim_id), timeout=RPC_TIMEOUT_S)
        sealed = stub.SealClaim(pb.SealClaimRequest(claim_id=claim_id), timeout=RPC_TIMEOUT_S)
        if sealed.state != pb.CLAIM_STATE_SEALED:
            raise RuntimeError(f"claim {name} is in state {sealed.state} after SealClaim")
        return claim_id

    def prepare(self, target: str, count: int, prefix: str) -> dict[str, Any]:
        stub = self.stub(target)
        ids: list[bytes] = [b""] * count

        def one(i: int) -> None:
            ids[i] = self._sealed(stub, f"bench-{prefix}-{i}")

        started = time.perf_counter()
        _timed_fan_out(min(PREPARE_THREADS, count), count, one)
        self.prepared = ids
        return {"prepared": len(self.prepared), "seconds": time.perf_counter() - started}

    def execute(self, target: str, callers: int) -> dict[str, Any]:
        stub = self.stub(target)
        pb = self.pb
        claims, self.prepared = self.prepared, []
        requests = [pb.ExecuteClaimV2Request(claim_id=c) for c in claims]
        metadata = [self.request_id("execute") for _ in claims]
        replies: list[Any] = [None] * len(claims)

        def one(i: int) -> None:
            replies[i] = stub.ExecuteClaimV2(
                requests[i], metadata=metadata[i], timeout=RPC_TIMEOUT_S
            )

        report = _timed_fan_out(callers, len(claims), one)
        for reply in replies:
            if reply is None or not reply.capsule_hash:
                raise RuntimeError("an ExecuteClaimV2 reply carried no capsule")
        self.sizes["execute_request_bytes"] = requests[0].ByteSize()
        self.sizes["execute_reply_bytes"] = replies[0].ByteSize()
        return report

    def echo(self, target: str, callers: int, calls: int, payload_bytes: int) -> dict[str, Any]:
        call = self.channel(target).unary_unary(ECHO_METHOD)
        payload = os.urandom(payload_bytes)
        metadata = [self.request_id("echo") for _ in range(calls)]

        def one(i: int) -> None:
            if call(payload, metadata=metadata[i], timeout=RPC_TIMEOUT_S) != payload:
                raise RuntimeError("echo server changed the payload")

        return _timed_fan_out(callers, calls, one)

    def lifecycle(self, target: str, count: int, prefix: str) -> dict[str, Any]:
        """``count`` complete lifecycles from one caller (after a few untimed ones)."""
        stub = self.stub(target)
        timings: dict[str, list[float]] = {name: [] for name in (*LIFECYCLE_RPCS, "total")}
        for i in range(LIFECYCLE_WARM_UP + count):
            rpc_us = self._lifecycle_once(stub, f"bench-{prefix}-{i}")
            if i >= LIFECYCLE_WARM_UP:
                for rpc, value in rpc_us.items():
                    timings[rpc].append(value)
        return {"timings_us": timings}

    def _lifecycle_once(self, stub: Any, name: str) -> dict[str, float]:
        pb = self.pb
        clock = time.perf_counter
        t0 = clock()
        created = stub.CreateClaimV2(
            self.create_request(name), metadata=self.request_id("create"), timeout=RPC_TIMEOUT_S
        )
        claim_id = bytes(created.claim_id)
        t1 = clock()
        stub.CommitArtifacts(self.commit_request(claim_id), timeout=RPC_TIMEOUT_S)
        t2 = clock()
        stub.FreezeGates(pb.FreezeGatesRequest(claim_id=claim_id), timeout=RPC_TIMEOUT_S)
        t3 = clock()
        stub.SealClaim(pb.SealClaimRequest(claim_id=claim_id), timeout=RPC_TIMEOUT_S)
        t4 = clock()
        executed = stub.ExecuteClaimV2(
            pb.ExecuteClaimV2Request(claim_id=claim_id),
            metadata=self.request_id("execute"),
            timeout=RPC_TIMEOUT_S,
        )
        t5 = clock()
        if not executed.capsule_hash:
            raise RuntimeError("lifecycle ExecuteClaimV2 reply carried no capsule")
        marks = (t0, t1, t2, t3, t4, t5)
        out = {rpc: (marks[n + 1] - marks[n]) * 1e6 for n, rpc in enumerate(LIFECYCLE_RPCS)}
        out["total"] = (t5 - t0) * 1e6
        return out


def _timed_fan_out(threads: int, count: int, work: Callable[[int], None]) -> dict[str, Any]:
    """``work(i)`` for i in range(count) on ``threads`` threads pulling from one counter; wall
    time from the start barrier to the last return, each call's latency, client CPU."""
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = [0.0] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= count or errors:
                return
            t0 = time.perf_counter()
            try:
                work(i)
            except BaseException as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)
                return
            latencies[i] = (time.perf_counter() - t0) * 1e6

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    cpu0 = time.process_time()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if errors:
        raise errors[0]
    return {"calls": count, "seconds": seconds, "client_cpu_s": cpu, "latencies_us": latencies}


def client_main() -> None:
    """Serve JSON commands from stdin until ``quit`` or EOF (see :class:`ClientProcess`)."""
    out: IO[str] = sys.stdout
    client: _Client | None = None
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            if client is None:
                client = _Client()
            reply = getattr(client, op)(**command)
            reply["sizes"] = dict(client.sizes)
        except Exception as exc:  # noqa: BLE001 - reported to the benchmark process
            details = exc.details() if hasattr(exc, "details") else ""
            reply = {"error": f"{op}: {type(exc).__name__}: {exc} {details}".strip()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# =============================================================================================
# The echo server process


def echo_server_main(workers: int) -> None:
    """A bare grpcio server: one unary method echoing its request bytes, ``workers`` threads."""
    from concurrent import futures

    import grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echo"),
        options=[("grpc.so_reuseport", 0)],
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, _ctx: request)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"event": "serving", "listen": f"127.0.0.1:{port}"}), file=sys.stderr)
    sys.stderr.flush()
    while not stop.wait(1.0):
        pass
    server.stop(5).wait()


# =============================================================================================
# The profiled daemon: stage timers (and optionally per-thread cProfile) around the real daemon


class _Stages:
    """Wall and thread-CPU seconds per stage, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.groups: list[int] = []
        self.writer_tids: list[int] = []

    def add(self, stage: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.wall[stage] += wall
            self.cpu[stage] += cpu
            self.calls[stage] += 1

    def wrap(self, owner: object, attr: str, stage: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # not in this version of the package: the stage stays at zero
            return
        add = self.add
        clock = time.perf_counter
        cpu_clock = time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall0, cpu0 = clock(), cpu_clock()
            try:
                return original(*args, **kwargs)
            finally:
                add(stage, clock() - wall0, cpu_clock() - cpu0)

        raw = inspect.getattr_static(owner, attr)
        setattr(owner, attr, staticmethod(timed) if isinstance(raw, staticmethod) else timed)

    def to_json(self) -> dict[str, Any]:
        # Called from a signal handler in the main thread: copy without taking the lock (a
        # dict copy is atomic under the GIL), so a main thread inside add() cannot deadlock.
        return {
            "wall": dict(self.wall),
            "cpu": dict(self.cpu),
            "calls": dict(self.calls),
            "groups": list(self.groups),
            "writer_tids": list(self.writer_tids),
        }


def _instrument(stages: _Stages) -> None:
    """Wrap the daemon's functions (before it starts) with stage timers."""
    import evidenceos.rpc.servicer_claims as servicer_claims
    import evidenceos.service.execution as execution
    import evidenceos.service.log_service as log_service
    import evidenceos.store.capsules as capsules
    import evidenceos.store.claims as claims_table
    from evidenceos.rpc.auth_interceptor import AuthInterceptor
    from evidenceos.rpc.metrics_interceptor import MetricsInterceptor
    from evidenceos.sandbox.engine import Sandbox
    from evidenceos.service.claims import ClaimService
    from evidenceos.service.execution import ExecutionService
    from evidenceos.service.log_service import LogService
    from evidenceos.store.db import Store
    from evidenceos.store.export import Exporter
    from evidenceos.store.holdouts import HoldoutRegistry

    original_unary = MetricsInterceptor._unary

    def metrics_unary(self: Any, method: str, behavior: Any) -> Any:
        inner = original_unary(self, method, behavior)
        stage = "server:" + method.rsplit("/", 1)[-1]

        def timed(request: Any, context: Any) -> Any:
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                return inner(request, context)
            finally:
                stages.add(stage, time.perf_counter() - wall0, time.thread_time() - cpu0)

        return timed

    MetricsInterceptor._unary = metrics_unary  # type: ignore[method-assign]
    stages.wrap(AuthInterceptor, "_admit", "auth_and_probe")
    for rpc in LIFECYCLE_RPCS:
        stages.wrap(servicer_claims.ClaimRpc, rpc, f"servicer:{rpc}")
    stages.wrap(servicer_claims, "idempotency_key", "idempotency_key")
    # replayed() and get_claim() call these two: wrapping only them counts each lookup once.
    stages.wrap(ClaimService, "replayed_in", "idempotency_lookup")
    stages.wrap(ClaimService, "remember", "w:idempotency_record")
    stages.wrap(ExecutionService, "execute_claim_v2", "execute_claim_v2")
    stages.wrap(ExecutionService, "_verify_executable", "verify_executable")
    stages.wrap(ExecutionService, "_nullspec", "nullspec")
    stages.wrap(ExecutionService, "_module", "module_lookup")
    stages.wrap(ExecutionService, "_settle_pools", "w:settle_pools")
    stages.wrap(ExecutionService, "_decide", "decide_and_encode_capsule")
    stages.wrap(ExecutionService, "_publish", "w:publish")
    stages.wrap(ExecutionService, "_charge_credit", "w:charge_credit")
    stages.wrap(ExecutionService, "_settle", "settle_total")
    stages.wrap(HoldoutRegistry, "resolve", "holdout_resolve")
    stages.wrap(Sandbox, "execute", "sandbox_execute")
    stages.wrap(Sandbox, "burn", "sandbox_pln_burn")
    stages.wrap(Sandbox, "compile", "sandbox_compile_or_hit")
    stages.wrap(Sandbox, "serialize", "sandbox_serialize")
    stages.wrap(execution, "build_capsule", "build_capsule")
    stages.wrap(execution, "encode_capsule", "encode_capsule")
    stages.wrap(execution, "compute_e_value", "compute_e_value")
    stages.wrap(claims_table, "get_claim_and_text", "get_claim")
    stages.wrap(claims_table, "put_claim", "put_claim")
    stages.wrap(capsules, "put_capsule", "w:put_capsule")
    stages.wrap(LogService, "append", "w:log_append")
    stages.wrap(LogService, "append_encoded", "w:log_append_encoded")
    stages.wrap(log_service, "encode_entry", "w:log_encode_entry")
    stages.wrap(LogService, "_sign_if_due", "w:sign_head_hook")
    stages.wrap(Store, "write", "store_write_wait")
    # A caller that finds the writer idle commits on its own thread (_commit_one): counted
    # apart from the writer thread's groups.
    original_commit_group, original_commit_one = Store._commit_group, Store._commit_one

    def commit_group(self: Any, group: Any, held: Any) -> Any:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            return original_commit_group(self, group, held)
        finally:
            stages.add("writer_group", time.perf_counter() - wall0, time.thread_time() - cpu0)

    def commit_one(self: Any, fn: Any) -> Any:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            return original_commit_one(self, fn)
        finally:
            stages.add("inline_commit", time.perf_counter() - wall0, time.thread_time() - cpu0)

    Store._commit_group = commit_group  # type: ignore[method-assign]
    Store._commit_one = commit_one  # type: ignore[method-assign]
    stages.wrap(Exporter, "export_all", "bg:export_all")
    stages.wrap(Exporter, "export_state", "bg:export_state")
    stages.wrap(Exporter, "export_etl_log", "bg:export_etl_log")

    marks = threading.local()
    original_init = Store.__init__
    original_add_hook = Store.add_pre_commit_hook

    def before_commit(conn: Any) -> None:
        marks.wall, marks.cpu = time.perf_counter(), time.thread_time()

    def after_commit(size: int, seconds: float) -> None:
        stages.add("w:COMMIT", time.perf_counter() - marks.wall, time.thread_time() - marks.cpu)
        with stages.lock:
            stages.groups.append(size)

    def add_hook(self: Any, hook: Any) -> None:
        original_add_hook(self, hook)
        # Keep the marker last: it runs right before COMMIT.
        self._hooks.remove(before_commit)
        self._hooks.append(before_commit)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._hooks.append(before_commit)
        self._listeners.insert(0, after_commit)

    Store.__init__ = init  # type: ignore[method-assign]
    Store.add_pre_commit_hook = add_hook  # type: ignore[method-assign]

    original_run_writer = Store._run_writer

    def run_writer(self: Any) -> None:
        with stages.lock:
            stages.writer_tids.append(threading.get_native_id())
        original_run_writer(self)

    Store._run_writer = run_writer  # type: ignore[method-assign]


class _ThreadProfiles:
    """A ``cProfile.Profile`` (thread-CPU clock) in every thread started after :meth:`install`."""

    def __init__(self) -> None:
        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        import cProfile

        def first_event(*_: Any) -> None:
            # threading runs this as the new thread's profile function; replace it with a C
            # profiler of this thread (enable() installs itself for the calling thread only).
            profile = cProfile.Profile(time.thread_time)
            with self._lock:
                self.profiles.append(profile)
            profile.enable()

        threading.setprofile(first_event)
        main = cProfile.Profile(time.thread_time)
        self.profiles.append(main)
        main.enable()

    def dump(self, path: Path) -> None:
        import pstats

        threading.setprofile(None)
        merged: pstats.Stats | None = None
        for profile in list(self.profiles):

            class _Snapshot:
                def create_stats(self, profile: Any = profile) -> None:
                    profile.snapshot_stats()
                    self.stats = profile.stats

            snap = _Snapshot()
            if merged is None:
                merged = pstats.Stats(snap)  # type: ignore[arg-type]
            else:
                merged.add(snap)  # type: ignore[arg-type]
        if merged is not None:
            merged.dump_stats(str(path))


#: Experiments for the profile (``--what-if NAME``): each changes the profiled daemon in memory
#: to show what a suggested fix would buy; none is ever applied to the benchmark's own runs.
WHAT_IF: dict[str, str] = {
    "no-export-loop": "Exporter._remember writes the etl.log marker only when it changed (its "
    "commit no longer schedules the next export)",
    "no-state-export": "Exporter.export_state skipped (no state.json rewrites)",
    "compact-state-json": "state.json encoded without indent (json's C encoder)",
    "switch-interval-1ms": "sys.setswitchinterval(0.001) instead of 5 ms",
}


class _CompactJson:
    """Stands in for ``json`` inside ``evidenceos.store.export`` (what-if compact-state-json)."""

    @staticmethod
    def dumps(doc: Any, **kwargs: Any) -> str:
        kwargs.pop("indent", None)
        return json.dumps(doc, separators=(",", ":"), **kwargs)


def _remember_only_changes(exporter: Any) -> None:
    """What-if no-export-loop: ``Exporter._remember`` skips its write (and so the commit that
    schedules the next export) when the stored etl.log marker already says the same."""
    remember = exporter._remember

    def remember_if_changed(self: Any, path: Path, size: int) -> None:
        value = f"{size}:{path.stat().st_size if path.exists() else 0}"
        with self._store.read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = 'etl_log_mirror'").get
        if stored != value:
            remember(self, path, size)

    exporter._remember = remember_if_changed


def _apply_what_if(names: Sequence[str]) -> None:
    import evidenceos.store.export as export

    for name in names:
        if name == "no-export-loop":
            _remember_only_changes(export.Exporter)
        elif name == "no-state-export":
            export.Exporter.export_state = (  # type: ignore[method-assign]
                lambda self: self._data_dir / export.STATE_JSON
            )
        elif name == "compact-state-json":
            setattr(export, "json", _CompactJson)  # noqa: B010 - replaces the module's import
        elif name == "switch-interval-1ms":
            sys.setswitchinterval(0.001)
        else:
            raise SystemExit(f"unknown --what-if {name!r}; choose from {sorted(WHAT_IF)}")


def profiled_daemon_main(
    stages_out: Path, cprofile: bool, args: list[str], what_if: Sequence[str] = ()
) -> None:
    """Run ``evidenceosd ARGS`` in this process with stage timers; write them at exit (and on
    SIGUSR1). ``what_if`` names experiments from :data:`WHAT_IF` to apply first."""
    _apply_what_if(what_if)
    stages = _Stages()
    _instrument(stages)
    profiles = _ThreadProfiles() if cprofile else None
    if profiles is not None:
        profiles.install()
    from evidenceos.cli.daemon import main

    seq = [0]

    def write_stages(*_: Any) -> None:
        seq[0] += 1
        doc = stages.to_json()
        doc["seq"] = seq[0]
        tmp = stages_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, stages_out)

    signal.signal(signal.SIGUSR1, write_stages)
    try:
        main(args=args, prog_name="evidenceosd", standalone_mode=False)
    finally:
        write_stages()
        if profiles is not None:
            profiles.dump(stages_out.with_suffix(".pstats"))


# =============================================================================================
# Profile report

#: (stage, label, per) rows: per "execute" divides by ExecuteClaimV2 calls, "group" by groups.
PROFILE_ROWS: tuple[tuple[str, str], ...] = (
    ("server:ExecuteClaimV2", "server: interceptors + handler (call in, reply built)"),
    ("auth_and_probe", "  auth interceptor + probe detector"),
    ("servicer:ExecuteClaimV2", "  servicer ExecuteClaimV2"),
    ("idempotency_key", "    idempotency key (serialize + sha256)"),
    ("execute_claim_v2", "    ExecutionService.execute_claim_v2"),
    ("idempotency_lookup", "      idempotency lookup (in the request's read snapshot)"),
    ("get_claim", "      get_claim (all calls: read + writer)"),
    ("verify_executable", "      verify executable (pins)"),
    ("nullspec", "      nullspec lookup"),
    ("module_lookup", "      compiled-module lookup"),
    ("holdout_resolve", "      holdout resolve (synthetic)"),
    ("sandbox_execute", "      sandbox execute (wasmtime guest)"),
    ("settle_total", "      settle (e-value, PLN burn, decide, store write)"),
    ("sandbox_pln_burn", "        PLN padding burn (wasmtime)"),
    ("compute_e_value", "        e-value"),
    ("decide_and_encode_capsule", "        decide + build and encode the capsule"),
    ("build_capsule", "          build_capsule"),
    ("encode_capsule", "          encode_capsule (RFC 8785)"),
    ("store_write_wait", "        store.write: queue + group + wake-up"),
    ("inline_commit", "          committed on the caller's thread (writer idle)"),
    ("writer_group", "writer thread: groups (per execute)"),
    ("w:log_append_encoded", "  log append (leaf/node rows of the encoded capsule)"),
    ("w:log_append", "  log append of an entry (encode_entry + rows)"),
    ("w:log_encode_entry", "    encode_entry"),
    ("w:publish", "  publish (leaf, capsule row, credit, claim, idempotency)"),
    ("w:put_capsule", "    put_capsule"),
    ("put_claim", "  put_claim (all calls)"),
    ("w:idempotency_record", "  idempotency record"),
    ("w:settle_pools", "  settle pools"),
    ("w:charge_credit", "  charge credit"),
    ("w:sign_head_hook", "  sign head (pre-commit hook)"),
    ("w:COMMIT", "  COMMIT (WAL write + fsync)"),
    ("bg:export_all", "background: export_all (etl.log + state.json)"),
    ("bg:export_state", "  export_state (state.json)"),
    ("bg:export_etl_log", "  export_etl_log"),
)


@dataclass(slots=True)
class ProfileReport:
    executes: int
    per_execute: dict[str, tuple[float, float]] = field(default_factory=dict)
    """stage -> (wall µs, thread-CPU µs) per ExecuteClaimV2 of the throughput burst"""
    mean_group: float = 0.0
    daemon_cpu_us: float = 0.0
    echo_cpu_us: float = 0.0
    client_cpu_us: float = 0.0
    rate: float = 0.0
    writer_cpu_us: float = 0.0
    """store-writer thread, from its schedstat over the burst: on CPU"""
    writer_runqueue_us: float = 0.0
    """runnable, waiting for a CPU (other processes, other threads)"""
    writer_blocked_us: float = 0.0
    """neither: waiting for the GIL, for fsync, or idle (burst wall minus the two above)"""
    process_runqueue_us: float = 0.0
    lifecycle: dict[str, tuple[float, float]] = field(default_factory=dict)
    """lifecycle RPC -> (server wall µs, server CPU µs) per call, single caller"""
    lifecycle_total_ms: list[float] = field(default_factory=list)
    idle_cpu_share: float = 0.0
    """daemon CPU ÷ wall over :data:`IDLE_WINDOW_S` without any RPC, after the lifecycles"""
    idle_exports_per_s: float = 0.0
    idle_commits_per_s: float = 0.0
    what_if: tuple[str, ...] = ()
    pstats_path: Path | None = None

    def cpu(self, *stages: str) -> float:
        return sum(self.per_execute.get(stage, (0.0, 0.0))[1] for stage in stages)

    def wall(self, *stages: str) -> float:
        return sum(self.per_execute.get(stage, (0.0, 0.0))[0] for stage in stages)

    def summary(self) -> dict[str, float]:
        """Per-ExecuteClaimV2 microseconds by area (thread CPU unless named wall)."""
        handler = self.cpu("server:ExecuteClaimV2")
        writer = self.cpu("writer_group")
        export = self.cpu("bg:export_all")
        return {
            "daemon_cpu_us": self.daemon_cpu_us,
            "handler_cpu_us": handler,
            "sandbox_cpu_us": self.cpu("sandbox_execute", "sandbox_pln_burn"),
            "sandbox_wall_us": self.wall("sandbox_execute", "sandbox_pln_burn"),
            "writer_cpu_us": writer,
            "capsule_encode_cpu_us": self.cpu("build_capsule", "encode_capsule"),
            "commit_wall_us": self.wall("w:COMMIT"),
            "state_export_cpu_us": export,
            "grpc_and_untracked_cpu_us": self.daemon_cpu_us - handler - writer - export,
            "echo_server_cpu_us": self.echo_cpu_us,
            "writer_on_cpu_us": self.writer_cpu_us,
            "writer_runqueue_us": self.writer_runqueue_us,
            "writer_blocked_us": self.writer_blocked_us,
        }

    def idle(self) -> dict[str, tuple[float, str]]:
        return {
            "idle_cpu_share": (self.idle_cpu_share, "ratio"),
            "idle_exports_per_s": (self.idle_exports_per_s, "1/s"),
            "idle_commits_per_s": (self.idle_commits_per_s, "1/s"),
        }


def _diff(after: Mapping[str, Any], before: Mapping[str, Any], key: str) -> dict[str, float]:
    b = before.get(key, {})
    return {k: v - b.get(k, 0) for k, v in after.get(key, {}).items()}


def profile_run(
    work_dir: Path,
    claims: int,
    lifecycles: int,
    callers: int = CALLERS,
    *,
    cprofile: bool = False,
    what_if: Sequence[str] = (),
    progress: Callable[[str], None] = print,
) -> ProfileReport:
    """Execute ``claims`` claims with ``callers`` threads on an instrumented daemon, then a few
    single-caller lifecycles; per-call stage times of each part."""
    data_dir = work_dir / "profiled-data"
    snapshots = work_dir / "stages"
    snapshots.mkdir(parents=True, exist_ok=True)
    out = snapshots / "stages.json"
    daemon = start_daemon(data_dir, profile_out=out, cprofile=cprofile, what_if=what_if)
    client = ClientProcess()
    echo = start_echo_server()
    try:
        target = daemon.wait_serving()
        echo_target = echo.wait_serving()
        client.call(op="prepare", target=target, count=claims, prefix="profile")
        wait_idle(daemon.pid)
        signal_snapshot = _StageSnapshots(daemon, out)
        before = signal_snapshot.take()
        (writer_tid,) = before["writer_tids"]
        cpu0 = process_cpu_s(daemon.pid)
        writer0, process0 = schedstat(daemon.pid, writer_tid), schedstat(daemon.pid)
        burst = client.call(op="execute", target=target, callers=callers)
        writer1, process1 = schedstat(daemon.pid, writer_tid), schedstat(daemon.pid)
        wait_idle(daemon.pid)  # the exports the burst triggered: counted like the stages are
        daemon_cpu = process_cpu_s(daemon.pid) - cpu0
        after = signal_snapshot.take()
        echo_cpu0 = process_cpu_s(echo.pid)
        echo_burst = client.call(
            op="echo",
            target=echo_target,
            callers=callers,
            calls=claims * 4,
            payload_bytes=ECHO_PAYLOAD_BYTES,
        )
        echo_cpu = process_cpu_s(echo.pid) - echo_cpu0
        life_before = signal_snapshot.take()
        life = client.call(op="lifecycle", target=target, count=lifecycles, prefix="profile-life")
        wait_idle(daemon.pid)
        life_after = signal_snapshot.take()
        idle_cpu0 = process_cpu_s(daemon.pid)
        time.sleep(IDLE_WINDOW_S)  # no RPCs at all: what does the daemon do by itself?
        idle_cpu = process_cpu_s(daemon.pid) - idle_cpu0
        idle_after = signal_snapshot.take()
    finally:
        client.close()
        stop_all(echo, daemon)
    report = ProfileReport(executes=burst["calls"])
    wall = _diff(after, before, "wall")
    cpu = _diff(after, before, "cpu")
    for stage in wall:
        report.per_execute[stage] = (
            wall[stage] / burst["calls"] * 1e6,
            cpu[stage] / burst["calls"] * 1e6,
        )
    groups = after["groups"][len(before["groups"]) :]
    report.mean_group = sum(groups) / len(groups) if groups else float("nan")
    report.daemon_cpu_us = daemon_cpu / burst["calls"] * 1e6
    report.client_cpu_us = burst["client_cpu_s"] / burst["calls"] * 1e6
    report.echo_cpu_us = echo_cpu / echo_burst["calls"] * 1e6
    report.rate = burst["calls"] / burst["seconds"]
    per_call = 1e6 / burst["calls"]
    report.writer_cpu_us = (writer1[0] - writer0[0]) * per_call
    report.writer_runqueue_us = (writer1[1] - writer0[1]) * per_call
    report.writer_blocked_us = (
        burst["seconds"] * per_call - report.writer_cpu_us - report.writer_runqueue_us
    )
    report.process_runqueue_us = (process1[1] - process0[1]) * per_call
    life_wall = _diff(life_after, life_before, "wall")
    life_cpu = _diff(life_after, life_before, "cpu")
    life_calls = _diff(life_after, life_before, "calls")
    for rpc in LIFECYCLE_RPCS:
        stage = f"server:{rpc}"
        n = life_calls.get(stage, 0)
        if n:
            report.lifecycle[rpc] = (life_wall[stage] / n * 1e6, life_cpu[stage] / n * 1e6)
    for stage in ("sandbox_compile_or_hit", "sandbox_serialize", "store_write_wait", "w:COMMIT"):
        n = life_calls.get(stage, 0)
        if n:
            report.lifecycle[stage] = (life_wall[stage] / n * 1e6, life_cpu[stage] / n * 1e6)
    report.lifecycle_total_ms = [us / 1000 for us in life["timings_us"]["total"]]
    report.idle_cpu_share = idle_cpu / IDLE_WINDOW_S
    idle_calls = _diff(idle_after, life_after, "calls")
    report.idle_exports_per_s = idle_calls.get("bg:export_all", 0) / IDLE_WINDOW_S
    report.idle_commits_per_s = idle_calls.get("w:COMMIT", 0) / IDLE_WINDOW_S
    report.what_if = tuple(what_if)
    pstats_path = out.with_suffix(".pstats")
    report.pstats_path = pstats_path if pstats_path.exists() else None
    progress(
        f"profile: {report.executes} executes at {report.rate:.0f}/s; daemon CPU "
        f"{report.daemon_cpu_us:.0f} us/execute, echo server {report.echo_cpu_us:.0f} us/call"
    )
    return report


class _StageSnapshots:
    """Stage totals of the running profiled daemon, on demand: SIGUSR1 makes it rewrite its
    stages file (see :func:`profiled_daemon_main`)."""

    def __init__(self, daemon: _Server, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self.seq = 0

    def take(self) -> dict[str, Any]:
        self.seq += 1
        os.kill(self.daemon.pid, signal.SIGUSR1)
        deadline = time.perf_counter() + 30.0
        while time.perf_counter() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                doc: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
                if doc.get("seq", 0) >= self.seq:
                    return doc
            time.sleep(0.01)
        raise RuntimeError(f"profiled daemon did not write {self.path} on SIGUSR1")


def print_profile(report: ProfileReport, out: Callable[[str], None] = print) -> None:
    what_if = f" [what-if: {', '.join(report.what_if)}]" if report.what_if else ""
    out(
        f"ExecuteClaimV2 profile{what_if}: {report.executes} executions by {CALLERS} callers "
        f"at {report.rate:.0f}/s, mean commit group {report.mean_group:.1f}"
    )
    out(f"  {'stage (per ExecuteClaimV2)':<58} {'wall us':>9} {'cpu us':>8}")
    for stage, label in PROFILE_ROWS:
        wall, cpu = report.per_execute.get(stage, (0.0, 0.0))
        out(f"  {label:<58} {wall:9.0f} {cpu:8.0f}")
    out(f"  {'daemon process CPU (all threads, /proc)':<58} {'':>9} {report.daemon_cpu_us:8.0f}")
    out(
        f"  {'daemon threads runnable but waiting for a CPU (schedstat)':<58} "
        f"{report.process_runqueue_us:9.0f}"
    )
    out(f"  {'store-writer thread over the burst (schedstat):':<58}")
    out(f"  {'  on CPU':<58} {report.writer_cpu_us:9.0f}")
    out(f"  {'  runnable, waiting for a CPU':<58} {report.writer_runqueue_us:9.0f}")
    out(f"  {'  blocked (GIL, fsync) or idle':<58} {report.writer_blocked_us:9.0f}")
    out(f"  {'echo server process CPU per echo call':<58} {'':>9} {report.echo_cpu_us:8.0f}")
    out(f"  {'client process CPU per execute':<58} {'':>9} {report.client_cpu_us:8.0f}")
    out(
        f"idle daemon (no RPCs for {IDLE_WINDOW_S:g} s): {report.idle_cpu_share:.0%} of a CPU, "
        f"{report.idle_exports_per_s:.1f} exports/s, {report.idle_commits_per_s:.1f} commits/s"
    )
    if report.lifecycle_total_ms:
        out(
            f"single-caller lifecycle (client side, {len(report.lifecycle_total_ms)} runs): "
            f"p50 {percentile(report.lifecycle_total_ms, 0.5):.1f} ms, "
            f"p99 {percentile(report.lifecycle_total_ms, 0.99):.1f} ms"
        )
    if report.lifecycle:
        out("single-caller lifecycle, server side (interceptors + handler) per call:")
        for name, (wall, cpu) in report.lifecycle.items():
            out(f"  {name:<58} {wall:9.0f} {cpu:8.0f}")
    if report.pstats_path is not None:
        out(f"per-thread cProfile (thread CPU) of the whole daemon run: {report.pstats_path}")


# =============================================================================================
# The benchmark


@dataclass(frozen=True, slots=True)
class _Trial:
    execute_rate: float
    echo_rate: float
    execute_latencies_us: list[float]
    echo_latencies_us: list[float]
    daemon_cpu_us: float
    echo_cpu_us: float
    client_execute_cpu_us: float
    client_echo_cpu_us: float
    prepare_s: float
    sizes: dict[str, int]


def _metric(samples: Mapping[str, float], name: str) -> float:
    for key in (name + "_total", name):
        if key in samples:
            return samples[key]
    return float("nan")


def _ok_executions(samples: Mapping[str, float]) -> float:
    return sum(
        value
        for key, value in samples.items()
        if key.startswith("evidenceos_rpc_requests")
        and "ExecuteClaimV2" in key
        and 'code="OK"' in key
    )


@dataclass(slots=True)
class _DaemonStats:
    """What one daemon's metrics and database say once it has served its part of the run."""

    compiles: float = 0.0
    artefact_loads: float = 0.0
    cache_hits: float = 0.0
    executions_ok: float = 0.0
    artefact_rows: int = 0


def _collect(daemon: _Server, data_dir: Path) -> _DaemonStats:
    """Scrape ``daemon`` (still serving), stop it, count its stored compiled artefacts."""
    assert daemon.serving is not None
    samples = scrape_metrics(int(daemon.serving["metrics_port"]))
    daemon.stop()
    return _DaemonStats(
        compiles=_metric(samples, "evidenceos_sandbox_compiles"),
        artefact_loads=_metric(samples, "evidenceos_sandbox_artefact_loads"),
        cache_hits=_metric(samples, "evidenceos_sandbox_compile_cache_hits"),
        executions_ok=_ok_executions(samples),
        artefact_rows=compiled_module_rows(data_dir),
    )


def _warm_up(client: ClientProcess, target: str, callers: int) -> None:
    """Untimed: channel, the one compile, the daemon's pool threads and first statements."""
    client.call(op="prepare", target=target, count=callers, prefix="warm")
    client.call(op="execute", target=target, callers=callers)


def _one_trial(
    number: int,
    params: ExecuteParams,
    work: Path,
    client: ClientProcess,
    echo: _Server,
    echo_target: str,
) -> tuple[_Trial, _DaemonStats]:
    """A fresh daemon and data dir; prepare, then the execute and echo bursts in turn."""
    data_dir = work / f"trial{number}"
    daemon = start_daemon(data_dir)
    try:
        target = daemon.wait_serving()
        _warm_up(client, target, params.callers)
        prepared = client.call(
            op="prepare", target=target, count=params.claims_per_trial, prefix=f"t{number}"
        )
        wait_idle(daemon.pid)
        runs: dict[str, tuple[dict[str, Any], float]] = {}
        order = ("execute", "echo") if number % 2 == 1 else ("echo", "execute")
        for what in order:
            if what == "execute":
                cpu0 = process_cpu_s(daemon.pid)
                reply = client.call(op="execute", target=target, callers=params.callers)
                # The background exports the burst triggered finish before the echo burst;
                # their CPU counts as the executions' (the daemon does it because of them).
                wait_idle(daemon.pid)
                runs[what] = (reply, process_cpu_s(daemon.pid) - cpu0)
            else:
                cpu0 = process_cpu_s(echo.pid)
                reply = client.call(
                    op="echo",
                    target=echo_target,
                    callers=params.callers,
                    calls=params.echo_calls_per_trial,
                    payload_bytes=ECHO_PAYLOAD_BYTES,
                )
                runs[what] = (reply, process_cpu_s(echo.pid) - cpu0)
        stats = _collect(daemon, data_dir)
    finally:
        daemon.kill()
    ex, ex_cpu = runs["execute"]
    ec, ec_cpu = runs["echo"]
    trial = _Trial(
        execute_rate=ex["calls"] / ex["seconds"],
        echo_rate=ec["calls"] / ec["seconds"],
        execute_latencies_us=ex["latencies_us"],
        echo_latencies_us=ec["latencies_us"],
        daemon_cpu_us=ex_cpu / ex["calls"] * 1e6,
        echo_cpu_us=ec_cpu / ec["calls"] * 1e6,
        client_execute_cpu_us=ex["client_cpu_s"] / ex["calls"] * 1e6,
        client_echo_cpu_us=ec["client_cpu_s"] / ec["calls"] * 1e6,
        prepare_s=prepared["seconds"],
        sizes=dict(ex.get("sizes", {})),
    )
    return trial, stats


def _lifecycles(
    params: ExecuteParams, work: Path, client: ClientProcess
) -> tuple[dict[str, list[float]], _DaemonStats]:
    data_dir = work / "lifecycle"
    daemon = start_daemon(data_dir)
    try:
        target = daemon.wait_serving()
        _warm_up(client, target, params.callers)
        wait_idle(daemon.pid)
        life = client.call(
            op="lifecycle", target=target, count=params.lifecycles, prefix="lifecycle"
        )
        stats = _collect(daemon, data_dir)
    finally:
        daemon.kill()
    timings: dict[str, list[float]] = life["timings_us"]
    return timings, stats


def state_export_cost(data_dir: Path, runs: int = 3) -> tuple[int, float, float, int]:
    """(claims, best wall s, its thread-CPU s, bytes) of ``Exporter.export_state`` on a stopped
    daemon's data dir: the rewrite the daemon's exporter runs 0.2 s after every commit group."""
    from evidenceos.store.claims import iter_claims
    from evidenceos.store.db import Store
    from evidenceos.store.export import STATE_JSON, Exporter

    with Store(data_dir) as store:
        with store.read() as conn:
            claims = sum(1 for _ in iter_claims(conn))
        exporter = Exporter(store, data_dir)
        best = (float("inf"), 0.0)
        for _ in range(runs):
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            exporter.export_state()
            best = min(best, (time.perf_counter() - wall0, time.thread_time() - cpu0))
    return claims, best[0], best[1], (data_dir / STATE_JSON).stat().st_size


def run(params: ExecuteParams, tmp_root: Path, progress: Callable[[str], None]) -> BenchResult:
    result = BenchResult(
        "execute",
        params={
            "trials": params.trials,
            "claims_per_trial": params.claims_per_trial,
            "echo_calls_per_trial": params.echo_calls_per_trial,
            "callers": params.callers,
            "lifecycles": params.lifecycles,
            "profile_claims": params.profile_claims,
            "echo_payload_bytes": ECHO_PAYLOAD_BYTES,
            "server_workers": SERVER_WORKERS,
            "daemon_command": " ".join(daemon_command(Path("<data-dir>"))),
            "daemon_env": DAEMON_ENV,
            "guest": f"legacy: oracle_query({QUERY_BYTES} bytes), emit 1 byte",
        },
    )
    work = tmp_root / "execute"
    trials: list[_Trial] = []
    daemons: list[_DaemonStats] = []
    echo = start_echo_server()
    client = ClientProcess()
    try:
        echo_target = echo.wait_serving()
        client.call(  # warm-up: channel, the echo server's threads
            op="echo",
            target=echo_target,
            callers=params.callers,
            calls=params.callers * 8,
            payload_bytes=ECHO_PAYLOAD_BYTES,
        )
        for number in range(1, params.trials + 1):
            trial, stats = _one_trial(number, params, work, client, echo, echo_target)
            trials.append(trial)
            daemons.append(stats)
            progress(
                f"execute trial {number}/{params.trials}: {trial.execute_rate:.0f} "
                f"executes/s vs echo {trial.echo_rate:.0f} calls/s "
                f"({trial.execute_rate / trial.echo_rate:.3f}); daemon CPU "
                f"{trial.daemon_cpu_us:.0f} us/execute, echo server {trial.echo_cpu_us:.0f} "
                f"us/call; prepare {trial.prepare_s:.1f} s"
            )
        life, stats = _lifecycles(params, work, client)
        daemons.append(stats)
        progress(
            f"lifecycle: p50 {percentile(life['total'], 0.5) / 1e3:.1f} ms, p99 "
            f"{percentile(life['total'], 0.99) / 1e3:.1f} ms over {len(life['total'])}"
        )
    finally:
        client.close()
        stop_all(echo)
    export_claims, export_wall, export_cpu, export_bytes = state_export_cost(
        work / f"trial{params.trials}"
    )

    execute_rates = [t.execute_rate for t in trials]
    echo_rates = [t.echo_rate for t in trials]
    result.checks.append(
        Check(
            name="execute.throughput_vs_echo",
            description=(
                f"ExecuteClaimV2/s, {params.callers} callers in another process ÷ bare grpcio "
                f"echo unary calls/s ({SERVER_WORKERS} server threads, {params.callers} callers)"
            ),
            value=median(execute_rates),
            baseline=median(echo_rates),
            unit="calls/s",
            value_label=f"evidenceosd ExecuteClaimV2, {params.callers} threads",
            baseline_label=f"grpcio echo {ECHO_PAYLOAD_BYTES} B, {params.callers} threads",
            op=">=",
            threshold=THROUGHPUT_TARGET,
            paired_ratio=median([t.execute_rate / t.echo_rate for t in trials]),
        )
    )
    totals_ms = [us / 1000 for us in life["total"]]
    result.checks.append(
        Check(
            name="execute.lifecycle_p99",
            description=(
                "p99 of one caller's five-RPC lifecycle (CreateClaimV2, CommitArtifacts, "
                f"FreezeGates, SealClaim, ExecuteClaimV2) ÷ {LIFECYCLE_P99_BUDGET_MS:g} ms budget"
            ),
            value=percentile(totals_ms, 0.99),
            baseline=LIFECYCLE_P99_BUDGET_MS,
            unit="ms",
            value_label=f"lifecycle p99 over {len(totals_ms)}",
            baseline_label="budget",
            op="<=",
            threshold=1.0,
        )
    )
    compiles = max(d.compiles for d in daemons)
    result.checks.append(
        Check(
            name="execute.compiles_per_module",
            description=(
                "most wasmtime compilations in one daemon (evidenceos_sandbox_compiles) ÷ "
                f"distinct guest modules (1), over the {len(daemons)} daemons of the run"
            ),
            value=compiles,
            baseline=1.0,
            unit="compiles",
            value_label="evidenceos_sandbox_compiles",
            baseline_label="distinct modules",
            op="<=",
            threshold=1.0,
        )
    )
    execute_lat = [v for t in trials for v in t.execute_latencies_us]
    echo_lat = [v for t in trials for v in t.echo_latencies_us]
    info = result.add_info
    for number, trial in enumerate(trials, start=1):
        info(f"execute.trial{number}_ratio", trial.execute_rate / trial.echo_rate, "ratio")
    info("execute.executes_per_s", median(execute_rates), "calls/s")
    info("execute.echo_calls_per_s", median(echo_rates), "calls/s")
    info("execute.execute_latency_p50_ms", percentile(execute_lat, 0.5) / 1e3, "ms")
    info("execute.execute_latency_p99_ms", percentile(execute_lat, 0.99) / 1e3, "ms")
    info("execute.echo_latency_p50_ms", percentile(echo_lat, 0.5) / 1e3, "ms")
    info("execute.echo_latency_p99_ms", percentile(echo_lat, 0.99) / 1e3, "ms")
    info("execute.daemon_cpu_per_execute_us", median([t.daemon_cpu_us for t in trials]), "us")
    info("execute.echo_server_cpu_per_call_us", median([t.echo_cpu_us for t in trials]), "us")
    info(
        "execute.client_cpu_per_execute_us",
        median([t.client_execute_cpu_us for t in trials]),
        "us",
    )
    info("execute.client_cpu_per_echo_us", median([t.client_echo_cpu_us for t in trials]), "us")
    info("execute.prepare_claims_s", median([t.prepare_s for t in trials]), "s")
    for name, size in trials[-1].sizes.items():
        info(f"execute.{name}", float(size), "bytes")
    for rpc in (*LIFECYCLE_RPCS, "total"):
        values = [us / 1000 for us in life[rpc]]
        info(f"lifecycle.{rpc}_p50_ms", percentile(values, 0.5), "ms")
        info(f"lifecycle.{rpc}_p99_ms", percentile(values, 0.99), "ms")
    info("compile.sandbox_compiles_total", sum(d.compiles for d in daemons), "compiles")
    info("compile.daemons", float(len(daemons)), "daemons")
    info("compile.artefact_loads", sum(d.artefact_loads for d in daemons), "loads")
    info("compile.cache_hits", sum(d.cache_hits for d in daemons), "hits")
    info("compile.compiled_modules_rows", float(sum(d.artefact_rows for d in daemons)), "rows")
    info("compile.executions_ok", sum(d.executions_ok for d in daemons), "calls")
    info("state_export.claims", float(export_claims), "claims")
    info("state_export.wall_ms", export_wall * 1e3, "ms")
    info("state_export.cpu_ms", export_cpu * 1e3, "ms")
    info("state_export.bytes_per_claim", export_bytes / max(export_claims, 1), "bytes")

    profile = profile_run(
        work / "profile",
        params.profile_claims,
        min(params.lifecycles, 50),
        params.callers,
        progress=progress,
    )
    print_profile(profile, progress)
    for area, micros in profile.summary().items():
        info(f"profile.{area}", micros, "us")
    for fact, (amount, unit) in profile.idle().items():
        info(f"profile.{fact}", amount, unit)
    info("profile.executes_per_s", profile.rate, "calls/s")
    info("profile.mean_commit_group", profile.mean_group, "jobs")
    return result


# =============================================================================================
# Command line: the benchmark's own processes, and the profile alone


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        client_main()
        return 0
    if argv[:1] == ["echo-server"]:
        parser = argparse.ArgumentParser(prog="python -m ops.bench.execute echo-server")
        parser.add_argument("--workers", type=int, default=SERVER_WORKERS)
        echo_server_main(parser.parse_args(argv[1:]).workers)
        return 0
    if argv[:1] == ["profiled-daemon"]:
        split = argv.index("--")
        parser = argparse.ArgumentParser(prog="python -m ops.bench.execute profiled-daemon")
        parser.add_argument("--stages-out", type=Path, required=True)
        parser.add_argument("--cprofile", action="store_true")
        parser.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IF))
        args = parser.parse_args(argv[1:split])
        profiled_daemon_main(args.stages_out, args.cprofile, argv[split + 1 :], args.what_if)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.execute",
        description="Where an ExecuteClaimV2 spends its time in the daemon (the benchmark "
        "itself runs from `python -m ops.bench.run --only execute`).",
    )
    parser.add_argument("--profile", action="store_true", help="run the stage profile")
    parser.add_argument("--claims", type=int, default=1024, help="executions in the profile")
    parser.add_argument("--lifecycles", type=int, default=50)
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="also cProfile every daemon thread (thread-CPU clock); prints the top functions",
    )
    parser.add_argument("--top", type=int, default=40, help="cProfile rows to print")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=sorted(WHAT_IF),
        help="experiment in the profiled daemon (repeatable): "
        + "; ".join(f"{k}: {v}" for k, v in WHAT_IF.items()),
    )
    parser.add_argument("--tmp-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    if not args.profile:
        parser.error("nothing to do; the benchmark itself runs from `python -m ops.bench.run`")
    with tempfile.TemporaryDirectory(prefix="execute-profile-", dir=args.tmp_dir) as tmp:
        report = profile_run(
            Path(tmp),
            args.claims,
            args.lifecycles,
            cprofile=args.cprofile,
            what_if=args.what_if,
            progress=lambda m: print(f"  .. {m}", flush=True),
        )
        print_profile(report)
        if report.pstats_path is not None:
            import pstats

            stats = pstats.Stats(str(report.pstats_path))
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
