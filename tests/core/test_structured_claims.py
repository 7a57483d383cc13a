"""Structured claims: schema ids, the daemon's CBRN_SC_V1 validator and the DiscOS codec."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidenceos.core.structured_claims import (
    MAX_CANONICAL_BYTES,
    SCHEMA_ID_ALIASES,
    CbrnClaimKind,
    CbrnClaimV1,
    CbrnDomain,
    Defect,
    DiscosCbrnClaim,
    DiscosClaimKind,
    DiscosDecision,
    DiscosDomain,
    DiscosEnvelopeCheck,
    DiscosProfile,
    DiscosQuantity,
    DiscosQuantityKind,
    DiscosReasonCode,
    DiscosScale,
    DiscosSchemaVersion,
    DiscosUnit,
    EnvelopeCheck,
    Quantity,
    QuantityKind,
    SchemaId,
    StructuredClaimError,
    canonicalize_output,
    canonicalize_schema_id,
    compute_kout_max_bits,
)
from evidenceos.errors import Code, InvalidArgument

HEX_A = "a" * 64


def valid_payload() -> dict[str, Any]:
    return {
        "version": 1,
        "profile": "CBRN_SC_V1",
        "domain": "CHEMICAL",
        "claim_kind": "MEASUREMENT",
        "claim_id": HEX_A,
        "sensor_id": "ABCDEFGH234567AB",
        "event_time_unix": 1_700_000_000,
        "quantities": [
            {"kind": "CONCENTRATION", "value": {"value": "123", "scale": 1}, "unit": "mmol/L"}
        ],
        "unit_system": "PHYSHIR_UCUM_SUBSET",
        "envelope_id": HEX_A,
        "envelope_check": "PASS",
        "references": [HEX_A],
    }


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def rejection(payload: bytes) -> tuple[Defect, str]:
    with pytest.raises(StructuredClaimError) as caught:
        canonicalize_output(SchemaId.CBRN_SC_V1, payload)
    return caught.value.defect, caught.value.path


# --- schema ids and bounds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias", ["cbrn-sc.v1", "cbrn/v1", "schema/v1", "cbrn_sc.v1", "cbrn-sc/v1"]
)
def test_cbrn_aliases(alias: str) -> None:
    assert canonicalize_schema_id(alias) is SchemaId.CBRN_SC_V1


@pytest.mark.parametrize("alias", ["legacy/v1", "EVIDENCEOS_SC_V0"])
def test_legacy_aliases(alias: str) -> None:
    assert canonicalize_schema_id(alias) is SchemaId.LEGACY


@pytest.mark.parametrize("alias", ["cbrn-sc-v1", "CBRN-SC.V1", "Legacy/v1", "", " cbrn/v1"])
def test_other_spellings_are_refused(alias: str) -> None:
    with pytest.raises(InvalidArgument, match=r"unsupported metadata\.output_schema_id"):
        canonicalize_schema_id(alias)


def test_canonical_ids_are_their_own_aliases() -> None:
    for schema in SchemaId:
        assert SCHEMA_ID_ALIASES[schema.value] is schema


def test_kout_bounds_match_reference() -> None:
    """Spec 20 §3.4 step 21 / spec 30 §2: 0 for legacy, 3301 for CBRN (W = 32 + 3301 = 3333)."""
    assert compute_kout_max_bits(SchemaId.LEGACY) == 0
    assert compute_kout_max_bits(SchemaId.CBRN_SC_V1) == 3301


# --- CBRN_SC_V1 ----------------------------------------------------------------------------------


def test_valid_claim_canonical_bytes() -> None:
    output = canonicalize_output(SchemaId.CBRN_SC_V1, encode(valid_payload()))
    assert output.canonical_bytes == (
        b'{"claim_id":"' + HEX_A.encode() + b'","claim_kind":"MEASUREMENT","domain":"CHEMICAL",'
        b'"envelope_check":"PASS","envelope_id":"' + HEX_A.encode() + b'",'
        b'"event_time_unix":1700000000,"profile":"CBRN_SC_V1",'
        b'"quantities":[{"kind":"CONCENTRATION","unit":"mol/m^3",'
        b'"value":{"scale":1,"value":"123"}}],"references":["' + HEX_A.encode() + b'"],'
        b'"schema_id":"EVIDENCEOS_CBRN_SC_V1","sensor_id":"ABCDEFGH234567AB",'
        b'"unit_system":"PHYSHIR_UCUM_SUBSET","version":1}'
    )
    assert output.kout_bits == 3301
    assert output.envelope_check_failed is False
    assert output.claim is not None
    assert output.claim.domain is CbrnDomain.CHEMICAL


def test_canonical_bytes_are_a_fixed_point() -> None:
    first = canonicalize_output(SchemaId.CBRN_SC_V1, encode(valid_payload())).canonical_bytes
    assert canonicalize_output(SchemaId.CBRN_SC_V1, first).canonical_bytes == first


def test_whitespace_and_key_order_do_not_matter() -> None:
    doc = valid_payload()
    shuffled = dict(reversed(list(doc.items())))
    a = canonicalize_output(SchemaId.CBRN_SC_V1, json.dumps(doc, indent=4).encode())
    b = canonicalize_output(SchemaId.CBRN_SC_V1, encode(shuffled))
    assert a.canonical_bytes == b.canonical_bytes


@pytest.mark.parametrize(
    ("kind", "unit", "scale", "canonical_unit", "canonical_scale"),
    [
        ("CONCENTRATION", "mol/m^3", 1, "mol/m^3", 1),
        ("CONCENTRATION", "mmol/L", 1, "mol/m^3", 1),
        ("DOSE_RATE", "Sv/h", 3, "Sv/h", 3),
        ("TEMPERATURE", "K", 0, "K", 0),
        ("PRESSURE", "Pa", 0, "Pa", 0),
        ("PRESSURE", "kPa", 1, "Pa", -2),
    ],
)
def test_units_normalise_to_one_unit_per_kind(
    kind: str, unit: str, scale: int, canonical_unit: str, canonical_scale: int
) -> None:
    doc = valid_payload()
    doc["quantities"] = [{"kind": kind, "value": {"value": "123", "scale": scale}, "unit": unit}]
    claim = CbrnClaimV1.from_json(encode(doc))
    assert claim.quantities == (Quantity(QuantityKind(kind), 123, canonical_scale, canonical_unit),)


def test_equal_pressures_in_pa_and_kpa_encode_identically() -> None:
    pa, kpa = valid_payload(), valid_payload()
    pa["quantities"] = [{"kind": "PRESSURE", "value": {"value": "5", "scale": -3}, "unit": "Pa"}]
    kpa["quantities"] = [{"kind": "PRESSURE", "value": {"value": "5", "scale": 0}, "unit": "kPa"}]
    assert (
        CbrnClaimV1.from_json(encode(pa)).to_json() == CbrnClaimV1.from_json(encode(kpa)).to_json()
    )


def test_envelope_fail_is_reported_not_rejected() -> None:
    doc = valid_payload()
    doc["envelope_check"] = "FAIL"
    assert canonicalize_output(SchemaId.CBRN_SC_V1, encode(doc)).envelope_check_failed


def test_schema_id_may_be_given_or_null() -> None:
    for value in ("EVIDENCEOS_CBRN_SC_V1", None):
        doc = valid_payload()
        doc["schema_id"] = value
        CbrnClaimV1.from_json(encode(doc))


def test_legacy_output_passes_unchanged() -> None:
    output = canonicalize_output(SchemaId.LEGACY, b"\x01")
    assert (output.canonical_bytes, output.kout_bits, output.claim) == (b"\x01", 0, None)


def _mutate(path: str, value: Any) -> bytes:
    doc = valid_payload()
    *parents, last = path.split("/")
    target: Any = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    elif value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return encode(doc)


_DELETE = object()

REJECTIONS: list[tuple[str, Any, Defect, str]] = [
    ("extra", 1, Defect.UNKNOWN_FIELD, "extra"),
    ("sensor_id", _DELETE, Defect.MISSING_FIELD, "sensor_id"),
    ("schema_id", "cbrn-sc.v1", Defect.INVALID_VALUE, "schema_id"),
    ("version", 2, Defect.INVALID_VALUE, "version"),
    ("version", True, Defect.WRONG_TYPE, "version"),
    ("version", "1", Defect.WRONG_TYPE, "version"),
    ("profile", "cbrn_sc", Defect.INVALID_VALUE, "profile"),
    ("domain", "NOPE", Defect.INVALID_VALUE, "domain"),
    ("domain", "chemical", Defect.INVALID_VALUE, "domain"),
    ("claim_kind", "ASSESSMENT", Defect.INVALID_VALUE, "claim_kind"),
    ("claim_id", "http://not-allowed", Defect.INVALID_ID, "claim_id"),
    ("sensor_id", "ABCDEFG", Defect.INVALID_ID, "sensor_id"),
    ("sensor_id", "A" * 53, Defect.INVALID_ID, "sensor_id"),
    ("event_time_unix", 4_102_444_801, Defect.OUT_OF_RANGE, "event_time_unix"),
    ("event_time_unix", -1, Defect.OUT_OF_RANGE, "event_time_unix"),
    ("event_time_unix", 10**100, Defect.OUT_OF_RANGE, "event_time_unix"),
    ("event_time_unix", 1.5, Defect.NON_INTEGER_NUMBER, "event_time_unix"),
    ("quantities", [], Defect.WRONG_COUNT, "quantities"),
    ("quantities/0/kind", "ACTIVITY", Defect.INVALID_VALUE, "quantities[0].kind"),
    ("quantities/0/unit", "ppm", Defect.DIMENSION_MISMATCH, "quantities[0].unit"),
    ("quantities/0/unit", "K", Defect.UNIT_NOT_ALLOWED, "quantities[0].unit"),
    ("quantities/0/value/value", 123, Defect.WRONG_TYPE, "quantities[0].value.value"),
    ("quantities/0/value/value", 1.2, Defect.NON_INTEGER_NUMBER, "quantities[0].value.value"),
    ("quantities/0/value/value", "1.2", Defect.INVALID_VALUE, "quantities[0].value.value"),
    ("quantities/0/value/value", " 12", Defect.INVALID_VALUE, "quantities[0].value.value"),
    ("quantities/0/value/value", "1_000", Defect.INVALID_VALUE, "quantities[0].value.value"),
    ("quantities/0/value/value", "١٢", Defect.INVALID_VALUE, "quantities[0].value.value"),
    ("quantities/0/value/value", "1000000000001", Defect.OUT_OF_RANGE, "quantities[0].value.value"),
    ("quantities/0/value/scale", 13, Defect.OUT_OF_RANGE, "quantities[0].value.scale"),
    ("quantities/0/value/extra", 0, Defect.UNKNOWN_FIELD, "quantities[0].value.extra"),
    ("unit_system", "SI", Defect.INVALID_VALUE, "unit_system"),
    ("envelope_id", "ABCDEFGH234567AB", Defect.INVALID_ID, "envelope_id"),
    ("envelope_check", "MISMATCH", Defect.INVALID_VALUE, "envelope_check"),
    ("references", [HEX_A] * 9, Defect.WRONG_COUNT, "references"),
    ("references/0", "A" * 4096, Defect.INVALID_ID, "references[0]"),
    ("references/0", 7, Defect.WRONG_TYPE, "references[0]"),
]


@pytest.mark.parametrize(
    ("path", "value", "defect", "where"), REJECTIONS, ids=[f"{r[0]}={r[2]}" for r in REJECTIONS]
)
def test_each_defect_has_one_precise_reason(
    path: str, value: Any, defect: Defect, where: str
) -> None:
    assert rejection(_mutate(path, value)) == (defect, where)


def test_kpa_scale_out_of_range_after_normalisation() -> None:
    payload = _mutate(
        "quantities/0", {"kind": "PRESSURE", "value": {"value": "1", "scale": -10}, "unit": "kPa"}
    )
    assert rejection(payload) == (Defect.OUT_OF_RANGE, "quantities[0].value.scale")


@pytest.mark.parametrize(
    ("payload", "defect", "where"),
    [
        (b"\xff", Defect.NOT_UTF8, ""),
        (b"{", Defect.INVALID_JSON, ""),
        (b"[]", Defect.WRONG_TYPE, ""),
        (b'{"version": NaN}', Defect.INVALID_JSON, ""),
        (b'{"version": 1, "version": 1}', Defect.DUPLICATE_FIELD, "version"),
        (b'{"a": [[[[[[[1]]]]]]]}', Defect.TOO_DEEP, "a[0][0][0][0][0][0]"),
        (b"[" * 100_000 + b"]" * 100_000, Defect.TOO_DEEP, ""),
        (b'{"\\ud800": 1}', Defect.INVALID_JSON, ""),
        (b"\xef\xbb\xbf{}", Defect.INVALID_JSON, ""),
    ],
    ids=[
        "utf8",
        "truncated",
        "array",
        "nan",
        "duplicate",
        "depth",
        "recursion",
        "surrogate",
        "bom",
    ],
)
def test_malformed_documents(payload: bytes, defect: Defect, where: str) -> None:
    assert rejection(payload) == (defect, where)


def test_errors_are_failed_precondition() -> None:
    with pytest.raises(StructuredClaimError) as caught:
        canonicalize_output(SchemaId.CBRN_SC_V1, b"{}")
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert str(caught.value).startswith("invalid structured claim: ")


def test_largest_valid_claim_fits_the_size_limit() -> None:
    """Every schema field at its widest still encodes within 2048 bytes, so the limit only ever
    refuses what the schema refuses too; it stays as a guard against a schema change."""
    doc = valid_payload()
    doc["quantities"] = [
        {
            "kind": "CONCENTRATION",
            "value": {"value": "-1000000000000", "scale": -12},
            "unit": "mmol/L",
        }
    ] * 8
    doc["references"] = ["A" * 52] * 8
    doc["sensor_id"] = "A" * 52
    doc["event_time_unix"] = 4_102_444_800
    doc["schema_id"] = "EVIDENCEOS_CBRN_SC_V1"
    canonical = canonicalize_output(SchemaId.CBRN_SC_V1, encode(doc)).canonical_bytes
    assert len(canonical) <= MAX_CANONICAL_BYTES


# --- Hypothesis: CBRN_SC_V1 ----------------------------------------------------------------------

hex_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
ids = hex_ids | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=8, max_size=52)
input_quantities = st.sampled_from(
    [
        ("CONCENTRATION", "mol/m^3"),
        ("CONCENTRATION", "mmol/L"),
        ("DOSE_RATE", "Sv/h"),
        ("TEMPERATURE", "K"),
        ("PRESSURE", "Pa"),
        ("PRESSURE", "kPa"),
    ]
).flatmap(
    lambda ku: st.fixed_dictionaries(
        {
            "kind": st.just(ku[0]),
            "unit": st.just(ku[1]),
            "value": st.fixed_dictionaries(
                {
                    "value": st.integers(-(10**12), 10**12).map(str),
                    "scale": st.integers(-9 if ku[1] == "kPa" else -12, 12),
                }
            ),
        }
    )
)
valid_documents = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "profile": st.just("CBRN_SC_V1"),
        "domain": st.sampled_from([d.value for d in CbrnDomain]),
        "claim_kind": st.sampled_from([k.value for k in CbrnClaimKind]),
        "claim_id": ids,
        "sensor_id": ids,
        "event_time_unix": st.integers(0, 4_102_444_800),
        "quantities": st.lists(input_quantities, min_size=1, max_size=8),
        "unit_system": st.just("PHYSHIR_UCUM_SUBSET"),
        "envelope_id": hex_ids | hex_ids.map(str.upper),
        "envelope_check": st.sampled_from([e.value for e in EnvelopeCheck]),
        "references": st.lists(ids, max_size=8),
    },
    optional={"schema_id": st.just("EVIDENCEOS_CBRN_SC_V1")},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(valid_documents)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_valid_documents_round_trip(document: dict[str, Any]) -> None:
    claim = CbrnClaimV1.from_json(encode(document))
    canonical = claim.to_json()
    assert len(canonical) <= MAX_CANONICAL_BYTES
    assert CbrnClaimV1.from_json(canonical) == claim
    assert CbrnClaimV1.from_json(canonical).to_json() == canonical


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@given(valid_documents, st.data(), json_values)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_tree_mutations_only_raise_the_domain_error(
    document: dict[str, Any], data: st.DataObject, replacement: Any
) -> None:
    mutated = copy.deepcopy(document)
    path = data.draw(st.sampled_from(_paths(mutated)[1:]))
    parent: Any = mutated
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    try:
        claim = CbrnClaimV1.from_json(encode(mutated))
    except StructuredClaimError:
        return
    assert CbrnClaimV1.from_json(claim.to_json()) == claim


@given(valid_documents, st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_byte_mutations_only_raise_the_domain_error(
    document: dict[str, Any], data: st.DataObject
) -> None:
    raw = bytearray(encode(document))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(StructuredClaimError):
        canonicalize_output(SchemaId.CBRN_SC_V1, bytes(raw))


@given(st.binary(max_size=256))
def test_arbitrary_bytes_only_raise_the_domain_error(payload: bytes) -> None:
    with contextlib.suppress(StructuredClaimError):
        canonicalize_output(SchemaId.CBRN_SC_V1, payload)


# --- Hypothesis: DiscOS codec --------------------------------------------------------------------

hashes = st.binary(min_size=32, max_size=32)
discos_claims = st.builds(
    DiscosCbrnClaim,
    schema_version=st.just(DiscosSchemaVersion.V1_0_0),
    profile=st.just(DiscosProfile.CBRN_SC),
    domain=st.just(DiscosDomain.CBRN),
    claim_kind=st.just(DiscosClaimKind.ASSESSMENT),
    quantities=st.lists(
        st.builds(
            DiscosQuantity,
            quantity_kind=st.sampled_from(DiscosQuantityKind),
            value_q=st.integers(0, 2**63 - 1),
            scale=st.sampled_from(DiscosScale),
            unit=st.sampled_from(DiscosUnit),
        ),
        min_size=1,
        max_size=8,
    ).map(tuple),
    envelope_id=hashes,
    envelope_check=st.sampled_from(DiscosEnvelopeCheck),
    references=st.lists(hashes, max_size=16).map(tuple),
    etl_root=hashes,
    envelope_manifest_hash=hashes,
    envelope_manifest_version=st.integers(0, 2**32 - 1),
    decision=st.sampled_from([DiscosDecision.PASS, DiscosDecision.REJECT]),
    reason_codes=st.lists(st.sampled_from(DiscosReasonCode), min_size=1, max_size=8).map(tuple),
)


@given(discos_claims)
def test_discos_round_trips(claim: DiscosCbrnClaim) -> None:
    encoded = claim.to_bytes()
    assert DiscosCbrnClaim.from_bytes(encoded) == claim
    assert DiscosCbrnClaim.from_json(claim.to_json()) == claim
    expected_length = 5 + 11 * len(claim.quantities) + 34 + 32 * len(claim.references) + 70
    assert len(encoded) == expected_length + len(claim.reason_codes)


@given(discos_claims, st.data())
def test_discos_byte_mutations_only_raise_the_domain_error(
    claim: DiscosCbrnClaim, data: st.DataObject
) -> None:
    raw = bytearray(claim.to_bytes())
    action = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if action == "flip":
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = DiscosCbrnClaim.from_bytes(bytes(raw))
    except StructuredClaimError:
        return
    assert decoded.to_bytes() == bytes(raw)


@given(discos_claims, st.data(), json_values)
def test_discos_json_mutations_only_raise_the_domain_error(
    claim: DiscosCbrnClaim, data: st.DataObject, replacement: Any
) -> None:
    document = json.loads(claim.to_json())
    path = data.draw(st.sampled_from(_paths(document)[1:]))
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = replacement
    with contextlib.suppress(StructuredClaimError):
        DiscosCbrnClaim.from_json(encode(document))


def test_discos_escalate_needs_an_escalating_reason() -> None:
    claim = DiscosCbrnClaim(
        schema_version=DiscosSchemaVersion.V1_0_0,
        profile=DiscosProfile.CBRN_SC,
        domain=DiscosDomain.CBRN,
        claim_kind=DiscosClaimKind.ASSESSMENT,
        quantities=(
            DiscosQuantity(DiscosQuantityKind.ACTIVITY, 1, DiscosScale.UNIT, DiscosUnit.BQ_PER_M3),
        ),
        envelope_id=b"\x01" * 32,
        envelope_check=DiscosEnvelopeCheck.MATCH,
        references=(),
        etl_root=b"\x02" * 32,
        envelope_manifest_hash=b"\x03" * 32,
        envelope_manifest_version=1,
        decision=DiscosDecision.ESCALATE,
        reason_codes=(DiscosReasonCode.MAGNITUDE_ENVELOPE_EXCEEDED,),
    )
    # one quantity 72, envelope id 256 + check 2, ETL root and manifest hash 2 * 256, manifest
    # version 32, decision 2, one reason 3, list counts 4 + 5 + 4; single-member enums cost 0.
    assert claim.compute_kout_bits() == 72 + 256 + 2 + 2 * 256 + 32 + 2 + 3 + 13
    with pytest.raises(StructuredClaimError) as caught:
        dataclasses.replace(claim, reason_codes=(DiscosReasonCode.BELOW_THRESHOLD,))
    assert caught.value.defect is Defect.DECISION_REASON_MISSING


@pytest.mark.parametrize(
    ("mutation", "defect", "where"),
    [
        ("negative", Defect.OUT_OF_RANGE, "quantities[0].value_q"),
        ("no_reasons", Defect.WRONG_COUNT, "reason_codes"),
        ("many_references", Defect.WRONG_COUNT, "references"),
        ("short_root", Defect.WRONG_LENGTH, "etl_root"),
    ],
)
def test_discos_validation_reasons(mutation: str, defect: Defect, where: str) -> None:
    document = {
        "schema_version": "v1_0_0",
        "profile": "cbrn_sc",
        "domain": "cbrn",
        "claim_kind": "assessment",
        "quantities": [
            {"quantity_kind": "activity", "value_q": 9, "scale": "nano", "unit": "bq_per_m3"}
        ],
        "envelope_id": [9] * 32,
        "envelope_check": "match",
        "references": [],
        "etl_root": [8] * 32,
        "envelope_manifest_hash": [7] * 32,
        "envelope_manifest_version": 7,
        "decision": "pass",
        "reason_codes": ["sensor_agreement"],
    }
    DiscosCbrnClaim.from_json(encode(document))
    if mutation == "negative":
        document["quantities"][0]["value_q"] = -1  # type: ignore[index]
    elif mutation == "no_reasons":
        document["reason_codes"] = []
    elif mutation == "many_references":
        document["references"] = [[1] * 32] * 17
    else:
        document["etl_root"] = [1]
    with pytest.raises(StructuredClaimError) as caught:
        DiscosCbrnClaim.from_json(encode(document))
    assert (caught.value.defect, caught.value.path) == (defect, where)
