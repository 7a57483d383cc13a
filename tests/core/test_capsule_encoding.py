"""``encode_capsule`` writes exactly the RFC 8785 bytes ``encode_entry`` writes (or refuses
alike), on capsule-shaped values full of the numbers a capsule holds."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidenceos.core.canonical import MAX_SAFE_INTEGER, encode_entry
from evidenceos.core.capsule import encode_capsule

_numbers = (
    st.floats()
    | st.floats(min_value=-(2.0**54), max_value=2.0**54).map(float.__floor__).map(float)
    | st.sampled_from([0.0, -0.0, 1e-7, 1e21, 1e16, 2.0**53, -(2.0**53), 9007199254740991.0])
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1])
)
_scalars = st.none() | st.booleans() | st.text(max_size=8) | _numbers
_keys = st.text(max_size=5) | st.sampled_from(["kind", "a", "B", "\u00e9", "ledger", "e_value"])
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=24,
)


def _outcome(encode: Any, value: Any) -> tuple[str, Any]:
    try:
        return "bytes", encode(value)
    except Exception as exc:  # compared, not swallowed
        return "refused", type(exc)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6), st.sampled_from(["capsule", "", None, 3]))
def test_capsule_bytes_are_the_canonical_bytes(body: dict[str, Any], kind: Any) -> None:
    capsule = {**body, "kind": kind}
    assert _outcome(encode_capsule, capsule) == _outcome(encode_entry, capsule)


@pytest.mark.parametrize(
    "capsule",
    [
        {"kind": "capsule", "ledger": {"alpha": 0.05, "k": 4.0, "w": 1.0}, "e": [1.5, 2.0]},
        {"kind": "capsule", "s": "\u00e9\u2028\x00", "t": (1, 2.5, None, True)},
        {"kind": "capsule", "big": 2.0**60, "exp": 1e-9, "nan": float("nan")},
        {"kind": "capsule", "edge": [1e-4, math.nextafter(1e-4, 0), -1e-4, -5e-5, 0.5e-4]},
    ],
)
def test_examples(capsule: dict[str, Any]) -> None:
    assert _outcome(encode_capsule, capsule) == _outcome(encode_entry, capsule)
