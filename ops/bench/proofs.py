"""Inclusion and consistency proof time at a large log ÷ at a small one (1M vs 1k leaves).

Both logs are built by :mod:`ops.bench._build` (same rows and head the daemon would store) and
read through the real ``Store`` and ``LogService`` in this process — the code path an RPC takes,
minus gRPC. Per call: one read transaction, the latest head, and O(log n) indexed node reads.

Each call is timed on its own; rounds alternate between the two sizes so drift hits both alike.
The reported per-call figure is the median; the target is large ÷ small ≤ 3 for each proof kind
(a proof is O(log n): 20 levels vs 10, plus one or two more B-tree levels per read).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from evidenceos.core import merkle
from evidenceos.service.log_service import LogService
from evidenceos.store.db import Store
from ops.bench import BenchResult, Check, fmt_leaves, median, percentile
from ops.bench._build import BuildCache

SEED = 20240601


@dataclass(frozen=True, slots=True)
class ProofParams:
    small: int
    large: int
    calls: int
    rounds: int = 5


def _inclusion_targets(rng: random.Random, size: int, count: int) -> list[int]:
    return [rng.randrange(size) for _ in range(count)]


def _consistency_targets(rng: random.Random, size: int, count: int) -> list[tuple[int, int]]:
    pairs = []
    for _ in range(count):
        second = rng.randint(2, size)
        pairs.append((rng.randint(1, second - 1), second))
    return pairs


class _Target:
    """One built log opened read-only through the service, with its precomputed call list."""

    def __init__(self, cache: BuildCache, leaves: int, calls: int, rng: random.Random) -> None:
        report = cache.get(leaves)
        self.leaves = leaves
        self.store = Store(report.data_dir)
        self.service = LogService(self.store, None)  # reads only: no keyring, no hook
        self.inclusion = _inclusion_targets(rng, leaves, calls)
        self.consistency = _consistency_targets(rng, leaves, calls)
        self.inclusion_ns: list[int] = []
        self.consistency_ns: list[int] = []
        self._check_proofs(rng)

    def _check_proofs(self, rng: random.Random) -> None:
        """Verify a few proofs so a wrong build can never produce a fast, meaningless number."""
        head = self.service.signed_tree_head()
        for index in _inclusion_targets(rng, self.leaves, 8):
            proof = self.service.inclusion_proof(index)
            merkle.verify_inclusion(
                proof.leaf_hash, index, proof.tree_size, proof.audit_path, head.root_hash
            )
        for first, second in _consistency_targets(rng, self.leaves, 8):
            if not self.service.consistency(first, second).consistent:
                raise RuntimeError(f"consistency {first}->{second} failed on the built log")

    def warm_up(self, calls: int) -> None:
        for index in self.inclusion[:calls]:
            self.service.inclusion_proof(index)
        for first, second in self.consistency[:calls]:
            self.service.consistency(first, second)

    def run_slice(self, start: int, stop: int) -> None:
        inclusion = self.service.inclusion_proof
        consistency = self.service.consistency
        clock = time.perf_counter_ns
        for index in self.inclusion[start:stop]:
            t0 = clock()
            inclusion(index)
            self.inclusion_ns.append(clock() - t0)
        for first, second in self.consistency[start:stop]:
            t0 = clock()
            consistency(first, second)
            self.consistency_ns.append(clock() - t0)

    def close(self) -> None:
        self.store.close()


def run(params: ProofParams, cache: BuildCache, progress: Callable[[str], None]) -> BenchResult:
    result = BenchResult(
        "proofs",
        params={
            "small_leaves": params.small,
            "large_leaves": params.large,
            "calls_per_kind_per_size": params.calls,
            "rounds": params.rounds,
        },
    )
    for leaves in (params.small, params.large):
        started = time.perf_counter()
        report = cache.get(leaves)
        progress(
            f"proofs: log of {leaves} leaves ready ({report.nodes} nodes, "
            f"{report.db_bytes / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)"
        )
    rng = random.Random(SEED)
    targets = [_Target(cache, n, params.calls, rng) for n in (params.small, params.large)]
    try:
        for target in targets:
            target.warm_up(min(200, params.calls))
        step = max(1, params.calls // params.rounds)
        for start in range(0, params.calls, step):
            for target in targets:
                target.run_slice(start, min(params.calls, start + step))
    finally:
        for target in targets:
            target.close()
    small, large = targets
    for kind, label in (("inclusion", "GetInclusionProof"), ("consistency", "consistency")):
        small_ns: list[int] = getattr(small, f"{kind}_ns")
        large_ns: list[int] = getattr(large, f"{kind}_ns")
        small_us = median(small_ns) / 1e3
        large_us = median(large_ns) / 1e3
        result.checks.append(
            Check(
                name=f"proofs.{kind}",
                description=(
                    f"median {kind} proof time at {fmt_leaves(params.large)} leaves ÷ at "
                    f"{fmt_leaves(params.small)} leaves"
                ),
                value=large_us,
                baseline=small_us,
                unit="us/call",
                value_label=f"LogService {label} @ {fmt_leaves(params.large)}",
                baseline_label=f"LogService {label} @ {fmt_leaves(params.small)}",
                op="<=",
                threshold=3.0,
            )
        )
        for target, ns in ((small, small_ns), (large, large_ns)):
            size = fmt_leaves(target.leaves)
            result.add_info(f"proofs.{kind}_{size}_median_us", median(ns) / 1e3, "us")
            result.add_info(f"proofs.{kind}_{size}_p90_us", percentile(ns, 0.9) / 1e3, "us")
            result.add_info(f"proofs.{kind}_{size}_mean_us", sum(ns) / len(ns) / 1e3, "us")
    return result
