"""The claim record's text, and whether decoding that text gives the record back.

``put_claim`` encodes a record by re-encoding only the fields that changed since the last record
it encoded for the claim, and decides "decodes to itself" from the changed fields alone when the
last record did. Both must always equal the whole computation (``encode_claim``,
``decodes_to_itself``), and "decodes to itself" must only ever be said of a record that does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.claim import Artifact, ClaimRecord, PlnConfig
from evidenceos.core.claim_state import ClaimState
from evidenceos.core.ledger import ConservationLedger, compute_execution_charge
from evidenceos.store import claims as claims_table
from tests.support.claims import same_value, sample_claim_record


class _Text(str):
    __slots__ = ()


_LEDGER = ConservationLedger.create(0.05, k_bits_budget=1024.0, access_credit_budget=1024.0)
#: Candidate values per field: ones that decode to themselves and ones that do not.
_VALUES: dict[str, list[Any]] = {
    "claim_id": [b"\x01" * 32, bytearray(32)],
    "semantic_hash": [None, b"\x02" * 32, bytearray(2)],
    "wasm_sha256": [None, b"\x03" * 32],
    "last_capsule_hash": [None, b"\x04" * 32],
    "claim_name": ["c", 'é\u2028"\\', _Text("sub")],
    "aspec_summary": [None, "lane=x;ok=true", _Text("sub")],
    "incident_reason": [None, "trap"],
    "holdout_len": [128, True, 128.0],
    "reserved_k_bits": [0, 128, 2**70],
    "execution_nonce": [0, 1, 2],
    "metadata_locked": [False, True, 1],
    "alpha": [0.05, 1e-300, float("nan"), 1],
    "state": list(ClaimState),
    "pln": [None, PlnConfig(100, 500), PlnConfig(100, 500, fast=1)],  # type: ignore[arg-type]
    "holdout_pool_principals": [("",), ("", "alice"), ["", "alice"]],
    "artifacts": [(), (Artifact("wasm", b"\x05" * 32),), (Artifact("k", bytearray(2)),)],  # type: ignore[arg-type]
    "dependency_items": [(), (b"\x06" * 32,), [b"\x06"]],
    "oracle_pins": [None, {"a": 1, "b": [2.5, None]}, {"b": 1, "a": 2}, {"t": (1,)}],
    "extra": [{}, {"k": [1, 2.5, None, "x", {"a": True}]}, {"b": 1, "a": 2}, {1: "x"}],
    "dp_epsilon_budget": [None, 1.5, 2, float("inf"), (1.0,)],
    "last_decision": [None, 1, 2],
    "etl_index": [None, 0, 7],
    "ledger": [
        _LEDGER,
        _LEDGER.charge(4.0, "structured_output", {"m": 2.0}).settle_e_value(1.5, "decision"),
        ConservationLedger(alpha=0.05, k_bits_total=1),  # from_json makes it 1.0
        _LEDGER.charge(1.0, "k", {"b": 1, "a": 2}),  # meta order
    ],
}
_CHANGE = st.sampled_from(sorted(_VALUES)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(_VALUES[name]))
)


@pytest.fixture(autouse=True)
def _fresh_encoder_memory() -> Iterator[None]:
    claims_table._encoded.clear()
    yield
    claims_table._encoded.clear()


def _check(record: ClaimRecord) -> None:
    text, exact, _ = claims_table._encode(record)
    assert text == claims_table.encode_claim(record)
    assert exact == record.decodes_to_itself()
    if exact:  # the claim the read path relies on, checked the slow way
        assert same_value(ClaimRecord.from_json(json.loads(text)), record)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_CHANGE, max_size=4), min_size=1, max_size=6), st.integers(0, 10**9))
def test_encoding_only_what_changed_gives_the_whole_encoding(
    steps: list[list[tuple[str, Any]]], seed: int
) -> None:
    record = sample_claim_record(f"claim-{seed}")
    _check(record)
    for changes in steps:
        record = record.evolve(**dict(changes))
        _check(record)


def test_a_dict_changed_in_place_is_encoded_again() -> None:
    """Mutable containers are never trusted by identity (records should not be mutated, but a
    stale text must not come of it)."""
    record = sample_claim_record("in-place").evolve(
        extra={"a": 1}, holdout_pool_principals=["", "x"]
    )
    _check(record)
    record.extra["a"] = 2
    principals: Any = record.holdout_pool_principals
    principals.append("y")
    text, _, _ = claims_table._encode(record.evolve(state=ClaimState.COMMITTED))
    assert '"extra": {"a": 2}' in text and '"holdout_pool_principals": ["", "x", "y"]' in text


def test_the_last_record_of_another_claim_is_never_used() -> None:
    one, two = sample_claim_record("one"), sample_claim_record("two").evolve(alpha=0.25)
    _check(one)
    _check(two)
    assert claims_table._encode(one)[0] != claims_table._encode(two)[0]


def test_decodes_to_itself_field_by_field_is_the_whole_check() -> None:
    record = sample_claim_record("fields")
    assert record.decodes_to_itself()
    for name, values in _VALUES.items():
        for value in values:
            changed = record.evolve(**{name: value})
            assert changed.fields_decode_to_themselves([name]) == changed.decodes_to_itself()


def test_an_executed_ledger_decodes_to_itself() -> None:
    """The execution's ledger events carry their meta in key order, as decoding gives it."""
    charge = compute_execution_charge(2.0, 3, 2.0, 1.0)
    ledger = _LEDGER.charge_execution(charge).settle_e_value(
        2.0, "decision", {"e_value_total": 2.0}
    )
    assert [list(event.meta) for event in ledger.events] == [
        ["dependence_multiplier", "post_canonical_bits", "taxed_k_bits"],
        ["kout_bits"],
        ["e_value", "e_value_total"],
    ]
    _check(sample_claim_record("executed").evolve(ledger=ledger))
    assert sample_claim_record("executed-2").evolve(ledger=ledger).decodes_to_itself()
