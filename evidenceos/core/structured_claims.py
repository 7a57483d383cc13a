"""Structured claim outputs: schema ids, validation, canonical encodings and output bit bounds.

Two formats live here, and they must not be confused (spec 20 §8):

* **CBRN_SC_V1** (:class:`CbrnClaimV1`) is what the daemon validates. A claim whose output schema
  is ``EVIDENCEOS_CBRN_SC_V1`` emits a JSON object (spec 20 §8.2); the daemon rejects anything
  outside the schema, re-encodes it canonically (keys sorted, compact, quantities normalised),
  refuses canonical bytes over :data:`MAX_CANONICAL_BYTES`, and charges the schema's constant
  output bound (:func:`compute_kout_max_bits`, 3301 bits) to the claim's budgets.
* **DiscOS cbrn_sc v1_0_0** (:class:`DiscosCbrnClaim`) is the DiscOS client's own binary CBRN
  format, the one ``vectors/structured_claims/{valid,invalid}`` describe. The daemon never sees it
  on the wire; it is here so that both ends of the protocol are checked against the same vectors.

Every rejection raises :class:`StructuredClaimError` naming one :class:`Defect` and the JSON path
of the offending value, so a guest author can fix exactly one thing per failure.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar

from evidenceos.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "CBRN_PROFILE",
    "DISCOS_MAX_QUANTITIES",
    "DISCOS_MAX_REASON_CODES",
    "DISCOS_MAX_REFERENCES",
    "MAX_CANONICAL_BYTES",
    "MAX_EVENT_TIME_UNIX",
    "MAX_MAGNITUDE",
    "MAX_NESTING_DEPTH",
    "MAX_QUANTITIES",
    "MAX_REFERENCES",
    "MAX_SCALE",
    "MIN_SCALE",
    "SCHEMA_ID_ALIASES",
    "UNIT_SYSTEM",
    "CbrnClaimKind",
    "CbrnClaimV1",
    "CbrnDomain",
    "Defect",
    "DiscosCbrnClaim",
    "DiscosClaimKind",
    "DiscosDecision",
    "DiscosDomain",
    "DiscosEnvelopeCheck",
    "DiscosProfile",
    "DiscosQuantity",
    "DiscosQuantityKind",
    "DiscosReasonCode",
    "DiscosScale",
    "DiscosSchemaVersion",
    "DiscosUnit",
    "EnvelopeCheck",
    "Quantity",
    "QuantityKind",
    "SchemaId",
    "StructuredClaimError",
    "StructuredOutput",
    "canonicalize_output",
    "canonicalize_schema_id",
    "compute_kout_max_bits",
]

MAX_CANONICAL_BYTES: Final = 2048
"""Largest canonical CBRN_SC_V1 encoding accepted (reference ``max_bytes_upper_bound``)."""
MAX_NESTING_DEPTH: Final = 6
"""Deepest JSON nesting accepted; the root object is depth 0 (reference ``MAX_DEPTH``)."""
MAX_QUANTITIES: Final = 8
MAX_REFERENCES: Final = 8
MAX_MAGNITUDE: Final = 10**12
MAX_EVENT_TIME_UNIX: Final = 4_102_444_800
"""2100-01-01T00:00:00Z: a later event time is a guest bug, not a measurement."""
MIN_SCALE: Final = -12
MAX_SCALE: Final = 12
CBRN_PROFILE: Final = "CBRN_SC_V1"
UNIT_SYSTEM: Final = "PHYSHIR_UCUM_SUBSET"


class StructuredClaimError(FailedPrecondition):
    """A structured output does not satisfy its schema; the claim cannot settle on it.

    FAILED_PRECONDITION because the guest, not the caller, produced the bytes (spec 20 §11 item
    13); ``defect`` and ``path`` let tests and clients tell the reasons apart without parsing text.
    """

    def __init__(self, defect: Defect, path: str, detail: str) -> None:
        where = path or "claim"
        super().__init__(f"invalid structured claim: {where}: {detail}")
        self.defect = defect
        self.path = path


class Defect(enum.StrEnum):
    """Why a structured claim was refused; exactly one per error."""

    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NON_INTEGER_NUMBER = "non_integer_number"
    DUPLICATE_FIELD = "duplicate_field"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    OUT_OF_RANGE = "out_of_range"
    WRONG_COUNT = "wrong_count"
    WRONG_LENGTH = "wrong_length"
    INVALID_ID = "invalid_id"
    UNIT_NOT_ALLOWED = "unit_not_allowed"
    DIMENSION_MISMATCH = "dimension_mismatch"
    TOO_LARGE = "too_large"
    DECISION_REASON_MISSING = "decision_reason_missing"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"


# --------------------------------------------------------------------------------------------
# Schema ids (spec 20 §8.1)


class SchemaId(enum.StrEnum):
    """Canonical output schema ids; the claim stores these, never an alias."""

    LEGACY = "EVIDENCEOS_SC_V0"
    CBRN_SC_V1 = "EVIDENCEOS_CBRN_SC_V1"


SCHEMA_ID_ALIASES: Final[Mapping[str, SchemaId]] = MappingProxyType(
    {
        "EVIDENCEOS_SC_V0": SchemaId.LEGACY,
        "legacy/v1": SchemaId.LEGACY,
        "EVIDENCEOS_CBRN_SC_V1": SchemaId.CBRN_SC_V1,
        "cbrn-sc.v1": SchemaId.CBRN_SC_V1,
        "cbrn/v1": SchemaId.CBRN_SC_V1,
        "schema/v1": SchemaId.CBRN_SC_V1,
        "cbrn_sc.v1": SchemaId.CBRN_SC_V1,
        "cbrn-sc/v1": SchemaId.CBRN_SC_V1,
    }
)
"""Every accepted spelling, matched exactly and case-sensitively; DiscOS's ``cbrn-sc-v1`` is not."""


