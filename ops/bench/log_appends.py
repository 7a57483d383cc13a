"""Durable log appends per second against raw SQLite commits on the same filesystem.

Baseline: one apsw connection, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``/one-row
``INSERT``/``COMMIT`` in a loop (the floor any durable SQLite log pays: one WAL fsync per commit).
The row carries a payload of the same size as the log entries below.

Measured: ``LogService.append_entry`` through the real ``Store`` (an idle writer commits on the
caller's thread, otherwise the writer thread commits groups; leaf row with the subtrees it
completes; pre-commit hook that signs a head when one is due), from a single caller and from 32
threads appending at the same time. Each append gets a distinct entry, built before the slice
(:meth:`_Log.refill`), as the raw loop's payload is: building it is the caller's work.

Within a trial the three modes run in alternating slices of 0.1 s until each has run for the
trial's duration, so all three see the same disk and CPU conditions (other load on a shared
machine comes and goes within seconds); rates are operations over the time spent in each mode.
Each reported rate is the median over trials and each judged ratio the median of the per-trial
ratios.

Targets: single ÷ raw ≥ 0.8; 32 appenders ÷ single ≥ 3 (group commit must pay off).

A phase profile of the single-caller path follows the trials (:func:`profile_single`): the
service's functions are wrapped with timers in this process for one more short run, so every
report says where an append's time goes (COMMIT/fsync, signing, canonical JSON, SQL, the hand-off
between the caller and the writer thread). ``python -m ops.bench.log_appends --profile`` runs it
alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

import evidenceos.core.merkle
import evidenceos.core.sth
import evidenceos.service.log_service
import evidenceos.store.log
from evidenceos.service.log_service import LogService
from evidenceos.store.db import Connection, Store
from evidenceos.store.keys import load_keyring
from ops.bench import BenchResult, Check, median
from ops.bench._build import bench_entry, bench_payload

CONCURRENT_APPENDERS = 32
WARM_UP_COMMITS = 20
FRAME_SAMPLE_COMMITS = 200
ENTRY_POOL = 4096  # entries built before each slice (more than any slice has used here)


@dataclass(frozen=True, slots=True)
class AppendParams:
    trial_seconds: float
    trials: int
    appenders: int = CONCURRENT_APPENDERS
    slice_seconds: float = 0.1


class _Raw:
    """The baseline: one-row WAL + synchronous=FULL commits on a fresh database."""

    def __init__(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.conn = apsw.Connection(str(work_dir / "raw.db"))
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
        )
        self.payload = bench_payload(1_000_000)
        for _ in range(WARM_UP_COMMITS):  # file growth, first WAL frames
            self.commit()

    def commit(self) -> None:
        _raw_commit(self.conn, self.payload)

    def close(self) -> None:
        self.conn.close()


def _raw_commit(conn: apsw.Connection, payload: bytes) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (payload) VALUES (?)", (payload,))
    conn.execute("COMMIT")


def _burst(op: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``op`` back to back for about ``seconds``; (operations, elapsed seconds)."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        op()
        done += 1
        if time.perf_counter() >= deadline:
            return done, time.perf_counter() - started


class _Log:
    """A started log service over a fresh data dir, counting commit groups."""

    def __init__(self, data_dir: Path) -> None:
        self.store = Store(data_dir)
        self.service = LogService(self.store, load_keyring(data_dir, allow_generate=True))
        self.service.start()
        self.groups = 0
        self.store.add_commit_listener(self._count)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._pool: collections.deque[dict[str, object]] = collections.deque()
        for _ in range(WARM_UP_COMMITS):
            self.append()

    def _count(self, size: int, seconds: float) -> None:
        self.groups += 1

    def refill(self) -> None:
        """Build the next ENTRY_POOL entries now, outside the timed slice: building one (a
        SHA-256, a dict) is the caller making its input, not the append being measured."""
        with self._seq_lock:
            while len(self._pool) < ENTRY_POOL:
                self._seq += 1
                self._pool.append(bench_entry(self._seq))

    def next_entry(self) -> dict[str, object]:
        try:
            return self._pool.popleft()  # atomic: appender threads need no lock
        except IndexError:  # a slice outran the pool: build in the timed path (rare)
            with self._seq_lock:
                self._seq += 1
                return bench_entry(self._seq)

    def append(self) -> None:
        self.service.append_entry(self.next_entry())

    def close(self) -> None:
        self.store.close()


class _Appenders:
    """``count`` threads that append back to back during each slice the main thread opens."""

    def __init__(self, log: _Log, count: int) -> None:
        self._log = log
        self._count = count
        self._start = threading.Barrier(count + 1)
        self._end = threading.Barrier(count + 1)
        self._deadline = 0.0
        self._closing = False
        self._done = [0] * count
        self.errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"appender-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, slot: int) -> None:
        while True:
            self._start.wait()
            if self._closing:
                return
            try:
                while time.perf_counter() < self._deadline:
                    self._log.append()
                    self._done[slot] += 1
            except Exception as exc:  # noqa: BLE001 - re-raised by burst(); a dead thread skews
                self.errors.append(exc)
            self._end.wait()

    def burst(self, seconds: float) -> tuple[int, float]:
        """All threads append for about ``seconds``; (appends, seconds until the last returned)."""
        before = sum(self._done)
        started = time.perf_counter()
        self._deadline = started + seconds
        self._start.wait()
        self._end.wait()
        elapsed = time.perf_counter() - started
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} appender(s) failed") from self.errors[0]
        return sum(self._done) - before, elapsed

    def close(self) -> None:
        self._closing = True
        self._start.wait()
        for thread in self._threads:
            thread.join()


@dataclass(slots=True)
class _Tally:
    done: int = 0
    seconds: float = 0.0
    groups: int = 0

    def add(self, done: int, seconds: float, groups: int = 0) -> None:
        self.done += done
        self.seconds += seconds
        self.groups += groups

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else float("nan")

    @property
    def mean_group(self) -> float:
        return self.done / self.groups if self.groups else float("nan")


@dataclass(frozen=True, slots=True)
class TrialRates:
    raw: float
    single: float
    concurrent: float
    single_group: float
    concurrent_group: float


def trial(work_dir: Path, seconds: float, appenders: int, slice_s: float) -> TrialRates:
    """One trial: raw, single-caller and concurrent slices alternate until each mode has run for
    ``seconds``, so all three see the same disk and CPU conditions (other load on the machine
    comes and goes within seconds)."""
    raw = _Raw(work_dir / "raw")
    log = _Log(work_dir / "log")
    workers = _Appenders(log, appenders)
    tallies = {"raw": _Tally(), "single": _Tally(), "concurrent": _Tally()}
    try:
        while min(t.seconds for t in tallies.values()) < seconds:
            tallies["raw"].add(*_burst(raw.commit, slice_s))
            log.refill()
            groups = log.groups
            done, elapsed = _burst(log.append, slice_s)
            tallies["single"].add(done, elapsed, log.groups - groups)
            log.refill()
            groups = log.groups
            done, elapsed = workers.burst(slice_s)
            tallies["concurrent"].add(done, elapsed, log.groups - groups)
    finally:
        workers.close()
        log.close()
        raw.close()
    return TrialRates(
        raw=tallies["raw"].rate,
        single=tallies["single"].rate,
        concurrent=tallies["concurrent"].rate,
        single_group=tallies["single"].mean_group,
        concurrent_group=tallies["concurrent"].mean_group,
    )


class _Timers:
    """Seconds accumulated per phase by wrapped functions (single-threaded use)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._patches: list[tuple[object, str, Any]] = []

    def wrap(self, owner: object, attr: str, phase: str) -> None:
        original = getattr(owner, attr)
        seconds = self.seconds
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[phase] += clock() - started

        self._patches.append((owner, attr, original))
        setattr(owner, attr, timed)

    def restore(self) -> None:
        while self._patches:
            owner, attr, original = self._patches.pop()
            setattr(owner, attr, original)


