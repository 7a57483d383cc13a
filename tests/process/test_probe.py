"""Probe detection over gRPC with the daemon's default thresholds (spec 30 §8, scenario 35;
spec 60 §6.2, scenario 42).

One agent creates claims on ever new topics (distinct semantic hashes): requests 1 to 3 pass,
4 to 7 are throttled (RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer), 8 to 11 pass with an
ESCALATE ``probe_event`` in the log, and from 12 on the agent is frozen (PERMISSION_DENIED with a
FREEZE ``probe_event``). Another agent is unaffected. On an open listener (every caller is
``anonymous``) the detector is off (docs/decisions.md D-S12).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.claims import create_request, query, write_epoch_config
from tests.support.daemon import DaemonPool, DaemonProcess

pytestmark = pytest.mark.process

T = 10.0
THROTTLED = "PROBE_THROTTLED: probe_throttle_threshold; retry_after_ms=3000"
FROZEN = "PROBE_FROZEN: probe_freeze_threshold"


def start(daemons: DaemonPool, data_dir: Path, extra_args: list[str]) -> DaemonProcess:
    data_dir.mkdir(parents=True)
    write_epoch_config(data_dir)
    return daemons.start(
        data_dir,
        extra_args=["--insecure-synthetic-holdout", *extra_args],
        env={  # room for every claim in the one synthetic holdout's pool
            "EVIDENCEOS_DEFAULT_HOLDOUT_K_BITS_BUDGET": "100000",
            "EVIDENCEOS_DEFAULT_HOLDOUT_ACCESS_CREDIT_BUDGET": "100000",
        },
    )


def create(daemon: DaemonProcess, n: int, token: str | None) -> tuple[str, str, dict[str, str]]:
    """CreateClaimV2 on a new topic; (status name, details, trailing metadata)."""
    request = create_request(f"probe-{n}", holdout_ref="synthetic-probe")
    request.signals.semantic_hash = hashlib.sha256(f"question {n}".encode()).digest()
    metadata: tuple[tuple[str, str | bytes], ...] = (("x-request-id", f"probe-{token}-{n}"),)
    if token is not None:
        metadata += (("authorization", f"Bearer {token}"),)
    try:
        daemon.v2.CreateClaimV2.with_call(request, metadata=metadata, timeout=T)
    except grpc.RpcError as exc:
        failed: Any = exc
        trailers = dict(failed.trailing_metadata() or ())
        return failed.code().name, str(failed.details()), trailers
    return "OK", "", {}


def probe_events(data_dir: Path) -> list[dict[str, Any]]:
    rows = query(data_dir, "SELECT payload FROM log_leaves WHERE kind = 'probe_event'")
    return [json.loads(bytes(payload)) for (payload,) in rows]


def test_throttle_then_escalate_then_freeze(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    daemon = start(daemons, data_dir, ["--agent-tokens", "prober,bystander"])
    outcomes = [create(daemon, n, "prober") for n in range(1, 15)]
    codes = [code for code, _, _ in outcomes]
    assert codes == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 4 + ["OK"] * 4 + ["PERMISSION_DENIED"] * 3
    for code, details, trailers in outcomes:
        if code == "RESOURCE_EXHAUSTED":
            assert details == THROTTLED
            assert trailers.get("retry-after-ms") == "3000"
        elif code == "PERMISSION_DENIED":
            assert details == FROZEN

    # Another principal has its own window.
    assert create(daemon, 100, "bystander")[0] == "OK"

    events = probe_events(data_dir)
    prober = hashlib.sha256(b"bearer:" + hashlib.sha256(b"prober").hexdigest().encode())
    assert [e["action"] for e in events] == ["ESCALATE", "FREEZE"]  # one per window and action
    for event in events:
        assert set(event) == {
            "kind",
            "operation_id",
            "principal_hash",
            "topic_hash",
            "reason",
            "action",
        }
        assert event["operation_id"] == "CreateClaimV2"
        assert event["principal_hash"] == prober.hexdigest()
        assert event["reason"] == f"probe_{event['action'].lower()}_threshold"
    verdicts = [e["verdict"] for e in daemon.events("probe_verdict")]
    assert verdicts == ["THROTTLE"] * 4 + ["ESCALATE"] * 4 + ["FREEZE"] * 3


def test_open_listener_has_no_probe_detector(daemons: DaemonPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    daemon = start(daemons, data_dir, [])
    assert [create(daemon, n, None)[0] for n in range(1, 15)] == ["OK"] * 14
    assert probe_events(data_dir) == []