def canonicalize_schema_id(output_schema_id: str) -> SchemaId:
    """Canonical schema for ``metadata.output_schema_id``; unknown ids are the caller's error."""
    try:
        return SCHEMA_ID_ALIASES[output_schema_id]
    except KeyError:
        raise InvalidArgument(
            "unsupported metadata.output_schema_id; canonicalize to cbrn-sc.v1 or legacy/v1"
        ) from None


def _ceil_log2(n: int) -> int:
    return 0 if n <= 1 else (n - 1).bit_length()


def compute_kout_max_bits(schema: SchemaId) -> int:
    """Upper bound on the bits a claim's structured output can carry (spec 20 §8.3, spec 30 §2).

    Legacy outputs are metered by the oracle, not here: 0. For CBRN_SC_V1 this is the
    reference's bound, term for term, so reservations and charges match it (3301 bits): every
    enumerated field costs ``ceil(log2(choices))``, a 64-hex id 256 bits, a base32 id up to
    260 bits, plus the list lengths and their worst-case entries.
    """
    if schema == SchemaId.LEGACY:
        return 0
    # The reference's terms, in its order (it labels none; the comments are our reading). Choice
    # counts are literal so that editing this module's enumerations cannot silently move the
    # bound that every reservation depends on.
    fixed = (
        _ceil_log2(2)  # version
        + _ceil_log2(4)  # domain
        + _ceil_log2(3)  # claim_kind
        + _ceil_log2(4)  # quantity kind
        + 256  # claim_id (64 hex digits)
        + 260  # sensor_id (up to 52 base32 characters)
        + _ceil_log2(MAX_EVENT_TIME_UNIX + 1)  # event_time_unix
        + _ceil_log2(1)  # unit_system
        + 256  # envelope_id
        + _ceil_log2(3)  # envelope_check
    )
    per_quantity = (
        _ceil_log2(4)  # kind
        + _ceil_log2(2 * MAX_MAGNITUDE + 1)  # value
        + _ceil_log2(MAX_SCALE - MIN_SCALE + 1)  # scale
        + _ceil_log2(4)  # unit
    )
    return (
        fixed
        + _ceil_log2(MAX_QUANTITIES + 1)
        + MAX_QUANTITIES * per_quantity
        + _ceil_log2(MAX_REFERENCES + 1)
        + MAX_REFERENCES * 260
    )


# --------------------------------------------------------------------------------------------
# Strict JSON reading shared by both formats


class _NonInteger:
    """A JSON number with a fraction or exponent; kept so its path can be reported."""

    __slots__ = ()


class _HugeInteger:
    """A JSON integer too long to be any field's value; never converted with ``int``."""

    __slots__ = ()


