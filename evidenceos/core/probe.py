"""Probe detection: a per-principal behavioural rate limiter (pure).

Sources: spec 30 §8 (windows, thresholds, verdict order, effects, ETL entry shape) and spec 60
§1.3 F, §6.2 (environment knobs, status codes). The detector counts, in a sliding window, the
requests of each principal and of each (principal, operation), and how many distinct semantic
values and topics they carry; the verdict is the strongest threshold reached (checked with
``>=``, freeze first). Refused requests count too, so hammering a throttled principal keeps it
throttled.

Nothing here reads the clock or the environment: callers pass ``now_ms`` and an environment
``Mapping``. Memory is bounded: each window keeps at most :data:`MAX_WINDOW_EVENTS` events (a
window that full is past every default threshold anyway) and idle principals are dropped.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from evidenceos.core.credit import parse_env_positive_u64
from evidenceos.errors import PermissionDenied, ResourceExhausted

__all__ = [
    "MAX_WINDOW_EVENTS",
    "ProbeConfig",
    "ProbeDetector",
    "ProbeFrozen",
    "ProbeObservation",
    "ProbeSnapshot",
    "ProbeThresholds",
    "ProbeThrottled",
    "ProbeVerdict",
]

#: Upper bound of events kept per window; beyond it the oldest are forgotten.
MAX_WINDOW_EVENTS: Final = 4096
#: Sweep idle windows after this many observations.
_SWEEP_EVERY: Final = 1024


class ProbeVerdict(enum.Enum):
    """Strength of the suspicion, weakest first."""

    CLEAN = "CLEAN"
    THROTTLE = "THROTTLE"
    ESCALATE = "ESCALATE"
    FREEZE = "FREEZE"

    @property
    def reason(self) -> str:
        """The reason text of the reference (``probe_<verdict>_threshold``); empty when clean."""
        return "" if self is ProbeVerdict.CLEAN else f"probe_{self.value.lower()}_threshold"


class ProbeThrottled(ResourceExhausted):
    """THROTTLE: RESOURCE_EXHAUSTED ``PROBE_THROTTLED: ...; retry_after_ms=<n>``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(
            f"PROBE_THROTTLED: {ProbeVerdict.THROTTLE.reason}; retry_after_ms={retry_after_ms}"
        )
        self.retry_after_ms = retry_after_ms


class ProbeFrozen(PermissionDenied):
    """FREEZE: PERMISSION_DENIED ``PROBE_FROZEN: probe_freeze_threshold``."""

    def __init__(self) -> None:
        super().__init__(f"PROBE_FROZEN: {ProbeVerdict.FREEZE.reason}")


@dataclass(frozen=True, slots=True)
class ProbeThresholds:
    """One verdict's thresholds; any one reached (``>=``) triggers it."""

    total: int
    unique_semantic: int
    distinct_topics: int

    def __post_init__(self) -> None:
        for value in (self.total, self.unique_semantic, self.distinct_topics):
            if type(value) is not int or value < 1:
                raise ValueError("probe thresholds must be integers >= 1")

    def reached_by(self, snapshot: ProbeSnapshot) -> bool:
        return (
            snapshot.total >= self.total
            or snapshot.unique_semantic >= self.unique_semantic
            or snapshot.distinct_topics >= self.distinct_topics
        )


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Window length, the three threshold sets and the throttle's retry hint (spec 30 §8)."""

    window_ms: int = 30_000
    throttle: ProbeThresholds = field(default_factory=lambda: ProbeThresholds(20, 10, 4))
    escalate: ProbeThresholds = field(default_factory=lambda: ProbeThresholds(40, 20, 8))
    freeze: ProbeThresholds = field(default_factory=lambda: ProbeThresholds(80, 40, 12))
    throttle_retry_after_ms: int = 3_000

    def __post_init__(self) -> None:
        if self.window_ms < 1 or self.throttle_retry_after_ms < 1:
            raise ValueError("probe window and retry-after must be >= 1 ms")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProbeConfig:
        """``EVIDENCEOS_PROBE_*``: positive integers; 0 or garbage means the default."""
        d = cls()

        def knob(name: str, default: int) -> int:
            return parse_env_positive_u64(env, f"EVIDENCEOS_PROBE_{name}", default=default)

        def thresholds(verdict: str, base: ProbeThresholds) -> ProbeThresholds:
            return ProbeThresholds(
                total=knob(f"{verdict}_TOTAL", base.total),
                unique_semantic=knob(f"{verdict}_UNIQUE_SEMANTIC", base.unique_semantic),
                distinct_topics=knob(f"{verdict}_DISTINCT_TOPICS", base.distinct_topics),
            )

        return cls(
            window_ms=knob("WINDOW_MS", d.window_ms),
            throttle=thresholds("THROTTLE", d.throttle),
            escalate=thresholds("ESCALATE", d.escalate),
            freeze=thresholds("FREEZE", d.freeze),
            throttle_retry_after_ms=knob("THROTTLE_RETRY_AFTER_MS", d.throttle_retry_after_ms),
        )

    def verdict_for(self, snapshot: ProbeSnapshot) -> ProbeVerdict:
        """Freeze, then escalate, then throttle; else clean."""
        if self.freeze.reached_by(snapshot):
            return ProbeVerdict.FREEZE
        if self.escalate.reached_by(snapshot):
            return ProbeVerdict.ESCALATE
        if self.throttle.reached_by(snapshot):
            return ProbeVerdict.THROTTLE
        return ProbeVerdict.CLEAN


