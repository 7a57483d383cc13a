"""The canonical encoder's fast path must write exactly what rfc8785 writes (or refuse alike)."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from evidenceos.core.canonical import MAX_SAFE_INTEGER, _fast_path_ok, canonical_json
from evidenceos.errors import InvalidArgument

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
_keys = st.text(max_size=6) | st.sampled_from(["kind", "a", "B", "\u00e9", "\U0001f600", "\ufb33"])
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)


def _reference(value: Any) -> bytes | None:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


@given(_json)
def test_matches_rfc8785_byte_for_byte_or_refuses_alike(value: Any) -> None:
    expected = _reference(value)
    if expected is None:
        with pytest.raises(InvalidArgument):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "x", "s": '\x00\x01\x08\x0c\n\r\t\x1f\x7f"\\/\u2028\u00e9\U0001f600'},
        {"b": 1, "a": [True, False, None, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER], "": {}},
    ],
)
def test_fast_path_is_taken_and_exact(value: Any) -> None:
    assert _fast_path_ok(value)
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"n": MAX_SAFE_INTEGER + 1},
        {"f": 1.5},
        {"\U0001f600": 1, "\ufb33": 2},  # UTF-16 order differs from code-point order
        ("tuple",),
        {"s": "\ud800"},
    ],
)
def test_other_values_take_the_reference_path(value: Any) -> None:
    assert not _fast_path_ok(value) or (isinstance(value, dict) and "s" in value)
    expected = _reference(value)
    if expected is None:
        with pytest.raises(InvalidArgument):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected
