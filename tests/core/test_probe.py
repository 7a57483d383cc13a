"""Probe detector (spec 30 §8, scenario 34; spec 60 §1.3 F)."""

from __future__ import annotations

import pytest

from evidenceos.core.probe import (
    MAX_WINDOW_EVENTS,
    ProbeConfig,
    ProbeDetector,
    ProbeFrozen,
    ProbeThresholds,
    ProbeThrottled,
    ProbeVerdict,
)
from evidenceos.errors import Code

UNIT = ProbeConfig(
    window_ms=100,
    throttle=ProbeThresholds(3, 3, 2),
    escalate=ProbeThresholds(5, 5, 3),
    freeze=ProbeThresholds(7, 7, 4),
)


def test_verdicts_climb_with_the_thresholds() -> None:
    detector = ProbeDetector(UNIT)
    verdicts = [detector.observe("p", "op", "t1", "a", now_ms=t).verdict for t in range(1, 8)]
    assert verdicts == [
        ProbeVerdict.CLEAN,
        ProbeVerdict.CLEAN,
        ProbeVerdict.THROTTLE,
        ProbeVerdict.THROTTLE,
        ProbeVerdict.ESCALATE,
        ProbeVerdict.ESCALATE,
        ProbeVerdict.FREEZE,
    ]


def test_the_window_slides_and_the_operation_window_is_separate() -> None:
    detector = ProbeDetector(UNIT)
    for t in (1, 2, 3):
        detector.observe("p", "op", "t1", "a", now_ms=t)
    later = detector.observe("p", "op", "t1", "a", now_ms=500)
    assert later.verdict is ProbeVerdict.CLEAN
    assert later.snapshot.total == 1
    # Events at exactly now - window are dropped (``at <= now - window``).
    detector.observe("q", "op", "t1", "a", now_ms=0)
    assert detector.observe("q", "op", "t1", "a", now_ms=100).snapshot.total == 1


def test_distinct_values_are_counted() -> None:
    detector = ProbeDetector(UNIT)
    snapshots = [
        detector.observe("p", "op", "t1", semantic, now_ms=1).snapshot for semantic in "abc"
    ]
    assert snapshots[-1].unique_semantic == 3
    assert snapshots[-1].distinct_topics == 1
    topics = [detector.observe("r", "op", f"t{i}", "a", now_ms=1).verdict for i in range(4)]
    assert topics == [
        ProbeVerdict.CLEAN,
        ProbeVerdict.THROTTLE,
        ProbeVerdict.ESCALATE,
        ProbeVerdict.FREEZE,
    ]


def test_principals_are_independent() -> None:
    detector = ProbeDetector(UNIT)
    for t in range(1, 8):
        detector.observe("loud", "op", "t1", "a", now_ms=t)
    assert detector.observe("quiet", "op", "t1", "a", now_ms=8).verdict is ProbeVerdict.CLEAN


def test_memory_is_bounded() -> None:
    detector = ProbeDetector(ProbeConfig(window_ms=10**9))
    for t in range(MAX_WINDOW_EVENTS + 50):
        observation = detector.observe("p", "op", f"t{t}", f"s{t}", now_ms=t)
    assert observation.snapshot.total == MAX_WINDOW_EVENTS
    assert observation.verdict is ProbeVerdict.FREEZE
    idle = ProbeDetector(ProbeConfig(window_ms=10))
    for t in range(3000):
        idle.observe(f"principal-{t}", "op", "t", "s", now_ms=t * 100)
    assert len(idle) < 2 * 1024 + 2, "idle principals are swept"


def test_env_knobs_zero_and_garbage_mean_default() -> None:
    config = ProbeConfig.from_env(
        {
            "EVIDENCEOS_PROBE_WINDOW_MS": "1000",
            "EVIDENCEOS_PROBE_THROTTLE_TOTAL": "0",
            "EVIDENCEOS_PROBE_ESCALATE_DISTINCT_TOPICS": "nope",
            "EVIDENCEOS_PROBE_FREEZE_UNIQUE_SEMANTIC": "99",
            "EVIDENCEOS_PROBE_THROTTLE_RETRY_AFTER_MS": "250",
        }
    )
    default = ProbeConfig()
    assert config.window_ms == 1000
    assert config.throttle == default.throttle
    assert config.escalate == default.escalate
    assert config.freeze == ProbeThresholds(80, 99, 12)
    assert config.throttle_retry_after_ms == 250
    assert default.throttle == ProbeThresholds(20, 10, 4)
    assert default.escalate == ProbeThresholds(40, 20, 8)
    assert default.freeze == ProbeThresholds(80, 40, 12)


def test_refusals_carry_the_reference_texts() -> None:
    throttled = ProbeThrottled(3000)
    assert throttled.code is Code.RESOURCE_EXHAUSTED
    assert throttled.message == "PROBE_THROTTLED: probe_throttle_threshold; retry_after_ms=3000"
    assert throttled.retry_after_ms == 3000
    frozen = ProbeFrozen()
    assert frozen.code is Code.PERMISSION_DENIED
    assert frozen.message == "PROBE_FROZEN: probe_freeze_threshold"


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        ProbeThresholds(0, 1, 1)