class _Object(dict[str, object]):
    """A JSON object that remembers the first key it saw twice."""

    __slots__ = ("duplicate",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__()
        self.duplicate: str | None = None
        for key, value in pairs:
            if key in self and self.duplicate is None:
                self.duplicate = key
            self[key] = value


_MAX_INTEGER_DIGITS = 40


def _parse_int(text: str) -> int | _HugeInteger:
    return _HugeInteger() if len(text) > _MAX_INTEGER_DIGITS else int(text)


def _parse_float(_text: str) -> _NonInteger:
    return _NonInteger()


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _load_json(payload: bytes) -> object:
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise StructuredClaimError(Defect.NOT_UTF8, "", "payload is not UTF-8") from None
    try:
        value: object = json.loads(
            text,
            object_pairs_hook=_Object,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except RecursionError:
        raise StructuredClaimError(Defect.TOO_DEEP, "", "JSON nests too deeply") from None
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise StructuredClaimError(Defect.INVALID_JSON, "", detail) from None
    _verify_tree(value, "", 0)
    return value


def _verify_tree(value: object, path: str, depth: int) -> None:
    """Depth, number and string rules that hold everywhere in the document (reference order)."""
    if depth > MAX_NESTING_DEPTH:
        raise StructuredClaimError(
            Defect.TOO_DEEP, path, f"nesting deeper than {MAX_NESTING_DEPTH}"
        )
    if isinstance(value, _NonInteger):
        raise StructuredClaimError(Defect.NON_INTEGER_NUMBER, path, "numbers must be integers")
    if isinstance(value, str):
        _verify_text(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _verify_tree(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, _Object):
        if value.duplicate is not None:
            raise StructuredClaimError(
                Defect.DUPLICATE_FIELD, _field(path, value.duplicate), "field appears twice"
            )
        for key, item in value.items():
            _verify_text(key, path)
            _verify_tree(item, _field(path, key), depth + 1)


def _verify_text(text: str, path: str) -> None:
    # Python's json accepts lone surrogates ("\ud800"); RFC 8259 text and serde_json do not.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StructuredClaimError(
            Defect.INVALID_JSON, path, "string is not valid Unicode"
        ) from None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


def _field(path: str, key: str) -> str:
    segment = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key[:64])
    return f"{path}.{segment}" if path else segment


_E = TypeVar("_E", bound=enum.Enum)


def _object(
    value: object, path: str, required: Sequence[str], optional: Sequence[str] = ()
) -> _Object:
    if not isinstance(value, _Object):
        raise StructuredClaimError(Defect.WRONG_TYPE, path, "must be an object")
    for key in value:
        if key not in required and key not in optional:
            raise StructuredClaimError(Defect.UNKNOWN_FIELD, _field(path, key), "unknown field")
    for key in required:
        if key not in value:
            raise StructuredClaimError(Defect.MISSING_FIELD, _field(path, key), "missing field")
    return value


def _integer(value: object, path: str, lowest: int, highest: int) -> int:
    if isinstance(value, _HugeInteger):
        raise StructuredClaimError(Defect.OUT_OF_RANGE, path, f"must be in [{lowest}, {highest}]")
    if isinstance(value, bool) or not isinstance(value, int):
        raise StructuredClaimError(Defect.WRONG_TYPE, path, "must be an integer")
    if not lowest <= value <= highest:
        raise StructuredClaimError(Defect.OUT_OF_RANGE, path, f"must be in [{lowest}, {highest}]")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise StructuredClaimError(Defect.WRONG_TYPE, path, "must be a string")
    return value


def _array(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise StructuredClaimError(Defect.WRONG_TYPE, path, "must be an array")
    return value


def _choice(value: object, path: str, choices: type[_E]) -> _E:
    text = _string(value, path)
    for member in choices:
        if member.value == text:
            return member
    allowed = ", ".join(str(member.value) for member in choices)
    raise StructuredClaimError(Defect.INVALID_VALUE, path, f"must be one of {allowed}")


def _literal(value: object, path: str, expected: str) -> None:
    if _string(value, path) != expected:
        raise StructuredClaimError(Defect.INVALID_VALUE, path, f"must be {expected}")


def _count(items: Sequence[object], path: str, lowest: int, highest: int) -> None:
    if not lowest <= len(items) <= highest:
        raise StructuredClaimError(
            Defect.WRONG_COUNT, path, f"must hold {lowest} to {highest} entries"
        )


# --------------------------------------------------------------------------------------------
# CBRN_SC_V1: the daemon's schema (spec 20 §8.2, §8.3)


class CbrnDomain(enum.StrEnum):
    CHEMICAL = "CHEMICAL"
    BIOLOGICAL = "BIOLOGICAL"
    RADIOLOGICAL = "RADIOLOGICAL"
    NUCLEAR = "NUCLEAR"


class CbrnClaimKind(enum.StrEnum):
    MEASUREMENT = "MEASUREMENT"
    DETECTION = "DETECTION"
    CLEARANCE = "CLEARANCE"


class EnvelopeCheck(enum.StrEnum):
    """The guest's own envelope verdict; ``FAIL`` forces DEFER with reason 9205, never a reject."""

    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"


class QuantityKind(enum.StrEnum):
    CONCENTRATION = "CONCENTRATION"
    DOSE_RATE = "DOSE_RATE"
    TEMPERATURE = "TEMPERATURE"
    PRESSURE = "PRESSURE"


# Dimension exponents (L, M, T, I, Theta, N, J), as PhysHIR writes them.
_Dimension = tuple[int, int, int, int, int, int, int]
_DIMENSIONLESS: Final[_Dimension] = (0, 0, 0, 0, 0, 0, 0)
_AMOUNT_PER_VOLUME: Final[_Dimension] = (-3, 0, 0, 0, 0, 1, 0)
_DOSE_RATE: Final[_Dimension] = (2, 0, -3, 0, 0, 0, 0)
_TEMPERATURE: Final[_Dimension] = (0, 0, 0, 0, 1, 0, 0)
_PRESSURE: Final[_Dimension] = (-1, 1, -2, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class _UnitSpec:
    canonical: str
    decimal_exponent: int
    """``1 unit = 10**decimal_exponent canonical units``."""
    dimension: _Dimension


_UNITS: Final[Mapping[QuantityKind, Mapping[str, _UnitSpec]]] = MappingProxyType(
    {
        QuantityKind.CONCENTRATION: {
            "mol/m^3": _UnitSpec("mol/m^3", 0, _AMOUNT_PER_VOLUME),
            "mmol/L": _UnitSpec("mol/m^3", 0, _AMOUNT_PER_VOLUME),
            "ppm": _UnitSpec("1", -6, _DIMENSIONLESS),
            "ppb": _UnitSpec("1", -9, _DIMENSIONLESS),
        },
        QuantityKind.DOSE_RATE: {"Sv/h": _UnitSpec("Sv/h", 0, _DOSE_RATE)},
        QuantityKind.TEMPERATURE: {"K": _UnitSpec("K", 0, _TEMPERATURE)},
        QuantityKind.PRESSURE: {
            "Pa": _UnitSpec("Pa", 0, _PRESSURE),
            "kPa": _UnitSpec("Pa", 3, _PRESSURE),
        },
    }
)
"""Units the schema lists per kind (spec 20 §8.2). ``ppm``/``ppb`` are listed but dimensionless,
so the PhysHIR dimension check refuses them for CONCENTRATION, as the reference does."""

_EXPECTED_DIMENSION: Final[Mapping[QuantityKind, _Dimension]] = MappingProxyType(
    {
        QuantityKind.CONCENTRATION: _AMOUNT_PER_VOLUME,
        QuantityKind.DOSE_RATE: _DOSE_RATE,
        QuantityKind.TEMPERATURE: _TEMPERATURE,
        QuantityKind.PRESSURE: _PRESSURE,
    }
)
_CANONICAL_UNIT: Final[Mapping[QuantityKind, str]] = MappingProxyType(
    {
        QuantityKind.CONCENTRATION: "mol/m^3",
        QuantityKind.DOSE_RATE: "Sv/h",
        QuantityKind.TEMPERATURE: "K",
        QuantityKind.PRESSURE: "Pa",
    }
)

_HEX_ID = re.compile(r"[0-9A-Fa-f]{64}")
_BASE32_ID = re.compile(r"[A-Z2-7]{8,52}")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,40}")


def _verify_id(value: str, path: str) -> None:
    if not (_HEX_ID.fullmatch(value) or _BASE32_ID.fullmatch(value)):
        raise StructuredClaimError(
            Defect.INVALID_ID, path, "must be 64 hex digits or 8 to 52 characters of [A-Z2-7]"
        )


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured value ``value * 10**-scale`` in the kind's canonical unit."""

    kind: QuantityKind
    value: int
    scale: int
    unit: str

    def verify(self, path: str) -> None:
        """Check the canonical invariants; ``path`` names the quantity in errors."""
        if self.unit != _CANONICAL_UNIT[self.kind]:
            raise StructuredClaimError(
                Defect.UNIT_NOT_ALLOWED, f"{path}.unit", f"must be {_CANONICAL_UNIT[self.kind]}"
            )
        if not MIN_SCALE <= self.scale <= MAX_SCALE:
            raise StructuredClaimError(
                Defect.OUT_OF_RANGE,
                f"{path}.value.scale",
                f"is {self.scale} in {self.unit}, outside [{MIN_SCALE}, {MAX_SCALE}]",
            )
        if abs(self.value) > MAX_MAGNITUDE:
            raise StructuredClaimError(
                Defect.OUT_OF_RANGE, f"{path}.value.value", f"magnitude must be <= {MAX_MAGNITUDE}"
            )


@dataclass(frozen=True, slots=True)
class CbrnClaimV1:
    """A validated CBRN_SC_V1 claim in canonical form; build it with :meth:`from_json`.

    ``version``, ``profile``, ``unit_system`` and ``schema_id`` have one legal value each and are
    not stored; quantities are normalised to one unit per kind, so equal measurements written in
    different listed units (``mmol/L``/``mol/m^3``, ``kPa``/``Pa``) encode identically.
    """

    domain: CbrnDomain
    claim_kind: CbrnClaimKind
    claim_id: str
    sensor_id: str
    event_time_unix: int
    quantities: tuple[Quantity, ...]
    envelope_id: str
    envelope_check: EnvelopeCheck
    references: tuple[str, ...]

    def __post_init__(self) -> None:
        _verify_id(self.claim_id, "claim_id")
        _verify_id(self.sensor_id, "sensor_id")
        if not 0 <= self.event_time_unix <= MAX_EVENT_TIME_UNIX:
            raise StructuredClaimError(
                Defect.OUT_OF_RANGE, "event_time_unix", f"must be in [0, {MAX_EVENT_TIME_UNIX}]"
            )
        _count(self.quantities, "quantities", 1, MAX_QUANTITIES)
        for index, quantity in enumerate(self.quantities):
            quantity.verify(f"quantities[{index}]")
        if not _HEX_ID.fullmatch(self.envelope_id):
            raise StructuredClaimError(Defect.INVALID_ID, "envelope_id", "must be 64 hex digits")
        _count(self.references, "references", 0, MAX_REFERENCES)
        for index, reference in enumerate(self.references):
            _verify_id(reference, f"references[{index}]")

    @classmethod
    def from_json(cls, payload: bytes) -> CbrnClaimV1:
        """Parse and validate a guest's CBRN_SC_V1 JSON (spec 20 §8.2), refusing anything else."""
        root = _object(
            _load_json(payload),
            "",
            required=(
                "version",
                "profile",
                "domain",
                "claim_kind",
                "claim_id",
                "sensor_id",
                "event_time_unix",
                "quantities",
                "unit_system",
                "envelope_id",
                "envelope_check",
                "references",
            ),
            optional=("schema_id",),
        )
        schema_id = root.get("schema_id")
        if schema_id is not None:
            _literal(schema_id, "schema_id", SchemaId.CBRN_SC_V1.value)
        if _integer(root["version"], "version", 0, 255) != 1:
            raise StructuredClaimError(Defect.INVALID_VALUE, "version", "must be 1")
        _literal(root["profile"], "profile", CBRN_PROFILE)
        domain = _choice(root["domain"], "domain", CbrnDomain)
        claim_kind = _choice(root["claim_kind"], "claim_kind", CbrnClaimKind)
        claim_id = _string(root["claim_id"], "claim_id")
        sensor_id = _string(root["sensor_id"], "sensor_id")
        event_time_unix = _integer(root["event_time_unix"], "event_time_unix", 0, 2**64 - 1)
        raw_quantities = _array(root["quantities"], "quantities")
        _count(raw_quantities, "quantities", 1, MAX_QUANTITIES)
        quantities = tuple(
            _read_quantity(item, f"quantities[{index}]")
            for index, item in enumerate(raw_quantities)
        )
        _literal(root["unit_system"], "unit_system", UNIT_SYSTEM)
        envelope_id = _string(root["envelope_id"], "envelope_id")
        envelope_check = _choice(root["envelope_check"], "envelope_check", EnvelopeCheck)
        raw_references = _array(root["references"], "references")
        _count(raw_references, "references", 0, MAX_REFERENCES)
        references = tuple(
            _string(item, f"references[{index}]") for index, item in enumerate(raw_references)
        )
        return cls(
            domain=domain,
            claim_kind=claim_kind,
            claim_id=claim_id,
            sensor_id=sensor_id,
            event_time_unix=event_time_unix,
            quantities=quantities,
            envelope_id=envelope_id,
            envelope_check=envelope_check,
            references=references,
        )

    def to_json(self) -> bytes:
        """Canonical bytes (spec 20 §8.3): every field plus ``schema_id``, keys sorted, compact.

        The result parses back (:meth:`from_json`) to an equal claim, so canonicalisation is a
        fixed point.
        """
        document = {
            "schema_id": SchemaId.CBRN_SC_V1.value,
            "version": 1,
            "profile": CBRN_PROFILE,
            "domain": self.domain.value,
            "claim_kind": self.claim_kind.value,
            "claim_id": self.claim_id,
            "sensor_id": self.sensor_id,
            "event_time_unix": self.event_time_unix,
            "quantities": [
                {
                    "kind": quantity.kind.value,
                    "unit": quantity.unit,
                    "value": {"scale": quantity.scale, "value": str(quantity.value)},
                }
                for quantity in self.quantities
            ],
            "unit_system": UNIT_SYSTEM,
            "envelope_id": self.envelope_id,
            "envelope_check": self.envelope_check.value,
            "references": list(self.references),
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


def _read_quantity(value: object, path: str) -> Quantity:
    item = _object(value, path, required=("kind", "value", "unit"))
    kind = _choice(item["kind"], f"{path}.kind", QuantityKind)
    fixed = _object(item["value"], f"{path}.value", required=("value", "scale"))
    digits = _string(fixed["value"], f"{path}.value.value")
    if not _DECIMAL.fullmatch(digits):
        raise StructuredClaimError(
            Defect.INVALID_VALUE, f"{path}.value.value", "must be a decimal integer string"
        )
    mantissa = int(digits)
    if abs(mantissa) > MAX_MAGNITUDE:
        raise StructuredClaimError(
            Defect.OUT_OF_RANGE, f"{path}.value.value", f"magnitude must be <= {MAX_MAGNITUDE}"
        )
    scale = _integer(fixed["scale"], f"{path}.value.scale", MIN_SCALE, MAX_SCALE)
    unit = _string(item["unit"], f"{path}.unit")
    spec = _UNITS[kind].get(unit)
    if spec is None:
        allowed = ", ".join(_UNITS[kind])
        raise StructuredClaimError(
            Defect.UNIT_NOT_ALLOWED, f"{path}.unit", f"{kind.value} takes one of {allowed}"
        )
    if spec.dimension != _EXPECTED_DIMENSION[kind]:
        raise StructuredClaimError(
            Defect.DIMENSION_MISMATCH,
            f"{path}.unit",
            f"{unit} does not have the dimension of {kind.value}",
        )
    # value * 10**-scale unit == value * 10**-(scale - e) canonical, with 1 unit = 10**e canonical.
    return Quantity(
        kind=kind, value=mantissa, scale=scale - spec.decimal_exponent, unit=spec.canonical
    )


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """A guest output after schema validation: what the kernel hashes, charges and reports."""

    schema: SchemaId
    canonical_bytes: bytes
    kout_bits: int
    """Bits charged for the output: the schema's bound (reference charges the bound, not size)."""
    envelope_check_failed: bool
    """The guest reported ``envelope_check: FAIL``: DEFER with reason 9205 (spec 20 §8.3)."""
    claim: CbrnClaimV1 | None


def canonicalize_output(schema: SchemaId, payload: bytes) -> StructuredOutput:
    """Validate a guest's emitted bytes against the claim's schema and canonicalise them.

    Legacy outputs are opaque symbols and pass unchanged (the kernel decodes them later).
    """
    if schema == SchemaId.LEGACY:
        return StructuredOutput(
            schema=schema,
            canonical_bytes=bytes(payload),
            kout_bits=compute_kout_max_bits(schema),
            envelope_check_failed=False,
            claim=None,
        )
    claim = CbrnClaimV1.from_json(payload)
    canonical = claim.to_json()
    if len(canonical) > MAX_CANONICAL_BYTES:
        raise StructuredClaimError(
            Defect.TOO_LARGE, "", f"canonical encoding exceeds {MAX_CANONICAL_BYTES} bytes"
        )
    return StructuredOutput(
        schema=schema,
        canonical_bytes=canonical,
        kout_bits=compute_kout_max_bits(schema),
        envelope_check_failed=claim.envelope_check is EnvelopeCheck.FAIL,
        claim=claim,
    )


# --------------------------------------------------------------------------------------------
# DiscOS cbrn_sc v1_0_0: the client's binary format (DiscOS crates/discos-core structured_claims)
#
# Enumerations encode as their position in declaration order, so member order is part of the
# format: never reorder or insert members.


class DiscosSchemaVersion(enum.StrEnum):
    V1_0_0 = "v1_0_0"


class DiscosProfile(enum.StrEnum):
    CBRN_SC = "cbrn_sc"


class DiscosDomain(enum.StrEnum):
    CBRN = "cbrn"


class DiscosClaimKind(enum.StrEnum):
    ASSESSMENT = "assessment"


class DiscosQuantityKind(enum.StrEnum):
    CONCENTRATION = "concentration"
    DOSE_RATE = "dose_rate"
    ACTIVITY = "activity"


class DiscosScale(enum.StrEnum):
    UNIT = "unit"
    MILLI = "milli"
    MICRO = "micro"
    NANO = "nano"
    PICO = "pico"
    FEMTO = "femto"


class DiscosUnit(enum.StrEnum):
    MOL_PER_M3 = "mol_per_m3"
    KG_PER_M3 = "kg_per_m3"
    BQ_PER_M3 = "bq_per_m3"
    J_PER_KG = "j_per_kg"
    GRAY_PER_SEC = "gray_per_sec"
    WATT_PER_M2 = "watt_per_m2"
    KG_PER_KG_BODY = "kg_per_kg_body"


class DiscosDecision(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    HEAVY = "heavy"
    REJECT = "reject"
    ESCALATE = "escalate"


class DiscosReasonCode(enum.StrEnum):
    SENSOR_AGREEMENT = "sensor_agreement"
    ABOVE_THRESHOLD = "above_threshold"
    BELOW_THRESHOLD = "below_threshold"
    INCOMPLETE_INPUTS = "incomplete_inputs"
    MAGNITUDE_ENVELOPE_EXCEEDED = "magnitude_envelope_exceeded"
    CALIBRATION_EXPIRED = "calibration_expired"
    LINEAGE_TAINTED = "lineage_tainted"
    STRUCTURAL_ANOMALY_DETECTED = "structural_anomaly_detected"


class DiscosEnvelopeCheck(enum.StrEnum):
    MATCH = "match"
    MISSING = "missing"
    MISMATCH = "mismatch"


DISCOS_MAX_QUANTITIES: Final = 8
DISCOS_MAX_REFERENCES: Final = 16
DISCOS_MAX_REASON_CODES: Final = 8
_I64_MAX = 2**63 - 1
_U32_MAX = 2**32 - 1
_HASH = 32
_ESCALATING_REASONS: Final = frozenset(
    {
        DiscosReasonCode.ABOVE_THRESHOLD,
        DiscosReasonCode.MAGNITUDE_ENVELOPE_EXCEEDED,
        DiscosReasonCode.STRUCTURAL_ANOMALY_DETECTED,
    }
)


def _ordinal(member: enum.Enum) -> int:
    return list(type(member)).index(member)


def _from_ordinal(choices: type[_E], ordinal: int, path: str) -> _E:
    members = list(choices)
    if ordinal >= len(members):
        raise StructuredClaimError(Defect.INVALID_VALUE, path, f"no member numbered {ordinal}")
    return members[ordinal]


@dataclass(frozen=True, slots=True)
class DiscosQuantity:
    """One quantised value: ``value_q`` at ``scale`` of ``unit``."""

    quantity_kind: DiscosQuantityKind
    value_q: int
    scale: DiscosScale
    unit: DiscosUnit


@dataclass(frozen=True, slots=True)
class DiscosCbrnClaim:
    """A DiscOS CBRN structured claim; construction enforces DiscOS's ``validate_cbrn_claim``."""

    schema_version: DiscosSchemaVersion
    profile: DiscosProfile
    domain: DiscosDomain
    claim_kind: DiscosClaimKind
    quantities: tuple[DiscosQuantity, ...]
    envelope_id: bytes
    envelope_check: DiscosEnvelopeCheck
    references: tuple[bytes, ...]
    etl_root: bytes
    envelope_manifest_hash: bytes
    envelope_manifest_version: int
    decision: DiscosDecision
    reason_codes: tuple[DiscosReasonCode, ...]

    def __post_init__(self) -> None:
        for name in ("envelope_id", "etl_root", "envelope_manifest_hash"):
            if len(getattr(self, name)) != _HASH:
                raise StructuredClaimError(Defect.WRONG_LENGTH, name, "must be 32 bytes")
        for index, reference in enumerate(self.references):
            if len(reference) != _HASH:
                raise StructuredClaimError(
                    Defect.WRONG_LENGTH, f"references[{index}]", "must be 32 bytes"
                )
        if not 0 <= self.envelope_manifest_version <= _U32_MAX:
            raise StructuredClaimError(
                Defect.OUT_OF_RANGE, "envelope_manifest_version", "must fit in a uint32"
            )
        _count(self.quantities, "quantities", 1, DISCOS_MAX_QUANTITIES)
        _count(self.references, "references", 0, DISCOS_MAX_REFERENCES)
        _count(self.reason_codes, "reason_codes", 1, DISCOS_MAX_REASON_CODES)
        for index, quantity in enumerate(self.quantities):
            if not 0 <= quantity.value_q <= _I64_MAX:
                raise StructuredClaimError(
                    Defect.OUT_OF_RANGE,
                    f"quantities[{index}].value_q",
                    "must be a non-negative int64",
                )
        if self.decision in (DiscosDecision.HEAVY, DiscosDecision.ESCALATE) and not any(
            code in _ESCALATING_REASONS for code in self.reason_codes
        ):
            raise StructuredClaimError(
                Defect.DECISION_REASON_MISSING,
                "reason_codes",
                f"decision {self.decision.value} needs above_threshold, "
                "magnitude_envelope_exceeded or structural_anomaly_detected",
            )

    @classmethod
    def from_json(cls, payload: bytes) -> DiscosCbrnClaim:
        """Parse DiscOS's JSON form (serde field names, byte arrays as lists of 32 integers)."""
        root = _object(
            _load_json(payload),
            "",
            required=(
                "schema_version",
                "profile",
                "domain",
                "claim_kind",
                "quantities",
                "envelope_id",
                "envelope_check",
                "references",
                "etl_root",
                "envelope_manifest_hash",
                "envelope_manifest_version",
                "decision",
                "reason_codes",
            ),
        )
        return cls(
            schema_version=_choice(root["schema_version"], "schema_version", DiscosSchemaVersion),
            profile=_choice(root["profile"], "profile", DiscosProfile),
            domain=_choice(root["domain"], "domain", DiscosDomain),
            claim_kind=_choice(root["claim_kind"], "claim_kind", DiscosClaimKind),
            quantities=tuple(
                _read_discos_quantity(item, f"quantities[{index}]")
                for index, item in enumerate(_array(root["quantities"], "quantities"))
            ),
            envelope_id=_byte_array(root["envelope_id"], "envelope_id"),
            envelope_check=_choice(root["envelope_check"], "envelope_check", DiscosEnvelopeCheck),
            references=tuple(
                _byte_array(item, f"references[{index}]")
                for index, item in enumerate(_array(root["references"], "references"))
            ),
            etl_root=_byte_array(root["etl_root"], "etl_root"),
            envelope_manifest_hash=_byte_array(
                root["envelope_manifest_hash"], "envelope_manifest_hash"
            ),
            envelope_manifest_version=_integer(
                root["envelope_manifest_version"], "envelope_manifest_version", 0, _U32_MAX
            ),
            decision=_choice(root["decision"], "decision", DiscosDecision),
            reason_codes=tuple(
                _choice(item, f"reason_codes[{index}]", DiscosReasonCode)
                for index, item in enumerate(_array(root["reason_codes"], "reason_codes"))
            ),
        )

    def to_json(self) -> bytes:
        """DiscOS's JSON form, fields in declaration order (what serde_json writes)."""
        document = {
            "schema_version": self.schema_version.value,
            "profile": self.profile.value,
            "domain": self.domain.value,
            "claim_kind": self.claim_kind.value,
            "quantities": [
                {
                    "quantity_kind": q.quantity_kind.value,
                    "value_q": q.value_q,
                    "scale": q.scale.value,
                    "unit": q.unit.value,
                }
                for q in self.quantities
            ],
            "envelope_id": list(self.envelope_id),
            "envelope_check": self.envelope_check.value,
            "references": [list(reference) for reference in self.references],
            "etl_root": list(self.etl_root),
            "envelope_manifest_hash": list(self.envelope_manifest_hash),
            "envelope_manifest_version": self.envelope_manifest_version,
            "decision": self.decision.value,
            "reason_codes": [code.value for code in self.reason_codes],
        }
        return json.dumps(document, separators=(",", ":")).encode("ascii")

    def to_bytes(self) -> bytes:
        """DiscOS's canonical binary encoding (``canonicalize_cbrn_claim``).

        Layout: four enum bytes; quantity count, then per quantity kind, ``i64be(value_q)``,
        scale, unit; envelope id; envelope check; reference count and references; ETL root;
        manifest hash; ``u32be(manifest version)``; decision; reason count and reasons.
        """
        out = bytearray(
            (
                _ordinal(self.schema_version),
                _ordinal(self.profile),
                _ordinal(self.domain),
                _ordinal(self.claim_kind),
                len(self.quantities),
            )
        )
        for quantity in self.quantities:
            out.append(_ordinal(quantity.quantity_kind))
            out += quantity.value_q.to_bytes(8, "big", signed=True)
            out.append(_ordinal(quantity.scale))
            out.append(_ordinal(quantity.unit))
        out += self.envelope_id
        out.append(_ordinal(self.envelope_check))
        out.append(len(self.references))
        for reference in self.references:
            out += reference
        out += self.etl_root
        out += self.envelope_manifest_hash
        out += self.envelope_manifest_version.to_bytes(4, "big")
        out.append(_ordinal(self.decision))
        out.append(len(self.reason_codes))
        out.extend(_ordinal(code) for code in self.reason_codes)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> DiscosCbrnClaim:
        """Decode :meth:`to_bytes` output exactly; short, long or out-of-range input is refused."""
        reader = _Reader(bytes(data))
        schema_version = _from_ordinal(DiscosSchemaVersion, reader.byte(), "schema_version")
        profile = _from_ordinal(DiscosProfile, reader.byte(), "profile")
        domain = _from_ordinal(DiscosDomain, reader.byte(), "domain")
        claim_kind = _from_ordinal(DiscosClaimKind, reader.byte(), "claim_kind")
        quantities = []
        for index in range(reader.byte()):
            path = f"quantities[{index}]"
            quantities.append(
                DiscosQuantity(
                    quantity_kind=_from_ordinal(
                        DiscosQuantityKind, reader.byte(), f"{path}.quantity_kind"
                    ),
                    value_q=int.from_bytes(reader.take(8), "big", signed=True),
                    scale=_from_ordinal(DiscosScale, reader.byte(), f"{path}.scale"),
                    unit=_from_ordinal(DiscosUnit, reader.byte(), f"{path}.unit"),
                )
            )
        envelope_id = reader.take(_HASH)
        envelope_check = _from_ordinal(DiscosEnvelopeCheck, reader.byte(), "envelope_check")
        references = tuple(reader.take(_HASH) for _ in range(reader.byte()))
        etl_root = reader.take(_HASH)
        envelope_manifest_hash = reader.take(_HASH)
        envelope_manifest_version = int.from_bytes(reader.take(4), "big")
        decision = _from_ordinal(DiscosDecision, reader.byte(), "decision")
        reason_codes = tuple(
            _from_ordinal(DiscosReasonCode, reader.byte(), f"reason_codes[{index}]")
            for index in range(reader.byte())
        )
        reader.finish()
        return cls(
            schema_version=schema_version,
            profile=profile,
            domain=domain,
            claim_kind=claim_kind,
            quantities=tuple(quantities),
            envelope_id=envelope_id,
            envelope_check=envelope_check,
            references=references,
            etl_root=etl_root,
            envelope_manifest_hash=envelope_manifest_hash,
            envelope_manifest_version=envelope_manifest_version,
            decision=decision,
            reason_codes=reason_codes,
        )

    def compute_kout_bits(self) -> int:
        """Output bits of this claim by DiscOS's ``kout_accounting`` (per-claim, not a bound)."""
        quantity_bits = (
            _ceil_log2(len(DiscosQuantityKind))
            + 64
            + _ceil_log2(len(DiscosScale))
            + _ceil_log2(len(DiscosUnit))
        )
        count_bits = (
            _ceil_log2(DISCOS_MAX_QUANTITIES + 1)
            + _ceil_log2(DISCOS_MAX_REFERENCES + 1)
            + _ceil_log2(DISCOS_MAX_REASON_CODES + 1)
        )
        return (
            _ceil_log2(len(DiscosSchemaVersion))
            + _ceil_log2(len(DiscosProfile))
            + _ceil_log2(len(DiscosDomain))
            + _ceil_log2(len(DiscosClaimKind))
            + len(self.quantities) * quantity_bits
            + 256  # envelope_id
            + _ceil_log2(len(DiscosEnvelopeCheck))
            + len(self.references) * 256
            + 256  # etl_root
            + 256  # envelope_manifest_hash
            + 32  # envelope_manifest_version
            + _ceil_log2(len(DiscosDecision))
            + len(self.reason_codes) * _ceil_log2(len(DiscosReasonCode))
            + count_bits
        )


def _read_discos_quantity(value: object, path: str) -> DiscosQuantity:
    item = _object(value, path, required=("quantity_kind", "value_q", "scale", "unit"))
    return DiscosQuantity(
        quantity_kind=_choice(item["quantity_kind"], f"{path}.quantity_kind", DiscosQuantityKind),
        value_q=_integer(item["value_q"], f"{path}.value_q", -(2**63), _I64_MAX),
        scale=_choice(item["scale"], f"{path}.scale", DiscosScale),
        unit=_choice(item["unit"], f"{path}.unit", DiscosUnit),
    )


def _byte_array(value: object, path: str) -> bytes:
    items = _array(value, path)
    if len(items) != _HASH:
        raise StructuredClaimError(
            Defect.WRONG_LENGTH, path, f"must hold 32 bytes, not {len(items)}"
        )
    return bytes(_integer(item, f"{path}[{index}]", 0, 255) for index, item in enumerate(items))


class _Reader:
    """Cursor over a binary claim that reports running short or long as a claim defect."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise StructuredClaimError(
                Defect.TRUNCATED, "", f"ends at byte {len(self._data)}, needs {end}"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise StructuredClaimError(
                Defect.TRAILING_BYTES, "", f"{len(self._data) - self._offset} bytes after the claim"
            )