@contextlib.contextmanager
def _instrumented() -> Iterator[_Timers]:
    timers = _Timers()
    try:
        timers.wrap(Store, "_commit_one", "writer_group")
        timers.wrap(LogService, "_sign_if_due", "sign_hook")
        timers.wrap(evidenceos.service.log_service, "encode_entry", "encode_entry")
        timers.wrap(evidenceos.service.log_service, "sign_tree_head", "sign_tree_head")
        timers.wrap(evidenceos.core.sth, "public_key_bytes", "public_key_derivation")
        timers.wrap(evidenceos.core.merkle, "compute_root", "compute_root")
        timers.wrap(evidenceos.store.log, "append_leaf", "append_leaf")
        yield timers
    finally:
        timers.restore()


PROFILE_PHASES = (
    ("raw_commit", "baseline: raw one-row commit (same time window)"),
    ("call_total", "caller: append_entry() call to return"),
    ("encode_entry", "  encode_entry (RFC 8785), before the write"),
    ("handoff", "  write(): idle check, commit lock"),
    ("writer_group", "  the transaction on the caller's thread, BEGIN to return"),
    ("commit", "    COMMIT (WAL write + fsync)"),
    ("sign_hook", "    pre-commit hook _sign_if_due (a head per 256 leaves)"),
    ("sign_tree_head", "      sign_tree_head (Ed25519 + key id)"),
    ("public_key_derivation", "        public key re-derived for key_id"),
    ("compute_root", "      compute_root (stored-node reads)"),
    ("append_leaf", "    append_leaf (leaf + subtree rows)"),
    ("writer_other", "    BEGIN, data version, other hooks, listeners"),
)


