"""Run the EvidenceOS benchmarks: ``python -m ops.bench.run [--quick] [--only NAME] ...``.

Benchmarks: ``appends`` (durable appends vs raw SQLite commits, group commit), ``proofs``
(proof time at a large vs a small log), ``restart`` (spawn-to-Health and RSS of ``evidenceosd``
on a large data dir), ``execute`` (ExecuteClaimV2/s with 32 callers vs a bare grpcio echo
server, one caller's five-RPC lifecycle latency, compiles per module). Everything runs in one
temporary directory (``--tmp-dir``, so baselines and measurements share a filesystem) that is
deleted at the end unless ``--keep``.

Prints a table of raw numbers, the baseline each is divided by, the ratio and PASS/FAIL against its
target; ``--json-out`` writes the same as JSON. Exit status is 0 when every benchmark ran (misses
included) unless ``--strict``, which also fails on a missed target; 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from ops.bench import BenchResult, execute, fmt_leaves, log_appends, proofs, restart
from ops.bench._build import BuildCache

BENCHMARKS = ("appends", "proofs", "restart", "execute")


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    small: int
    large: int
    append_trial_s: float
    append_trials: int
    proof_calls: int
    restart_runs: int
    restart_proof_calls: int
    execute: execute.ExecuteParams


def make_plan(quick: bool, sizes: tuple[int, int] | None) -> Plan:
    if quick:
        small, large = sizes or (1_000, 20_000)
        return Plan(
            True, small, large, 0.5, 1, 400, 1, 50, execute.ExecuteParams(1, 128, 1024, 30, 128)
        )
    small, large = sizes or (1_000, 1_000_000)
    return Plan(
        False, small, large, 1.5, 5, 3000, 3, 200, execute.ExecuteParams(5, 512, 4096, 300, 512)
    )


def _sizes(text: str) -> tuple[int, int]:
    try:
        small, large = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected SMALL,LARGE leaf counts, e.g. 1000,1000000"
        ) from None
    if not 2 <= small < large:
        raise argparse.ArgumentTypeError("need 2 <= SMALL < LARGE")
    return small, large


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one trial (< 60 s)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)}); repeat or comma-separate",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where databases are built and measured (default: %(default)s)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="SMALL,LARGE",
        help="leaf counts of the small and large logs (default 1000,1000000; quick 1000,20000)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    chosen = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    args.only = [name for name in BENCHMARKS if name in chosen] if chosen else list(BENCHMARKS)
    return args


def _progress(message: str) -> None:
    print(f"  .. {message}", flush=True)


def _filesystem(path: Path) -> str:
    """Filesystem type and source of the mount holding ``path`` (from /proc/self/mountinfo)."""
    best: tuple[int, str] = (-1, "unknown")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                mount_point = left.split()[4]
                fs_type, source = right.split()[:2]
                resolved = str(path.resolve())
                inside = resolved == mount_point or resolved.startswith(
                    mount_point.rstrip("/") + "/"
                )
                if inside and len(mount_point) > best[0]:
                    best = (len(mount_point), f"{fs_type} on {source} at {mount_point}")
    except OSError:
        pass
    return best[1]


def host_facts(tmp_root: Path) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "tmp_dir": str(tmp_root),
        "filesystem": _filesystem(tmp_root),
    }


def _num(value: float, unit: str) -> str:
    if unit in ("s", "ratio", "jobs"):
        text = f"{value:.3g}" if value < 10 else f"{value:.1f}"
    elif value >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}"
    return text if unit == "ratio" else f"{text} {unit}"


def print_report(results: list[BenchResult], plan: Plan, facts: dict[str, Any]) -> None:
    mode = "quick" if plan.quick else "full"
    print()
    print(
        f"EvidenceOS benchmarks ({mode}; small log {fmt_leaves(plan.small)}, large log "
        f"{fmt_leaves(plan.large)} leaves) — {facts['filesystem']}, {facts['cpus']} CPUs, "
        f"SQLite {facts['sqlite']}, Python {facts['python']}"
    )
    header = f"{'check':<28} {'value':>14} {'baseline':>14} {'ratio':>7} {'target':>7}  result"
    print(header)
    print("-" * len(header))
    for result in results:
        for check in result.checks:
            print(
                f"{check.name:<28} {_num(check.value, check.unit):>14} "
                f"{_num(check.baseline, check.unit):>14} {check.ratio:>7.3f} "
                f"{check.op + ' ' + format(check.threshold, 'g'):>7}  "
                f"{'PASS' if check.passed else 'FAIL'}"
            )
    print()
    for result in results:
        for check in result.checks:
            print(f"  {check.name}: {check.description}")
            print(f"      value = {check.value_label}; baseline = {check.baseline_label}")
            if check.paired_ratio is not None:
                print("      ratio = median of per-trial ratios (trials interleaved)")
    print()
    print("raw numbers")
    for result in results:
        for info in result.info:
            print(f"  {info.name:<44} {_num(info.value, info.unit):>16}")
        print(f"  {result.name + ' wall time':<44} {_num(result.seconds, 's'):>16}")
    if plan.quick:
        print("\nquick mode: sizes and trials are too small for the ratios to judge the targets")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.quick, args.sizes)
    args.tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="evidenceos-bench-", dir=args.tmp_dir))
    facts = host_facts(tmp_root)
    started_at = datetime.datetime.now(datetime.UTC)
    print(
        f"running {', '.join(args.only)} ({'quick' if plan.quick else 'full'}) in {tmp_root}",
        flush=True,
    )
    results: list[BenchResult] = []
    crashed: list[str] = []
    cache = BuildCache(tmp_root / "logs")
    try:
        for name in args.only:
            print(f"[{name}]", flush=True)
            began = time.perf_counter()
            try:
                result = _run_one(name, plan, tmp_root, cache)
            except Exception:  # noqa: BLE001 - printed; the other benchmarks still run
                traceback.print_exc()
                crashed.append(name)
                continue
            result.seconds = time.perf_counter() - began
            results.append(result)
    finally:
        if args.keep:
            print(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    if cache.reports:
        build = BenchResult("build")
        for report in cache.reports:
            label = fmt_leaves(report.leaves)
            build.add_info(f"build.{label}_seconds", report.seconds, "s")
            build.add_info(f"build.{label}_db_mb", report.db_bytes / 1e6, "MB")
            build.seconds += report.seconds
        results.append(build)
    print_report(results, plan, facts)
    all_passed = all(c.passed for r in results for c in r.checks)
    if args.json_out is not None:
        doc = {
            "started_at": started_at.isoformat(timespec="seconds"),
            "mode": "quick" if plan.quick else "full",
            "plan": {k: _plain(getattr(plan, k)) for k in plan.__dataclass_fields__},
            "host": facts,
            "benchmarks": [r.as_dict() for r in results],
            "crashed": crashed,
            "all_passed": all_passed and not crashed,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    if crashed:
        print(f"\nbenchmark(s) crashed: {', '.join(crashed)}", file=sys.stderr)
        return 2
    if args.strict and not all_passed:
        return 1
    return 0


def _plain(value: Any) -> Any:
    """Plan values for JSON (nested parameter dataclasses become dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _run_one(name: str, plan: Plan, tmp_root: Path, cache: BuildCache) -> BenchResult:
    if name == "appends":
        return log_appends.run(
            log_appends.AppendParams(plan.append_trial_s, plan.append_trials), tmp_root, _progress
        )
    if name == "proofs":
        return proofs.run(
            proofs.ProofParams(plan.small, plan.large, plan.proof_calls), cache, _progress
        )
    if name == "restart":
        return restart.run(
            restart.RestartParams(
                plan.small, plan.large, plan.restart_runs, plan.restart_proof_calls
            ),
            cache,
            _progress,
        )
    if name == "execute":
        return execute.run(plan.execute, tmp_root, _progress)
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