@dataclass(frozen=True, slots=True)
class ProbeSnapshot:
    """Counts in a window (or the per-metric maximum of two windows)."""

    total: int
    unique_semantic: int
    distinct_topics: int

    def merge(self, other: ProbeSnapshot) -> ProbeSnapshot:
        return ProbeSnapshot(
            max(self.total, other.total),
            max(self.unique_semantic, other.unique_semantic),
            max(self.distinct_topics, other.distinct_topics),
        )


@dataclass(frozen=True, slots=True)
class ProbeObservation:
    """What one observation concluded."""

    verdict: ProbeVerdict
    snapshot: ProbeSnapshot


class _Window:
    """Events of one key in time order, with running counts of their values."""

    __slots__ = ("events", "semantics", "topics")

    def __init__(self) -> None:
        self.events: deque[tuple[int, str, str]] = deque()
        self.semantics: Counter[str] = Counter()
        self.topics: Counter[str] = Counter()

    def _drop_oldest(self) -> None:
        _, topic, semantic = self.events.popleft()
        for counter, value in ((self.topics, topic), (self.semantics, semantic)):
            counter[value] -= 1
            if counter[value] == 0:
                del counter[value]

    def expire(self, cutoff_ms: int) -> None:
        """Forget events at or before ``cutoff_ms`` (``at <= now - window``)."""
        while self.events and self.events[0][0] <= cutoff_ms:
            self._drop_oldest()

    def add(self, at_ms: int, topic: str, semantic: str) -> None:
        self.events.append((at_ms, topic, semantic))
        self.topics[topic] += 1
        self.semantics[semantic] += 1
        while len(self.events) > MAX_WINDOW_EVENTS:
            self._drop_oldest()

    def snapshot(self) -> ProbeSnapshot:
        return ProbeSnapshot(len(self.events), len(self.semantics), len(self.topics))


class ProbeDetector:
    """Sliding windows per principal and per (principal, operation); thread-safe, in memory."""

    __slots__ = ("_config", "_lock", "_observations", "_windows")

    def __init__(self, config: ProbeConfig | None = None) -> None:
        self._config = config if config is not None else ProbeConfig()
        self._windows: dict[tuple[str, str | None], _Window] = {}
        self._lock = threading.Lock()
        self._observations = 0

    @property
    def config(self) -> ProbeConfig:
        return self._config

    def observe(
        self, principal_id: str, operation_id: str, topic: str, semantic: str, *, now_ms: int
    ) -> ProbeObservation:
        """Record one request and return the verdict it earns (spec 30 §8)."""
        cutoff = now_ms - self._config.window_ms
        with self._lock:
            self._observations += 1
            if self._observations % _SWEEP_EVERY == 0:
                self._sweep(cutoff)
            snapshot = ProbeSnapshot(0, 0, 0)
            for key in ((principal_id, None), (principal_id, operation_id)):
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = _Window()
                window.expire(cutoff)
                window.add(now_ms, topic, semantic)
                snapshot = snapshot.merge(window.snapshot())
        return ProbeObservation(self._config.verdict_for(snapshot), snapshot)

    def _sweep(self, cutoff_ms: int) -> None:
        for key in list(self._windows):
            window = self._windows[key]
            window.expire(cutoff_ms)
            if not window.events:
                del self._windows[key]

    def __len__(self) -> int:
        """Number of live windows (for tests of the memory bound)."""
        with self._lock:
            return len(self._windows)
