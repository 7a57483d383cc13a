"""The paper-conformance transcripts replay exactly on our ledger (spec 30 §9, §11 scenario 11).

The reference runs every fixture through its Rust ledger and the paper's Python kernel and needs
agreement with ``expected`` to 1e-12 on floats and exactly on booleans; DESIGN §5 requires ours to
do the same. We also pin the floats bit for bit to the reference's log-space formulas.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from evidenceos.core.ledger import (
    ConservationLedger,
    alpha_prime,
    certification_barrier,
    replay_transcript,
)
from evidenceos.errors import InvalidArgument
from tests.support.paths import VECTORS_DIR

TOL = 1e-12
FIXTURES = sorted((VECTORS_DIR / "paper_conformance").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_fixtures_are_present():
    assert {p.name for p in FIXTURES} >= {"transcript_primary.json", "transcript_freeze.json"}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_transcript_replays_exactly(path):
    fixture = _load(path)
    expected = fixture["expected"]
    got = replay_transcript(fixture).to_json()
    assert set(got) == set(expected)
    assert got["k_bits_total"] == expected["k_bits_total"]
    assert abs(got["alpha_prime"] - expected["alpha_prime"]) < TOL
    assert abs(got["certification_barrier"] - expected["certification_barrier"]) < TOL
    assert got["frozen_transitions"] == expected["frozen_transitions"]
    assert got["final_frozen"] is expected["final_frozen"]
    # bit for bit what the reference's Rust ledger computes in log space
    assert got["alpha_prime"] == alpha_prime(fixture["alpha"], expected["k_bits_total"])
    assert got["certification_barrier"] == certification_barrier(
        fixture["alpha"], expected["k_bits_total"]
    )


def test_primary_transcript_details():
    replay = replay_transcript(_load(VECTORS_DIR / "paper_conformance/transcript_primary.json"))
    ledger = replay.ledger
    assert ledger.k_bits_total == 6.0  # exactly at the budget: allowed
    assert ledger.access_credit_spent == 5.75
    assert ledger.epsilon_total == pytest.approx(0.03)
    assert ledger.delta_total == pytest.approx(0.001)
    assert ledger.wealth == 1.5 and ledger.w_max == 1.5
    assert [e.kind for e in ledger.events] == [
        "oracle_eval",
        "wealth_update",
        "structured_output_kout",
        "oracle_eval",
    ]
    assert ledger.events[1].meta == {"source": "followup_signal", "e_value": 1.5}
    assert replay.alpha_prime == pytest.approx(0.00078125, abs=TOL)
    assert replay.certification_barrier == pytest.approx(1280.0, abs=TOL)


def test_freeze_transcript_commits_nothing_of_the_overrunning_op():
    replay = replay_transcript(_load(VECTORS_DIR / "paper_conformance/transcript_freeze.json"))
    ledger = replay.ledger
    assert replay.frozen_transitions == (False, True)
    assert ledger.k_bits_total == 2.0 and ledger.access_credit_spent == 2.0
    assert ledger.epsilon_total == 0.005  # the frozen op's epsilon is not committed either
    assert ledger.events[-1].kind == "freeze_budget_exhausted"
    assert ledger.events[-1].meta["overrun_bits"] == pytest.approx(0.2)
    # the reference's Python kernel prints 0.012500000000000006 / 79.99999999999996: within 1e-12
    assert math.isclose(replay.alpha_prime, 0.0125, abs_tol=TOL)
    assert math.isclose(replay.certification_barrier, 80.0, abs_tol=TOL)


def test_replayed_ledger_round_trips_through_json():
    for path in FIXTURES:
        ledger = replay_transcript(_load(path)).ledger
        assert ConservationLedger.from_json(json.loads(json.dumps(ledger.to_json()))) == ledger


def test_unknown_op_is_refused():
    fixture = {
        "alpha": 0.05,
        "transcript": [{"oracle_call": "x", "oracle_output": "y", "op": {"kind": "teleport"}}],
    }
    with pytest.raises(InvalidArgument):
        replay_transcript(fixture)