def profile_single(work_dir: Path, seconds: float, slice_s: float = 0.1) -> dict[str, float]:
    """Microseconds per append spent in each phase of one caller's ``append_entry``, with raw
    baseline commits timed in alternating slices (``raw_commit``) for comparison."""
    raw = _Raw(work_dir / "raw")
    raw_tally = _Tally()
    with _instrumented() as timers:
        log = _Log(work_dir / "log")
        marks: dict[str, float] = {}
        frames = _FrameCounter()

        def before_commit(conn: Connection) -> None:  # registered last: runs right before COMMIT
            if frames.wanted and not frames.installed:
                frames.install(conn)
            marks["hooks_done"] = time.perf_counter()

        def after_commit(size: int, elapsed: float) -> None:
            timers.seconds["commit"] += time.perf_counter() - marks["hooks_done"]

        log.store.add_pre_commit_hook(before_commit)
        log.store.add_commit_listener(after_commit)
        try:
            timers.seconds.clear()
            done = 0
            total = 0.0
            while total < seconds:
                raw_tally.add(*_burst(raw.commit, slice_s))
                log.refill()
                appended, elapsed = _burst(log.append, slice_s)
                done += appended
                total += elapsed
            timed = dict(timers.seconds)
            # Untimed tail: count WAL frames per commit (the WAL hook stops auto-checkpoints,
            # which would change the COMMIT timings above).
            frames.wanted = True
            for _ in range(FRAME_SAMPLE_COMMITS + 1):
                log.append()
        finally:
            log.close()
            raw.close()
    phases = {name: value / done * 1e6 for name, value in timed.items()}
    phases["call_total"] = total / done * 1e6
    phases["handoff"] = (
        phases["call_total"] - phases["writer_group"] - phases.get("encode_entry", 0.0)
    )
    phases["writer_other"] = phases["writer_group"] - sum(
        phases.get(name, 0.0) for name in ("commit", "sign_hook", "append_leaf")
    )
    phases["raw_commit"] = 1e6 / raw_tally.rate
    profile = {name: phases.get(name, 0.0) for name, _ in PROFILE_PHASES}
    profile["wal_frames_per_commit"] = frames.per_commit()
    return profile


class _FrameCounter:
    """WAL frames written per commit, from SQLite's WAL hook (which also turns off the automatic
    checkpoint on that connection, so the count is never reset mid-run; profiling only)."""

    def __init__(self) -> None:
        self.wanted = False
        self.installed = False
        self.commits = 0
        self.frames = 0
        self._last: int | None = None

    def install(self, conn: Connection) -> None:
        conn.set_wal_hook(self._hook)
        self.installed = True

    def _hook(self, conn: Connection, name: str, pages: int) -> int:
        if self._last is not None and pages > self._last:
            self.frames += pages - self._last
            self.commits += 1
        self._last = pages
        return apsw.SQLITE_OK

    def per_commit(self) -> float:
        return self.frames / self.commits if self.commits else float("nan")


def raw_frames_per_commit(work_dir: Path, commits: int = FRAME_SAMPLE_COMMITS) -> float:
    """WAL frames per one-row commit of the raw baseline."""
    conn = apsw.Connection(str(work_dir / "frames.db"))
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        frames = _FrameCounter()
        frames.install(conn)
        payload = bench_payload(1_000_000)
        for _ in range(commits):
            _raw_commit(conn, payload)
        return frames.per_commit()
    finally:
        conn.close()


