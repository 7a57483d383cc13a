"""DiscOS CBRN structured-claim vectors: canonical bytes and rejection reasons (spec 20 §8).

These vectors describe the DiscOS client's binary format (:class:`DiscosCbrnClaim`), not the
daemon's CBRN_SC_V1 JSON; spec 20 §8.4 says so, and the daemon's validator is tested in
``tests/core/test_structured_claims.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evidenceos.core.structured_claims import Defect, DiscosCbrnClaim, StructuredClaimError
from tests.support.paths import VECTORS_DIR

VALID_DIR = VECTORS_DIR / "structured_claims" / "valid"
INVALID_DIR = VECTORS_DIR / "structured_claims" / "invalid"

# One mutation per invalid vector (its file name says which); the reason we must give for it.
EXPECTED_REJECTIONS: dict[str, tuple[Defect, str]] = {
    "envelope_id_wrong_length": (Defect.WRONG_LENGTH, "envelope_id"),
    "float_value_q": (Defect.NON_INTEGER_NUMBER, "quantities[0].value_q"),
    "heavy_missing_reason": (Defect.DECISION_REASON_MISSING, "reason_codes"),
    "unknown_field": (Defect.UNKNOWN_FIELD, "unknown_field"),
}


def _valid() -> list[Path]:
    return sorted(VALID_DIR.glob("*.json"))


def _invalid() -> list[Path]:
    return sorted(INVALID_DIR.glob("*.json"))


def test_vector_directories_are_populated() -> None:
    assert _valid()
    assert _invalid()


@pytest.mark.parametrize("path", _valid(), ids=lambda p: p.stem)
def test_valid_vector_canonical_bytes(path: Path) -> None:
    claim = DiscosCbrnClaim.from_json(path.read_bytes())
    expected = path.with_suffix(".hex").read_text(encoding="ascii").strip()
    assert claim.to_bytes().hex() == expected


@pytest.mark.parametrize("path", _valid(), ids=lambda p: p.stem)
def test_valid_vector_decodes_from_its_canonical_bytes(path: Path) -> None:
    claim = DiscosCbrnClaim.from_json(path.read_bytes())
    expected = bytes.fromhex(path.with_suffix(".hex").read_text(encoding="ascii").strip())
    assert DiscosCbrnClaim.from_bytes(expected) == claim
    assert DiscosCbrnClaim.from_json(claim.to_json()) == claim


def test_every_invalid_vector_has_an_expected_reason() -> None:
    assert {p.stem for p in _invalid()} == set(EXPECTED_REJECTIONS)


@pytest.mark.parametrize("path", _invalid(), ids=lambda p: p.stem)
def test_invalid_vector_is_rejected_for_its_reason(path: Path) -> None:
    defect, field_path = EXPECTED_REJECTIONS[path.stem]
    with pytest.raises(StructuredClaimError) as caught:
        DiscosCbrnClaim.from_json(path.read_bytes())
    assert (caught.value.defect, caught.value.path) == (defect, field_path)
