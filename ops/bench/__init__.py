"""Benchmarks for EvidenceOS (``python -m ops.bench.run``).

Every target is a ratio against a baseline measured in the same run, on the same machine and
filesystem, so the numbers mean something on any host. Nothing here is a timed unit test: the
runner reports PASS/FAIL per target and exits 0 unless ``--strict`` is given.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Check:
    """One target: ``value / baseline`` compared with ``threshold``."""

    name: str
    description: str
    value: float
    baseline: float
    unit: str
    value_label: str
    baseline_label: str
    op: Literal[">=", "<="]
    threshold: float
    paired_ratio: float | None = None
    """Median of per-trial ``value / baseline`` ratios, when the two were measured in pairs;
    it is the ratio judged (robust to drift on a shared machine) and may differ a little
    from the ratio of the two medians shown as value and baseline."""

    @property
    def ratio(self) -> float:
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def passed(self) -> bool:
        return self.ratio >= self.threshold if self.op == ">=" else self.ratio <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ratio"] = self.ratio
        doc["passed"] = self.passed
        doc["target"] = f"{self.op} {self.threshold:g}"
        return doc


@dataclass(frozen=True, slots=True)
class Info:
    """A raw number reported without a target (context for the ratios)."""

    name: str
    value: float
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class BenchResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    info: list[Info] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add_info(self, name: str, value: float, unit: str) -> None:
        self.info.append(Info(name, value, unit))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "params": self.params,
            "checks": [c.as_dict() for c in self.checks],
            "info": [i.as_dict() for i in self.info],
        }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty sample."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return float(ordered[rank])


def fmt_leaves(leaves: int) -> str:
    """1000 -> '1k', 1000000 -> '1M', 1500 -> '1500'."""
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if leaves >= factor and leaves % factor == 0:
            return f"{leaves // factor}{suffix}"
    return str(leaves)