def run(params: AppendParams, tmp_root: Path, progress: Callable[[str], None]) -> BenchResult:
    result = BenchResult(
        "appends",
        params={
            "trial_seconds": params.trial_seconds,
            "trials": params.trials,
            "appenders": params.appenders,
            "slice_seconds": params.slice_seconds,
            "filesystem_dir": str(tmp_root),
        },
    )
    raw: list[float] = []
    single: list[float] = []
    concurrent: list[float] = []
    single_groups: list[float] = []
    concurrent_groups: list[float] = []
    for number in range(params.trials):
        with tempfile.TemporaryDirectory(prefix="appends-", dir=tmp_root) as tmp:
            rates = trial(Path(tmp), params.trial_seconds, params.appenders, params.slice_seconds)
        raw.append(rates.raw)
        single.append(rates.single)
        concurrent.append(rates.concurrent)
        single_groups.append(rates.single_group)
        concurrent_groups.append(rates.concurrent_group)
        progress(
            f"appends trial {number + 1}/{params.trials}: raw {rates.raw:.0f}/s, "
            f"single {rates.single:.0f}/s ({rates.single / rates.raw:.2f}), "
            f"{params.appenders} appenders {rates.concurrent:.0f}/s "
            f"({rates.concurrent / rates.single:.2f}x single, mean group "
            f"{rates.concurrent_group:.1f})"
        )
    raw_rate, single_rate, concurrent_rate = median(raw), median(single), median(concurrent)
    result.checks.append(
        Check(
            name="appends.single_vs_raw",
            description="durable appends/s, one caller ÷ raw apsw WAL+FULL one-row commits/s",
            value=single_rate,
            baseline=raw_rate,
            unit="ops/s",
            value_label="LogService.append_entry, 1 caller",
            baseline_label="apsw WAL synchronous=FULL 1-row commit",
            op=">=",
            threshold=0.8,
            paired_ratio=median([s / r for s, r in zip(single, raw, strict=True)]),
        )
    )
    result.checks.append(
        Check(
            name="appends.group_commit",
            description=f"durable appends/s, {params.appenders} appenders ÷ one caller",
            value=concurrent_rate,
            baseline=single_rate,
            unit="ops/s",
            value_label=f"LogService.append_entry, {params.appenders} threads",
            baseline_label="LogService.append_entry, 1 caller",
            op=">=",
            threshold=3.0,
            paired_ratio=median([c / s for c, s in zip(concurrent, single, strict=True)]),
        )
    )
    result.add_info("appends.raw_commits_per_s", raw_rate, "ops/s")
    result.add_info("appends.single_per_s", single_rate, "ops/s")
    result.add_info("appends.concurrent_per_s", concurrent_rate, "ops/s")
    result.add_info(
        "appends.concurrent_vs_raw",
        median([c / r for c, r in zip(concurrent, raw, strict=True)]),
        "ratio",
    )
    result.add_info("appends.single_mean_group_size", median(single_groups), "jobs")
    result.add_info("appends.concurrent_mean_group_size", median(concurrent_groups), "jobs")
    result.add_info("appends.single_us_per_append", 1e6 / single_rate, "us")
    result.add_info("appends.raw_us_per_commit", 1e6 / raw_rate, "us")
    with tempfile.TemporaryDirectory(prefix="appends-profile-", dir=tmp_root) as tmp:
        profile = profile_single(Path(tmp), params.trial_seconds)
        raw_frames = raw_frames_per_commit(Path(tmp))
    for name, _label in PROFILE_PHASES:
        result.add_info(f"appends.profile.{name}_us", profile[name], "us")
    result.add_info(
        "appends.profile.wal_frames_per_commit", profile["wal_frames_per_commit"], "pages"
    )
    result.add_info("appends.raw_wal_frames_per_commit", raw_frames, "pages")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.log_appends",
        description="Phase profile of one caller's durable appends (microseconds per append).",
    )
    parser.add_argument("--profile", action="store_true", help="run the phase profile")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tmp-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    if not args.profile:
        parser.error("nothing to do; the benchmark itself runs from `python -m ops.bench.run`")
    with tempfile.TemporaryDirectory(prefix="appends-profile-", dir=args.tmp_dir) as tmp:
        profile = profile_single(Path(tmp), args.seconds)
        raw_frames = raw_frames_per_commit(Path(tmp))
    print(f"single-caller append profile in {args.tmp_dir}, microseconds per append:")
    for name, label in PROFILE_PHASES:
        print(f"  {label:<58} {profile[name]:8.1f}")
    print(
        f"WAL frames (pages) per commit: append {profile['wal_frames_per_commit']:.2f}, "
        f"raw baseline {raw_frames:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
